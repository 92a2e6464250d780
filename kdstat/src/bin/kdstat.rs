//! kdstat: show the running kerneld's status and change its settings live.
//!
//! As in 1995 it sends one word as a message of type 255 (status/control)
//! and waits for the answer on reply id 1024 + its pid.

use clap::Parser;
use kdstat::cli::KdstatArgs as Args;
use kdstat::{json_text, with_newline, Failure, Timeout};
use kmod_ipc::{Client, Key, MsgType, DEFAULT_KEY};
use std::io::{ErrorKind, Write};
use std::time::Duration;

fn main() {
    let args = Args::parse();
    let key = args.key.unwrap_or(DEFAULT_KEY);
    if let Some(interval) = args.watch {
        watch(key, interval, args.timeout, args.json);
    }
    let word = args.word.join(" ");
    let result = if args.word.first().is_some_and(|w| w == "why") {
        why(key, &args.word[1..], args.json, args.timeout)
    } else if args.json && !args.word.is_empty() {
        Err(Failure {
            message: format!(
                "--json goes with the status or `why MODULE`, not with {word:?}: \
                 run `kdstat {word}` without --json"
            ),
            code: kdstat::EXIT_USAGE,
        })
    } else if args.prometheus {
        ask_json(key, args.timeout)
            .map(with_shim_json)
            .and_then(|t| prometheus(&t))
    } else if args.json {
        ask_json(key, args.timeout)
            .map(with_shim_json)
            .map(|t| json_text(&t))
    } else if word.is_empty() {
        ask(key, &word, args.timeout).map(with_shim_text)
    } else {
        ask(key, &word, args.timeout)
    };
    match result {
        Ok(text) => print_out(&with_newline(&text)),
        Err(f) => f.exit("kdstat"),
    }
}

/// The status, and the in-kernel sender's settings and counters when the
/// kerneld_shim module is loaded.
fn with_shim_text(mut text: Vec<u8>) -> Vec<u8> {
    if let Some(s) = kdstat::shim::Shim::read_loaded() {
        text = with_newline(&text).into_bytes();
        text.extend_from_slice(s.text().as_bytes());
    }
    text
}

/// The JSON status, with `"kernel_shim"` when the module is loaded.
fn with_shim_json(text: Vec<u8>) -> Vec<u8> {
    let Some(s) = kdstat::shim::Shim::read_loaded() else {
        return text;
    };
    match serde_json::from_slice::<serde_json::Value>(&text) {
        Ok(serde_json::Value::Object(mut m)) => {
            m.insert("kernel_shim".into(), s.json());
            serde_json::Value::Object(m).to_string().into_bytes()
        }
        _ => text,
    }
}

/// The JSON status (with `kernel_shim`) in the Prometheus text format.
fn prometheus(text: &[u8]) -> Result<Vec<u8>, Failure> {
    let fail = |message: String| Failure {
        message,
        code: kdstat::EXIT_FAILURE,
    };
    let doc: serde_json::Value = serde_json::from_slice(text)
        .map_err(|e| fail(format!("kerneld sent a status that is not valid JSON: {e}")))?;
    kdstat::prometheus::render(&doc, true, kdstat::prometheus::helper_is_shim())
        .map(String::into_bytes)
        .map_err(fail)
}

/// Send one word and return the text of a successful answer.
fn ask(key: Key, word: &str, timeout: Timeout) -> Result<Vec<u8>, Failure> {
    let client = Client::connect(key)?;
    let reply = kdstat::request(&client, MsgType::Status, word.as_bytes(), timeout.0)?;
    if reply.status != 0 {
        let text = reply.text_lossy();
        let text = text.trim_end();
        return Err(Failure {
            message: if text.is_empty() {
                format!("kerneld refused {word:?} (status {})", reply.status)
            } else {
                kmod_ipc::escape::escape_lines(text).into_owned()
            },
            code: kdstat::EXIT_FAILURE,
        });
    }
    Ok(reply.text)
}

/// `why MODULE`: the daemon's answer, text or JSON (checked to parse).
fn why(key: Key, names: &[String], json: bool, timeout: Timeout) -> Result<Vec<u8>, Failure> {
    let [name] = names else {
        return Err(Failure {
            message: "why takes one module name: kdstat why MODULE (e.g. kdstat why bridge)".into(),
            code: kdstat::EXIT_USAGE,
        });
    };
    if !json {
        return ask(key, &format!("why {name}"), timeout);
    }
    let text = ask(key, &format!("why {name} json"), timeout)?;
    match serde_json::from_slice::<serde_json::Value>(&text) {
        Ok(_) => Ok(json_text(&text)),
        Err(e) => Err(Failure {
            message: format!("kerneld sent a why answer that is not valid JSON: {e}"),
            code: kdstat::EXIT_FAILURE,
        }),
    }
}

/// Ask for the JSON status; the promise of --json is a document that
/// parses.
fn ask_json(key: Key, timeout: Timeout) -> Result<Vec<u8>, Failure> {
    let text = ask(key, "json", timeout)?;
    match serde_json::from_slice::<serde_json::Value>(&text) {
        Ok(_) => Ok(text),
        Err(e) => Err(Failure {
            message: format!("kerneld sent a status that is not valid JSON: {e}"),
            code: kdstat::EXIT_FAILURE,
        }),
    }
}

/// The document on one line, for a JSON-lines stream: as sent when it is
/// one line already (kerneld sends it so), else re-serialized compactly.
fn one_line(text: &[u8]) -> String {
    let s = String::from_utf8_lossy(text);
    let s = s.trim_end();
    if !s.contains('\n') {
        return format!("{s}\n");
    }
    match serde_json::from_str::<serde_json::Value>(s) {
        Ok(v) => format!("{v}\n"),
        Err(_) => format!("{}\n", s.replace('\n', " ")),
    }
}

/// Write to stdout; a closed pipe (`kdstat | head`) ends the program
/// quietly instead of panicking as `print!` would.
fn print_out(s: &str) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(s.as_bytes()).and_then(|()| out.flush()) {
        if e.kind() != ErrorKind::BrokenPipe {
            eprintln!("kdstat: writing the output: {e}");
        }
        std::process::exit(kdstat::EXIT_FAILURE);
    }
}

extern "C" fn exit_on_interrupt(_: libc::c_int) {
    // SAFETY: _exit is async-signal-safe.  Every frame is flushed when
    // drawn, so nothing is lost by leaving straight from the handler, and
    // this also breaks a wait for the daemon's answer at once.
    unsafe { libc::_exit(0) }
}

/// Print the status every `interval` until SIGINT.  On a terminal each
/// frame replaces the last, like top; into a pipe or file the frames
/// follow one another, without escape sequences, each after a heading
/// line.  With `json`, one JSON document per interval, one per line.
/// A failure before the first frame exits with its status; later ones
/// are reported (in the frame, or on stderr with `json`) and retried,
/// since kerneld may just be restarting.
fn watch(key: Key, interval: Duration, timeout: Timeout, json: bool) -> ! {
    // SAFETY: installs an async-signal-safe handler for SIGINT.
    unsafe {
        libc::signal(
            libc::SIGINT,
            exit_on_interrupt as *const () as libc::sighandler_t,
        );
    }
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let mut first = true;
    loop {
        if json {
            match ask_json(key, timeout) {
                Ok(text) => print_out(&one_line(&json_text(&with_shim_json(text)))),
                Err(f) if first => f.exit("kdstat"),
                Err(f) => eprintln!("kdstat: {}", f.message),
            }
        } else {
            let body = match ask(key, "status", timeout) {
                Ok(text) => with_newline(&with_shim_text(text)),
                Err(f) if first => f.exit("kdstat"),
                Err(f) => format!("kdstat: {}\n", f.message),
            };
            let heading = format!(
                "Every {:.1}s: kerneld at key {key}    {}",
                interval.as_secs_f64(),
                kmod_ipc::local_now().unwrap_or_default()
            );
            if terminal {
                // Home the cursor and clear the screen, then draw the frame.
                print_out(&format!("\x1b[H\x1b[2J{heading}\n\n{body}"));
            } else {
                // Frames one after the other, a blank line between them.
                let sep = if first { "" } else { "\n" };
                print_out(&format!("{sep}{heading}\n\n{body}"));
            }
        }
        first = false;
        std::thread::sleep(interval);
    }
}
