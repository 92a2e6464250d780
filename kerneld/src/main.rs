//! kerneld: start-up, daemonizing, signals and shutdown.

use clap::Parser;
use kerneld::cli::{filter_for, Cli};
use kerneld::config::{self, Config};
use kerneld::daemon::{Daemon, Parts, Settings};
use kerneld::kmod::{Kmod, KmodConfig, ModuleSystem};
use kerneld::record::Record;
use kerneld::status::VERSION;
use kerneld::trace::Tracer;
use kerneld::watch::Watched;
use kerneld::{log, QUEUE_BYTES};
use kmod_ipc::{Error as IpcError, Key, Queue};
use std::hash::{Hash, Hasher};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const EXIT_RUNTIME: u8 = 1;
const EXIT_CONFIG: u8 = 3;
const EXIT_PERMISSION: u8 = 4;

fn fail(code: u8, msg: &str) -> ExitCode {
    eprintln!("kerneld: {msg}");
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
        println!(
            "{}: OK ({} policy rules)",
            cli.config.display(),
            cfg.policy.rules.len()
        );
        return ExitCode::SUCCESS;
    }
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
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
    let _lock = match lock_state_dir(&state_dir) {
        Ok(f) => f,
        Err(e) => return fail(EXIT_RUNTIME, &e),
    };

    let queue = match Queue::create(key) {
        Ok(q) => q,
        Err(e @ IpcError::PermissionDenied { .. }) => return fail(EXIT_PERMISSION, &e.to_string()),
        Err(e) => return fail(EXIT_RUNTIME, &e.to_string()),
    };
    let queue_note = queue.set_max_bytes(QUEUE_BYTES).err().map(|e| {
        format!("could not raise the queue's capacity to {QUEUE_BYTES} bytes ({e}); bursts of requests may wait for room")
    });

    let kmod_config = KmodConfig {
        module_dir: cli.module_dir.clone(),
        config_dirs: cli.modprobe_d.clone(),
    };
    let mut warnings = Vec::new();
    if !Kmod::index_present(&kmod_config) {
        warnings.push(format!(
            "no module index in {}: every request will be answered 'not found' until depmod runs",
            kmod_config.module_dir.as_deref().map_or_else(
                || format!("/lib/modules/{}", kerneld::kmod::release()),
                |d| d.display().to_string()
            )
        ));
    }
    if !Path::new("/proc/modules").exists() {
        warnings.push(
            "this kernel has no loadable module support (no /proc/modules): loads will fail".into(),
        );
    }

    // Everything that can fail on the terminal has been checked: detach.
    if !cli.foreground {
        match daemonize() {
            Ok(Some(child)) => {
                println!("Starting kerneld, version {VERSION} (pid {child})");
                return ExitCode::SUCCESS;
            }
            Ok(None) => {}
            Err(e) => return fail(EXIT_RUNTIME, &format!("cannot fork: {e}")),
        }
    } else {
        println!(
            "Starting kerneld, version {VERSION} (pid {})",
            std::process::id()
        );
    }
    log::init(cli.foreground);
    let _ = std::fs::write(
        state_dir.join("kerneld.pid"),
        format!("{}\n", std::process::id()),
    );
    warnings.extend(queue_note);
    for w in &warnings {
        log::warn(w);
    }

    let signals = block_signals();
    let tracer = match Tracer::start() {
        Ok(t) => Some(t),
        Err(e) => {
            log::warn(&format!(
                "requester tracing unavailable: {e}; requests from the kernel have no known requester, \
                 and rules with `if` conditions treat them as unknown-requester = {}",
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
    let filter = filter_for(words.msg_type);
    let daemon = Daemon::new(Parts {
        settings,
        config: cfg,
        queue,
        filter,
        factory: Box::new(move || {
            Kmod::new(&factory_config).map(|k| Box::new(k) as Box<dyn ModuleSystem + Send>)
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
    log::notice(&format!(
        "started, version {VERSION}, pid={}, qid={qid}, key {key}, delay={}, {}keep, {}debug, state in {}",
        std::process::id(),
        settings.delay,
        if settings.keep { "" } else { "no" },
        if settings.debug { "" } else { "no" },
        state_dir.display()
    ));

    let shim = cli.shim.clone().or_else(|| {
        std::env::current_exe()
            .ok()
            .map(|p| p.with_file_name("kerneld-modprobe"))
    });
    let registered = cli.register && register_shim(shim.as_deref(), &state_dir, true);

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

    daemon.receive_loop();
    receiver_done.store(true, Ordering::SeqCst);

    log::notice("stopping: answering requests in flight");
    if !daemon.drain(Duration::from_secs(30)) {
        log::warn("requests still in flight after 30 s; stopping anyway");
    }
    if let Err(e) = daemon.queue().remove() {
        log::warn(&format!("could not remove the queue: {e}"));
    }
    if let Some(t) = daemon.tracer() {
        t.stop();
    }
    if registered {
        register_shim(shim.as_deref(), &state_dir, false);
    }
    log::notice("stopped");
    ExitCode::SUCCESS
}

/// One kerneld per state directory: it owns the record there.
fn lock_state_dir(dir: &Path) -> Result<std::fs::File, String> {
    use std::os::fd::AsRawFd;
    let path = dir.join("kerneld.lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    // SAFETY: flock on an fd we own.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let pid = std::fs::read_to_string(dir.join("kerneld.pid")).unwrap_or_default();
        return Err(format!(
            "another kerneld (pid {}) is running with state directory {}",
            pid.trim(),
            dir.display()
        ));
    }
    Ok(f)
}

/// Fork; the parent gets `Some(child pid)`, the child `None`, detached
/// from the terminal with stdio on /dev/null.
fn daemonize() -> std::io::Result<Option<i32>> {
    // SAFETY: no threads exist yet, so fork is safe; the child only
    // continues single-threaded start-up.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if pid > 0 {
        return Ok(Some(pid));
    }
    // SAFETY: plain system calls on our own process and fds.
    unsafe {
        libc::setsid();
        libc::chdir(c"/".as_ptr());
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if null >= 0 {
            libc::dup2(null, 0);
            libc::dup2(null, 1);
            libc::dup2(null, 2);
            if null > 2 {
                libc::close(null);
            }
        }
    }
    Ok(None)
}

/// Block the signals the signal thread waits for, before any thread
/// starts, so that every thread inherits the mask.
fn block_signals() -> libc::sigset_t {
    // SAFETY: sigset manipulation on a local set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::sigaddset(&mut set, s);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        // A shell that started us in the background may have left SIGINT
        // and SIGQUIT ignored; programs we start (the screen blanker is
        // stopped with SIGQUIT) must get the default actions back.
        libc::signal(libc::SIGINT, libc::SIG_DFL);
        libc::signal(libc::SIGQUIT, libc::SIG_DFL);
        set
    }
}

fn spawn_signal_thread(
    set: libc::sigset_t,
    daemon: Arc<Daemon>,
    receiver_done: Arc<AtomicBool>,
    config: PathBuf,
    required: bool,
) {
    // SAFETY: pthread_self of the main thread, which runs the receiver.
    let main_thread = unsafe { libc::pthread_self() };
    std::thread::Builder::new()
        .name("kerneld-signals".into())
        .spawn(move || loop {
            let mut sig: libc::c_int = 0;
            // SAFETY: waiting on a valid, blocked set.
            if unsafe { libc::sigwait(&set, &mut sig) } != 0 {
                continue;
            }
            match sig {
                libc::SIGHUP => {
                    log::notice("SIGHUP: reloading the configuration and the module index");
                    daemon.reload(&config, required);
                }
                _ => {
                    log::notice(&format!(
                        "{}: stopping",
                        if sig == libc::SIGTERM {
                            "SIGTERM"
                        } else {
                            "SIGINT"
                        }
                    ));
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

/// Register (or unregister) the shim with the kernel by running
/// `kerneld-modprobe --register`, which keeps the previous helper.
fn register_shim(shim: Option<&Path>, state_dir: &Path, on: bool) -> bool {
    let Some(shim) = shim else {
        log::error("--register: cannot find kerneld-modprobe; give --shim PATH");
        return false;
    };
    let r = std::process::Command::new(shim)
        .arg(if on { "--register" } else { "--unregister" })
        .env("KERNELD_STATE_DIR", state_dir)
        .stdin(std::process::Stdio::null())
        .output();
    match r {
        Ok(o) if o.status.success() => {
            log::notice(String::from_utf8_lossy(&o.stdout).trim());
            true
        }
        Ok(o) => {
            log::error(&format!(
                "{} {}: {}",
                shim.display(),
                if on { "--register" } else { "--unregister" },
                String::from_utf8_lossy(&o.stderr).trim()
            ));
            false
        }
        Err(e) => {
            log::error(&format!("cannot run {}: {e}", shim.display()));
            false
        }
    }
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
        .unwrap_or_else(|| PathBuf::from("/lib/modules").join(kerneld::kmod::release()));
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
