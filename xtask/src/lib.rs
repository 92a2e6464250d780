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

/// Every completion file: relative path and contents.
pub fn completions() -> Vec<(PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    for mut cmd in commands() {
        let name = cmd.get_name().to_string();
        for shell in SHELLS {
            let mut buf = Vec::new();
            clap_complete::generate(shell, &mut cmd, &name, &mut buf);
            files.push((completion_path(shell, &name), buf));
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
