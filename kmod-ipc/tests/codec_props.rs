//! Property tests of the `struct kerneld_msg` codec: round trips, total
//! decoding of arbitrary bytes, and the reply rules.

use kmod_ipc::{DecodeError, Header, Message, MsgType, HEADER_NEW_LEN, HEADER_OLD_LEN};
use kmod_ipc::{NEW_PROTOCOL_VERSION, REPLY_CONTINUES};
use proptest::prelude::*;

fn header() -> impl Strategy<Value = Header> {
    prop_oneof![
        Just(Header::Old),
        any::<i16>().prop_map(|pid| Header::New { pid })
    ]
}

/// Text limits worth trying: zero, tiny, the 1995 MSIZE, msgmax, unbounded.
fn limit() -> impl Strategy<Value = usize> {
    prop_oneof![
        Just(0usize),
        Just(1),
        Just(63),
        Just(1024),
        Just(8192),
        Just(usize::MAX),
        0usize..3000,
    ]
}

/// A limit and a NUL-free text no longer than it.
fn limited_text() -> impl Strategy<Value = (usize, Vec<u8>)> {
    (0usize..2048).prop_flat_map(|max| {
        (
            max..=max + 100,
            proptest::collection::vec(1u8..=255, 0..=max),
        )
    })
}

fn message() -> impl Strategy<Value = Message> {
    (
        any::<i64>(),
        any::<i64>(),
        header(),
        proptest::collection::vec(1u8..=255, 0..300),
    )
        .prop_map(|(mtype, id, header, text)| Message {
            mtype,
            id,
            header,
            text,
        })
}

/// What decode must answer, worked out independently of the decoder.
fn expected_decode(buf: &[u8], max: usize) -> Result<(Header, usize), DecodeError> {
    if buf.len() < 16 {
        return Err(DecodeError::Truncated { len: buf.len() });
    }
    let body = &buf[8..];
    let header = if body.len() >= 12 && body[8..10] == NEW_PROTOCOL_VERSION.to_ne_bytes() {
        Header::New {
            pid: i16::from_ne_bytes([body[10], body[11]]),
        }
    } else {
        Header::Old
    };
    let text = &body[header.len()..];
    // The text ends at the first NUL, or with the body (1995 senders sent
    // no NUL).
    let n = text.iter().position(|&b| b == 0).unwrap_or(text.len());
    if n > max {
        return Err(DecodeError::TextTooLong { len: n, max });
    }
    Ok((header, n))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_valid_message_round_trips(
        mtype in any::<i64>(),
        id in any::<i64>(),
        header in header(),
        (max, text) in limited_text(),
    ) {
        let m = Message { mtype, id, header, text };
        let buf = m.encode(max).unwrap();
        prop_assert_eq!(buf.len(), 8 + m.body_len());
        prop_assert_eq!(m.body_len(), header.len() + m.text.len() + 1);
        let body = m.encode_body(max).unwrap();
        prop_assert_eq!(&buf[8..], body.as_slice());
        prop_assert_eq!(&buf[..8], &mtype.to_ne_bytes()[..]);
        prop_assert_eq!(*buf.last().unwrap(), 0);
        prop_assert_eq!(Message::decode(&buf, max).unwrap(), m.clone());
        prop_assert_eq!(Message::decode_body(mtype, &buf[8..], max).unwrap(), m);
    }

    #[test]
    fn decoding_any_bytes_never_panics(
        buf in proptest::collection::vec(any::<u8>(), 0..20000),
        max in limit(),
    ) {
        let got = Message::decode(&buf, max);
        match (&got, expected_decode(&buf, max)) {
            (Ok(m), Ok((header, n))) => {
                prop_assert_eq!(m.header, header);
                prop_assert_eq!(m.text.len(), n);
                prop_assert_eq!(m.mtype, i64::from_ne_bytes(buf[..8].try_into().unwrap()));
                prop_assert_eq!(m.id, i64::from_ne_bytes(buf[8..16].try_into().unwrap()));
                prop_assert!(!m.text.contains(&0));
                // Re-encoding gives back exactly the bytes that were read,
                // up to and with the NUL, which it adds where none was sent.
                let again = m.encode(max).unwrap();
                let read = (again.len()).min(buf.len());
                prop_assert_eq!(&again[..read], &buf[..read]);
                prop_assert!(read == again.len() || read == again.len() - 1);
                prop_assert_eq!(&Message::decode(&again, max).unwrap(), m);
            }
            (Err(e), Err(want)) => prop_assert_eq!(e, &want),
            (got, want) => prop_assert!(false, "decode gave {:?}, expected {:?}", got, want),
        }
    }

    #[test]
    fn decoding_near_valid_bytes_matches_the_oracle(
        m in message(),
        cut in 0usize..400,
        tail in proptest::collection::vec(any::<u8>(), 0..40),
        max in limit(),
    ) {
        // Valid messages cut short or with trailing bytes reach the edge
        // cases (header boundary, missing NUL) far more often than noise.
        let mut buf = m.encode(usize::MAX).unwrap();
        buf.truncate(cut.min(buf.len()));
        buf.extend_from_slice(&tail);
        let got = Message::decode(&buf, max);
        match expected_decode(&buf, max) {
            Ok((header, n)) => {
                let d = got.unwrap();
                prop_assert_eq!(d.header, header);
                prop_assert_eq!(d.text.len(), n);
            }
            Err(want) => prop_assert_eq!(got, Err(want)),
        }
    }

    #[test]
    fn text_rules_are_enforced_on_encode(
        m in message(),
        nul_at in any::<prop::sample::Index>(),
        max in 0usize..300,
    ) {
        if m.text.len() > max {
            prop_assert_eq!(
                m.encode(max),
                Err(DecodeError::TextTooLong { len: m.text.len(), max })
            );
        } else {
            prop_assert!(m.encode(max).is_ok());
        }
        // A NUL anywhere in the text is refused whatever the limit.
        let mut bad = m.clone();
        let at = nul_at.index(bad.text.len() + 1);
        bad.text.insert(at, 0);
        prop_assert_eq!(bad.encode(usize::MAX), Err(DecodeError::NulInText));
    }

    #[test]
    fn old_text_never_looks_like_a_new_header(
        id in any::<i64>(),
        text in proptest::collection::vec(1u8..=255, 0..64),
    ) {
        // The old/new decision reads text bytes as `version`: NUL-free text
        // can never spell version 2 (bytes 02 00), so old messages survive.
        let m = Message { mtype: 2, id, header: Header::Old, text };
        prop_assert_eq!(Message::decode(&m.encode(usize::MAX).unwrap(), usize::MAX).unwrap(), m);
    }

    #[test]
    fn reply_follows_the_rules(
        req in message(),
        status in any::<i64>(),
        pid in any::<u32>(),
        text in proptest::collection::vec(1u8..=255, 0..300),
    ) {
        let r = req.reply(status, pid, text.clone());
        prop_assert_eq!(r.mtype, req.id);
        prop_assert_eq!(r.id, status);
        prop_assert_eq!(&r.text, &text);
        match req.header {
            Header::Old => {
                prop_assert_eq!(r.header, Header::Old);
                prop_assert_eq!(r.pid(), None);
            }
            Header::New { .. } => {
                prop_assert_eq!(r.header, Header::New { pid: pid as u16 as i16 });
                prop_assert_eq!(r.pid(), Some(pid as u16 as i16));
            }
        }
        prop_assert_eq!(r.wants_reply(), status != 0);
        let buf = r.encode(usize::MAX).unwrap();
        prop_assert_eq!(Message::decode(&buf, usize::MAX).unwrap(), r);
    }

    #[test]
    fn reply_parts_cover_the_text(
        req in message(),
        status in any::<i64>(),
        text in proptest::collection::vec(1u8..=255, 0..2000),
        part_max in 0usize..700,
    ) {
        let parts = req.reply_parts(status, 42, &text, part_max);
        let per = part_max.max(1);
        prop_assert_eq!(parts.len(), text.len().div_ceil(per).max(1));
        let (last, rest) = parts.split_last().unwrap();
        prop_assert_eq!(last.id, status);
        for p in rest {
            prop_assert_eq!(p.id, REPLY_CONTINUES);
            prop_assert_eq!(p.text.len(), per, "only the last part is short");
        }
        let joined: Vec<u8> = parts.iter().flat_map(|p| p.text.iter().copied()).collect();
        prop_assert_eq!(joined, text);
        for p in &parts {
            prop_assert_eq!(p.mtype, req.id);
            prop_assert!(p.text.len() <= per);
            prop_assert_eq!(p.header, req.reply(0, 42, "").header);
        }
    }

    #[test]
    fn type_numbers_round_trip(n in any::<i64>()) {
        let t = MsgType::from_number(n);
        prop_assert_eq!(t.number(), n);
        prop_assert_eq!(MsgType::parse(&n.to_string()), Some(t));
        prop_assert_eq!(matches!(t, MsgType::Unknown(_)), !MsgType::KNOWN.contains(&t));
    }

    #[test]
    fn new_header_pid_keeps_the_low_16_bits(pid in any::<u32>()) {
        let Header::New { pid: p } = Header::new_with_pid(pid) else {
            unreachable!()
        };
        prop_assert_eq!(p as u16 as u32, pid & 0xffff);
    }
}

#[test]
fn header_lengths_match_the_c_struct() {
    assert_eq!(HEADER_OLD_LEN, 8, "long id");
    assert_eq!(HEADER_NEW_LEN, 12, "long id; short version; short pid");
    assert_eq!(Header::Old.len(), HEADER_OLD_LEN);
    assert_eq!(Header::New { pid: 0 }.len(), HEADER_NEW_LEN);
}
