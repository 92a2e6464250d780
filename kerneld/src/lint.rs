//! `kerneld --check-config` and `--print-config`: the configuration
//! checked offline as a linter, for people and for CI.
//!
//! Every error is reported, not only the first; with `--module-dir`,
//! module patterns that match no module of that tree are warnings (a typo
//! such as `deny module sctpp` denies nothing); `--json` gives one
//! document for CI annotations; `--print-config` shows the merged lines
//! with where each came from, as `sshd -T` and `modprobe -c` do.

use crate::config::{Checked, ConfigError};
use crate::policy::Target;
use kmod_ipc::escape::escape;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::io;
use std::path::Path;

/// The version of the JSON documents below: a new field keeps it, a
/// renamed, removed or changed one takes the next number.
pub const JSON_SCHEMA: u64 = 1;

/// Directory levels looked through for module files.
const MAX_DEPTH: usize = 16;

/// The module names of a module tree (`/lib/modules/VERSION`): every
/// `*.ko`, compressed or not, and the built-in ones, `-` read as `_`.
pub fn module_names(dir: &Path) -> io::Result<BTreeSet<String>> {
    let mut names = BTreeSet::new();
    std::fs::metadata(dir)?;
    collect(dir, 0, &mut names);
    if let Ok(builtin) = std::fs::read_to_string(dir.join("modules.builtin")) {
        for line in builtin.lines() {
            if let Some(n) = module_name(line) {
                names.insert(n);
            }
        }
    }
    if names.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            "no module files (*.ko) in it",
        ));
    }
    Ok(names)
}

/// `kernel/net/sctp/sctp.ko.xz` -> `sctp`.
fn module_name(path: &str) -> Option<String> {
    let file = path.rsplit('/').next()?;
    let (stem, _) = file.split_once(".ko")?;
    let rest = &file[stem.len() + 3..];
    (matches!(rest, "" | ".xz" | ".zst" | ".gz") && !stem.is_empty())
        .then(|| crate::names::normalise(stem).into_owned())
}

/// Walk without following links to directories (a loop would never end).
fn collect(dir: &Path, depth: usize, names: &mut BTreeSet<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let Ok(kind) = e.file_type() else { continue };
        if kind.is_dir() && depth < MAX_DEPTH {
            collect(&e.path(), depth + 1, names);
        } else if let Some(n) = module_name(&e.file_name().to_string_lossy()) {
            names.insert(n);
        }
    }
}

/// Module patterns of the policy (rules and `keep-module`) that match no
/// module in `names`: warnings, at the rule's line.
pub fn unmatched_module_patterns(checked: &Checked, names: &BTreeSet<String>) -> Vec<ConfigError> {
    let mut out = Vec::new();
    for rule in checked.config.policy.rules.iter() {
        if rule.target != Target::Module {
            continue;
        }
        for p in &rule.patterns {
            if !names.iter().any(|n| p.matches(n)) {
                let (file, line) = match rule.origin.rsplit_once(':') {
                    Some((f, l)) => (f.to_string(), l.parse().unwrap_or(0)),
                    None => (rule.origin.clone(), 0),
                };
                out.push(ConfigError {
                    file,
                    line,
                    problem: format!(
                        "module pattern {:?} matches no module of the tree ({rule})",
                        p.as_str()
                    ),
                });
            }
        }
    }
    for p in &checked.config.keep_modules {
        if !names.iter().any(|n| p.matches(n)) {
            out.push(ConfigError {
                file: checked
                    .config
                    .path
                    .as_ref()
                    .map_or_else(String::new, |p| p.display().to_string()),
                line: 0,
                problem: format!(
                    "keep-module pattern {:?} matches no module of the tree",
                    p.as_str()
                ),
            });
        }
    }
    out
}

fn problem_json(e: &ConfigError) -> Value {
    json!({ "file": e.file, "line": e.line, "problem": e.problem })
}

/// The `--check-config --json` document.
pub fn check_json(path: &Path, checked: &Checked, warnings: &[ConfigError]) -> Value {
    json!({
        "schema": JSON_SCHEMA,
        "config": path.display().to_string(),
        "present": checked.present,
        "ok": checked.errors.is_empty(),
        "rules": checked.config.policy.rules.len(),
        "errors": checked.errors.iter().map(problem_json).collect::<Vec<_>>(),
        "warnings": warnings.iter().map(problem_json).collect::<Vec<_>>(),
    })
}

/// The `--print-config` text: every setting and rule line in the order
/// kerneld reads them, each followed by its file and line.
pub fn print_text(path: &Path, checked: &Checked) -> String {
    let mut out = format!(
        "# {}: the lines kerneld reads, includes merged in place, each with its origin\n",
        escape(&path.display().to_string())
    );
    if !checked.present {
        out.push_str("# not present: built-in defaults, no policy rules\n");
    }
    for (file, n, text) in &checked.lines {
        out.push_str(&format!(
            "{}  # {}:{n}\n",
            escape(text),
            escape(&file.display().to_string())
        ));
    }
    out
}

/// The `--print-config --json` document.
pub fn print_json(path: &Path, checked: &Checked) -> Value {
    json!({
        "schema": JSON_SCHEMA,
        "config": path.display().to_string(),
        "present": checked.present,
        "lines": checked.lines.iter().map(|(file, n, text)| json!({
            "file": file.display().to_string(),
            "line": n,
            "text": text,
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_names_from_file_names() {
        assert_eq!(
            module_name("kernel/net/sctp/sctp.ko.xz").as_deref(),
            Some("sctp")
        );
        assert_eq!(module_name("can-raw.ko").as_deref(), Some("can_raw"));
        assert_eq!(module_name("x.ko.zst").as_deref(), Some("x"));
        assert_eq!(module_name("modules.dep"), None);
        assert_eq!(module_name("a.kobj"), None);
        assert_eq!(module_name(".ko"), None);
    }
}
