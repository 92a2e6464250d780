//! Fuzz `Message::decode` on arbitrary bytes, under several text limits.
//!
//! Decoding must never panic, and must answer consistently:
//! - an accepted message re-encodes to exactly the bytes that were read
//!   (with the NUL that ends the text added where the sender sent none,
//!   as 1995 senders did), and decodes back equal;
//! - an error is the one the bytes call for (lengths and limits it names
//!   are the real ones);
//! - a larger limit never refuses what a smaller one accepted.

#![no_main]

use kmod_ipc::{DecodeError, Message};
use libfuzzer_sys::fuzz_target;

/// Zero, tiny, the C struct's text[64], 1995's MSIZE, msgmax, unbounded;
/// in ascending order for the monotonicity check.
const LIMITS: [usize; 6] = [0, 1, 63, 1024, 8192, usize::MAX];

fuzz_target!(|data: &[u8]| {
    let mut accepted: Option<Message> = None;
    for max in LIMITS {
        let got = check(data, max);
        if let Some(prev) = &accepted {
            assert_eq!(got.as_ref(), Some(prev), "a larger limit refused it");
        }
        accepted = accepted.or(got);
    }
});

fn check(data: &[u8], max: usize) -> Option<Message> {
    match Message::decode(data, max) {
        Ok(m) => {
            assert!(m.text.len() <= max);
            assert!(!m.text.contains(&0));
            let buf = m.encode(max).expect("a decoded message re-encodes");
            let read = buf.len().min(data.len());
            assert_eq!(&buf[..read], &data[..read], "re-encoding differs");
            assert!(read + 1 >= buf.len(), "only the NUL may be missing");
            assert_eq!(Message::decode(&buf, max).as_ref(), Ok(&m));
            assert_eq!(
                Message::decode_body(m.mtype, &data[8..], max).as_ref(),
                Ok(&m)
            );
            Some(m)
        }
        Err(DecodeError::Truncated { len }) => {
            // mtype and id (8 bytes each) are all a message needs.
            assert_eq!(len, data.len());
            assert!(len < 16);
            None
        }
        Err(DecodeError::TextTooLong { len, max: m }) => {
            assert_eq!(m, max);
            assert!(len > max);
            None
        }
        Err(DecodeError::NulInText) | Err(DecodeError::Cut { .. }) => {
            panic!("decode reported an error of encoding or receiving")
        }
    }
}
