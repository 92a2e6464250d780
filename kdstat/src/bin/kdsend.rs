//! kdsend: put one kerneld message on the queue, as the kernel would, for
//! testing a daemon by hand (modutils shipped one for the same purpose).

use clap::Parser;
use kdstat::{parse_key, parse_timeout, with_newline, Failure, Timeout};
use kmod_ipc::{Client, Header, Key, MsgType, DEFAULT_KEY, MAX_DAEMON_TYPE};
use std::ffi::OsString;
use std::io::{ErrorKind, Write};
use std::os::unix::ffi::OsStrExt;

const AFTER_LONG_HELP: &str = "\
TYPE is a number or a name:
  1 system           2 request_module (request)   3 release_module (release)
  4 delayed_release  5 cancel_release             6 request_route (route)
  7 screenblanker    8 pnp                        255 status (debug)
  256 arp (kerneld never receives types above 255)

Without -r the message carries id 0, as a kernel request that wants no
answer, and kdsend returns as soon as it is queued.  With -r it carries
reply id 1024 + kdsend's pid; kdsend waits for the answer and prints
`status N` and then the answer's text.

Exit status: 0 sent (and, with -r, answered, whatever the status), 1 other
failure, 2 usage error, 3 kerneld is not running, 4 permission denied
(root is needed), 124 no reply within the timeout.

Examples:
  kdsend 2 ppp             ask kerneld to load the module for \"ppp\"
  kdsend 4 ppp             ask for ppp to be unloaded after the delay
  kdsend -r 255 status     what kdstat does: print the status
  kdsend -r request_module char-major-108";

#[derive(Parser, Debug)]
#[command(
    name = "kdsend",
    version,
    about = "Send a kerneld message as the kernel would, and optionally wait for the reply",
    after_long_help = AFTER_LONG_HELP
)]
struct Args {
    /// Wait for the reply and print its status and text
    #[arg(short = 'r', long = "reply")]
    reply: bool,

    /// Message type: a number or a name (list in --help)
    #[arg(value_name = "TYPE", value_parser = parse_type)]
    mtype: MsgType,

    /// Message text (a module name, a word, a command)
    #[arg(value_name = "MESSAGE")]
    message: Option<OsString>,

    /// Send the 1995 header (type, id, text) without version and pid
    #[arg(long)]
    old_header: bool,

    /// Queue key, hex (0x6b65726e) or decimal
    #[arg(long, value_name = "KEY", env = "KERNELD_KEY", value_parser = parse_key)]
    key: Option<Key>,

    /// Seconds to wait for the reply with -r (0: forever)
    #[arg(long, value_name = "SECONDS", default_value = "5", value_parser = parse_timeout)]
    timeout: Timeout,
}

fn parse_type(s: &str) -> Result<MsgType, String> {
    match MsgType::parse(s) {
        // msgsnd refuses types below 1.
        Some(t) if t.number() >= 1 => Ok(t),
        Some(_) => Err("message types start at 1".into()),
        None => Err(format!(
            "unknown message type {s:?}: give a number or one of system, request_module, \
             release_module, delayed_release, cancel_release, request_route, screenblanker, \
             pnp, status, arp"
        )),
    }
}

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
    if !args.reply {
        client.send(args.mtype, text, 0)?;
        return Ok(());
    }
    let reply = client.request(args.mtype, text, Client::tool_reply_id(), args.timeout.0)?;
    let out = format!("status {}\n{}", reply.status, with_newline(&reply.text));
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(out.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::BrokenPipe => std::process::exit(kdstat::EXIT_FAILURE),
        Err(e) => Err(Failure {
            message: format!("writing the reply: {e}"),
            code: kdstat::EXIT_FAILURE,
        }),
    }
}
