//! kerneld: start-up, daemonizing, signals and shutdown.

mod helper;
mod instance;

use clap::Parser;
use kerneld::backend::libkmod::{Kmod, KmodConfig};
use kerneld::backend::ModuleBackend;
use kerneld::cli::{filter_for, Cli};
use kerneld::config::{self, Config};
use kerneld::record::Record;
use kerneld::server::{Daemon, Parts, Settings};
use kerneld::status::VERSION;
use kerneld::trace::Tracer;
use kerneld::watch::Watched;
use kerneld::{log, QUEUE_BYTES};
use kmod_ipc::{Error as IpcError, How, Key, Queue};
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg, OFlag};
use nix::sys::signal::{SigHandler, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{ForkResult, Pid};
use std::hash::{Hash, Hasher};
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const EXIT_RUNTIME: u8 = 1;
const EXIT_CONFIG: u8 = 3;
const EXIT_PERMISSION: u8 = 4;

/// What the daemon writes on the start-up pipe when it is ready; log lines
/// never hold a NUL.
const READY: &[u8] = b"\0ready\n";

fn fail(code: u8, msg: &str) -> ExitCode {
    // Not eprintln!: a closed stderr must not turn into a panic.
    let _ = writeln!(std::io::stderr(), "kerneld: {msg}");
    ExitCode::from(code)
}

/// A line on stdout; a closed stdout is no reason to fail.
fn say(line: &str) {
    let mut out = std::io::stdout();
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}

/// After `log::init`: log the error (syslog, and the terminal until
/// kerneld is ready) and give the exit status.
fn die(code: u8, msg: &str) -> ExitCode {
    log::error(msg);
    ExitCode::from(code)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let words = cli.words();

    let required = cli.config != Path::new(config::DEFAULT_PATH);
    let cfg = match Config::load(&cli.config, required) {
        Ok(c) => c,
        Err(e) => return fail(EXIT_CONFIG, &format!("configuration error: {e}")),
    };
    if cli.check_config {
        match &cfg.path {
            Some(p) => say(&format!(
                "{}: OK ({} policy rules)",
                p.display(),
                cfg.policy.rules.len()
            )),
            None => say(&format!(
                "{}: not present: defaults (no policy rules; every request is allowed)",
                cli.config.display()
            )),
        }
        return ExitCode::SUCCESS;
    }
    if !nix::unistd::geteuid().is_root() {
        return fail(
            EXIT_PERMISSION,
            "must be run as root: it loads kernel modules and owns the kernel's request queue",
        );
    }
    let settings = Settings {
        delay: words.delay.or(cfg.delay).unwrap_or(60).max(1),
        keep: words.keep || cfg.keep.unwrap_or(false),
        debug: words.debug || cfg.debug.unwrap_or(false),
    };
    let key = match Key::resolve(cli.key) {
        Ok(k) => k,
        Err(e) => return fail(2, &e),
    };
    let state_dir = cli
        .state_dir
        .clone()
        .or_else(|| cfg.state_dir.clone())
        .unwrap_or_else(|| PathBuf::from("/run/kerneld"));
    if let Err(e) = std::fs::create_dir_all(&state_dir)
        .and_then(|_| std::fs::set_permissions(&state_dir, std::fs::Permissions::from_mode(0o700)))
    {
        return fail(
            EXIT_RUNTIME,
            &format!("cannot create state directory {}: {e}", state_dir.display()),
        );
    }

    // Detach now: the daemon reports every start-up problem through a pipe
    // that the parent copies to the terminal, and the parent's exit status
    // is the daemon's until it is ready.
    let mut startup = if cli.foreground {
        say(&format!(
            "Starting kerneld, version {VERSION} (pid {})",
            std::process::id()
        ));
        None
    } else {
        match daemonize() {
            Ok(Detached::Parent(code)) => return code,
            Ok(Detached::Child(pipe)) => Some(pipe),
            Err(e) => return fail(EXIT_RUNTIME, &format!("cannot fork: {e}")),
        }
    };
    log::init(true);
    let code = serve(cli, cfg, settings, key, state_dir, required, &mut startup);
    // A start-up that failed: the parent gets the status from waitpid.
    drop(startup);
    code
}

/// Run the daemon, from locking its state directory to its stop.
fn serve(
    cli: Cli,
    cfg: Config,
    settings: Settings,
    key: Key,
    state_dir: PathBuf,
    required: bool,
    startup: &mut Option<OwnedFd>,
) -> ExitCode {
    let words = cli.words();
    let filter = filter_for(words.msg_type);
    let me = std::process::id();
    let _lock = match lock_state_dir(&state_dir) {
        Ok(f) => f,
        Err(e) => return die(EXIT_RUNTIME, &e),
    };

    // One kerneld per key and message type; the queue is claimed under
    // the key's lock, so that no other instance starts or stops meanwhile.
    let key_lock = match instance::KeyLock::acquire(key) {
        Ok(l) => l,
        Err(e) => return die(EXIT_RUNTIME, &e),
    };
    if let Some(other) = key_lock.conflict(filter, me) {
        return die(
            EXIT_RUNTIME,
            &format!(
                "another kerneld, {}, serves key {key} with message types that overlap {}; \
                 stop it first (kill {}), or give this one another --key or a type=N of its own",
                other.describe(),
                instance::filter_word(filter),
                other.pid
            ),
        );
    }
    let claimed = match Queue::claim(key) {
        Ok(c) => c,
        Err(e) => {
            let last = key_lock.others(me).is_empty();
            key_lock.release(last);
            let code = match e {
                IpcError::PermissionDenied { .. } => EXIT_PERMISSION,
                _ => EXIT_RUNTIME,
            };
            return die(code, &e.to_string());
        }
    };
    for f in &claimed.removed {
        log::warn(&format!(
            "removed a message queue at key {key} that was not kerneld's: {}",
            f.describe()
        ));
    }
    if let How::Reused { messages } = claimed.how {
        log::notice(&format!(
            "took over kerneld's own queue at key {key} (id {}, {messages} messages waiting)",
            claimed.queue.id()
        ));
    }
    let queue = claimed.queue;
    let registration = match key_lock.join(me, filter, &state_dir) {
        Ok(r) => r,
        Err(e) => {
            let last = key_lock.others(me).is_empty();
            if last {
                let _ = queue.remove();
            }
            key_lock.release(last);
            return die(EXIT_RUNTIME, &e);
        }
    };
    key_lock.release(false);
    let mut stopper = Stopper {
        key,
        queue: queue.clone(),
        registration: Some(registration),
        pid_file: None,
        registered: None,
    };

    if let Err(e) = queue.set_max_bytes(QUEUE_BYTES) {
        log::warn(&format!(
            "could not raise the queue's capacity to {QUEUE_BYTES} bytes ({e}); bursts of requests may wait for room"
        ));
    }
    let kmod_config = KmodConfig {
        module_dir: cli.module_dir.clone(),
        config_dirs: cli.modprobe_d.clone(),
    };
    if !Kmod::index_present(&kmod_config) {
        log::warn(&format!(
            "no module index in {}: every request will be answered 'not found' until depmod runs",
            kmod_config.module_dir.as_deref().map_or_else(
                || format!("/lib/modules/{}", kerneld::backend::sysfs::release()),
                |d| d.display().to_string()
            )
        ));
    }
    if !Path::new("/proc/modules").exists() {
        log::warn("this kernel has no loadable module support (no /proc/modules): loads will fail");
    }
    match write_pid_file(&state_dir) {
        Ok(p) => stopper.pid_file = Some(p),
        Err(e) => log::warn(&e),
    }

    let signals = block_signals();
    let tracer = match Tracer::start() {
        Ok(t) => Some(t),
        Err(e) => {
            log::warn(&format!(
                "requester tracing unavailable: {e}; requests through the usermode helper \
                 (kerneld-modprobe) have no known requester (the in-kernel sender, kerneld_shim, \
                 sends its own), and rules with `if` conditions treat them as unknown-requester = {}",
                if cfg.policy.unknown_requester_root { "root" } else { "user" }
            ));
            None
        }
    };
    let (record, warning) = Record::load(&state_dir);
    if let Some(w) = warning {
        log::error(&w);
    }
    let fingerprint_config = kmod_config.clone();
    let factory_config = kmod_config.clone();
    let qid = queue.id();
    let daemon = Daemon::new(Parts {
        settings,
        config: cfg,
        queue,
        filter,
        factory: Box::new(move || {
            Kmod::new(&factory_config).map(|k| Box::new(k) as Box<dyn ModuleBackend + Send>)
        }),
        record,
        fingerprint: {
            let (files, dirs) = fingerprint_paths(&fingerprint_config);
            let (f, d) = (files.clone(), dirs.clone());
            let watched = Watched::new(files, dirs, move || index_fingerprint(&f, &d));
            Box::new(move || watched.get())
        },
        tracer,
    });
    if cli.register {
        let shim = cli.shim.clone().or_else(|| {
            std::env::current_exe()
                .ok()
                .map(|p| p.with_file_name("kerneld-modprobe"))
        });
        match helper::register(shim.as_deref(), &state_dir) {
            Ok((reg, report)) => {
                log::notice(&report);
                stopper.registered = Some(reg);
            }
            Err(e) => {
                log::error(&e);
                if let Some(t) = daemon.tracer() {
                    t.stop();
                }
                stopper.finish();
                log::notice("stopped: --register failed");
                return ExitCode::from(EXIT_RUNTIME);
            }
        }
    }

    log::notice(&format!(
        "started, version {VERSION}, pid={me}, qid={qid}, key {key}, {}, delay={}, {}keep, {}debug, state in {}",
        instance::filter_word(filter),
        settings.delay,
        if settings.keep { "" } else { "no" },
        if settings.debug { "" } else { "no" },
        state_dir.display()
    ));

    let d = Arc::clone(&daemon);
    std::thread::Builder::new()
        .name("kerneld-timer".into())
        .spawn(move || d.timer_loop())
        .expect("spawn the timer thread");
    let receiver_done = Arc::new(AtomicBool::new(false));
    spawn_signal_thread(
        signals,
        Arc::clone(&daemon),
        Arc::clone(&receiver_done),
        cli.config.clone(),
        required,
    );
    notify_ready();
    if let Some(pipe) = startup.take() {
        ready(pipe);
    }

    daemon.receive_loop();
    receiver_done.store(true, Ordering::SeqCst);

    log::notice("stopping: answering requests in flight");
    if !daemon.drain(Duration::from_secs(30)) {
        log::warn("requests still in flight after 30 s; stopping anyway");
    }
    if let Some(t) = daemon.tracer() {
        t.stop();
    }
    // The receiver may have created the queue again meanwhile.
    stopper.queue = daemon.queue();
    stopper.finish();
    log::notice("stopped");
    ExitCode::SUCCESS
}

/// What a stop undoes, also after a failed start.
struct Stopper {
    key: Key,
    queue: Queue,
    registration: Option<instance::Instance>,
    pid_file: Option<PathBuf>,
    registered: Option<helper::Registered>,
}

impl Stopper {
    fn finish(&mut self) {
        if let Some(reg) = self.registered.take() {
            match helper::restore(&reg) {
                Ok(line) => log::notice(&line),
                Err(e) => log::error(&format!(
                    "could not put the previous module helper back: {e}; write it to \
                     /proc/sys/kernel/modprobe by hand (usually /sbin/modprobe)"
                )),
            }
        }
        // The queue goes only with the last instance serving it.
        match instance::KeyLock::acquire(self.key) {
            Ok(lock) => {
                let me = std::process::id();
                let others = lock.others(me);
                if others.is_empty() {
                    if let Err(e) = self.queue.remove() {
                        if !matches!(e, IpcError::Removed) {
                            log::warn(&format!("could not remove the queue: {e}"));
                        }
                    }
                } else {
                    let names: Vec<String> = others.iter().map(|o| o.describe()).collect();
                    log::notice(&format!(
                        "leaving the queue at key {} to the kerneld that still serve it: {}",
                        self.key,
                        names.join(", ")
                    ));
                }
                if let Some(r) = self.registration.take() {
                    r.leave();
                }
                lock.release(others.is_empty());
            }
            Err(e) => log::warn(&format!("{e}; leaving the queue in place")),
        }
        if let Some(p) = self.pid_file.take() {
            let ours = std::fs::read_to_string(&p)
                .is_ok_and(|s| s.trim() == std::process::id().to_string());
            if ours {
                let _ = std::fs::remove_file(&p);
            }
        }
    }
}

/// Write `kerneld.pid` atomically (a temporary file renamed into place).
fn write_pid_file(dir: &Path) -> Result<PathBuf, String> {
    let path = dir.join("kerneld.pid");
    let tmp = dir.join(format!(".kerneld.pid.{}", std::process::id()));
    std::fs::write(&tmp, format!("{}\n", std::process::id()))
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            format!("cannot write {}: {e}", path.display())
        })?;
    Ok(path)
}

/// One kerneld per state directory: it owns the record there.
fn lock_state_dir(dir: &Path) -> Result<Flock<std::fs::File>, String> {
    let path = dir.join("kerneld.lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    Flock::lock(f, FlockArg::LockExclusiveNonblock).map_err(|(_, e)| {
        if e != Errno::EWOULDBLOCK {
            return format!("cannot lock {}: {e}", path.display());
        }
        let pid = std::fs::read_to_string(dir.join("kerneld.pid")).unwrap_or_default();
        format!(
            "another kerneld (pid {}) is running with state directory {}",
            pid.trim(),
            dir.display()
        )
    })
}

enum Detached {
    /// In the parent: the exit status to return.
    Parent(ExitCode),
    /// In the daemon: the write end of the start-up pipe.
    Child(OwnedFd),
}

/// Fork.  The daemon continues detached (new session, stdin and stdout on
/// /dev/null) with its stderr on a pipe to the parent until it is ready.
/// The parent copies what comes through to its own stderr and exits 0 once
/// the daemon says it is ready, or with the daemon's exit status if it
/// ends first.
fn daemonize() -> Result<Detached, String> {
    let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    // SAFETY: no threads exist yet, so fork is safe; the child only
    // continues single-threaded start-up.
    match unsafe { nix::unistd::fork() }.map_err(|e| e.to_string())? {
        ForkResult::Parent { child } => {
            drop(w);
            Ok(Detached::Parent(wait_for_daemon(r, child)))
        }
        ForkResult::Child => {
            drop(r);
            let _ = nix::unistd::setsid();
            let _ = nix::unistd::chdir("/");
            if let Ok(null) = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/null")
            {
                let _ = nix::unistd::dup2_stdin(&null);
                let _ = nix::unistd::dup2_stdout(&null);
            }
            // fd 2 is a copy without O_CLOEXEC: programs run meanwhile
            // (the shim's --register) report there too.
            nix::unistd::dup2_stderr(&w).map_err(|e| format!("dup2: {e}"))?;
            Ok(Detached::Child(w))
        }
    }
}

/// Whether the parent shows a line of the daemon's start-up output:
/// problems (errors, warnings, anything not a log line, such as a panic),
/// not the notices a start logs anyway.
fn shown_at_startup(line: &[u8]) -> bool {
    !line.starts_with(b"kerneld: ")
        || line.starts_with(b"kerneld: error: ")
        || line.starts_with(b"kerneld: warning: ")
}

/// In the parent: relay the daemon's start-up problems; the exit status.
fn wait_for_daemon(pipe: OwnedFd, child: Pid) -> ExitCode {
    let mut pipe = std::fs::File::from(pipe);
    let mut buf = [0u8; 4096];
    let mut pending: Vec<u8> = Vec::new();
    let mut err = std::io::stderr();
    let marker = &READY[..READY.len() - 1];
    loop {
        let n = match pipe.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        pending.extend_from_slice(&buf[..n]);
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            if &line[..end] == marker {
                say(&format!(
                    "Starting kerneld, version {VERSION} (pid {child})"
                ));
                return ExitCode::SUCCESS;
            }
            if shown_at_startup(&line) {
                let _ = err.write_all(&line);
            }
        }
    }
    if !pending.is_empty() && shown_at_startup(&pending) {
        let _ = err.write_all(&pending);
        let _ = err.write_all(b"\n");
    }
    // The daemon ended before it was ready.
    loop {
        match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, code)) => {
                let code = u8::try_from(code).unwrap_or(EXIT_RUNTIME);
                return ExitCode::from(if code == 0 { EXIT_RUNTIME } else { code });
            }
            Ok(WaitStatus::Signaled(_, sig, _)) => {
                return fail(
                    EXIT_RUNTIME,
                    &format!("the daemon (pid {child}) was killed by {sig} while starting"),
                )
            }
            Ok(_) => continue,
            Err(Errno::EINTR) => continue,
            Err(e) => return fail(EXIT_RUNTIME, &format!("waiting for the daemon: {e}")),
        }
    }
}

/// In the daemon: tell the parent it is ready, and leave the terminal.
fn ready(pipe: OwnedFd) {
    let _ = nix::unistd::write(&pipe, READY);
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        let _ = nix::unistd::dup2_stderr(&null);
    }
    drop(pipe);
    log::init(false);
}

/// The signals the signal thread waits for: every one an administrator
/// may send out of habit (see kerneld(8), SIGNALS).
const HANDLED: [Signal; 7] = [
    Signal::SIGHUP,
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGTERM,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGALRM,
];

/// Block the signals the signal thread waits for, before any thread
/// starts, so that every thread inherits the mask.
fn block_signals() -> SigSet {
    let mut set = SigSet::empty();
    for s in HANDLED {
        set.add(s);
    }
    let _ = set.thread_block();
    // SAFETY: setting dispositions to SIG_IGN/SIG_DFL runs no handler code.
    unsafe {
        let _ = nix::sys::signal::signal(Signal::SIGPIPE, SigHandler::SigIgn);
        // A shell that started us in the background may have left SIGINT
        // and SIGQUIT ignored; programs we start (the screen blanker is
        // stopped with SIGQUIT) must get the default actions back.
        let _ = nix::sys::signal::signal(Signal::SIGINT, SigHandler::SigDfl);
        let _ = nix::sys::signal::signal(Signal::SIGQUIT, SigHandler::SigDfl);
    }
    set
}

/// SIGHUP: log each setting of the new file that differs from the running
/// configuration but is read at start only, with the live way to change it.
fn log_start_only_changes(old: &Config, new: &Config) {
    let show = |v: Option<String>| v.unwrap_or_else(|| "unset".into());
    let mut changes: Vec<(&str, String, String, String)> = Vec::new();
    if old.delay != new.delay {
        let n = new.delay.unwrap_or(60);
        changes.push((
            "delay",
            show(old.delay.map(|d| d.to_string())),
            show(new.delay.map(|d| d.to_string())),
            format!("`kdstat delay={n}` changes it now"),
        ));
    }
    if old.keep != new.keep {
        let word = if new.keep.unwrap_or(false) {
            "keep"
        } else {
            "nokeep"
        };
        changes.push((
            "keep",
            show(old.keep.map(yes_no)),
            show(new.keep.map(yes_no)),
            format!("`kdstat {word}` changes it now"),
        ));
    }
    if old.debug != new.debug {
        let word = if new.debug.unwrap_or(false) {
            "debug"
        } else {
            "nodebug"
        };
        changes.push((
            "debug",
            show(old.debug.map(yes_no)),
            show(new.debug.map(yes_no)),
            format!("`kdstat {word}` changes it now"),
        ));
    }
    let restart = || "it takes effect when kerneld restarts".to_string();
    if old.max_workers != new.max_workers {
        changes.push((
            "max-workers",
            old.max_workers.to_string(),
            new.max_workers.to_string(),
            restart(),
        ));
    }
    if old.state_dir != new.state_dir {
        changes.push((
            "state-dir",
            show(old.state_dir.as_ref().map(|p| p.display().to_string())),
            show(new.state_dir.as_ref().map(|p| p.display().to_string())),
            restart(),
        ));
    }
    if old.negative_cache != new.negative_cache {
        changes.push((
            "negative-cache",
            old.negative_cache.as_secs().to_string(),
            new.negative_cache.as_secs().to_string(),
            restart(),
        ));
    }
    if old.rate_limit_per_minute != new.rate_limit_per_minute {
        changes.push((
            "rate-limit",
            old.rate_limit_per_minute.to_string(),
            new.rate_limit_per_minute.to_string(),
            restart(),
        ));
    }
    for (name, from, to, how) in changes {
        log::warn(&format!(
            "SIGHUP: {name} changed from {from} to {to} in the file, but {name} is read at start \
             only and stays as it is; {how}"
        ));
    }
}

fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.into()
}

fn spawn_signal_thread(
    set: SigSet,
    daemon: Arc<Daemon>,
    receiver_done: Arc<AtomicBool>,
    config: PathBuf,
    required: bool,
) {
    let main_thread = nix::sys::pthread::pthread_self();
    std::thread::Builder::new()
        .name("kerneld-signals".into())
        .spawn(move || loop {
            let Ok(sig) = set.wait() else {
                continue;
            };
            match sig {
                Signal::SIGHUP => {
                    log::notice("SIGHUP: reloading the configuration and the module index");
                    if let Ok(new) = Config::load(&config, required) {
                        log_start_only_changes(&daemon.config(), &new);
                    }
                    daemon.reload(&config, required);
                }
                Signal::SIGUSR1 => {
                    for line in kerneld::status::text(&daemon.snapshot()).lines() {
                        log::notice(&format!("SIGUSR1: {line}"));
                    }
                }
                Signal::SIGUSR2 => {
                    let word = if daemon.settings().debug {
                        "nodebug"
                    } else {
                        "debug"
                    };
                    daemon.control(word);
                    log::notice(&format!(
                        "SIGUSR2: debug logging {}",
                        if word == "debug" { "on" } else { "off" }
                    ));
                }
                Signal::SIGALRM => log::notice("SIGALRM ignored"),
                _ => {
                    log::notice(&format!("{sig}: stopping"));
                    daemon.stop();
                    // Break the receiver out of msgrcv; repeat in case the
                    // signal lands just before it blocks again.
                    while !receiver_done.load(Ordering::SeqCst) {
                        kmod_ipc::interrupt_thread(main_thread);
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    return;
                }
            }
        })
        .expect("spawn the signal thread");
}

/// Tell systemd (Type=notify) that the queue is ready.
fn notify_ready() {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let sock = match std::os::unix::net::UnixDatagram::unbound() {
        Ok(s) => s,
        Err(_) => return,
    };
    let path = PathBuf::from(path);
    let msg = format!("READY=1\nMAINPID={}\n", std::process::id());
    let _ = if path.as_os_str().as_encoded_bytes().starts_with(b"@") {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(
            &path.as_os_str().as_encoded_bytes()[1..],
        )
        .and_then(|a| sock.send_to_addr(msg.as_bytes(), &a))
    } else {
        sock.send_to(msg.as_bytes(), &path)
    };
}

/// What the index fingerprint reads: index files, and modprobe.d
/// directories whose entries count too.
fn fingerprint_paths(cfg: &KmodConfig) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let module_dir = cfg
        .module_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("/lib/modules").join(kerneld::backend::sysfs::release()));
    let files = [
        "modules.dep.bin",
        "modules.alias.bin",
        "modules.softdep",
        "modules.builtin.bin",
    ]
    .iter()
    .map(|f| module_dir.join(f))
    .collect();
    let dirs: Vec<PathBuf> = if cfg.config_dirs.is_empty() {
        [
            "/etc/modprobe.d",
            "/run/modprobe.d",
            "/usr/local/lib/modprobe.d",
            "/lib/modprobe.d",
            "/usr/lib/modprobe.d",
        ]
        .iter()
        .map(PathBuf::from)
        .collect()
    } else {
        cfg.config_dirs.clone()
    };
    (files, dirs)
}

/// A value that changes whenever the module index or modprobe.d changes
/// (depmod renames new index files into place; editors and package
/// managers touch the .conf files).  Computed again only when inotify
/// reports a change to one of these paths (see `kerneld::watch`).
fn index_fingerprint(files: &[PathBuf], dirs: &[PathBuf]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let stamp = |p: &Path, h: &mut std::collections::hash_map::DefaultHasher| {
        use std::os::unix::fs::MetadataExt;
        if let Ok(m) = std::fs::metadata(p) {
            (m.ino(), m.mtime(), m.mtime_nsec(), m.size()).hash(h);
        }
    };
    for f in files {
        stamp(f, &mut h);
    }
    for d in dirs {
        stamp(d, &mut h);
        if let Ok(rd) = std::fs::read_dir(d) {
            for e in rd.flatten() {
                stamp(&e.path(), &mut h);
            }
        }
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handled_signals_are_the_habitual_ones() {
        for s in [
            Signal::SIGUSR1,
            Signal::SIGUSR2,
            Signal::SIGQUIT,
            Signal::SIGHUP,
        ] {
            assert!(HANDLED.contains(&s), "{s}");
        }
        // The receiver's interrupt signal must stay out of the set.
        let rt = kmod_ipc::interrupt_signal();
        assert!(HANDLED.iter().all(|s| *s as i32 != rt));
    }

    #[test]
    fn the_ready_marker_cannot_be_a_log_line() {
        assert_eq!(READY[0], 0);
        assert!(!shown_at_startup(b"kerneld: started, version 1\n"));
        assert!(shown_at_startup(b"kerneld: warning: no module index\n"));
        assert!(shown_at_startup(b"kerneld: error: --register failed\n"));
        assert!(shown_at_startup(b"thread 'main' panicked\n"));
    }
}
