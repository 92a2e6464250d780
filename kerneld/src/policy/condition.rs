//! The conditions after a rule's `if`: who asks (`uid=N`, `uid!=N`,
//! `gid=N`, `comm=GLOB`, `cgroup=GLOB`) and where a module file comes from
//! (`signed`, `!signed`, `signer=GLOB`, `intree`, `!intree`), with their
//! parsing, their text and how each is judged.

use crate::backend::Provenance;
use crate::policy::pattern::Pattern;
use crate::who::requester::Requester;
use std::fmt;

/// A requester condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Condition {
    Uid(u32),
    NotUid(u32),
    Gid(u32),
    Comm(Pattern),
    Cgroup(Pattern),
    /// The module file has a signature (`signed`, or `!signed`: false).
    Signed(bool),
    /// The signer's name matches the glob.
    Signer(Pattern),
    /// modinfo's `intree=Y` (`intree`, or `!intree`: false).
    Intree(bool),
}

/// A field of the requester that a condition reads.  The identity that
/// keeps requests and remembered answers of different requesters apart is
/// made of the fields the rules read (see [`Condition::reads`]), so a
/// field a new condition reads is part of it without another list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RequesterField {
    Uid,
    Gid,
    Comm,
    Cgroup,
}

impl RequesterField {
    /// In the order an identity lists them.
    pub(crate) const ALL: [RequesterField; 4] = [
        RequesterField::Uid,
        RequesterField::Gid,
        RequesterField::Comm,
        RequesterField::Cgroup,
    ];

    /// Append ` name=value` (without the space when `out` is empty).
    pub(crate) fn write(self, r: &Requester, out: &mut String) {
        use std::fmt::Write;
        if !out.is_empty() {
            out.push(' ');
        }
        let _ = match self {
            RequesterField::Uid => write!(out, "uid={}", r.uid),
            RequesterField::Gid => write!(out, "gid={}", r.gid),
            RequesterField::Comm => write!(out, "comm={}", r.comm),
            RequesterField::Cgroup => write!(out, "cgroup={}", r.cgroup),
        };
    }
}

impl Condition {
    /// The requester field it reads, if it reads one.
    pub(crate) fn reads(&self) -> Option<RequesterField> {
        match self {
            Condition::Uid(_) | Condition::NotUid(_) => Some(RequesterField::Uid),
            Condition::Gid(_) => Some(RequesterField::Gid),
            Condition::Comm(_) => Some(RequesterField::Comm),
            Condition::Cgroup(_) => Some(RequesterField::Cgroup),
            Condition::Signed(_) | Condition::Signer(_) | Condition::Intree(_) => None,
        }
    }

    /// Whether it judges the module file rather than the requester.
    pub(crate) fn is_provenance(&self) -> bool {
        matches!(
            self,
            Condition::Signed(_) | Condition::Signer(_) | Condition::Intree(_)
        )
    }

    /// Parse one condition word (`uid!=0`, `comm=modprobe`, `!signed`).
    pub(super) fn parse(w: &str) -> Result<Condition, String> {
        let num = |v: &str| {
            v.parse::<u32>()
                .map_err(|_| format!("{w:?}: needs a number"))
        };
        if let Some(v) = w.strip_prefix("uid!=") {
            return Ok(Condition::NotUid(num(v)?));
        }
        if let Some(v) = w.strip_prefix("uid=") {
            return Ok(Condition::Uid(num(v)?));
        }
        if let Some(v) = w.strip_prefix("gid=") {
            return Ok(Condition::Gid(num(v)?));
        }
        if let Some(v) = w.strip_prefix("comm=") {
            return Ok(Condition::Comm(Pattern::new(v)?));
        }
        if let Some(v) = w.strip_prefix("cgroup=") {
            return Ok(Condition::Cgroup(Pattern::new(v)?));
        }
        if let Some(v) = w.strip_prefix("signer=") {
            if v.is_empty() {
                return Err(format!("{w:?}: needs a signer name pattern"));
            }
            return Ok(Condition::Signer(Pattern::new(v)?));
        }
        match w {
            "signed" => return Ok(Condition::Signed(true)),
            "!signed" => return Ok(Condition::Signed(false)),
            "intree" => return Ok(Condition::Intree(true)),
            "!intree" => return Ok(Condition::Intree(false)),
            _ => {}
        }
        Err(format!(
            "unknown condition {w:?} (use uid=N, uid!=N, gid=N, comm=GLOB, cgroup=GLOB, \
             signed, !signed, signer=GLOB, intree, !intree)"
        ))
    }

    /// Whether it holds, in a rule that allows (`allow`) or denies.
    pub(super) fn holds(
        &self,
        allow: bool,
        who: Option<&Requester>,
        unknown_is_root: bool,
        provenance: Option<&Provenance>,
    ) -> bool {
        match (self, provenance) {
            (Condition::Signed(want), Some(p)) => p.signed == *want,
            (Condition::Signer(pat), Some(p)) => p.signed && pat.matches(&p.signer),
            (Condition::Intree(want), Some(p)) => p.intree == *want,
            // Unreadable provenance fails closed: deny rules apply.
            (c, None) if c.is_provenance() => !allow,
            _ => self.requester_holds(allow, who, unknown_is_root),
        }
    }

    fn requester_holds(&self, allow: bool, who: Option<&Requester>, unknown_is_root: bool) -> bool {
        match who {
            Some(r) => match self {
                Condition::Uid(u) => r.uid == *u,
                Condition::NotUid(u) => r.uid != *u,
                Condition::Gid(g) => r.gid == *g,
                Condition::Comm(p) => p.matches(&r.comm),
                Condition::Cgroup(p) => p.matches(&r.cgroup),
                _ => false,
            },
            None => {
                // Unknown requester: judged as root (uid 0) or as an
                // unprivileged user.  Other conditions cannot be judged:
                // as a user, deny rules apply and allow rules do not (fail
                // closed); as root, the other way round.
                let uid = if unknown_is_root { 0 } else { u32::MAX };
                match self {
                    Condition::Uid(u) => uid == *u,
                    Condition::NotUid(u) => uid != *u,
                    _ => allow == unknown_is_root,
                }
            }
        }
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Condition::Uid(u) => write!(f, "uid={u}"),
            Condition::NotUid(u) => write!(f, "uid!={u}"),
            Condition::Gid(g) => write!(f, "gid={g}"),
            Condition::Comm(p) => write!(f, "comm={p}"),
            Condition::Cgroup(p) => write!(f, "cgroup={p}"),
            Condition::Signed(true) => f.write_str("signed"),
            Condition::Signed(false) => f.write_str("!signed"),
            Condition::Signer(p) => write!(f, "signer={p}"),
            Condition::Intree(true) => f.write_str("intree"),
            Condition::Intree(false) => f.write_str("!intree"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_condition_reads_back_as_written() {
        for w in [
            "uid=0",
            "uid!=1000",
            "gid=27",
            "comm=mod*",
            "cgroup=/system.slice/*",
            "signed",
            "!signed",
            "signer=Build*",
            "intree",
            "!intree",
        ] {
            assert_eq!(Condition::parse(w).unwrap().to_string(), w);
        }
        assert!(Condition::parse("euid=0")
            .unwrap_err()
            .contains("unknown condition"));
        assert!(Condition::parse("signer=").unwrap_err().contains("signer"));
    }

    #[test]
    fn provenance_unread_fails_closed() {
        let c = Condition::parse("!signed").unwrap();
        assert!(c.holds(false, None, false, None), "deny rule applies");
        assert!(!c.holds(true, None, false, None), "allow rule does not");
        let p = Provenance {
            signed: true,
            signer: "Build time autogenerated kernel key".into(),
            ..Provenance::default()
        };
        assert!(!c.holds(false, None, false, Some(&p)));
        let s = Condition::parse("signer=Build*").unwrap();
        assert!(s.holds(true, None, false, Some(&p)));
    }
}
