//! kdstat: show the running kerneld's status and change its settings live.
//!
//! As in 1995 it sends one word as a message of type 255 (status/control)
//! and waits for the answer on reply id 1024 + its pid.

use clap::Parser;
use kdstat::cli::KdstatArgs as Args;
use kdstat::{with_newline, Failure, Timeout};
use kmod_ipc::{Client, Key, MsgType, DEFAULT_KEY};
use std::io::{ErrorKind, Write};
use std::time::Duration;

fn main() {
    let args = Args::parse();
    let key = args.key.unwrap_or(DEFAULT_KEY);
    if let Some(interval) = args.watch {
        watch(key, interval, args.timeout);
    }
    let result = if args.json {
        ask(key, "json", args.timeout).and_then(|text| {
            // The promise of --json is a document that parses.
            serde_json::from_slice::<serde_json::Value>(&text)
                .map(|_| text)
                .map_err(|e| Failure {
                    message: format!("kerneld sent a status that is not valid JSON: {e}"),
                    code: kdstat::EXIT_FAILURE,
                })
        })
    } else {
        ask(key, &args.word.join(" "), args.timeout)
    };
    match result {
        Ok(text) => print_out(&with_newline(&text)),
        Err(f) => f.exit("kdstat"),
    }
}

/// Send one word and return the text of a successful answer.
fn ask(key: Key, word: &str, timeout: Timeout) -> Result<Vec<u8>, Failure> {
    let client = Client::connect(key)?;
    let reply = client.request(
        MsgType::Status,
        word.as_bytes(),
        Client::tool_reply_id(),
        timeout.0,
    )?;
    if reply.status != 0 {
        let text = reply.text_lossy();
        let text = text.trim_end();
        return Err(Failure {
            message: if text.is_empty() {
                format!("kerneld refused {word:?} (status {})", reply.status)
            } else {
                text.to_string()
            },
            code: kdstat::EXIT_FAILURE,
        });
    }
    Ok(reply.text)
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

/// Redraw the status every `interval` until SIGINT, like top.  A failure
/// before the first frame exits with its status; later ones are shown in
/// place and retried, since kerneld may just be restarting.
fn watch(key: Key, interval: Duration, timeout: Timeout) -> ! {
    // SAFETY: installs an async-signal-safe handler for SIGINT.
    unsafe {
        libc::signal(
            libc::SIGINT,
            exit_on_interrupt as *const () as libc::sighandler_t,
        );
    }
    let mut first = true;
    loop {
        let body = match ask(key, "status", timeout) {
            Ok(text) => with_newline(&text),
            Err(f) if first => f.exit("kdstat"),
            Err(f) => format!("kdstat: {}\n", f.message),
        };
        first = false;
        // Home the cursor and clear the screen, then draw the frame.
        print_out(&format!(
            "\x1b[H\x1b[2JEvery {:.1}s: kerneld at key {key}    {}\n\n{body}",
            interval.as_secs_f64(),
            local_time()
        ));
        std::thread::sleep(interval);
    }
}

/// The local time as `YYYY-MM-DD HH:MM:SS`.
fn local_time() -> String {
    let mut buf = [0u8; 64];
    // SAFETY: time, localtime_r and strftime get valid pointers; strftime
    // writes at most buf.len() bytes and returns how many.
    let n = unsafe {
        let now = libc::time(std::ptr::null_mut());
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&now, &mut tm).is_null() {
            return String::new();
        }
        libc::strftime(
            buf.as_mut_ptr() as *mut libc::c_char,
            buf.len(),
            c"%Y-%m-%d %H:%M:%S".as_ptr(),
            &tm,
        )
    };
    String::from_utf8_lossy(&buf[..n]).into_owned()
}
