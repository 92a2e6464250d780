//! Conformance of the real kerneld to the 1995 protocol, checked by a
//! client that shares no code with it.
//!
//! Every message of this test is sent and received by
//! `tests/conformance/kdclient.c`, a C program compiled here with `cc`
//! from its own `struct kerneld_msg` definitions, as `linux/kerneld.h`
//! declared them (old header `long mtype; long id; char text[]`, new header
//! `long mtype; long id; short version; short pid; char text[]`), and sent
//! as the 1995 senders sent them: `msgsz = KDHDR + strlen(text)`, no NUL
//! unless a row puts one in the text.  kmod-ipc is used only by the
//! harness, to start kerneld and wait until it answers.
//!
//! The expectations are the one table [`ROWS`]: a request (on which
//! daemon, header, type, reply id, the exact text bytes after the header,
//! and `msgsz` where it is not header + text) and what must follow: a
//! reply with its status and text, checked byte for byte (see
//! [`check_reply`]), or no reply at all.
//!
//! Needs the binaries (`cargo build --workspace --bins`) and a C compiler.

use kerneld_tests::daemon::{Kerneld, LIMIT};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// After the reply to a later message has arrived, how long to wait
/// before checking that nothing else came (the daemon handles messages in
/// order, so this only leaves room for a stray reply to show up).
const SETTLE: Duration = Duration::from_millis(200);

// ---- the table -------------------------------------------------------------

/// Which daemon a row talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum On {
    /// kerneld with the configuration [`FULL_CONFIG`], all types (-255).
    Full,
    /// kerneld with defaults, for the kdstat words, which change it.
    Words,
    /// Two kerneld on one key, `type=255` and `type=2` (1995 allowed
    /// such partitions).  The row's `{pid}` and new-header pid are those
    /// of the instance that serves its type; a type nobody serves stays on
    /// the queue.
    Part255,
    Part2,
    /// A `type=256` kerneld (the arp daemon of kerneld(8)) on the queue of
    /// a `type=255` one.
    Part256,
}

/// Header of the request (and of its reply).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hdr {
    /// `long mtype; long id; char text[]`: KDHDR = 8.
    Old,
    /// `long mtype; long id; short version = 2; short pid; char text[]`:
    /// KDHDR = 12; pid is the client's, as a short.
    New,
}

/// The reply id of the request.
#[derive(Debug, Clone, Copy)]
enum Id {
    /// 0: no reply wanted.
    Zero,
    /// 1024 + the client's pid, as the 1995 kdstat and kdsend used.
    Tool,
    /// KERNELD_MINSEQ + n, as the kernel used.
    Kernel(i64),
    /// This very number.
    Num(i64),
}

/// A piece of request text.
#[derive(Debug, Clone, Copy)]
enum Piece {
    /// These bytes.
    B(&'static [u8]),
    /// This byte, so many times.
    Fill(u8, usize),
}

/// What must follow the request.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// One reply, in the request's header format: mtype = the request's
    /// id, id = this status, the text matching this pattern, then exactly
    /// one NUL, msgsz counting it.  In the pattern, `*` stands for any
    /// bytes but NUL, and `{pid}` (the answering kerneld's pid),
    /// `{version}`, `{key}` (as 0x%08x), `{text}` (the request's text up
    /// to its first NUL) and `{status}` (the rest of a status text after
    /// its first line, see [`STATUS_REST`]) for what they say.
    Reply(i64, &'static str),
    /// The same, but the reply has this header, whatever the request was
    /// sent as: the daemon reads the header from the bytes.
    ReplyAs(Hdr, i64, &'static str),
    /// kerneld takes the message and sends nothing: after a later
    /// status request's reply, the queue is empty; and the log contains
    /// this line once more than before (`{id}`: the request's id, for
    /// [`Id::Num`] rows), unless it is empty.
    Quiet(&'static str),
    /// No kerneld takes the message: after a later status request's
    /// reply, it is the one message on the queue, byte for byte as sent.
    Stays,
}

/// One request and its expected outcome.
#[derive(Debug, Clone, Copy)]
struct Row {
    on: On,
    hdr: Hdr,
    mtype: i64,
    id: Id,
    text: &'static [Piece],
    /// msgsz when not KDHDR + the text's length.
    msgsz: Option<usize>,
    /// Sent while kerneld is stopped (SIGSTOP), with the held rows next
    /// to it, and answered once it continues.
    held: bool,
    expect: Expect,
}

const fn row(on: On, hdr: Hdr, mtype: i64, id: Id, text: &'static [Piece], expect: Expect) -> Row {
    Row {
        on,
        hdr,
        mtype,
        id,
        text,
        msgsz: None,
        held: false,
        expect,
    }
}

impl Row {
    const fn msgsz(self, n: usize) -> Row {
        Row {
            msgsz: Some(n),
            ..self
        }
    }
    const fn held(self) -> Row {
        Row { held: true, ..self }
    }
}

/// kerneld.conf of [`On::Full`] (and of the trio).  Without the negative
/// cache and the rate limit, a name asked again gets the same answer (not
/// "(cached)" for 5 s, or "rate limited" after 30 in a minute).
const FULL_CONFIG: &str = "system-command = /bin/echo hello\n\
                           pnp-program = /bin/echo\n\
                           arp-program = /bin/echo\n\
                           negative-cache = 0\n\
                           rate-limit = 0\n";

/// A status text after its first line (`Version ..., pid=..., delay=...,
/// [no]keep, [no]debug`), with no job, no module, an empty policy.
/// The lines of 1995 exactly, those this implementation adds by pattern.
const STATUS_REST: &str = "no jobs waiting\n\
                           queue: key {key}, *\n\
                           *requests: *\n\
                           *policy: 0 rules, mode enforce*\n";

const STATUS: &str = "Version {version}, pid={pid}, delay=60, nokeep, nodebug\n{status}";

const UNKNOWN_WORD: &str = "unknown control word \"{text}\": use status, json, policy, debug, \
                            nodebug, keep, nokeep, delay=N, flush, mode=enforce|audit, \
                            why NAME, allow|deny request|module PATTERN";

const FLUSHED: &str = "flushed by the operator (kdstat flush)";

use Expect::{Quiet, Reply, ReplyAs, Stays};
use Hdr::{New, Old};
use Id::{Kernel, Num, Tool, Zero};
use On::{Full, Part2, Part255, Part256, Words};
use Piece::{Fill, B};

/// Request -> expected answer.  Types (linux/kerneld.h): 1 system,
/// 2 request_module, 3 release_module, 4 delayed_release_module,
/// 5 cancel_release_module, 6 request_route, 7 screenblanker, 8 pnp,
/// 255 status (kdstat), 256 arp.  kerneld's module directory is empty, so
/// every name is "not found".
#[rustfmt::skip]
const ROWS: &[Row] = &[
    // -- 1 system: only listed command lines run, without a shell.
    row(Full, Old, 1, Tool, &[B(b"/bin/echo hello")], Reply(0, "hello\n")),
    row(Full, New, 1, Kernel(1), &[B(b"/bin/echo hello\0")], Reply(0, "hello\n")),
    row(Full, Old, 1, Tool, &[B(b"ls")], Reply(1, "system request refused: \"ls\" is not a listed system-command")),
    row(Full, Old, 1, Zero, &[B(b"/bin/echo hello")], Quiet("system '/bin/echo hello': status 0")),

    // -- 2 request_module, as Linux 2.0 sent it: strlen(name) bytes, no NUL.
    row(Full, Old, 2, Kernel(2), &[B(b"ppp")], Reply(1, "ppp: not found")),
    row(Full, Old, 2, Kernel(3), &[B(b"ppp\0")], Reply(1, "ppp: not found")),
    row(Full, New, 2, Kernel(4), &[B(b"net-pf-10")], Reply(1, "net-pf-10: not found")),
    row(Full, New, 2, Kernel(5), &[B(b"net-pf-10\0")], Reply(1, "net-pf-10: not found")),
    row(Full, Old, 2, Kernel(65535), &[B(b"char-major-10-200")], Reply(1, "char-major-10-200: not found")),
    row(Full, New, 2, Tool, &[B(b"char-major-10-200")], Reply(1, "char-major-10-200: not found")),
    row(Full, Old, 2, Zero, &[B(b"ppp")], Quiet("")),
    row(Full, New, 2, Zero, &[B(b"net-pf-10\0")], Quiet("")),
    // Text ends at the first NUL; what follows is no text, nor counted.
    row(Full, Old, 2, Tool, &[B(b"ppp\0junk")], Reply(1, "ppp: not found")),
    row(Full, New, 2, Kernel(6), &[B(b"ppp\0\0\0")], Reply(1, "ppp: not found")),
    row(Full, Old, 2, Tool, &[B(b"ppp\0"), Fill(b'x', 2000)], Reply(1, "ppp: not found")),
    row(Full, Old, 2, Kernel(7), &[B(b"\0ppp")], Reply(1, "refused: empty module name")),
    // Empty text: the bare header.
    row(Full, Old, 2, Kernel(8), &[], Reply(1, "refused: empty module name")),
    row(Full, New, 2, Kernel(9), &[], Reply(1, "refused: empty module name")),
    // Names: 255 bytes at most; the text itself may hold 1024.
    row(Full, Old, 2, Tool, &[Fill(b'a', 255)], Reply(1, "{text}: not found")),
    row(Full, New, 2, Tool, &[Fill(b'a', 256)], Reply(1, "refused: module name longer than 255 bytes (256)")),
    row(Full, Old, 2, Tool, &[Fill(b'a', 1024)], Reply(1, "refused: module name longer than 255 bytes (1024)")),
    row(Full, New, 2, Kernel(10), &[Fill(b'a', 1024), B(b"\0")], Reply(1, "refused: module name longer than 255 bytes (1024)")),
    // Over the limit: malformed, answered when the id asks for a reply.
    row(Full, Old, 2, Tool, &[Fill(b'a', 1025)], Reply(1, "malformed message: message text of 1025 bytes exceeds the limit of 1024")),
    row(Full, New, 2, Kernel(11), &[Fill(b'a', 1025)], Reply(1, "malformed message: message text of 1025 bytes exceeds the limit of 1024")),
    row(Full, New, 2, Tool, &[Fill(b'a', 1025), B(b"\0")], Reply(1, "malformed message: message text of 1025 bytes exceeds the limit of 1024")),
    row(Full, Old, 2, Tool, &[Fill(b'a', 4000)], Reply(1, "malformed message: message text of 4000 bytes exceeds the limit of 1024")),
    row(Full, Old, 2, Zero, &[Fill(b'a', 1025)], Quiet("malformed message of type 2 (1033 bytes)")),
    row(Full, Old, 2, Num(7), &[Fill(b'a', 1025)], Quiet("malformed message of type 2 (1033 bytes)")),
    // A body shorter than the old header: no id to answer.
    row(Full, Old, 2, Tool, &[], Quiet("malformed message of type 2 (4 bytes)")).msgsz(4),
    row(Full, Old, 2, Tool, &[], Quiet("malformed message of type 2 (0 bytes)")).msgsz(0),
    // New header: body of 12 bytes or more whose short at offset 8 is 2.
    // An old message whose text starts 02 00 is therefore read as new
    // (pid 0x4241, text "ppp"), as the 1996 daemon read it.
    row(Full, Old, 2, Tool, &[B(b"\x02\x00ABppp")], ReplyAs(New, 1, "ppp: not found")),
    row(Full, Old, 2, Tool, &[B(b"\x02\x00AB")], ReplyAs(New, 1, "refused: empty module name")),
    row(Full, Old, 2, Tool, &[B(b"\x03\x00ABppp")], Reply(1, "refused: module name contains a control character (byte 0x03)")),
    // A new header cut to 10 bytes of body is old, its text "\x02".
    row(Full, New, 2, Tool, &[B(b"ppp")], ReplyAs(Old, 1, "refused: module name contains a control character (byte 0x02)")).msgsz(10),
    row(Full, Old, 2, Tool, &[B(b"\x02\x00")], Reply(1, "refused: module name contains a control character (byte 0x02)")),
    row(Full, Old, 2, Tool, &[B(b"\x02")], Reply(1, "refused: module name contains a control character (byte 0x02)")),

    // -- 3 release_module, 4 delayed_release_module, 5 cancel_release_module.
    row(Full, Old, 3, Tool, &[B(b"ppp")], Reply(1, "release ppp: ppp is not loaded")),
    row(Full, New, 3, Kernel(12), &[B(b"ppp\0")], Reply(1, "release ppp: ppp is not loaded")),
    row(Full, Old, 3, Tool, &[], Reply(1, "refused: empty module name")),
    // A delayed release only of what kerneld loaded (none here).
    row(Full, Old, 4, Kernel(13), &[B(b"ppp")], Reply(1, "ppp: kerneld did not load it (kdstat lists what it loaded)")),
    row(Full, New, 4, Tool, &[B(b"ppp\0")], Reply(1, "ppp: kerneld did not load it (kdstat lists what it loaded)")),
    row(Full, New, 4, Zero, &[B(b"ppp")], Quiet("")),
    row(Full, New, 5, Kernel(14), &[B(b"ppp")], Reply(0, "no release of ppp was pending")),
    row(Full, Old, 5, Tool, &[B(b"ppp\0")], Reply(0, "no release of ppp was pending")),
    row(Full, Old, 5, Tool, &[], Reply(1, "refused: empty module name")),

    // -- 6 request_route: no /sbin/request-route here.
    row(Full, Old, 6, Tool, &[B(b"10.0.0.1")], Reply(1, "/sbin/request-route is not an executable program")),
    row(Full, New, 6, Kernel(15), &[B(b"10.0.0.1\0")], Reply(1, "/sbin/request-route is not an executable program")),

    // -- 7 screenblanker: no /sbin/screenblanker here.
    row(Full, Old, 7, Tool, &[B(b"on")], Reply(1, "/sbin/screenblanker is not an executable program")),
    row(Full, New, 7, Tool, &[B(b"off\0")], Reply(1, "screen blanker was not running")),
    row(Full, Old, 7, Tool, &[B(b"dim")], Reply(1, "blanker takes \"on\" or \"off\", not \"dim\"")),

    // -- 8 pnp: pnp-program = /bin/echo shows the text kerneld read.
    row(Full, Old, 8, Tool, &[B(b"x")], Reply(0, "x\n")),
    row(Full, New, 8, Kernel(16), &[B(b"isapnp\0junk")], Reply(0, "isapnp\n")),
    row(Full, New, 8, Tool, &[], Reply(1, "pnp refused: argument must be 1 to 255 bytes")),
    row(Full, Old, 8, Tool, &[Fill(b'p', 1024)], Reply(1, "pnp refused: argument must be 1 to 255 bytes")),

    // -- 255 status: the 1995 kdstat sent the bare header.
    row(Full, Old, 255, Tool, &[], Reply(0, STATUS)),
    row(Full, New, 255, Tool, &[], Reply(0, STATUS)),
    row(Full, Old, 255, Tool, &[B(b"status")], Reply(0, STATUS)),
    row(Full, New, 255, Kernel(17), &[B(b"status\0")], Reply(0, STATUS)),
    row(Full, Old, 255, Tool, &[B(b"status\0"), Fill(b'z', 3000)], Reply(0, STATUS)),
    row(Full, New, 255, Tool, &[B(b"json")], Reply(0, "{*\"pid\":{pid},*}")),
    row(Full, Old, 255, Tool, &[B(b"bogus")], Reply(1, UNKNOWN_WORD)),
    row(Full, Old, 255, Tool, &[Fill(b'w', 1024)], Reply(1, UNKNOWN_WORD)),
    row(Full, New, 255, Tool, &[Fill(b'w', 1025)], Reply(1, "malformed message: message text of 1025 bytes exceeds the limit of 1024")),

    // -- 256 arp: above the -255 that kerneld receives; stays on the queue.
    row(Full, Old, 256, Tool, &[B(b"10.0.0.2")], Stays),
    row(Full, New, 256, Zero, &[B(b"10.0.0.2\0")], Stays),

    // -- an unknown type.
    row(Full, Old, 77, Tool, &[B(b"x")], Reply(1, "unknown message type 77")),
    row(Full, New, 77, Kernel(18), &[], Reply(1, "unknown message type 77")),
    row(Full, Old, 77, Zero, &[B(b"x")], Quiet("unknown message type 77 (id 0)")),

    // -- reply ids: 1..255 and negative ones would be received by kerneld
    // itself, and are dropped; 256 is the first that can be answered.
    row(Full, Old, 2, Num(7), &[B(b"ppp")], Quiet("dropping request_module with reply id {id}")),
    row(Full, New, 255, Num(255), &[], Quiet("dropping debug with reply id {id}")),
    row(Full, Old, 77, Num(1), &[B(b"x")], Quiet("dropping unknown type 77 with reply id {id}")),
    row(Full, Old, 2, Num(-5), &[B(b"ppp")], Quiet("dropping request_module with reply id {id}")),
    row(Full, Old, 2, Num(256), &[B(b"ppp")], Reply(1, "ppp: not found")),
    row(Full, New, 255, Num(256), &[], Reply(0, STATUS)),
    row(Full, Old, 2, Num(0x1_0000_0000), &[B(b"ppp")], Reply(1, "ppp: not found")),

    // -- the 1995 kdstat words, sent without a NUL.
    row(Words, Old, 255, Tool, &[], Reply(0, STATUS)),
    row(Words, Old, 255, Tool, &[B(b"debug")], Reply(0, "Version {version}, pid={pid}, delay=60, nokeep, debug\n{status}")),
    row(Words, New, 255, Tool, &[B(b"delay=30")], Reply(0, "Version {version}, pid={pid}, delay=30, nokeep, debug\n{status}")),
    row(Words, Old, 255, Tool, &[B(b"nodebug")], Reply(0, "Version {version}, pid={pid}, delay=30, nokeep, nodebug\n{status}")),
    row(Words, New, 255, Tool, &[B(b"flush")], Reply(0, "flushed 0 entries\nVersion {version}, pid={pid}, delay=30, nokeep, nodebug\n{status}")),
    // A flush while requests wait: they are answered "flushed", not done.
    row(Words, Old, 255, Tool, &[B(b"flush")], Reply(0, "flushed 3 entries\nVersion {version}, pid={pid}, delay=30, nokeep, nodebug\n{status}")).held(),
    row(Words, New, 255, Tool, &[B(b"status")], Reply(1, FLUSHED)).held(),
    row(Words, Old, 255, Zero, &[B(b"debug")], Quiet("")).held(),
    row(Words, Old, 255, Kernel(1), &[B(b"json")], Reply(1, FLUSHED)).held(),
    row(Words, Old, 255, Tool, &[], Reply(0, "Version {version}, pid={pid}, delay=30, nokeep, nodebug\n{status}")),
    // Id 0: done, not answered.
    row(Words, New, 255, Zero, &[B(b"debug")], Quiet("control: debug")),
    row(Words, Old, 255, Tool, &[B(b"keep")], Reply(0, "Version {version}, pid={pid}, delay=30, keep, debug\n{status}")),

    // -- type=N instances share one queue, each taking its own type.
    row(Part255, Old, 255, Tool, &[], Reply(0, STATUS)),
    row(Part255, New, 255, Tool, &[B(b"status")], Reply(0, STATUS)),
    row(Part2, Old, 2, Kernel(1), &[B(b"ppp")], Reply(1, "ppp: not found")),
    row(Part2, New, 2, Kernel(2), &[B(b"net-pf-10")], Reply(1, "net-pf-10: not found")),
    row(Part255, Old, 1, Tool, &[B(b"/bin/echo hello")], Stays),
    row(Part255, New, 3, Tool, &[B(b"ppp")], Stays),
    row(Part255, Old, 77, Tool, &[B(b"x")], Stays),
    row(Part255, New, 256, Tool, &[B(b"10.0.0.2")], Stays),
    row(Part256, New, 256, Tool, &[B(b"10.0.0.2")], Reply(0, "10.0.0.2\n")),
    row(Part256, Old, 256, Kernel(3), &[B(b"-x")], Reply(1, "arp refused: argument must not start with '-'")),
];

// ---- the C client ---------------------------------------------------------

/// kdclient, compiled once per test process.
fn kdclient() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("conformance/kdclient.c");
        let out =
            Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("kdclient-{}", std::process::id()));
        let status = Command::new("cc")
            .args([
                "-std=c99",
                "-D_GNU_SOURCE",
                "-Wall",
                "-Wextra",
                "-Werror",
                "-O1",
                "-o",
            ])
            .arg(&out)
            .arg(&src)
            .status()
            .unwrap_or_else(|e| panic!("cc (a C compiler is needed): {e}"));
        assert!(status.success(), "cc {} failed: {status}", src.display());
        out
    })
}

/// Run kdclient; its output.
fn client(args: &[String]) -> String {
    let out = Command::new(kdclient())
        .args(args)
        .output()
        .expect("run kdclient");
    assert!(
        out.status.success(),
        "kdclient {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("kdclient prints ASCII")
}

fn field<'a>(line: &'a str, name: &str) -> &'a str {
    line.split(' ')
        .find_map(|w| w.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
        .unwrap_or_else(|| panic!("no {name}= in {line:?}"))
}

fn num(line: &str, name: &str) -> i64 {
    field(line, name)
        .parse()
        .unwrap_or_else(|e| panic!("{name} in {line:?}: {e}"))
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn hex(b: &[u8]) -> String {
    if b.is_empty() {
        return "-".into();
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// What kdclient sent.
#[derive(Debug)]
struct Sent {
    id: i64,
    pid: i64,
    msgsz: usize,
}

/// A message kdclient received: `raw` is mtype and the `rc` body bytes;
/// the other fields are the C structures' view of them.
#[derive(Debug)]
struct Got {
    rc: usize,
    raw: Vec<u8>,
    old_mtype: i64,
    old_id: i64,
    new_version: i64,
    new_pid: i64,
}

fn parse_sent(line: &str) -> Sent {
    assert!(line.starts_with("sent "), "{line:?}");
    Sent {
        id: num(line, "id"),
        pid: num(line, "pid"),
        msgsz: num(line, "msgsz") as usize,
    }
}

fn parse_got(line: &str) -> Option<Got> {
    if line == "none" {
        return None;
    }
    assert!(line.starts_with("reply "), "{line:?}");
    Some(Got {
        rc: num(line, "rc") as usize,
        raw: unhex(field(line, "raw")),
        old_mtype: num(line, "old.mtype"),
        old_id: num(line, "old.id"),
        new_version: num(line, "new.version"),
        new_pid: num(line, "new.pid"),
    })
}

fn text_bytes(r: &Row) -> Vec<u8> {
    let mut t = Vec::new();
    for p in r.text {
        match *p {
            B(b) => t.extend_from_slice(b),
            Fill(b, n) => t.extend(std::iter::repeat_n(b, n)),
        }
    }
    t
}

fn id_arg(id: Id) -> String {
    match id {
        Zero => "0".into(),
        Tool => "tool".into(),
        Kernel(n) => format!("kernel+{n}"),
        Num(n) => n.to_string(),
    }
}

fn hdr_arg(h: Hdr) -> &'static str {
    match h {
        Old => "old",
        New => "new",
    }
}

/// kdclient arguments after the command: KEY HDR MTYPE ID TEXT [MSGSZ].
fn send_args(cmd: &str, key: &str, r: &Row) -> Vec<String> {
    let mut a = vec![
        cmd.to_string(),
        key.to_string(),
        hdr_arg(r.hdr).into(),
        r.mtype.to_string(),
        id_arg(r.id),
        hex(&text_bytes(r)),
    ];
    if let Some(n) = r.msgsz {
        a.push(n.to_string());
    }
    a
}

// ---- checks ---------------------------------------------------------------

/// `*` matches any run of bytes; everything else matches itself.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let parts: Vec<&[u8]> = pattern.split(|&b| b == b'*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if text.len() < first.len() + last.len() || !text.starts_with(first) || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.windows(mid.len()).position(|w| w == *mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None if mid.is_empty() => {}
            None => return false,
        }
    }
    true
}

/// What the placeholders of a pattern stand for.
struct Subst<'a> {
    pid: u32,
    key: &'a str,
    text: &'a [u8],
}

fn expand(pattern: &str, s: &Subst) -> Vec<u8> {
    let upto_nul = s.text.split(|&b| b == 0).next().unwrap_or(&[]);
    pattern
        .replace("{status}", STATUS_REST)
        .replace("{pid}", &s.pid.to_string())
        .replace("{version}", VERSION)
        .replace("{key}", s.key)
        .replace("{text}", &String::from_utf8_lossy(upto_nul))
        .into_bytes()
}

fn ne(v: i64) -> [u8; 8] {
    v.to_ne_bytes()
}

/// Byte-exact check of a reply: mtype = the request's id, id = status,
/// the header format (new: version 2 and kerneld's pid as a short), the
/// text, exactly one NUL after it, and msgsz counting it.
fn check_reply(ctx: &str, got: &Got, id: i64, hdr: Hdr, status: i64, pattern: &str, s: &Subst) {
    let raw = &got.raw;
    assert_eq!(got.rc + 8, raw.len(), "{ctx}: msgrcv's count and the bytes");
    let hl = match hdr {
        Old => 8,
        New => 12,
    };
    assert!(
        got.rc > hl,
        "{ctx}: a body of {} bytes has no room for the header and the NUL: {got:?}",
        got.rc
    );
    assert_eq!(
        raw[0..8],
        ne(id),
        "{ctx}: mtype is the request's id: {got:?}"
    );
    assert_eq!(raw[8..16], ne(status), "{ctx}: id is the status: {got:?}");
    assert_eq!((got.old_mtype, got.old_id), (id, status), "{ctx}");
    if hdr == New {
        let pid16 = s.pid as u16 as i16;
        assert_eq!(raw[16..18], 2i16.to_ne_bytes(), "{ctx}: version 2: {got:?}");
        assert_eq!(
            raw[18..20],
            pid16.to_ne_bytes(),
            "{ctx}: kerneld's pid: {got:?}"
        );
        assert_eq!(
            (got.new_version, got.new_pid),
            (2, i64::from(pid16)),
            "{ctx}"
        );
    } else {
        assert_ne!(
            raw[16..].get(..2),
            Some(&[2u8, 0][..]),
            "{ctx}: an old reply would read as new: {got:?}"
        );
    }
    let body_text = &raw[8 + hl..];
    let (nul, text) = body_text.split_last().expect("checked above");
    let shown = String::from_utf8_lossy(body_text);
    assert_eq!(*nul, 0, "{ctx}: the text ends with a NUL: {shown:?}");
    assert!(
        !text.contains(&0),
        "{ctx}: exactly one NUL, at the end: {shown:?}"
    );
    let want = expand(pattern, s);
    assert!(
        glob(&want, text),
        "{ctx}: reply text\n  got:  {shown:?}\n  want: {:?}",
        String::from_utf8_lossy(&want)
    );
}

/// The log line a [`Expect::Quiet`] row expects, `{id}` replaced (only
/// rows with a [`Id::Num`] id use it: the others' ids are the client's).
fn log_line(r: &Row) -> Option<String> {
    match r.expect {
        Quiet(line) if !line.is_empty() => match r.id {
            Num(n) => Some(line.replace("{id}", &n.to_string())),
            _ => {
                assert!(!line.contains("{id}"), "{{id}} needs a Num id: {r:?}");
                Some(line.to_string())
            }
        },
        _ => None,
    }
}

/// The bytes a request was sent as: mtype and msgsz bytes of body.
fn request_bytes(r: &Row, sent: &Sent) -> Vec<u8> {
    let mut b = ne(r.mtype).to_vec();
    b.extend_from_slice(&ne(sent.id));
    if r.hdr == New {
        b.extend_from_slice(&2i16.to_ne_bytes());
        b.extend_from_slice(&(sent.pid as i16).to_ne_bytes());
    }
    b.extend_from_slice(&text_bytes(r));
    b.truncate(8 + sent.msgsz);
    b
}

// ---- the runner -----------------------------------------------------------

/// The daemons of one test and the rows they serve.  One of them serves
/// type 255: its answer to a status request orders "nothing came" checks.
struct Bench<'a> {
    key: String,
    servers: Vec<(On, &'a Kerneld)>,
}

impl Bench<'_> {
    fn server(&self, on: On) -> &Kerneld {
        self.servers
            .iter()
            .find(|(o, _)| *o == on)
            .map(|(_, k)| *k)
            .expect("a server for the row")
    }

    fn logs(&self) -> String {
        let mut s = String::new();
        for (on, k) in &self.servers {
            s.push_str(&format!(
                "--- log of kerneld {on:?} (pid {}):\n{}",
                k.pid(),
                k.log()
            ));
        }
        s
    }

    /// The row, for failure messages.
    fn ctx(&self, i: usize, r: &Row) -> String {
        let text = text_bytes(r);
        let shown = String::from_utf8_lossy(&text[..text.len().min(40)]);
        format!(
            "ROWS[{i}]: {:?} {:?} type {} id {:?} text {shown:?}{} ({} bytes){} -> {:?}",
            r.on,
            r.hdr,
            r.mtype,
            r.id,
            if text.len() > 40 { "..." } else { "" },
            text.len(),
            r.msgsz.map_or(String::new(), |n| format!(" msgsz {n}")),
            r.expect
        )
    }

    /// A status request (new header, id 1024 + pid) and its reply: every
    /// message sent before it of a type up to 255 has been taken then.
    fn status_round_trip(&self, ctx: &str) {
        let out = client(&[
            "xchg".into(),
            self.key.clone(),
            "new".into(),
            "255".into(),
            "tool".into(),
            "-".into(),
        ]);
        let mut lines = out.lines();
        let _sent = parse_sent(lines.next().unwrap_or(""));
        let got = parse_got(lines.next().unwrap_or(""));
        let got = got
            .unwrap_or_else(|| panic!("{ctx}: no answer to the status request\n{}", self.logs()));
        assert_eq!(got.old_id, 0, "{ctx}: status request failed: {got:?}");
        std::thread::sleep(SETTLE);
    }

    fn qnum(&self) -> i64 {
        num(client(&["qnum".into(), self.key.clone()]).trim(), "qnum")
    }

    fn subst<'a>(&'a self, r: &Row, text: &'a [u8]) -> Subst<'a> {
        Subst {
            pid: self.server(r.on).pid(),
            key: &self.key,
            text,
        }
    }

    fn check_got(&self, ctx: &str, r: &Row, sent: &Sent, got: Option<Got>) {
        let (hdr, status, pattern) = match r.expect {
            Reply(st, p) => (r.hdr, st, p),
            ReplyAs(h, st, p) => (h, st, p),
            _ => unreachable!(),
        };
        let got = got.unwrap_or_else(|| panic!("{ctx}: no reply within 10 s\n{}", self.logs()));
        let text = text_bytes(r);
        check_reply(
            ctx,
            &got,
            sent.id,
            hdr,
            status,
            pattern,
            &self.subst(r, &text),
        );
    }

    /// After a message that must get no reply: nothing on the queue, or
    /// only the message itself if nobody takes its type.
    /// `seen`: how often the row's log line was in the log before.
    fn check_quiet(&self, ctx: &str, i: usize, r: &Row, sent: &Sent, seen: usize) {
        self.status_round_trip(ctx);
        match r.expect {
            Quiet(_) => {
                assert_eq!(
                    self.qnum(),
                    0,
                    "{ctx}: something is left on the queue\n{}",
                    self.logs()
                );
                if let Some(line) = log_line(r) {
                    self.server(r.on).wait_log_count(&line, seen + 1);
                }
            }
            Stays => {
                assert_eq!(
                    self.qnum(),
                    1,
                    "{ctx}: the message alone stays on the queue\n{}",
                    self.logs()
                );
                let out = client(&[
                    "recv".into(),
                    self.key.clone(),
                    r.mtype.to_string(),
                    "0".into(),
                ]);
                let got =
                    parse_got(out.trim()).unwrap_or_else(|| panic!("{ctx}: the message is gone"));
                assert_eq!(
                    got.raw,
                    request_bytes(r, sent),
                    "{ctx}: row {i} stays byte for byte"
                );
            }
            _ => unreachable!(),
        }
    }

    fn run_one(&self, i: usize, r: &Row) {
        let ctx = self.ctx(i, r);
        match r.expect {
            Reply(..) | ReplyAs(..) => {
                let out = client(&send_args("xchg", &self.key, r));
                let mut lines = out.lines();
                let sent = parse_sent(lines.next().unwrap_or(""));
                let got = parse_got(lines.next().unwrap_or(""));
                self.check_got(&ctx, r, &sent, got);
                assert_eq!(lines.next(), Some("more=0"), "{ctx}: one reply only");
            }
            Quiet(_) | Stays => {
                let seen = match log_line(r) {
                    Some(line) => self.server(r.on).log().matches(&line).count(),
                    None => 0,
                };
                let out = client(&send_args("send", &self.key, r));
                let sent = parse_sent(out.trim());
                self.check_quiet(&ctx, i, r, &sent, seen);
            }
        }
    }

    /// Rows sent while their kerneld is stopped, then answered.
    fn run_held(&self, group: &[(usize, &Row)]) {
        let k = self.server(group[0].1.on);
        k.pause();
        let sent: Vec<Sent> = group
            .iter()
            .map(|(_, r)| parse_sent(client(&send_args("send", &self.key, r)).trim()))
            .collect();
        k.signal(libc::SIGCONT);
        for ((i, r), s) in group.iter().zip(&sent) {
            if let Reply(..) | ReplyAs(..) = r.expect {
                let out = client(&[
                    "recv".into(),
                    self.key.clone(),
                    s.id.to_string(),
                    "10000".into(),
                ]);
                self.check_got(&self.ctx(*i, r), r, s, parse_got(out.trim()));
            }
        }
        let (i, r) = group[group.len() - 1];
        let ctx = self.ctx(i, r);
        self.status_round_trip(&ctx);
        assert_eq!(
            self.qnum(),
            0,
            "{ctx}: something is left on the queue\n{}",
            self.logs()
        );
    }

    /// Every row of the table for these servers, in order.
    fn run(&self) -> usize {
        let rows: Vec<(usize, &Row)> = ROWS
            .iter()
            .enumerate()
            .filter(|(_, r)| self.servers.iter().any(|(o, _)| *o == r.on))
            .collect();
        let mut n = 0;
        let mut at = 0;
        while at < rows.len() {
            if rows[at].1.held {
                let end = rows[at..]
                    .iter()
                    .position(|(_, r)| !r.held)
                    .map_or(rows.len(), |p| at + p);
                self.run_held(&rows[at..end]);
                n += end - at;
                at = end;
            } else {
                self.run_one(rows[at].0, rows[at].1);
                n += 1;
                at += 1;
            }
        }
        assert!(
            n > 0,
            "no rows for {:?}",
            self.servers.iter().map(|s| s.0).collect::<Vec<_>>()
        );
        n
    }
}

fn key_of(k: &Kerneld) -> String {
    format!("{:#010x}", k.key().0 as u32)
}

#[test]
fn table_checks_against_its_own_header() {
    // The table's texts are what a 1995 sender put after the header; the
    // rows that need the NUL say so with \0.
    let with_nul = ROWS.iter().filter(|r| text_bytes(r).contains(&0)).count();
    let without = ROWS.iter().filter(|r| !text_bytes(r).contains(&0)).count();
    assert!(with_nul > 0 && without > with_nul, "{with_nul} {without}");
    for t in [1, 2, 3, 4, 5, 6, 7, 8, 255, 256, 77] {
        assert!(
            ROWS.iter().any(|r| r.mtype == t),
            "type {t} is in the table"
        );
    }
    assert!(glob(b"a*c*e", b"abcde") && glob(b"*", b"") && !glob(b"a*c", b"ab"));
    assert!(glob(b"ab*", b"ab") && !glob(b"ab*ba", b"aba"));
}

#[test]
fn every_type_header_id_and_text() {
    let k = Kerneld::builder().config(FULL_CONFIG).start();
    let bench = Bench {
        key: key_of(&k),
        servers: vec![(Full, &k)],
    };
    let n = bench.run();
    eprintln!("{n} rows passed on kerneld pid {}", k.pid());
}

#[test]
fn kdstat_words_of_1995() {
    let k = Kerneld::start();
    let bench = Bench {
        key: key_of(&k),
        servers: vec![(Words, &k)],
    };
    let n = bench.run();
    eprintln!("{n} rows passed on kerneld pid {}", k.pid());
}

/// Wait until kerneld has logged its start: it has taken the queue.
fn wait_started(k: &Kerneld) {
    let end = Instant::now() + LIMIT;
    while !k.log().contains("started, version") {
        assert!(Instant::now() < end, "not started:\n{}", k.log());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn type_n_instances_share_a_queue() {
    // The harness waits for a status answer at start, which a `type=2`
    // kerneld never gives: the `type=255` one, started first, gives it.
    let a = Kerneld::builder()
        .config(FULL_CONFIG)
        .arg("type=255")
        .start();
    let b = Kerneld::builder()
        .config(FULL_CONFIG)
        .key(a.key())
        .arg("type=2")
        .start();
    wait_started(&b);
    let bench = Bench {
        key: key_of(&a),
        servers: vec![(Part255, &a), (Part2, &b)],
    };
    let n = bench.run();
    eprintln!("{n} rows passed on kerneld pids {} {}", a.pid(), b.pid());
}

#[test]
fn type_256_instance_serves_arp() {
    let a = Kerneld::builder()
        .config(FULL_CONFIG)
        .arg("type=255")
        .start();
    let c = Kerneld::builder()
        .config(FULL_CONFIG)
        .key(a.key())
        .arg("type=256")
        .start();
    wait_started(&c);
    // Only the arp rows: the type=255 instance answers the status
    // requests that order the checks.
    let bench = Bench {
        key: key_of(&a),
        servers: vec![(Part256, &c)],
    };
    let n = bench.run();
    eprintln!("{n} rows passed on kerneld pid {}", c.pid());
}
