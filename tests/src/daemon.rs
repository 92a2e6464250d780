//! The real kerneld, started in the foreground on a private queue, for
//! tests of the daemon itself.
//!
//! Each [`Kerneld`] gets a fresh key, its own temporary state directory,
//! modprobe.d and (unless the Debian module tree is asked for) an empty
//! module directory, so tests run in parallel and never read the host's
//! module configuration.  The daemon's stdout and stderr (every log line,
//! prefixed `kerneld: `) go to a file the test can read.

use crate::fake::{bin, run, unused_key, Outcome, TempDir};
use kmod_ipc::{Client, Error, Key, MsgType, Queue, Reply};
use std::ffi::OsString;
use std::fs::OpenOptions;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Bound on anything the daemon should do promptly (start, answer, stop).
pub const LIMIT: Duration = Duration::from_secs(30);

/// Whether the host kernel can load modules at all (it has /proc/modules
/// only with CONFIG_MODULES).
pub fn host_has_module_support() -> bool {
    Path::new("/proc/modules").exists()
}

/// The Debian 6.12 module directory (ROOT/lib/modules/KVER), fetched once
/// per test process by tests/vm/fetch-kernel.sh.  Panics with the
/// script's output if it cannot be had: tests that need a real module
/// tree fail rather than pass without one.
pub fn debian_tree() -> &'static Path {
    static TREE: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let tree = TREE.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("vm/fetch-kernel.sh");
        // One download at a time across test processes running at once:
        // the script unpacks into a shared cache.
        let lock_path = std::env::temp_dir().join("kerneld-tests-fetch-kernel.lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| format!("{}: {e}", lock_path.display()))?;
        // SAFETY: flock on an fd we own; released when `lock` closes.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(format!(
                "flock {}: {}",
                lock_path.display(),
                std::io::Error::last_os_error()
            ));
        }
        let out = run(Command::new(&script).arg("6.12"), Duration::from_secs(900));
        drop(lock);
        if !out.status.success() {
            return Err(format!(
                "{} 6.12 failed ({}):\n{}",
                script.display(),
                out.status,
                out.stderr
            ));
        }
        // One line: ROOT KVER VMLINUZ.
        let line = out.stdout.lines().last().unwrap_or("").to_string();
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [root, kver, _vmlinuz] = fields[..] else {
            return Err(format!(
                "{} printed {line:?}, expected `ROOT KVER VMLINUZ`",
                script.display()
            ));
        };
        let dir = Path::new(root).join("lib/modules").join(kver);
        if !dir.join("modules.dep.bin").is_file() {
            return Err(format!("{} has no modules.dep.bin", dir.display()));
        }
        Ok(dir)
    });
    match tree {
        Ok(p) => p,
        Err(e) => panic!("this test needs the Debian 6.12 module tree, which is unavailable: {e}"),
    }
}

/// `kerneld --check-config --config PATH`, run to its end.
pub fn check_config(path: &Path) -> Outcome {
    run(
        Command::new(bin("kerneld"))
            .arg("--check-config")
            .arg("--config")
            .arg(path),
        LIMIT,
    )
}

/// A reply id no other request of this process uses: concurrent requests
/// on one queue must not take each other's replies.  Above 1024 + any pid
/// (pids stay below 2^22), so kdstat and kdsend run by tests never clash.
pub fn unique_reply_id() -> i64 {
    static NEXT: AtomicI64 = AtomicI64::new(0x0100_0000);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

enum ModuleDir {
    Empty,
    Debian,
    Path(PathBuf),
}

/// What a test does to the state directory before the start.
type StateSetup = Box<dyn FnOnce(&Path)>;

/// Settings of a [`Kerneld`] before it starts.
pub struct Builder {
    config: Option<String>,
    modprobe: String,
    module_dir: ModuleDir,
    args: Vec<String>,
    key: Option<Key>,
    foreground: bool,
    wrapper: Vec<String>,
    env: Vec<(String, OsString)>,
    record: Option<String>,
    state: Option<StateSetup>,
}

impl Builder {
    /// Lay out the state directory before the start: it is created
    /// (mode 0700) and handed to `f`, which may plant files, links or
    /// FIFOs in it, or change its owner and mode.
    pub fn state(mut self, f: impl FnOnce(&Path) + 'static) -> Builder {
        self.state = Some(Box::new(f));
        self
    }

    /// Set an environment variable for kerneld (`KERNELD_PROC_MODPROBE`).
    pub fn env(mut self, name: &str, value: impl Into<OsString>) -> Builder {
        self.env.push((name.to_string(), value.into()));
        self
    }

    /// Write this as the configuration file and pass `--config`.
    pub fn config(mut self, text: &str) -> Builder {
        self.config = Some(text.to_string());
        self
    }

    /// Lines for the daemon's private modprobe.d (blacklist, install).
    pub fn modprobe(mut self, text: &str) -> Builder {
        self.modprobe.push_str(text);
        self
    }

    /// Use the Debian module tree instead of an empty module directory.
    pub fn debian_tree(mut self) -> Builder {
        self.module_dir = ModuleDir::Debian;
        self
    }

    /// Use this module directory (ROOT/lib/modules/VERSION).
    pub fn module_dir(mut self, dir: &Path) -> Builder {
        self.module_dir = ModuleDir::Path(dir.to_path_buf());
        self
    }

    /// Extra arguments: classic words (`delay=2`, `keep`) or options.
    pub fn arg(mut self, a: &str) -> Builder {
        self.args.push(a.to_string());
        self
    }

    /// Leave out `--foreground`, so that kerneld detaches (only with
    /// [`Builder::run_to_exit`]).
    pub fn background(mut self) -> Builder {
        self.foreground = false;
        self
    }

    /// Run kerneld through this command (`setpriv --reuid=65534 ...`);
    /// only with [`Builder::run_to_exit`].
    pub fn wrapper(mut self, argv: &[&str]) -> Builder {
        self.wrapper = argv.iter().map(|s| s.to_string()).collect();
        self
    }

    /// Start with this record of loaded modules (`loaded.json` in the
    /// state directory), as a kerneld before this one left it.
    pub fn record(mut self, json: &str) -> Builder {
        self.record = Some(json.to_string());
        self
    }

    /// Use this key instead of a fresh unused one.
    pub fn key(mut self, key: Key) -> Builder {
        self.key = Some(key);
        self
    }

    /// Lay out the directory and the full argument list.
    fn prepare(self) -> (Key, TempDir, Vec<OsString>, Vec<(String, OsString)>) {
        let dir = TempDir::new();
        let key = self.key.unwrap_or_else(unused_key);
        let modprobe_d = dir.join("modprobe.d");
        std::fs::create_dir(&modprobe_d).expect("create modprobe.d");
        std::fs::write(modprobe_d.join("kerneld-test.conf"), &self.modprobe)
            .expect("write modprobe.d");
        let module_dir = match self.module_dir {
            ModuleDir::Debian => debian_tree().to_path_buf(),
            ModuleDir::Path(d) => d,
            ModuleDir::Empty => {
                let d = dir.join("modules");
                std::fs::create_dir(&d).expect("create module dir");
                d
            }
        };
        let mut args: Vec<OsString> = vec![
            "--key".into(),
            key.to_string().into(),
            "--state-dir".into(),
            dir.join("state").into(),
            "--module-dir".into(),
            module_dir.into(),
            "--modprobe-d".into(),
            modprobe_d.into(),
        ];
        if let Some(json) = &self.record {
            std::fs::create_dir_all(dir.join("state")).expect("create the state dir");
            std::fs::write(dir.join("state/loaded.json"), json).expect("write loaded.json");
        }
        if let Some(f) = self.state {
            let state = dir.join("state");
            std::fs::create_dir_all(&state).expect("create the state dir");
            std::fs::set_permissions(&state, std::os::unix::fs::PermissionsExt::from_mode(0o700))
                .expect("chmod the state dir");
            f(&state);
        }
        if let Some(text) = &self.config {
            let path = dir.join("kerneld.conf");
            std::fs::write(&path, text).expect("write kerneld.conf");
            args.push("--config".into());
            args.push(path.into());
        }
        if self.foreground {
            args.push("--foreground".into());
        }
        args.extend(self.args.into_iter().map(OsString::from));
        (key, dir, args, self.env)
    }

    /// Start kerneld and wait until it answers a status request; panics
    /// (with its log) if it exits or does not answer within [`LIMIT`].
    pub fn start(self) -> Kerneld {
        assert!(
            self.foreground && self.wrapper.is_empty(),
            "start() runs kerneld itself in the foreground"
        );
        let (key, dir, args, env) = self.prepare();
        let mut k = Kerneld {
            key,
            dir,
            args,
            env,
            child: None,
        };
        k.spawn_and_wait();
        k
    }

    /// Start kerneld and wait until it logs that it started, without a
    /// status request: for instances that serve other types only
    /// (`type=2`), or a key where another queue is found first.  Panics
    /// (with its log) if it exits first.
    pub fn start_without_status(self) -> Kerneld {
        self.try_start_without_status()
            .unwrap_or_else(|(status, log)| {
                panic!("kerneld exited while starting ({status}):\n{log}")
            })
    }

    /// [`Builder::start_without_status`], or the exit status and log of a
    /// kerneld that exited before it started.
    pub fn try_start_without_status(self) -> Result<Kerneld, (ExitStatus, String)> {
        assert!(self.foreground && self.wrapper.is_empty());
        let (key, dir, args, env) = self.prepare();
        let mut k = Kerneld {
            key,
            dir,
            args,
            env,
            child: None,
        };
        k.spawn();
        let end = Instant::now() + LIMIT;
        while !k.log().contains("kerneld: started, version") {
            let child = k.child.as_mut().expect("kerneld was started");
            if let Some(status) = child.try_wait().expect("try_wait") {
                k.child = None;
                return Err((status, k.log()));
            }
            assert!(
                Instant::now() < end,
                "kerneld did not start within {LIMIT:?}:\n{}",
                k.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(k)
    }

    /// Run kerneld to its own exit (a refused start, or the parent of a
    /// daemon started without `--foreground`), with stdout and stderr
    /// captured.  The directory stays alive with the result.
    pub fn run_to_exit(self) -> Exited {
        let wrapper = self.wrapper.clone();
        let (key, dir, args, env) = self.prepare();
        let mut cmd = match wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(bin("kerneld"));
                c
            }
            None => Command::new(bin("kerneld")),
        };
        cmd.args(&args)
            .env_remove("NOTIFY_SOCKET")
            .env_remove("KERNELD_KEY")
            .envs(env);
        let outcome = run(&mut cmd, LIMIT);
        Exited { key, dir, outcome }
    }
}

/// A kerneld run that ended by itself; see [`Builder::run_to_exit`].
pub struct Exited {
    pub key: Key,
    pub dir: TempDir,
    pub outcome: Outcome,
}

/// A running kerneld on a private queue.  Dropping it stops the daemon
/// (SIGTERM, then SIGKILL after a bound) and removes the queue if it is
/// still there.
pub struct Kerneld {
    key: Key,
    dir: TempDir,
    args: Vec<OsString>,
    env: Vec<(String, OsString)>,
    child: Option<Child>,
}

impl Kerneld {
    pub fn builder() -> Builder {
        Builder {
            config: None,
            modprobe: String::new(),
            module_dir: ModuleDir::Empty,
            args: Vec::new(),
            key: None,
            foreground: true,
            wrapper: Vec::new(),
            env: Vec::new(),
            record: None,
            state: None,
        }
    }

    /// A kerneld with default settings and an empty module directory.
    pub fn start() -> Kerneld {
        Kerneld::builder().start()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("kerneld.log")
    }

    fn spawn_and_wait(&mut self) {
        self.spawn();
        self.wait_ready();
    }

    fn spawn(&mut self) {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open the log file");
        let child = Command::new(bin("kerneld"))
            .args(&self.args)
            .env_remove("NOTIFY_SOCKET")
            .env_remove("KERNELD_KEY")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup the log file"))
            .stderr(log)
            .spawn()
            .expect("spawn kerneld");
        self.child = Some(child);
    }

    /// Wait for the queue, then for the answer to one status request,
    /// checking between short waits that the daemon is still alive.
    fn wait_ready(&mut self) {
        let end = Instant::now() + LIMIT;
        // Registered first: a queue may be there already, left behind by
        // a kerneld that was killed, and what is sent to it before the new
        // one has taken it over may be dropped as stale.
        let pid = self.pid();
        let client = loop {
            self.assert_running("while starting");
            let live = kmod_ipc::instances::registered(self.key)
                .live
                .iter()
                .any(|o| o.pid == pid);
            if let (true, Ok(c)) = (live, Client::connect(self.key)) {
                break c;
            }
            assert!(
                Instant::now() < end,
                "kerneld created no queue within {LIMIT:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        let id = unique_reply_id();
        client
            .send(MsgType::Status, b"", id)
            .unwrap_or_else(|e| panic!("sending the first status request: {e}\n{}", self.log()));
        loop {
            match client.wait_reply(id, Some(Duration::from_millis(100))) {
                Ok(r) if r.status == 0 => return,
                Ok(r) => panic!("first status request answered {r:?}\n{}", self.log()),
                Err(Error::Timeout(_)) => {}
                Err(e) => panic!("waiting for the first status reply: {e}\n{}", self.log()),
            }
            self.assert_running("before answering its first status request");
            assert!(
                Instant::now() < end,
                "kerneld did not answer a status request within {LIMIT:?}:\n{}",
                self.log()
            );
        }
    }

    fn assert_running(&mut self, when: &str) {
        let child = self.child.as_mut().expect("kerneld was started");
        if let Some(status) = child.try_wait().expect("try_wait") {
            self.child = None;
            panic!("kerneld exited {when} ({status}):\n{}", self.log());
        }
    }

    pub fn key(&self) -> Key {
        self.key
    }

    /// The key as `--key` takes it.
    pub fn key_arg(&self) -> String {
        self.key.to_string()
    }

    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("kerneld is running").id()
    }

    /// The temporary directory holding state, configuration and log.
    pub fn dir(&self) -> &TempDir {
        &self.dir
    }

    /// The configuration file (written only if the builder was given one).
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("kerneld.conf")
    }

    /// The queue as it is now (kerneld may have recreated it).
    pub fn queue(&self) -> Queue {
        Queue::open(self.key).unwrap_or_else(|e| panic!("open the queue: {e}\n{}", self.log()))
    }

    /// Everything kerneld wrote to stdout and stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Wait until the log contains `needle`; returns the log.
    pub fn wait_log(&self, needle: &str) -> String {
        let end = Instant::now() + LIMIT;
        loop {
            let log = self.log();
            if log.contains(needle) {
                return log;
            }
            assert!(
                Instant::now() < end,
                "kerneld did not log {needle:?} within {LIMIT:?}:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Wait until `needle` occurs at least `n` times in the log.
    pub fn wait_log_count(&self, needle: &str, n: usize) -> String {
        let end = Instant::now() + LIMIT;
        loop {
            let log = self.log();
            if log.matches(needle).count() >= n {
                return log;
            }
            assert!(
                Instant::now() < end,
                "kerneld did not log {needle:?} {n} times within {LIMIT:?}:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Send a request on a reply id of its own and wait for the answer.
    pub fn try_request(&self, t: MsgType, text: &[u8]) -> Result<Reply, Error> {
        Client::connect(self.key)?.request(t, text, unique_reply_id(), Some(LIMIT))
    }

    /// [`Kerneld::try_request`], panicking with the log on failure.
    pub fn request(&self, t: MsgType, text: &str) -> Reply {
        self.try_request(t, text.as_bytes())
            .unwrap_or_else(|e| panic!("{t} {text:?}: {e}\nlog:\n{}", self.log()))
    }

    /// A status/control word (type 255).
    pub fn control(&self, word: &str) -> Reply {
        self.request(MsgType::Status, word)
    }

    /// The JSON status document.
    pub fn status_json(&self) -> serde_json::Value {
        let r = self.control("json");
        assert_eq!(r.status, 0, "json: {r:?}");
        serde_json::from_slice(&r.text)
            .unwrap_or_else(|e| panic!("status json does not parse: {e}: {}", r.text_lossy()))
    }

    /// One of the JSON counters (`merged`, `bad_messages`, ...).
    pub fn counter(&self, name: &str) -> u64 {
        let j = self.status_json();
        j["counters"][name]
            .as_u64()
            .unwrap_or_else(|| panic!("no counter {name:?} in {j}"))
    }

    /// Send a signal to the daemon.
    pub fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) on our own child's pid.
        let r = unsafe { libc::kill(self.pid() as libc::pid_t, sig) };
        assert_eq!(r, 0, "kill: {}", std::io::Error::last_os_error());
    }

    /// SIGSTOP, and wait until every thread has stopped: until then a
    /// thread still blocked in msgrcv is handed new messages directly by
    /// the kernel, so they would never wait in the queue.
    pub fn pause(&self) {
        self.signal(libc::SIGSTOP);
        let tasks = format!("/proc/{}/task", self.pid());
        let all_stopped = || {
            std::fs::read_dir(&tasks).is_ok_and(|rd| {
                rd.flatten().all(|t| {
                    std::fs::read_to_string(t.path().join("stat"))
                        .ok()
                        .and_then(|st| {
                            st.rsplit_once(')').map(|(_, r)| {
                                r.trim_start().starts_with('t') || r.trim_start().starts_with('T')
                            })
                        })
                        .unwrap_or(true)
                })
            })
        };
        let end = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !all_stopped() {
            assert!(std::time::Instant::now() < end, "kerneld did not stop");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    pub fn sigterm(&self) {
        self.signal(libc::SIGTERM);
    }

    pub fn sighup(&self) {
        self.signal(libc::SIGHUP);
    }

    /// Kill with SIGKILL and reap: the queue stays, as after a crash.
    pub fn sigkill(&mut self) {
        self.signal(libc::SIGKILL);
        let mut child = self.child.take().expect("kerneld is running");
        let _ = child.wait();
    }

    /// Wait for the daemon to exit; panics after `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let end = Instant::now() + limit;
        let child = self.child.as_mut().expect("kerneld is running");
        loop {
            if let Some(s) = child.try_wait().expect("try_wait") {
                self.child = None;
                return s;
            }
            assert!(
                Instant::now() < end,
                "kerneld still running {limit:?} after being asked to stop:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGTERM and wait.
    pub fn stop(&mut self) -> ExitStatus {
        self.sigterm();
        self.wait_exit(LIMIT)
    }

    /// Whether the daemon process is still there.
    pub fn running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => c.try_wait().expect("try_wait").is_none(),
            None => false,
        }
    }

    /// Start kerneld again (after it stopped or was killed) with the same
    /// key, state directory and arguments; the log continues.
    pub fn restart(&mut self) {
        assert!(!self.running(), "restart: kerneld is still running");
        self.child = None;
        self.spawn_and_wait();
    }
}

impl Drop for Kerneld {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = child.id() as libc::pid_t;
            // SAFETY: kill(2) on our own child; SIGCONT first in case a
            // test left it stopped.
            unsafe {
                libc::kill(pid, libc::SIGCONT);
                libc::kill(pid, libc::SIGTERM);
            }
            let end = Instant::now() + Duration::from_secs(10);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(10));
            }
            if child.try_wait().ok().flatten().is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if let Ok(q) = Queue::open(self.key) {
            let _ = q.remove();
        }
    }
}
