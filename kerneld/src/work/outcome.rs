//! The answer to one request: a status and a text, sent to every waiter.
//!
//! Its own module so that the request path, the programs and the control
//! words can build one without importing each other.

/// The result of one action, sent to every waiter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub status: i64,
    pub text: String,
}

impl Outcome {
    pub(crate) fn ok(text: impl Into<String>) -> Outcome {
        Outcome {
            status: 0,
            text: text.into(),
        }
    }
    pub(crate) fn fail(text: impl Into<String>) -> Outcome {
        Outcome {
            status: 1,
            text: text.into(),
        }
    }
}
