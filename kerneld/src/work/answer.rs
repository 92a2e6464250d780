//! The answer to one request_module, typed until it is sent.
//!
//! Made in one place (the request path, `request.rs`); its [`Display`] is
//! the reply text the requester reads (pinned by the conformance suite),
//! and the negative cache keeps it as it is, not its text.
//!
//! [`Display`]: fmt::Display

use crate::backend::Errno;
use crate::errno::errno_text;
use std::borrow::Cow;
use std::fmt::{self, Write as _};

/// What became of a request_module.  `name` is the name asked for,
/// borrowed from the request while it is served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Answer<'a> {
    /// The name resolves to no module.
    NotFound { name: Cow<'a, str> },
    /// Resolving the name failed (the index could not be read).
    ResolveFailed { errno: Errno },
    /// The load's own lookup failed.
    LookupFailed { name: Cow<'a, str>, errno: Errno },
    /// The backend could not be used at all.
    BackendFailed { name: Cow<'a, str>, error: String },
    /// A rule denied it; `rule` is the rule as written, with its place.
    Denied { name: Cow<'a, str>, rule: String },
    /// Every candidate is blacklisted: modprobe -q exits 0, and so do we.
    Blacklisted {
        name: Cow<'a, str>,
        modules: Vec<String>,
    },
    /// Everything it stands for is in the kernel already.
    AlreadyLoaded { name: Cow<'a, str> },
    /// Inserting `module` failed (or the kernel takes no modules).
    InsertFailed {
        name: Cow<'a, str>,
        module: String,
        errno: Errno,
    },
    /// Loaded: `what` lists the modules inserted and commands run.
    Loaded { name: Cow<'a, str>, what: String },
}

/// What an answer was, without its details: what the status ring keeps
/// for `why`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    NotFound,
    Failed,
    Denied,
    Blacklisted,
    AlreadyLoaded,
    Loaded,
}

impl Answer<'_> {
    /// The reply's status: 0 for what modprobe -q exits 0 for.
    pub(crate) fn status(&self) -> i64 {
        match self.kind() {
            Kind::Blacklisted | Kind::AlreadyLoaded | Kind::Loaded => 0,
            Kind::NotFound | Kind::Failed | Kind::Denied => 1,
        }
    }

    pub(crate) fn kind(&self) -> Kind {
        match self {
            Answer::NotFound { .. } => Kind::NotFound,
            Answer::ResolveFailed { .. }
            | Answer::LookupFailed { .. }
            | Answer::BackendFailed { .. }
            | Answer::InsertFailed { .. } => Kind::Failed,
            Answer::Denied { .. } => Kind::Denied,
            Answer::Blacklisted { .. } => Kind::Blacklisted,
            Answer::AlreadyLoaded { .. } => Kind::AlreadyLoaded,
            Answer::Loaded { .. } => Kind::Loaded,
        }
    }

    /// The reply text, in one allocation: a quick answer counts them.
    pub(crate) fn text(&self) -> String {
        let extra = match self {
            Answer::Blacklisted { modules, .. } => modules.iter().map(|m| m.len() + 1).sum(),
            Answer::InsertFailed { module, .. } => module.len() + 64,
            Answer::Loaded { what, .. } => what.len(),
            Answer::BackendFailed { error, .. } => error.len(),
            Answer::Denied { rule, .. } => rule.len(),
            _ => 0,
        };
        let name = match self {
            Answer::ResolveFailed { .. } => "",
            Answer::NotFound { name }
            | Answer::LookupFailed { name, .. }
            | Answer::BackendFailed { name, .. }
            | Answer::Denied { name, .. }
            | Answer::Blacklisted { name, .. }
            | Answer::AlreadyLoaded { name }
            | Answer::InsertFailed { name, .. }
            | Answer::Loaded { name, .. } => name,
        };
        // The longest fixed part plus an errno's text fit in 96 more.
        let mut s = String::with_capacity(name.len() + extra + 96);
        let _ = write!(s, "{self}");
        s
    }

    /// The same answer, owning its name (for the negative cache).
    pub(crate) fn into_owned(self) -> Answer<'static> {
        let own = |n: Cow<'_, str>| Cow::Owned(n.into_owned());
        match self {
            Answer::NotFound { name } => Answer::NotFound { name: own(name) },
            Answer::ResolveFailed { errno } => Answer::ResolveFailed { errno },
            Answer::LookupFailed { name, errno } => Answer::LookupFailed {
                name: own(name),
                errno,
            },
            Answer::BackendFailed { name, error } => Answer::BackendFailed {
                name: own(name),
                error,
            },
            Answer::Denied { name, rule } => Answer::Denied {
                name: own(name),
                rule,
            },
            Answer::Blacklisted { name, modules } => Answer::Blacklisted {
                name: own(name),
                modules,
            },
            Answer::AlreadyLoaded { name } => Answer::AlreadyLoaded { name: own(name) },
            Answer::InsertFailed {
                name,
                module,
                errno,
            } => Answer::InsertFailed {
                name: own(name),
                module,
                errno,
            },
            Answer::Loaded { name, what } => Answer::Loaded {
                name: own(name),
                what,
            },
        }
    }
}

impl fmt::Display for Answer<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Answer::NotFound { name } => write!(f, "{name}: not found"),
            Answer::ResolveFailed { errno } => write!(f, "lookup failed: {}", errno_text(*errno)),
            Answer::LookupFailed { name, errno } => {
                write!(f, "{name}: lookup failed: {}", errno_text(*errno))
            }
            Answer::BackendFailed { name, error } => {
                write!(f, "{name}: cannot use libkmod: {error}")
            }
            Answer::Denied { name, rule } => write!(f, "{name}: denied by policy: {rule}"),
            Answer::Blacklisted { name, modules } => {
                write!(f, "{name}: blacklisted (")?;
                for (i, m) in modules.iter().enumerate() {
                    if i > 0 {
                        f.write_char(' ')?;
                    }
                    f.write_str(m)?;
                }
                f.write_str("), nothing loaded")
            }
            Answer::AlreadyLoaded { name } => write!(f, "{name}: already loaded"),
            Answer::InsertFailed {
                name,
                module,
                errno,
            } => write!(
                f,
                "{name}: {}",
                crate::backend::load_error_text(module, *errno)
            ),
            Answer::Loaded { name, what } => write!(f, "{name}: loaded {what}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_are_the_replies_and_statuses_modprobes() {
        let n = |s: &'static str| Cow::Borrowed(s);
        let cases = [
            (Answer::NotFound { name: n("x") }, 1, "x: not found"),
            (
                Answer::Blacklisted {
                    name: n("a"),
                    modules: vec!["m1".into(), "m2".into()],
                },
                0,
                "a: blacklisted (m1 m2), nothing loaded",
            ),
            (
                Answer::AlreadyLoaded { name: n("d") },
                0,
                "d: already loaded",
            ),
            (
                Answer::Denied {
                    name: n("d"),
                    rule: "deny * (f:1)".into(),
                },
                1,
                "d: denied by policy: deny * (f:1)",
            ),
            (
                Answer::Loaded {
                    name: n("d"),
                    what: "dummy".into(),
                },
                0,
                "d: loaded dummy",
            ),
        ];
        for (a, status, text) in cases {
            assert_eq!(a.status(), status, "{a:?}");
            assert_eq!(a.text(), text);
            assert_eq!(a.clone().into_owned(), a);
        }
    }
}
