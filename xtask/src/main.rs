//! `xtask completions [--check] DIR`: write the shell completions of
//! kerneld, kdstat and kdsend under DIR, or check that those there are
//! current; `xtask schemas [--check] DIR`: the same for the JSON Schemas
//! of kerneld's documents (see the library's documentation).

use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "usage: xtask completions|schemas [--check] DIR";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (what, check, dir) = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        [what @ ("completions" | "schemas"), dir] => (what, false, dir),
        [what @ ("completions" | "schemas"), "--check", dir] => (what, true, dir),
        ["--help"] | ["-h"] => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let dir = PathBuf::from(dir);
    let (stale, write): (fn(&std::path::Path) -> Vec<PathBuf>, _) = if what == "schemas" {
        (
            xtask::schema::stale_schemas,
            xtask::schema::write_schemas as fn(&std::path::Path) -> std::io::Result<()>,
        )
    } else {
        (xtask::stale_completions, xtask::write_completions)
    };
    if check {
        let stale = stale(&dir);
        if stale.is_empty() {
            return ExitCode::SUCCESS;
        }
        for s in stale {
            eprintln!("xtask: {} is missing or out of date", dir.join(s).display());
        }
        return ExitCode::FAILURE;
    }
    match write(&dir) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: writing {what} under {}: {e}", dir.display());
            ExitCode::FAILURE
        }
    }
}
