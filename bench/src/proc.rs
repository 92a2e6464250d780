//! Processes the bench starts: kerneld daemons on private queue keys, the
//! echo process that is the floor, and one-shot programs timed with their
//! peak RSS.  A watchdog ends the bench (and every process it started) if
//! nothing progresses for a minute, so a lost reply cannot hang a run.

use kmod_ipc::{Header, Key, Message, MsgType, Queue, TypeFilter, DEFAULT_TEXT_MAX};
use serde_json::Value;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Bumped by every completed round trip; the watchdog watches it.
pub static PROGRESS: AtomicU64 = AtomicU64::new(0);
static CHILDREN: Mutex<Vec<i32>> = Mutex::new(Vec::new());

fn register(pid: u32) {
    CHILDREN.lock().unwrap().push(pid as i32);
}

fn unregister(pid: u32) {
    CHILDREN.lock().unwrap().retain(|p| *p != pid as i32);
}

/// Kill what we started and exit: for the watchdog and fatal errors.
pub fn abort(why: &str) -> ! {
    eprintln!("kerneld-bench: {why}");
    for pid in CHILDREN.lock().unwrap().iter() {
        // SAFETY: kill on pids of children we started and registered.
        unsafe {
            libc::kill(*pid, libc::SIGKILL);
        }
    }
    std::process::exit(3);
}

/// Start the watchdog thread: no progress for `limit` ends the run.
pub fn start_watchdog(limit: Duration) {
    std::thread::spawn(move || {
        let mut last = PROGRESS.load(Ordering::Relaxed);
        let mut since = Instant::now();
        loop {
            std::thread::sleep(Duration::from_secs(1));
            let now = PROGRESS.load(Ordering::Relaxed);
            if now != last {
                last = now;
                since = Instant::now();
            } else if since.elapsed() > limit {
                abort(&format!(
                    "no progress for {} s (a reply lost?); stopping",
                    limit.as_secs()
                ));
            }
        }
    });
}

/// Mark progress by hand (long waits that are not round trips).
pub fn progress() {
    PROGRESS.fetch_add(1, Ordering::Relaxed);
}

/// Reply ids: unique per thread and use, above 0x10000, far below the
/// kernel-style ids (0x7fff0000 + pid) the shim uses.
static NEXT_ID: AtomicI64 = AtomicI64::new(0x2_0000);

pub fn fresh_id() -> i64 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

/// A key no queue uses yet.
pub fn free_key() -> Key {
    static N: AtomicU32 = AtomicU32::new(0);
    let base = 0x6b62_0000u32 ^ ((std::process::id() & 0x3ff) << 5);
    loop {
        let k = Key((base + N.fetch_add(1, Ordering::Relaxed)) as i32);
        // SAFETY: msgget without IPC_CREAT only looks the key up.
        if unsafe { libc::msgget(k.0, 0) } < 0 {
            return k;
        }
    }
}

/// One client of a queue, as kerneld's clients talk: send a request with
/// the new header, wait for the reply on its own id (joining parts).
#[derive(Clone)]
pub struct Conn {
    q: Queue,
    header: Header,
}

impl Conn {
    pub fn open(key: Key) -> Result<Conn, String> {
        Ok(Conn {
            q: Queue::open(key).map_err(|e| e.to_string())?,
            header: Header::new_with_pid(std::process::id()),
        })
    }

    /// One round trip.  A signal breaks the wait only when `give_up` is
    /// set by then (see [`kmod_ipc::interrupt_thread`]).
    pub fn rtt(
        &self,
        t: MsgType,
        text: &[u8],
        id: i64,
        give_up: Option<&AtomicBool>,
    ) -> Result<(i64, Vec<u8>), String> {
        self.send(t, text, id)?;
        self.wait(id, give_up)
    }

    pub fn send(&self, t: MsgType, text: &[u8], id: i64) -> Result<(), String> {
        let msg = Message::request(t, id, self.header, text);
        self.q
            .send(&msg, usize::MAX, false)
            .map_err(|e| e.to_string())
    }

    pub fn wait(&self, id: i64, give_up: Option<&AtomicBool>) -> Result<(i64, Vec<u8>), String> {
        let mut text = Vec::new();
        loop {
            match self.q.recv(TypeFilter::Exactly(id), usize::MAX, false) {
                Ok(Some((_, Ok(m)))) => {
                    text.extend_from_slice(&m.text);
                    if m.id != kmod_ipc::REPLY_CONTINUES {
                        PROGRESS.fetch_add(1, Ordering::Relaxed);
                        return Ok((m.id, text));
                    }
                }
                Ok(Some((_, Err(e)))) => return Err(format!("malformed reply: {e}")),
                Ok(None) => {}
                Err(kmod_ipc::Error::Interrupted) => {
                    if give_up.is_some_and(|g| g.load(Ordering::SeqCst)) {
                        return Err("gave up waiting".into());
                    }
                }
                Err(e) => return Err(e.to_string()),
            }
        }
    }

    /// Replies waiting on `id` (a second answer to one request).
    pub fn count_waiting(&self, id: i64) -> usize {
        let mut n = 0;
        while let Ok(Some(_)) = self.q.recv_raw(TypeFilter::Exactly(id), true) {
            n += 1;
        }
        n
    }
}

/// A kerneld started by the bench.
pub struct Kerneld {
    child: Option<Child>,
    pub name: String,
    pub key: Key,
    pub log: PathBuf,
    /// How it was started: a successor (`respawn`) is started the same way.
    cmd: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
}

/// How to start one.
pub struct KerneldSpec<'a> {
    pub name: &'a str,
    pub bin: &'a Path,
    pub work: &'a Path,
    pub module_dir: &'a Path,
    /// Text of its configuration file.
    pub config: &'a str,
    pub modprobe_d: Option<&'a Path>,
}

impl Kerneld {
    pub fn start(spec: &KerneldSpec) -> Result<Kerneld, String> {
        Kerneld::start_in(spec, None)
    }

    /// Start with `KERNELD_KEYS_DIR` set to `keys_dir` (the instance
    /// registry of section 9, kept out of /run/kerneld/keys).
    pub fn start_in(spec: &KerneldSpec, keys_dir: Option<&Path>) -> Result<Kerneld, String> {
        let dir = spec.work.join(spec.name);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let conf = dir.join("kerneld.conf");
        std::fs::write(&conf, spec.config).map_err(|e| e.to_string())?;
        let log = dir.join("kerneld.log");
        std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let key = free_key();
        let mut cmd: Vec<OsString> = vec![
            spec.bin.into(),
            "--foreground".into(),
            "--keep".into(),
            "--key".into(),
            key.to_string().into(),
            "--state-dir".into(),
            dir.join("state").into(),
            "--module-dir".into(),
            spec.module_dir.into(),
            "--config".into(),
            conf.into(),
        ];
        if let Some(d) = spec.modprobe_d {
            cmd.extend(["--modprobe-d".into(), d.into()]);
        }
        let env = keys_dir
            .map(|d| ("KERNELD_KEYS_DIR".into(), d.into()))
            .into_iter()
            .collect();
        let mut k = Kerneld {
            child: None,
            name: spec.name.to_string(),
            key,
            log,
            cmd,
            env,
        };
        k.spawn()?;
        k.wait_ready()?;
        Ok(k)
    }

    /// Start the process (its output appended to the log).
    fn spawn(&mut self) -> Result<(), String> {
        let logf = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.log)
            .map_err(|e| format!("{}: {e}", self.log.display()))?;
        let child = Command::new(&self.cmd[0])
            .args(&self.cmd[1..])
            .env_remove("KERNELD_KEY")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(logf.try_clone().map_err(|e| e.to_string())?)
            .stderr(logf)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", Path::new(&self.cmd[0]).display()))?;
        register(child.id());
        self.child = Some(child);
        Ok(())
    }

    /// SIGKILL, as the OOM killer does: the queue and what waits in it
    /// stay.  Not reaped here (see `reap`), so that whatever runs next
    /// may race the death.
    pub fn sigkill(&self) {
        if let Some(c) = &self.child {
            // SAFETY: kill on our child's pid, not reaped yet.
            unsafe {
                libc::kill(c.id() as i32, libc::SIGKILL);
            }
        }
    }

    /// SIGSTOP, and wait until every thread has stopped: until then a
    /// thread still blocked in msgrcv is handed new messages directly, so
    /// they would never wait in the queue.
    pub fn pause(&self) -> Result<(), String> {
        let pid = self.pid();
        // SAFETY: kill on our child's pid.
        unsafe {
            libc::kill(pid as i32, libc::SIGSTOP);
        }
        let tasks = format!("/proc/{pid}/task");
        let stopped = |t: &std::fs::DirEntry| {
            std::fs::read_to_string(t.path().join("stat"))
                .ok()
                .and_then(|st| {
                    st.rsplit_once(')')
                        .map(|(_, r)| matches!(r.trim_start().chars().next(), Some('t' | 'T')))
                })
                // A thread gone meanwhile is no thread that receives.
                .unwrap_or(true)
        };
        let end = Instant::now() + Duration::from_secs(10);
        while !std::fs::read_dir(&tasks).is_ok_and(|rd| rd.flatten().all(|t| stopped(&t))) {
            if Instant::now() > end {
                return Err(format!("kerneld {} did not stop within 10 s", self.name));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(())
    }

    /// Reap the process that was killed and start its successor on the
    /// same key, state directory and configuration, without waiting for
    /// it to answer.
    pub fn respawn(&mut self) -> Result<(), String> {
        self.reap();
        self.spawn()
    }

    /// Wait for the process killed to be gone: its files closed, its
    /// instance lock released.
    pub fn reap(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
            unregister(c.id());
        }
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let end = Instant::now() + Duration::from_secs(20);
        while Instant::now() < end {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    return Err(format!(
                        "kerneld {} exited at start ({st}): {}",
                        self.name,
                        std::fs::read_to_string(&self.log).unwrap_or_default()
                    ));
                }
            }
            if let Ok(c) = Conn::open(self.key) {
                if c.rtt(MsgType::Status, b"", fresh_id(), None).is_ok() {
                    return Ok(());
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(format!("kerneld {} not ready after 20 s", self.name))
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    pub fn conn(&self) -> Conn {
        Conn::open(self.key).unwrap_or_else(|e| abort(&format!("kerneld {}: {e}", self.name)))
    }

    /// The status document (`kdstat --json`).
    pub fn json(&self) -> Value {
        let (_, text) = self
            .conn()
            .rtt(MsgType::Status, b"json", fresh_id(), None)
            .unwrap_or_else(|e| abort(&format!("kerneld {} json: {e}", self.name)));
        serde_json::from_slice(&text).unwrap_or(Value::Null)
    }

    /// A counter from the status document.
    pub fn counter(&self, name: &str) -> u64 {
        self.json()["counters"][name].as_u64().unwrap_or(0)
    }

    /// A `VmXXX:` figure of /proc/PID/status, in kB.
    pub fn vm(&self, field: &str) -> Option<u64> {
        proc_status_kb(self.pid(), field)
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill on our child's pid.
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
            let end = Instant::now() + Duration::from_secs(10);
            loop {
                match c.try_wait() {
                    Ok(Some(_)) => break,
                    _ if Instant::now() > end => {
                        let _ = c.kill();
                        let _ = c.wait();
                        break;
                    }
                    _ => std::thread::sleep(Duration::from_millis(10)),
                }
            }
            unregister(c.id());
        }
        // Also after a SIGKILL and `reap`: the queue stays until here.
        if let Ok(q) = Queue::open(self.key) {
            let _ = q.remove();
        }
    }
}

impl Drop for Kerneld {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn proc_status_kb(pid: u32, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// The floor: a process that answers every request on its own private
/// queue at once, with what kerneld's receiver does at the least
/// (receive, decode, reply with the same header shape).
pub struct Echo {
    child: Option<Child>,
    pub key: Key,
}

impl Echo {
    pub fn start() -> Result<Echo, String> {
        let key = free_key();
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let child = Command::new(exe)
            .arg("__echo")
            .arg(key.to_string())
            .stdin(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start the echo process: {e}"))?;
        register(child.id());
        let mut echo = Echo {
            child: Some(child),
            key,
        };
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(c) = Conn::open(key) {
                if c.rtt(MsgType::Status, b"", fresh_id(), None).is_ok() {
                    return Ok(echo);
                }
            }
            if Instant::now() > end {
                echo.kill();
                return Err("the echo process did not answer within 10 s".into());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    fn kill(&mut self) {
        if let Ok(q) = Queue::open(self.key) {
            let _ = q.remove();
        }
        if let Some(mut c) = self.child.take() {
            let end = Instant::now() + Duration::from_secs(5);
            while !matches!(c.try_wait(), Ok(Some(_))) {
                if Instant::now() > end {
                    let _ = c.kill();
                    let _ = c.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            unregister(c.id());
        }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The echo process's main loop (`kerneld-bench __echo KEY`).
pub fn echo_main(key: &str) -> i32 {
    let Ok(key) = key.parse::<Key>() else {
        return 2;
    };
    let q = match Queue::create(key) {
        Ok(q) => q,
        Err(e) => {
            eprintln!("echo: {e}");
            return 1;
        }
    };
    let pid = std::process::id();
    loop {
        match q.recv_raw(TypeFilter::UpTo(255), false) {
            Ok(Some((mtype, body))) => {
                if let Ok(m) = Message::decode_body(mtype, &body, DEFAULT_TEXT_MAX) {
                    if m.wants_reply() {
                        let _ = q.send(&m.reply(0, pid, m.text.clone()), usize::MAX, false);
                    }
                }
            }
            Ok(None) | Err(kmod_ipc::Error::Interrupted) => {}
            Err(_) => return 0,
        }
    }
}

/// One run of a program to completion.
#[derive(Debug, Clone, Copy)]
pub struct Run {
    pub ns: u64,
    /// Exit status (or 128 + signal).
    pub status: i32,
    /// The child's peak RSS (ru_maxrss of wait4), kB.
    pub maxrss_kb: i64,
}

/// Start `cmd`, wait for it with wait4: wall time from spawn to reaping,
/// exit status and peak RSS.
pub fn run_once(cmd: &mut Command) -> Result<Run, String> {
    let t0 = Instant::now();
    let child = cmd.spawn().map_err(|e| e.to_string())?;
    let pid = child.id() as i32;
    let mut status = 0;
    // SAFETY: rusage is plain data, valid all zeroes.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: wait4 fills status and ru, both ours; pid is our child,
    // reaped here (std's Child is not waited on afterwards).
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    let ns = t0.elapsed().as_nanos() as u64;
    drop(child);
    if r != pid {
        return Err(format!("wait4: {}", std::io::Error::last_os_error()));
    }
    progress();
    let status = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    };
    Ok(Run {
        ns,
        status,
        maxrss_kb: ru.ru_maxrss,
    })
}

/// Pin every thread of process `pid` (0: this process) to the CPUs in
/// `cpus`; threads started later inherit the mask of their creator.
pub fn pin(pid: u32, cpus: &[usize]) {
    let pid = if pid == 0 { std::process::id() } else { pid };
    // SAFETY: cpu_set_t is plain data, filled by CPU_ZERO/CPU_SET.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &c in cpus {
        // SAFETY: c is below CPU_SETSIZE (checked by the caller's nproc).
        unsafe { libc::CPU_SET(c, &mut set) };
    }
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    for tid in tasks {
        // SAFETY: sched_setaffinity on a thread id with a valid set.
        unsafe {
            libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set);
        }
    }
}

/// Every CPU of the machine.
pub fn all_cpus() -> Vec<usize> {
    (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect()
}
