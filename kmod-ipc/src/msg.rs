//! `struct kerneld_msg`: message types, headers, encoding and decoding.

use crate::error::DecodeError;
use std::fmt;

/// First reply id the kernel used for its own requests (`KERNELD_MINSEQ`).
pub const KERNELD_MINSEQ: i64 = 0x7fff_0000;
/// Operator tools (kdstat, kdsend) reply on `TOOL_ID_BASE + pid`.
pub const TOOL_ID_BASE: i64 = 1024;
/// The daemon serves message types up to this value (its filter is `-255`).
pub const MAX_DAEMON_TYPE: i64 = 255;
/// Text limit of the 1995 daemon (`MSIZE`), the default here too.
pub const DEFAULT_TEXT_MAX: usize = 1024;
/// Status of a reply part that more parts follow (a long reply, such as a
/// large status document, is sent as several messages on the same reply
/// id; only the last carries the real status).  No program's exit status
/// can take this value.
pub const REPLY_CONTINUES: i64 = 0x4000_0000;
/// `version` value that marks the new header.
pub const NEW_PROTOCOL_VERSION: i16 = 2;
/// Body bytes before the text in the old header (`long id`).
pub const HEADER_OLD_LEN: usize = 8;
/// Body bytes before the text in the new header (`long id; short version; short pid`).
pub const HEADER_NEW_LEN: usize = 12;

/// The one list of message types: each row gives the variant, its wire
/// number, the name the 1996 kdstat printed and the other names
/// [`MsgType::parse`] accepts.  The enum, [`MsgType::KNOWN`],
/// [`MsgType::from_number`], [`MsgType::number`], [`MsgType::name`] and
/// [`MsgType::parse`] are all made from it, so a type added here is known
/// to each of them, and every exhaustive match on `MsgType` in the
/// daemon fails to compile until it handles the new one.
macro_rules! msg_types {
    ($(
        $(#[$doc:meta])*
        $variant:ident = $number:literal, $name:literal $(| $alias:literal)*;
    )*) => {
        /// A kerneld message type, with its classic number.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum MsgType {
            $($(#[$doc])* $variant,)*
            /// Any other number: decodes fine, the daemon answers it with an error.
            Unknown(i64),
        }

        impl MsgType {
            /// Every known type, in number order.
            pub const KNOWN: &'static [MsgType] = &[$(MsgType::$variant),*];

            /// The type for a wire number.
            pub fn from_number(n: i64) -> MsgType {
                match n {
                    $($number => MsgType::$variant,)*
                    other => MsgType::Unknown(other),
                }
            }

            /// The wire number.
            pub fn number(self) -> i64 {
                match self {
                    $(MsgType::$variant => $number,)*
                    MsgType::Unknown(n) => n,
                }
            }

            /// The name the 1996 kdstat printed (`request_module`, `debug`, ...).
            pub fn name(self) -> &'static str {
                match self {
                    $(MsgType::$variant => $name,)*
                    MsgType::Unknown(_) => "unknown",
                }
            }

            /// Parse a number or a name (`request_module`, `status`, `release`, ...).
            pub fn parse(s: &str) -> Option<MsgType> {
                if let Ok(n) = s.parse::<i64>() {
                    return Some(MsgType::from_number(n));
                }
                let s = s.to_ascii_lowercase().replace('-', "_");
                match s.as_str() {
                    $($name $(| $alias)* => Some(MsgType::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

msg_types! {
    /// 1: run a command (`ksystem`).
    System = 1, "system" | "ksystem";
    /// 2: load the module behind a name (`request_module`).
    RequestModule = 2, "request_module" | "request" | "load";
    /// 3: unload a module now.
    ReleaseModule = 3, "release_module" | "release";
    /// 4: unload a module after the daemon's delay.
    DelayedRelease = 4, "delayed_release_module" | "delayed_release";
    /// 5: cancel a pending delayed release.
    CancelRelease = 5, "cancel_release_module" | "cancel_release" | "cancel";
    /// 6: set up a route (`/sbin/request-route`).
    RequestRoute = 6, "request_route" | "route";
    /// 7: screen blanker on/off.
    Blanker = 7, "screenblanker" | "blanker";
    /// 8: plug and play.
    Pnp = 8, "pnp";
    /// 255: status and control (kdstat).
    Status = 255, "debug" | "status";
    /// 256: ARP request (never received by a daemon filtering on -255).
    Arp = 256, "arp";
}

impl fmt::Display for MsgType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MsgType::Unknown(n) => write!(f, "unknown type {n}"),
            t => f.write_str(t.name()),
        }
    }
}

/// Which header a message carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Header {
    /// `mtype, id, text`.
    Old,
    /// `mtype, id, version = 2, pid, text`; `pid` is the requester's pid
    /// truncated to 16 bits.
    New { pid: i16 },
}

impl Header {
    /// A new header carrying `pid`, truncated to the 16 bits the wire has.
    pub fn new_with_pid(pid: u32) -> Header {
        Header::New {
            pid: pid as u16 as i16,
        }
    }

    /// Bytes of body before the text.
    pub fn len(self) -> usize {
        match self {
            Header::Old => HEADER_OLD_LEN,
            Header::New { .. } => HEADER_NEW_LEN,
        }
    }

    /// Always false: a header has fixed, non-zero size.
    pub fn is_empty(self) -> bool {
        false
    }

    /// The header of a reply to a request with this header: the same
    /// format, with the replier's `pid` in a new header.
    pub fn for_reply(self, pid: u32) -> Header {
        match self {
            Header::Old => Header::Old,
            Header::New { .. } => Header::new_with_pid(pid),
        }
    }
}

/// A received message whose text borrows the receive buffer: decoding it
/// copies nothing.  [`MessageView::to_message`] makes an owned one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageView<'a> {
    pub mtype: i64,
    pub id: i64,
    pub header: Header,
    /// The text, without a NUL (see [`Message::text`]).
    pub text: &'a [u8],
}

impl<'a> MessageView<'a> {
    /// Decode a body received with type `mtype`, as
    /// [`Message::decode_body`] does, without copying the text.
    pub fn decode_body(
        mtype: i64,
        body: &'a [u8],
        text_max: usize,
    ) -> Result<MessageView<'a>, DecodeError> {
        let Some(id_bytes) = body.get(..8) else {
            return Err(DecodeError::Truncated { len: body.len() });
        };
        let id = i64::from_ne_bytes(id_bytes.try_into().expect("8 bytes"));
        let header = match body.get(8..12) {
            Some(h) if i16::from_ne_bytes([h[0], h[1]]) == NEW_PROTOCOL_VERSION => Header::New {
                pid: i16::from_ne_bytes([h[2], h[3]]),
            },
            _ => Header::Old,
        };
        let rest = &body[header.len()..];
        let len = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        if len > text_max {
            return Err(DecodeError::TextTooLong { len, max: text_max });
        }
        Ok(MessageView {
            mtype,
            id,
            header,
            text: &rest[..len],
        })
    }

    /// The message type as a [`MsgType`].
    pub fn msg_type(&self) -> MsgType {
        MsgType::from_number(self.mtype)
    }

    /// The requester pid from a new header (16 bits, see the crate docs).
    pub fn pid(&self) -> Option<i16> {
        match self.header {
            Header::New { pid } => Some(pid),
            Header::Old => None,
        }
    }

    /// The text as lossy UTF-8, borrowed when it is valid UTF-8.
    pub fn text_lossy(&self) -> std::borrow::Cow<'a, str> {
        String::from_utf8_lossy(self.text)
    }

    /// An owned copy.
    pub fn to_message(&self) -> Message {
        Message {
            mtype: self.mtype,
            id: self.id,
            header: self.header,
            text: self.text.to_vec(),
        }
    }
}

/// Encode a whole message (`mtype` first, as `msgsnd` takes it) into
/// `buf`, replacing what it held: a sender that keeps `buf` allocates
/// nothing once it is large enough.  The text is checked as
/// [`Message::encode_body`] checks it.
pub fn encode_into(
    buf: &mut Vec<u8>,
    mtype: i64,
    id: i64,
    header: Header,
    text: &[u8],
    text_max: usize,
) -> Result<(), DecodeError> {
    if text.contains(&0) {
        return Err(DecodeError::NulInText);
    }
    if text.len() > text_max {
        return Err(DecodeError::TextTooLong {
            len: text.len(),
            max: text_max,
        });
    }
    buf.clear();
    buf.reserve(8 + header.len() + text.len() + 1);
    buf.extend_from_slice(&mtype.to_ne_bytes());
    buf.extend_from_slice(&id.to_ne_bytes());
    if let Header::New { pid } = header {
        buf.extend_from_slice(&NEW_PROTOCOL_VERSION.to_ne_bytes());
        buf.extend_from_slice(&pid.to_ne_bytes());
    }
    buf.extend_from_slice(text);
    buf.push(0);
    Ok(())
}

/// One `struct kerneld_msg`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Message type: a request type, or for a reply the request's id.
    pub mtype: i64,
    /// For a request, the reply id (0: no reply); for a reply, the status.
    pub id: i64,
    /// Header format.
    pub header: Header,
    /// The text, without a NUL: what came before the first NUL, or the whole
    /// rest of the body when the sender sent none.
    pub text: Vec<u8>,
}

impl Message {
    /// A request of type `t` with text, wanting a reply on `id` (0: none).
    pub fn request(t: MsgType, id: i64, header: Header, text: impl Into<Vec<u8>>) -> Message {
        Message {
            mtype: t.number(),
            id,
            header,
            text: text.into(),
        }
    }

    /// The reply to `self`: type = request id, id = status, same header
    /// format; `pid` is the replier's pid for a new header.
    pub fn reply(&self, status: i64, pid: u32, text: impl Into<Vec<u8>>) -> Message {
        let header = self.header.for_reply(pid);
        Message {
            mtype: self.id,
            id: status,
            header,
            text: text.into(),
        }
    }

    /// The reply to `self`, split into as many messages as needed for text
    /// parts of at most `part_max` bytes: all but the last carry
    /// [`REPLY_CONTINUES`] as status.
    pub fn reply_parts(&self, status: i64, pid: u32, text: &[u8], part_max: usize) -> Vec<Message> {
        let part_max = part_max.max(1);
        let mut parts: Vec<Message> = text
            .chunks(part_max)
            .map(|c| self.reply(REPLY_CONTINUES, pid, c))
            .collect();
        match parts.last_mut() {
            Some(last) => last.id = status,
            None => parts.push(self.reply(status, pid, Vec::new())),
        }
        parts
    }

    /// The message type as a [`MsgType`].
    pub fn msg_type(&self) -> MsgType {
        MsgType::from_number(self.mtype)
    }

    /// Whether the sender waits for a reply.
    pub fn wants_reply(&self) -> bool {
        self.id != 0
    }

    /// The requester pid from a new header (16 bits, see the crate docs).
    pub fn pid(&self) -> Option<i16> {
        match self.header {
            Header::New { pid } => Some(pid),
            Header::Old => None,
        }
    }

    /// The text as lossy UTF-8, for logs and status lines.
    pub fn text_lossy(&self) -> String {
        String::from_utf8_lossy(&self.text).into_owned()
    }

    /// Size of the body (`msgsz`) as this crate encodes it: header, text
    /// and the NUL it adds.
    pub fn body_len(&self) -> usize {
        self.header.len() + self.text.len() + 1
    }

    /// Encode the body (everything after `mtype`), checking the text:
    /// no NUL inside, at most `text_max` bytes.
    pub fn encode_body(&self, text_max: usize) -> Result<Vec<u8>, DecodeError> {
        if self.text.contains(&0) {
            return Err(DecodeError::NulInText);
        }
        if self.text.len() > text_max {
            return Err(DecodeError::TextTooLong {
                len: self.text.len(),
                max: text_max,
            });
        }
        let mut body = Vec::with_capacity(self.body_len());
        body.extend_from_slice(&self.id.to_ne_bytes());
        if let Header::New { pid } = self.header {
            body.extend_from_slice(&NEW_PROTOCOL_VERSION.to_ne_bytes());
            body.extend_from_slice(&pid.to_ne_bytes());
        }
        body.extend_from_slice(&self.text);
        body.push(0);
        Ok(body)
    }

    /// Encode the whole buffer, `mtype` first, as `msgsnd` takes it.
    pub fn encode(&self, text_max: usize) -> Result<Vec<u8>, DecodeError> {
        let body = self.encode_body(text_max)?;
        let mut buf = Vec::with_capacity(8 + body.len());
        buf.extend_from_slice(&self.mtype.to_ne_bytes());
        buf.extend_from_slice(&body);
        Ok(buf)
    }

    /// Decode a body received with type `mtype`.  The text is the bytes
    /// after the header up to the first NUL or the end of the body: the
    /// 1995 senders sent `strlen(text)` bytes with no NUL, and a receiver
    /// terminates the text itself.  Bytes after a NUL are not text (a 1995
    /// daemon never saw them either).  A body shorter than the old header
    /// is [`DecodeError::Truncated`]; text longer than `text_max` is
    /// [`DecodeError::TextTooLong`].
    pub fn decode_body(mtype: i64, body: &[u8], text_max: usize) -> Result<Message, DecodeError> {
        MessageView::decode_body(mtype, body, text_max).map(|v| v.to_message())
    }

    /// Decode a whole buffer, `mtype` first.
    pub fn decode(buf: &[u8], text_max: usize) -> Result<Message, DecodeError> {
        let Some(t) = buf.get(..8) else {
            return Err(DecodeError::Truncated { len: buf.len() });
        };
        let mtype = i64::from_ne_bytes(t.try_into().expect("8 bytes"));
        // Truncated tells the length of what the caller passed, here the
        // whole buffer, as it does when even `mtype` is missing.
        Message::decode_body(mtype, &buf[8..], text_max).map_err(|e| match e {
            DecodeError::Truncated { len } => DecodeError::Truncated { len: len + 8 },
            e => e,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_numbers_round_trip() {
        for &t in MsgType::KNOWN {
            assert_eq!(MsgType::from_number(t.number()), t);
            assert_eq!(MsgType::parse(&t.number().to_string()), Some(t));
            assert_eq!(MsgType::parse(t.name()), Some(t));
        }
        assert_eq!(MsgType::from_number(77), MsgType::Unknown(77));
        assert_eq!(MsgType::parse("nonsense"), None);
    }

    #[test]
    fn old_header_layout_is_byte_exact() {
        let m = Message::request(MsgType::RequestModule, 0x7fff_0001, Header::Old, "ppp");
        let buf = m.encode(DEFAULT_TEXT_MAX).unwrap();
        let mut want = Vec::new();
        want.extend_from_slice(&2i64.to_le_bytes());
        want.extend_from_slice(&0x7fff_0001i64.to_le_bytes());
        want.extend_from_slice(b"ppp\0");
        assert_eq!(buf, want);
        assert_eq!(m.body_len(), 12);
    }

    #[test]
    fn new_header_layout_is_byte_exact() {
        let m = Message::request(MsgType::Status, 1024 + 77, Header::New { pid: 77 }, "keep");
        let buf = m.encode(DEFAULT_TEXT_MAX).unwrap();
        assert_eq!(
            buf,
            [
                255, 0, 0, 0, 0, 0, 0, 0, // mtype
                0x4d, 0x04, 0, 0, 0, 0, 0, 0, // id 1101
                2, 0, // version
                77, 0, // pid
                b'k', b'e', b'e', b'p', 0
            ]
        );
    }

    #[test]
    fn new_header_pid_truncates_to_16_bits() {
        assert_eq!(Header::new_with_pid(0x12345), Header::New { pid: 0x2345 });
        assert_eq!(
            Header::new_with_pid(0xffff),
            Header::New { pid: -1 },
            "the wire field is a signed short"
        );
    }

    #[test]
    fn reply_mirrors_header_and_swaps_id() {
        let req = Message::request(MsgType::RequestModule, 4242, Header::New { pid: 9 }, "x");
        let rep = req.reply(1, 100, "not found");
        assert_eq!(rep.mtype, 4242);
        assert_eq!(rep.id, 1);
        assert_eq!(rep.header, Header::New { pid: 100 });
        let old = Message::request(MsgType::RequestModule, 4242, Header::Old, "x");
        assert_eq!(old.reply(0, 100, "").header, Header::Old);
    }

    #[test]
    fn long_replies_are_split_into_parts() {
        let req = Message::request(MsgType::Status, 2000, Header::Old, "");
        let parts = req.reply_parts(0, 1, b"abcdefg", 3);
        let texts: Vec<&[u8]> = parts.iter().map(|m| m.text.as_slice()).collect();
        assert_eq!(texts, [b"abc".as_slice(), b"def", b"g"]);
        let ids: Vec<i64> = parts.iter().map(|m| m.id).collect();
        assert_eq!(ids, [REPLY_CONTINUES, REPLY_CONTINUES, 0]);
        let empty = req.reply_parts(1, 1, b"", 3);
        assert_eq!(empty.len(), 1);
        assert_eq!(empty[0].id, 1);
    }

    #[test]
    fn decode_errors_are_typed() {
        assert_eq!(
            Message::decode_body(2, &[1, 2, 3], 1024),
            Err(DecodeError::Truncated { len: 3 })
        );
        let mut body = 0i64.to_ne_bytes().to_vec();
        body.extend_from_slice(b"abc");
        assert_eq!(
            Message::decode_body(2, &body, 2),
            Err(DecodeError::TextTooLong { len: 3, max: 2 })
        );
        body.push(0);
        assert_eq!(
            Message::decode_body(2, &body, 2),
            Err(DecodeError::TextTooLong { len: 3, max: 2 })
        );
        let m = Message::decode_body(2, &body, 3).unwrap();
        assert_eq!(m.text, b"abc");
        assert_eq!(m.header, Header::Old);
    }

    #[test]
    fn text_without_nul_is_the_rest_of_the_body() {
        // What Linux 2.0's request_module("ppp") sent: 8 + strlen bytes.
        let mut body = 0x7fff_0001i64.to_ne_bytes().to_vec();
        body.extend_from_slice(b"ppp");
        let m = Message::decode_body(2, &body, 1024).unwrap();
        assert_eq!(
            (m.id, m.header, m.text.as_slice()),
            (0x7fff_0001, Header::Old, &b"ppp"[..])
        );
        // The 1995 kdstat's status request: the bare header.
        let bare = Message::decode_body(255, &1100i64.to_ne_bytes(), 1024).unwrap();
        assert!(bare.text.is_empty());
        // New header, no NUL; and a bare new header.
        let mut body = 4242i64.to_ne_bytes().to_vec();
        body.extend_from_slice(&2i16.to_ne_bytes());
        body.extend_from_slice(&77i16.to_ne_bytes());
        let bare = Message::decode_body(255, &body, 1024).unwrap();
        assert_eq!((bare.header, bare.text.len()), (Header::New { pid: 77 }, 0));
        body.extend_from_slice(b"net-pf-10");
        let m = Message::decode_body(2, &body, 1024).unwrap();
        assert_eq!(m.text, b"net-pf-10");
    }

    #[test]
    fn text_ends_at_the_first_nul() {
        let mut body = 5i64.to_ne_bytes().to_vec();
        body.extend_from_slice(b"ppp\0junk");
        let m = Message::decode_body(2, &body, 3).unwrap();
        assert_eq!(
            m.text, b"ppp",
            "what follows a NUL is no text, nor counted against the limit"
        );
    }

    #[test]
    fn encode_refuses_bad_text() {
        let m = Message::request(MsgType::RequestModule, 0, Header::Old, b"a\0b".to_vec());
        assert_eq!(m.encode(1024), Err(DecodeError::NulInText));
        let m = Message::request(MsgType::RequestModule, 0, Header::Old, vec![b'a'; 1025]);
        assert!(matches!(
            m.encode(1024),
            Err(DecodeError::TextTooLong { len: 1025, .. })
        ));
    }

    #[test]
    fn old_message_with_short_text_is_not_mistaken_for_new() {
        // Body: id, then "ab\0" -- only 11 bytes, cannot hold a new header.
        let mut body = 5i64.to_ne_bytes().to_vec();
        body.extend_from_slice(b"ab\0");
        let m = Message::decode_body(2, &body, 1024).unwrap();
        assert_eq!(m.header, Header::Old);
        assert_eq!(m.text, b"ab");
    }
}
