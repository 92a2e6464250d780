//! Requests answered by running programs: system (1), request route (6),
//! screen blanker (7), pnp (8) and arp (256).
//!
//! No program ever runs through a shell.  Type 1 ran any command in 1995;
//! here it is refused unless the exact command line is listed in the
//! configuration.  Message text given to a program is one argument,
//! checked to be printable ASCII first.

use crate::config::Config;
use crate::work::outcome::Outcome;
use kmod_ipc::MsgType;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;

/// Output returned to a type-1 caller is capped.
const OUTPUT_MAX: usize = 64 * 1024;

/// A request answered by running a program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Program {
    System,
    Route,
    Blanker,
    Pnp,
    Arp,
}

impl Program {
    /// The message type that asks for it.
    pub(crate) fn msg_type(self) -> MsgType {
        match self {
            Program::System => MsgType::System,
            Program::Route => MsgType::RequestRoute,
            Program::Blanker => MsgType::Blanker,
            Program::Pnp => MsgType::Pnp,
            Program::Arp => MsgType::Arp,
        }
    }
}

pub(crate) struct Programs {
    blanker: Mutex<Option<Child>>,
}

fn executable(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Text passed as an argument: printable ASCII, no leading dash, bounded.
fn checked_arg(text: &str) -> Result<&str, String> {
    if text.is_empty() || text.len() > 255 {
        return Err("argument must be 1 to 255 bytes".into());
    }
    if text.starts_with('-') {
        return Err("argument must not start with '-'".into());
    }
    if let Some(c) = text.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(format!("argument contains {c:?}"));
    }
    Ok(text)
}

fn run_program(program: &Path, args: &[&str]) -> Outcome {
    if !executable(program) {
        return Outcome::fail(format!(
            "{} is not an executable program",
            program.display()
        ));
    }
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output();
    match out {
        Ok(o) => {
            let mut text =
                String::from_utf8_lossy(&o.stdout[..o.stdout.len().min(OUTPUT_MAX)]).into_owned();
            if o.stdout.len() > OUTPUT_MAX {
                text.push_str("\n[output truncated]\n");
            }
            Outcome {
                status: o.status.code().map_or(1, i64::from),
                text,
            }
        }
        Err(e) => Outcome::fail(format!("cannot run {}: {e}", program.display())),
    }
}

impl Programs {
    pub(crate) fn new(_cfg: &Config) -> Programs {
        Programs {
            blanker: Mutex::new(None),
        }
    }

    pub(crate) fn run(&self, program: Program, text: &str, cfg: &Config) -> Outcome {
        let kind = program.msg_type();
        let out = match program {
            Program::System => self.system(text, cfg),
            Program::Route => match checked_arg(text) {
                Ok(a) => run_program(&cfg.route_program, &[a]),
                Err(e) => Outcome::fail(format!("request_route refused: {e}")),
            },
            Program::Blanker => self.blanker(text, cfg),
            Program::Pnp | Program::Arp => {
                let program = if program == Program::Pnp {
                    &cfg.pnp_program
                } else {
                    &cfg.arp_program
                };
                match (program, checked_arg(text)) {
                    (None, _) => Outcome::fail(format!(
                        "{} requests are unsupported: no {}-program is configured in kerneld.conf",
                        kind.name(),
                        kind.name()
                    )),
                    (Some(_), Err(e)) => Outcome::fail(format!("{} refused: {e}", kind.name())),
                    (Some(p), Ok(a)) => run_program(p, &[a]),
                }
            }
        };
        let line = format!("{} '{text}': status {}", kind.name(), out.status);
        if out.status == 0 {
            crate::operator::log::info(&line);
        } else {
            crate::operator::log::warn(&format!(
                "{line}: {}",
                out.text.lines().next().unwrap_or("")
            ));
        }
        out
    }

    fn system(&self, text: &str, cfg: &Config) -> Outcome {
        let wanted = text.trim();
        if cfg.system_commands.is_empty() {
            return Outcome::fail(
                "system requests (type 1) are disabled: kerneld runs no commands from messages. \
                 To allow one, list it exactly in kerneld.conf as `system-command = COMMAND ARGS`",
            );
        }
        if !cfg.system_commands.iter().any(|c| c == wanted) {
            return Outcome::fail(format!(
                "system request refused: {wanted:?} is not a listed system-command"
            ));
        }
        let argv: Vec<&str> = wanted.split_whitespace().collect();
        run_program(Path::new(argv[0]), &argv[1..])
    }

    fn blanker(&self, text: &str, cfg: &Config) -> Outcome {
        let mut slot = self.blanker.lock().unwrap();
        match text.trim() {
            "on" => {
                if let Some(c) = slot.as_mut() {
                    if matches!(c.try_wait(), Ok(None)) {
                        return Outcome::ok("screen blanker already running");
                    }
                }
                if !executable(&cfg.blanker_program) {
                    return Outcome::fail(format!(
                        "{} is not an executable program",
                        cfg.blanker_program.display()
                    ));
                }
                match Command::new(&cfg.blanker_program)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                {
                    Ok(c) => {
                        *slot = Some(c);
                        Outcome::ok("screen blanker started")
                    }
                    Err(e) => Outcome::fail(format!("cannot start the screen blanker: {e}")),
                }
            }
            // No blanker running is a failure, status 1, as in 1995; one
            // that has exited on its own is not running either.
            "off" => match slot
                .take()
                .and_then(|mut c| matches!(c.try_wait(), Ok(None)).then_some(c))
            {
                Some(mut c) => {
                    // Our own child, not yet reaped: the pid is still its.
                    let pid = nix::unistd::Pid::from_raw(c.id() as i32);
                    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGQUIT);
                    // A blanker that ignores SIGQUIT is killed after 2 s,
                    // so that a worker never waits for ever.
                    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
                    while matches!(c.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
                        std::thread::sleep(std::time::Duration::from_millis(10));
                    }
                    if matches!(c.try_wait(), Ok(None)) {
                        let _ = c.kill();
                    }
                    let _ = c.wait();
                    Outcome::ok("screen blanker stopped")
                }
                None => Outcome::fail("screen blanker was not running"),
            },
            other => Outcome::fail(format!("blanker takes \"on\" or \"off\", not {other:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_is_refused_unless_listed() {
        let p = Programs::new(&Config::default());
        let mut cfg = Config::default();
        let o = p.run(Program::System, "ls", &cfg);
        assert_eq!(o.status, 1);
        assert!(o.text.contains("disabled"));
        cfg.system_commands.push("/bin/echo hello".into());
        assert_eq!(p.run(Program::System, "/bin/echo bye", &cfg).status, 1);
        let o = p.run(Program::System, "/bin/echo hello", &cfg);
        assert_eq!(o, Outcome::ok("hello\n"));
    }

    #[test]
    fn route_program_gets_one_checked_argument() {
        let mut cfg = Config {
            route_program: "/bin/echo".into(),
            ..Config::default()
        };
        let p = Programs::new(&cfg);
        assert_eq!(
            p.run(Program::Route, "10.0.0.1", &cfg),
            Outcome::ok("10.0.0.1\n")
        );
        assert_eq!(p.run(Program::Route, "-x", &cfg).status, 1);
        assert_eq!(p.run(Program::Route, "a b", &cfg).status, 1);
        cfg.route_program = "/nonexistent".into();
        assert!(p
            .run(Program::Route, "10.0.0.1", &cfg)
            .text
            .contains("not an executable"));
    }

    #[test]
    fn blanker_off_without_a_blanker_is_status_1_as_in_1995() {
        let cfg = Config {
            blanker_program: "/bin/true".into(),
            ..Config::default()
        };
        let p = Programs::new(&cfg);
        assert_eq!(
            p.run(Program::Blanker, "off", &cfg),
            Outcome::fail("screen blanker was not running")
        );
        // One that has exited on its own is not running either.
        assert_eq!(p.run(Program::Blanker, "on", &cfg).status, 0);
        let mut child = p.blanker.lock().unwrap().take().unwrap();
        child.wait().unwrap();
        *p.blanker.lock().unwrap() = Some(child);
        assert_eq!(
            p.run(Program::Blanker, "off", &cfg),
            Outcome::fail("screen blanker was not running")
        );
    }

    #[test]
    fn pnp_and_arp_are_unsupported_unless_configured() {
        let cfg = Config::default();
        let p = Programs::new(&cfg);
        let o = p.run(Program::Pnp, "x", &cfg);
        assert!(o.text.contains("unsupported"));
        assert_eq!(p.run(Program::Arp, "x", &cfg).status, 1);
    }
}
