//! Files generated from the programs' clap definitions, so that they
//! cannot drift from the code: shell completions for kerneld, kdstat and
//! kdsend (bash, zsh, fish); and the JSON Schemas of kerneld's documents,
//! from their types (see [`schema`]).
//!
//! They are committed in `dist/completions/` (installed from there by
//! `dist/install.sh`, so an install needs no generator), and a test of
//! this crate fails when the committed files differ from what the current
//! code generates.  Regenerate them with
//! `cargo run -p xtask -- completions dist/completions`.

pub mod schema;

use clap::builder::PossibleValuesParser;
use clap::{Command, CommandFactory, ValueHint};
use clap_complete::Shell;
use kmod_ipc::MsgType;
use std::path::{Path, PathBuf};

/// The programs with a clap command line, as the completions see them:
/// their own clap commands with hints added for the shells (which values
/// a word may take, which options take a directory, a file or neither).
/// The hints change only what is offered on Tab, never what is accepted.
pub fn commands() -> Vec<Command> {
    let kerneld = hint(
        kerneld::cli::Cli::command(),
        &[
            (
                "words",
                Hint::Values(vec!["debug", "keep", "delay=", "type="]),
            ),
            ("delay", Hint::Path(ValueHint::Other)),
            ("msg_type", Hint::Path(ValueHint::Other)),
            ("key", Hint::Path(ValueHint::Other)),
            ("config", Hint::Path(ValueHint::FilePath)),
            ("shim", Hint::Path(ValueHint::ExecutablePath)),
            ("module_dir", Hint::Path(ValueHint::DirPath)),
            ("modprobe_d", Hint::Path(ValueHint::DirPath)),
            ("state_dir", Hint::Path(ValueHint::DirPath)),
        ],
    );
    let kdstat = hint(
        kdstat::cli::KdstatArgs::command(),
        &[
            (
                "word",
                Hint::Values(vec![
                    "status",
                    "debug",
                    "nodebug",
                    "keep",
                    "nokeep",
                    "delay=",
                    "flush",
                    "policy",
                    "mode=enforce",
                    "mode=audit",
                    "allow",
                    "deny",
                    "why",
                ]),
            ),
            ("watch", Hint::Path(ValueHint::Other)),
            ("key", Hint::Path(ValueHint::Other)),
            ("timeout", Hint::Path(ValueHint::Other)),
        ],
    );
    // Every name kdsend's TYPE takes for a known type, from the protocol
    // library itself.
    let type_names: Vec<&'static str> = MsgType::KNOWN
        .iter()
        .map(|t| t.name())
        .chain(["status"])
        .collect();
    let kdsend = hint(
        kdstat::cli::KdsendArgs::command(),
        &[
            ("mtype", Hint::Values(type_names)),
            ("message", Hint::Path(ValueHint::Other)),
            ("key", Hint::Path(ValueHint::Other)),
            ("timeout", Hint::Path(ValueHint::Other)),
        ],
    );
    vec![kerneld, kdstat, kdsend]
}

enum Hint {
    /// Offer these words.
    Values(Vec<&'static str>),
    /// What kind of value the shell should offer (files, directories, none).
    Path(ValueHint),
}

/// Add completion hints to the arguments of `cmd`, by argument id; an id
/// that no longer exists is a bug here (the test catches it).
fn hint(mut cmd: Command, hints: &[(&str, Hint)]) -> Command {
    for (id, h) in hints {
        assert!(
            cmd.get_arguments().any(|a| a.get_id() == id),
            "{}: no argument {id:?} to give a completion hint",
            cmd.get_name()
        );
        cmd = cmd.mut_arg(*id, |a| match h {
            Hint::Values(v) => a.value_parser(PossibleValuesParser::new(v.clone())),
            Hint::Path(p) => a.value_hint(*p),
        });
    }
    cmd
}

/// The shells completions are made for.
pub const SHELLS: [Shell; 3] = [Shell::Bash, Shell::Zsh, Shell::Fish];

/// Where a program's completion for a shell lives, relative to the
/// completions directory: `bash/NAME`, `zsh/_NAME`, `fish/NAME.fish`
/// (the names each shell looks for).
pub fn completion_path(shell: Shell, program: &str) -> PathBuf {
    let file = match shell {
        Shell::Zsh => format!("_{program}"),
        Shell::Fish => format!("{program}.fish"),
        _ => program.to_string(),
    };
    Path::new(&shell.to_string()).join(file)
}

/// Words such as `delay=` want their value right after them, but the
/// generated bash and zsh scripts add a space after every word (fish
/// leaves none after `=` by itself).  Bash: `compopt -o nospace` when the
/// one completion ends in `=`; zsh: those words are offered with an
/// empty suffix.
fn no_space_after_eq(shell: Shell, script: Vec<u8>) -> Vec<u8> {
    let Ok(text) = String::from_utf8(script.clone()) else {
        return script;
    };
    let text = match shell {
        Shell::Bash => {
            let line = r#"COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )"#;
            text.replace(
                line,
                &format!(
                    r#"{line}; [[ ${{#COMPREPLY[@]}} -eq 1 && ${{COMPREPLY[0]}} == *= ]] && compopt -o nospace"#
                ),
            )
        }
        Shell::Zsh => {
            text.lines()
                .map(|l| zsh_words(l).unwrap_or_else(|| l.to_string()))
                .collect::<Vec<_>>()
                .join("\n")
                + "\n"
        }
        _ => text,
    };
    text.into_bytes()
}

/// The generated fish script offers no positional words: add kerneld's
/// and kdstat's word lists (`debug keep delay= type=`, `status ... why`).
/// kdsend's positionals (a type, then free text) are left to the user.
fn fish_words(cmd: &Command, buf: &mut Vec<u8>) {
    if cmd.get_name() == "kdsend" {
        return;
    }
    for arg in cmd.get_positionals() {
        let words: Vec<String> = arg
            .get_possible_values()
            .iter()
            .map(|v| v.get_name().to_string())
            .collect();
        if !words.is_empty() {
            buf.extend_from_slice(
                format!(
                    "complete -c {} -f -a '{}'\n",
                    cmd.get_name(),
                    words.join(" ")
                )
                .as_bytes(),
            );
        }
    }
}

/// A zsh `_arguments` spec ending in `:(WORDS)'` where some words end in
/// `=`: those offered without a suffix, the others as before.
fn zsh_words(line: &str) -> Option<String> {
    let body = line.strip_suffix(")' \\")?;
    let open = body.rfind(":(")?;
    let words: Vec<&str> = body[open + 2..].split_whitespace().collect();
    let (eq, plain): (Vec<&str>, Vec<&str>) = words.iter().partition(|w| w.ends_with('='));
    if eq.is_empty() {
        return None;
    }
    Some(format!(
        "{}:{{compadd -- {}; compadd -S \"\" -- {}}}' \\",
        &body[..open],
        plain.join(" "),
        eq.join(" ")
    ))
}

/// Every completion file: relative path and contents.
pub fn completions() -> Vec<(PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    for mut cmd in commands() {
        let name = cmd.get_name().to_string();
        for shell in SHELLS {
            let mut buf = Vec::new();
            clap_complete::generate(shell, &mut cmd, &name, &mut buf);
            if shell == Shell::Fish {
                fish_words(&cmd, &mut buf);
            }
            files.push((completion_path(shell, &name), no_space_after_eq(shell, buf)));
        }
    }
    files
}

/// Write the completions under `dir`.
pub fn write_completions(dir: &Path) -> std::io::Result<()> {
    for (rel, text) in completions() {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(path, text)?;
    }
    Ok(())
}

/// Compare the completions under `dir` with the generated ones: the
/// relative paths of files that are missing or differ.
pub fn stale_completions(dir: &Path) -> Vec<PathBuf> {
    completions()
        .into_iter()
        .filter(|(rel, text)| std::fs::read(dir.join(rel)).ok().as_ref() != Some(text))
        .map(|(rel, _)| rel)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn committed() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../dist/completions")
    }

    #[test]
    fn committed_completions_are_current() {
        let stale = stale_completions(&committed());
        assert!(
            stale.is_empty(),
            "dist/completions is out of date with the programs' options ({stale:?}); \
             regenerate with `cargo run -p xtask -- completions dist/completions`"
        );
    }

    #[test]
    fn no_stray_files_among_the_committed_completions() {
        let expected: Vec<PathBuf> = completions().into_iter().map(|(p, _)| p).collect();
        for shell in SHELLS {
            let dir = committed().join(shell.to_string());
            for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{dir:?}: {e}")) {
                let rel = Path::new(&shell.to_string()).join(entry.unwrap().file_name());
                assert!(
                    expected.contains(&rel),
                    "{rel:?} in dist/completions is not generated by xtask; remove it"
                );
            }
        }
    }

    #[test]
    fn words_ending_in_eq_take_no_space_and_why_is_offered() {
        for (rel, text) in completions() {
            let text = String::from_utf8(text).unwrap();
            let rel = rel.to_string_lossy().to_string();
            if rel.contains("kdsend") {
                continue;
            }
            if rel.starts_with("bash") {
                assert!(text.contains("== *= ]] && compopt -o nospace"), "{rel}");
            }
            if rel.starts_with("zsh") {
                assert!(text.contains(r#"compadd -S "" -- delay="#), "{rel}");
                assert!(
                    !text
                        .lines()
                        .any(|l| l.contains(":(") && l.contains(" delay=")),
                    "{rel}"
                );
            }
            if rel.contains("kdstat") {
                assert!(text.contains("why"), "{rel} lacks why");
            }
        }
    }

    #[test]
    fn hints_name_existing_arguments() {
        // hint() asserts that every argument it is given exists.
        assert_eq!(commands().len(), 3);
    }

    #[test]
    fn every_long_option_is_completed() {
        for (rel, text) in completions() {
            let text = String::from_utf8(text).unwrap();
            let program = commands()
                .into_iter()
                .find(|c| rel.to_string_lossy().contains(c.get_name()))
                .unwrap();
            for arg in program.get_arguments() {
                if let Some(long) = arg.get_long() {
                    assert!(text.contains(long), "{rel:?} lacks --{long}");
                }
            }
        }
    }
}
