//! kdsend: put one kerneld message on the queue, as the kernel would, for
//! testing a daemon by hand (modutils shipped one for the same purpose).

use clap::Parser;
use kdstat::cli::KdsendArgs as Args;
use kdstat::{with_newline, Failure};
use kmod_ipc::{Client, Header, DEFAULT_KEY, MAX_DAEMON_TYPE};
use std::io::{ErrorKind, Write};
use std::os::unix::ffi::OsStrExt;

fn main() {
    let args = Args::parse();
    if let Err(f) = run(&args) {
        f.exit("kdsend");
    }
}

fn run(args: &Args) -> Result<(), Failure> {
    let key = args.key.unwrap_or(DEFAULT_KEY);
    let text = args.message.as_deref().unwrap_or_default().as_bytes();
    if args.mtype.number() > MAX_DAEMON_TYPE {
        eprintln!(
            "kdsend: warning: kerneld only receives types up to {MAX_DAEMON_TYPE}; \
             this message will wait in the queue"
        );
    }
    let mut client = Client::connect(key)?;
    if args.old_header {
        client = client.with_header(Header::Old);
    }
    if !args.reply && !args.exit_status {
        client.send(args.mtype, text, 0)?;
        return Ok(());
    }
    let reply = kdstat::request(&client, args.mtype, text, args.timeout.0)?;
    let out = format!("status {}\n{}", reply.status, with_newline(&reply.text));
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(out.as_bytes())
        .and_then(|()| stdout.flush())
    {
        // -e: the answer's status decides, as modprobe's exit status.
        Ok(()) if args.exit_status && reply.status != 0 => std::process::exit(kdstat::EXIT_FAILURE),
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::BrokenPipe => std::process::exit(kdstat::EXIT_FAILURE),
        Err(e) => Err(Failure {
            message: format!("writing the reply: {e}"),
            code: kdstat::EXIT_FAILURE,
        }),
    }
}
