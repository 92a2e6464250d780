//! A fake kerneld for testing the clients (kdstat, kdsend, the shim)
//! against real SysV queues, and helpers to run the workspace binaries.
//!
//! [`FakeDaemon`] creates a queue of its own on a fresh key (so tests run in
//! parallel, beside a real kerneld), registers as a live instance on it as
//! kerneld does (the senders fall back when no live kerneld serves a key),
//! answers requests from a thread with a handler of the test's choosing,
//! records every request, and removes the queue when dropped.

use kmod_ipc::instances::{self, Instance, KeyLock};
use kmod_ipc::{Error, Header, Key, Queue, TypeFilter, MAX_DAEMON_TYPE};
use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A request the fake daemon received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub mtype: i64,
    pub id: i64,
    pub header: Header,
    pub text: Vec<u8>,
}

impl Received {
    /// The text as lossy UTF-8.
    pub fn text_str(&self) -> String {
        String::from_utf8_lossy(&self.text).into_owned()
    }
}

/// What the fake does with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Answer with this status and text (in parts if long; requests with
    /// id 0 get no answer, as from the real daemon).
    Reply { status: i64, text: Vec<u8> },
    /// Never answer.
    Ignore,
    /// Remove the queue, as a stopping daemon does, and end the thread.
    RemoveQueue,
}

impl Action {
    pub fn reply(status: i64, text: impl Into<Vec<u8>>) -> Action {
        Action::Reply {
            status,
            text: text.into(),
        }
    }
}

type Handler = Box<dyn FnMut(&Received) -> Action + Send>;

/// Settings of a [`FakeDaemon`] before it starts.
pub struct Builder {
    handler: Handler,
    part_max: Option<usize>,
}

impl Builder {
    /// Split replies into parts of at most `n` bytes of text (default: as
    /// much as a message holds), to exercise joined replies.
    pub fn part_max(mut self, n: usize) -> Builder {
        self.part_max = Some(n);
        self
    }

    /// Create the queue and start answering.
    pub fn start(self) -> FakeDaemon {
        let (key, queue) = create_fresh_queue();
        let registration = Mutex::new(Some(register(key)));
        let log: Arc<Log> = Arc::default();
        let thread = {
            let (queue, log) = (queue.clone(), Arc::clone(&log));
            let (mut handler, part_max) = (self.handler, self.part_max);
            std::thread::spawn(move || serve(&queue, &log, &mut *handler, part_max))
        };
        FakeDaemon {
            key,
            queue,
            log,
            thread: Some(thread),
            registration,
        }
    }
}

#[derive(Default)]
struct Log {
    received: Mutex<Vec<Received>>,
    arrived: Condvar,
}

/// A fake kerneld on its own queue; the queue goes away on drop.
pub struct FakeDaemon {
    key: Key,
    queue: Queue,
    log: Arc<Log>,
    thread: Option<JoinHandle<()>>,
    registration: Mutex<Option<Instance>>,
}

/// Register the test process as a live kerneld instance on `key`.
fn register(key: Key) -> Instance {
    let lock = KeyLock::acquire(key).expect("take the key's lock");
    let reg = lock
        .join(
            std::process::id(),
            TypeFilter::UpTo(MAX_DAEMON_TYPE),
            Path::new("/nonexistent/fake-kerneld"),
        )
        .expect("register the fake kerneld");
    lock.release(false);
    reg
}

/// The instance file a kerneld with `pid` has on `key`.
pub fn instance_file(key: Key, pid: u32) -> PathBuf {
    instances::keys_dir().join(format!("{:#010x}.{pid}", key.0 as u32))
}

impl FakeDaemon {
    /// A fake that behaves like kerneld: see [`ClassicDaemon`].
    pub fn start() -> FakeDaemon {
        FakeDaemon::builder(ClassicDaemon::default().into_handler()).start()
    }

    /// A fake answering with `handler`.
    pub fn with_handler(handler: impl FnMut(&Received) -> Action + Send + 'static) -> FakeDaemon {
        FakeDaemon::builder(handler).start()
    }

    /// A fake to configure further before [`Builder::start`].
    pub fn builder(handler: impl FnMut(&Received) -> Action + Send + 'static) -> Builder {
        Builder {
            handler: Box::new(handler),
            part_max: None,
        }
    }

    /// The queue's key.
    pub fn key(&self) -> Key {
        self.key
    }

    /// The key as `--key` and `KERNELD_KEY` take it.
    pub fn key_arg(&self) -> String {
        self.key.to_string()
    }

    /// The queue itself.
    pub fn queue(&self) -> &Queue {
        &self.queue
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.log.received.lock().unwrap().clone()
    }

    /// Wait until at least `n` requests arrived; panics after `limit`.
    pub fn wait_received(&self, n: usize, limit: Duration) -> Vec<Received> {
        let end = Instant::now() + limit;
        let mut got = self.log.received.lock().unwrap();
        while got.len() < n {
            let left = end.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "fake kerneld received {} requests within {limit:?}, expected {n}: {got:?}",
                got.len()
            );
            got = self.log.arrived.wait_timeout(got, left).unwrap().0;
        }
        got.clone()
    }

    /// Remove the queue now, as a stopping kerneld does.
    pub fn remove_queue(&self) {
        let _ = self.queue.remove();
    }

    /// Die as a kerneld killed with SIGKILL does: its instance file stays
    /// but nobody holds it, the queue stays with what is in it, and
    /// nothing reads it any more.
    pub fn die(&mut self) {
        drop(self.registration.lock().unwrap().take());
        let _ = self.queue.send_raw(MAX_DAEMON_TYPE, DIE, false);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for FakeDaemon {
    fn drop(&mut self) {
        if let Some(r) = self.registration.lock().unwrap().take() {
            r.leave();
        } else {
            let _ = std::fs::remove_file(instance_file(self.key, std::process::id()));
        }
        // Removing the queue wakes the thread's msgrcv with EIDRM.
        let _ = self.queue.remove();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The body that ends the thread of a fake that [`FakeDaemon::die`]s.
const DIE: &[u8] = b"\0\0\0\0\0\0\0\0fake kerneld dies";

fn serve(
    queue: &Queue,
    log: &Log,
    handler: &mut dyn FnMut(&Received) -> Action,
    part_max: Option<usize>,
) {
    loop {
        let msg = match queue.recv(TypeFilter::UpTo(MAX_DAEMON_TYPE), usize::MAX, false) {
            Ok(Some((t, Ok(m)))) if t == MAX_DAEMON_TYPE && m.text == DIE[8..] => return,
            Ok(Some((_, Ok(m)))) => m,
            // Malformed messages are no concern of the client tests.
            Ok(Some((_, Err(_)))) | Ok(None) | Err(Error::Interrupted) => continue,
            Err(_) => return,
        };
        let rec = Received {
            mtype: msg.mtype,
            id: msg.id,
            header: msg.header,
            text: msg.text.clone(),
        };
        // Recorded before answering: a client that got its answer can
        // count on its request being in the log.
        log.received.lock().unwrap().push(rec.clone());
        log.arrived.notify_all();
        match handler(&rec) {
            Action::Reply { status, text } if msg.wants_reply() => {
                let reply_header = msg.reply(0, std::process::id(), "").header;
                let max = part_max.unwrap_or_else(|| queue.text_max(reply_header));
                for part in msg.reply_parts(status, std::process::id(), &text, max) {
                    if queue.send(&part, usize::MAX, false).is_err() {
                        return;
                    }
                }
            }
            Action::Reply { .. } | Action::Ignore => {}
            Action::RemoveQueue => {
                let _ = queue.remove();
                return;
            }
        }
    }
}

/// Canned kerneld behaviour: the status words change its state as the
/// real daemon's do, `json` gives a document with the documented fields,
/// `policy` a rule list, unknown words status 1; every request-module and
/// other request succeeds.
#[derive(Debug, Clone)]
pub struct ClassicDaemon {
    pub delay: u64,
    pub keep: bool,
    pub debug: bool,
    pub requests: BTreeMap<String, u64>,
}

impl Default for ClassicDaemon {
    fn default() -> ClassicDaemon {
        ClassicDaemon {
            delay: 60,
            keep: false,
            debug: false,
            requests: BTreeMap::new(),
        }
    }
}

/// The version the classic fake reports.
pub const FAKE_VERSION: &str = "0.1.0-fake";

impl ClassicDaemon {
    pub fn into_handler(mut self) -> impl FnMut(&Received) -> Action + Send + 'static {
        move |r| self.handle(r)
    }

    fn flag(on: bool, name: &str) -> String {
        if on {
            name.to_string()
        } else {
            format!("no{name}")
        }
    }

    /// The status text, in the daemon's documented form.
    pub fn status_text(&self) -> String {
        format!(
            "Version {FAKE_VERSION}, pid={}, delay={}, {}, {}\nno jobs waiting\n",
            std::process::id(),
            self.delay,
            Self::flag(self.keep, "keep"),
            Self::flag(self.debug, "debug")
        )
    }

    fn json(&self) -> String {
        serde_json::json!({
            "version": FAKE_VERSION,
            "pid": std::process::id(),
            "key": "0x6b65726e",
            "uptime_seconds": 1.5,
            "delay": self.delay,
            "keep": self.keep,
            "debug": self.debug,
            "jobs": [],
            "loaded_modules": [],
            "next_sweep_seconds": null,
            "counters": {
                "requests": self.requests,
                "succeeded": 0, "failed": 0, "merged": 0, "expired": 0, "bad_messages": 0
            },
            "queue": {"messages": 0, "bytes": 0, "max_bytes": 16384},
            "policy": {}
        })
        .to_string()
    }

    pub fn handle(&mut self, r: &Received) -> Action {
        let type_name = kmod_ipc::MsgType::from_number(r.mtype).name().to_string();
        *self.requests.entry(type_name).or_default() += 1;
        if r.mtype != 255 {
            return Action::reply(0, "");
        }
        let word = r.text_str();
        let mut prefix = String::new();
        match word.as_str() {
            "" | "status" => {}
            "debug" | "nodebug" => self.debug = word == "debug",
            "keep" | "nokeep" => self.keep = word == "keep",
            "flush" => prefix = "flushed 0 entries\n".into(),
            "json" => return Action::reply(0, self.json()),
            "policy" => return Action::reply(0, "allow * (hits 0)\n"),
            w => match w.strip_prefix("delay=").map(str::parse::<u64>) {
                Some(Ok(d)) => self.delay = d,
                _ => return Action::reply(1, format!("kerneld: unknown word {w:?}\n")),
            },
        }
        Action::reply(0, prefix + &self.status_text())
    }
}

// ---- keys -------------------------------------------------------------

static KEY_COUNTER: AtomicU32 = AtomicU32::new(0);

/// A key unlikely to be used by anyone else: mixes pid, a counter and the
/// clock.  Callers still check that no queue exists there.
fn candidate_key() -> Key {
    let pid = std::process::id();
    let n = KEY_COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let k = 0x5445_0000u32 ^ pid.rotate_left(16) ^ n.wrapping_mul(0x9e37_79b9) ^ nanos;
    match k as i32 {
        0 => Key(0x5445_0001),
        k if Key(k) == kmod_ipc::DEFAULT_KEY => Key(k ^ 1),
        k => Key(k),
    }
}

fn create_fresh_queue() -> (Key, Queue) {
    for _ in 0..1000 {
        let key = candidate_key();
        // IPC_EXCL: never take over a queue someone else uses.
        // SAFETY: msgget has no memory arguments.
        let qid = unsafe { libc::msgget(key.0, libc::IPC_CREAT | libc::IPC_EXCL | 0o600) };
        if qid >= 0 {
            return (key, Queue::open(key).expect("open the queue just created"));
        }
        let e = std::io::Error::last_os_error();
        assert_eq!(e.raw_os_error(), Some(libc::EEXIST), "msgget: {e}");
    }
    panic!("no free SysV key found");
}

/// A key at which no queue exists: "kerneld is not running" there.
pub fn unused_key() -> Key {
    for _ in 0..1000 {
        let key = candidate_key();
        // SAFETY: msgget has no memory arguments.
        if unsafe { libc::msgget(key.0, 0) } < 0
            && std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOENT)
        {
            return key;
        }
    }
    panic!("no unused SysV key found");
}

/// A queue made by hand at an unused key (any mode, for tests of the
/// shim's refusal of untrusted queues); removed on drop.
pub struct RawQueue(pub Queue);

impl RawQueue {
    pub fn create(mode: i32) -> RawQueue {
        let key = unused_key();
        RawQueue(Queue::create_unchecked(key, mode).expect("create queue"))
    }
}

impl Drop for RawQueue {
    fn drop(&mut self) {
        let _ = self.0.remove();
    }
}

// ---- binaries and processes ---------------------------------------------

/// A workspace binary (kdstat, kdsend, kerneld-modprobe, kerneld).  The
/// test runs from target/debug/deps; the binaries are in target/debug.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test binary is in target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} does not exist: run `cargo build --workspace --bins` before the tests",
        path.display()
    );
    path
}

/// How a finished child went.
#[derive(Debug)]
pub struct Outcome {
    pub pid: u32,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    /// The exit code; panics (with the output) if killed by a signal.
    pub fn code(&self) -> i32 {
        self.status
            .code()
            .unwrap_or_else(|| panic!("killed by a signal: {self:?}"))
    }
}

/// Start `cmd` with stdout and stderr captured (stdin from /dev/null
/// unless the caller set it).
pub fn spawn(cmd: &mut Command) -> Child {
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"))
}

/// Wait for a child, killing it and panicking after `limit` (a bound on
/// correctness, far above what the test needs).
pub fn finish(mut child: Child, limit: Duration) -> Outcome {
    let pid = child.id();
    let readers: Vec<_> = [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .map(|pipe| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            String::from_utf8_lossy(&buf).into_owned()
        })
    })
    .collect();
    let end = Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if Instant::now() >= end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("process {pid} still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut out = readers.into_iter().map(|r| r.join().unwrap());
    Outcome {
        pid,
        status,
        stdout: out.next().unwrap(),
        stderr: out.next().unwrap(),
    }
}

/// Run `cmd` to the end (see [`finish`]).
pub fn run(cmd: &mut Command, limit: Duration) -> Outcome {
    let child = spawn(cmd.stdin(Stdio::null()));
    finish(child, limit)
}

/// The generous bound for a process that should end promptly.
pub const LIMIT: Duration = Duration::from_secs(30);

// ---- files ---------------------------------------------------------------

/// A temporary directory, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "kerneld-tests-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir(&path).expect("create temp dir");
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// Write an executable shell script.
    pub fn script(&self, name: &str, body: &str) -> PathBuf {
        let path = self.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}")).expect("write script");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
            .expect("chmod script");
        path
    }
}

impl Default for TempDir {
    fn default() -> TempDir {
        TempDir::new()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
