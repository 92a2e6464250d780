//! Shell wildcard patterns (`*`, `?`, `[...]`, `[!...]`), compiled once
//! when a rule or `keep-module` line is read rather than at every match.
//!
//! Matching is the `glob` crate's, with no special meaning for `/` (as
//! fnmatch(3) without flags, which kerneld used before): a `cgroup=`
//! pattern's `*` spans path components.  A run of `*` is one `*`.  A
//! module pattern treats `-` and `_` alike, as modprobe does.

use std::borrow::Cow;
use std::fmt;

/// One compiled pattern, with the text it was written as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pattern {
    source: Box<str>,
    glob: glob::Pattern,
    /// The pattern matches module names: `-` is `_` on both sides.
    module: bool,
}

impl Pattern {
    /// A pattern matched as written (requested names, `comm`, `cgroup`).
    pub(crate) fn new(source: &str) -> Result<Pattern, String> {
        Pattern::compile(source, false)
    }

    /// A pattern over module names, where `-` and `_` are the same.
    pub(crate) fn module(source: &str) -> Result<Pattern, String> {
        Pattern::compile(source, true)
    }

    fn compile(source: &str, module: bool) -> Result<Pattern, String> {
        let mut text = String::with_capacity(source.len());
        for c in source.chars() {
            let c = if module && c == '-' { '_' } else { c };
            if !(c == '*' && text.ends_with('*')) {
                text.push(c);
            }
        }
        let glob = glob::Pattern::new(&text)
            .map_err(|e| format!("{source:?} is not a valid pattern: {}", e.msg))?;
        Ok(Pattern {
            source: source.into(),
            glob,
            module,
        })
    }

    /// Whether `name` matches.  Allocates only for a module name with a
    /// `-` (libkmod's module names have none).
    pub(crate) fn matches(&self, name: &str) -> bool {
        let name = if self.module {
            crate::names::normalise(name)
        } else {
            Cow::Borrowed(name)
        };
        self.glob.matches(&name)
    }

    /// The pattern as written.
    pub(crate) fn as_str(&self) -> &str {
        &self.source
    }

    /// Literal characters: more means more specific; a pattern without
    /// wildcards beats any with them.
    pub(crate) fn specificity(&self) -> usize {
        let p = &*self.source;
        p.chars()
            .filter(|c| !matches!(c, '*' | '?' | '[' | ']'))
            .count()
            + if p.contains(['*', '?', '[']) { 0 } else { 1000 }
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl PartialEq<&str> for Pattern {
    fn eq(&self, other: &&str) -> bool {
        &*self.source == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, name: &str) -> bool {
        Pattern::new(p).unwrap().matches(name)
    }

    #[test]
    fn shell_wildcards() {
        assert!(m("net-pf-*", "net-pf-33"));
        assert!(!m("net-pf-*", "net-pf"));
        assert!(m("net-pf-?", "net-pf-3"));
        assert!(!m("net-pf-?", "net-pf-33"));
        assert!(m("snd-[a-c]*", "snd-bt87x"));
        assert!(!m("snd-[!a-c]*", "snd-bt87x"));
        assert!(m("exact", "exact"));
        assert!(!m("exact", "exactly"));
        assert!(m("a**b", "a-x-b"), "a run of * is one *");
        // No special `/`, as fnmatch(3) without FNM_PATHNAME.
        assert!(m("/system.slice/*", "/system.slice/a/b.service"));
        assert!(m("*", ""));
    }

    #[test]
    fn module_patterns_treat_dash_and_underscore_alike() {
        let p = Pattern::module("snd-hda-*").unwrap();
        assert!(p.matches("snd_hda_intel"));
        assert!(p.matches("snd-hda_intel"));
        assert!(!Pattern::new("snd-hda-*").unwrap().matches("snd_hda_intel"));
        assert_eq!(p.as_str(), "snd-hda-*");
        assert_eq!(p.to_string(), "snd-hda-*");
    }

    #[test]
    fn invalid_patterns_say_so() {
        let e = Pattern::new("a[b").unwrap_err();
        assert!(e.contains("not a valid pattern"), "{e}");
    }

    #[test]
    fn specificity_counts_literals() {
        let s = |p: &str| Pattern::new(p).unwrap().specificity();
        assert!(s("net-pf-3*") > s("net-pf-*"));
        assert!(s("x") > s("a-very-long-pattern-*"));
    }
}
