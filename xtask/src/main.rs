//! `xtask completions [--check] DIR`: write the shell completions of
//! kerneld, kdstat and kdsend under DIR, or check that those there are
//! current (see the library's documentation).

use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "usage: xtask completions [--check] DIR";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (check, dir) = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["completions", dir] => (false, dir),
        ["completions", "--check", dir] => (true, dir),
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
    if check {
        let stale = xtask::stale_completions(&dir);
        if stale.is_empty() {
            return ExitCode::SUCCESS;
        }
        for s in stale {
            eprintln!("xtask: {} is missing or out of date", dir.join(s).display());
        }
        return ExitCode::FAILURE;
    }
    match xtask::write_completions(&dir) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: writing completions under {}: {e}", dir.display());
            ExitCode::FAILURE
        }
    }
}
