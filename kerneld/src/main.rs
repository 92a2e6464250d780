//! kerneld: the command line, then the daemon from start to stop, in
//! phases (`serve`).  The process around the daemon is `lifecycle/`:
//! detaching and locks, signals, sd_notify, the module helper, the
//! queue's takeover, the index fingerprint; `instance`: one kerneld per
//! key and message type.

mod lifecycle;
use kmod_ipc::instances as instance;
use lifecycle::{fingerprint, helper, notify, shim_server, signals, startup, takeover};

use clap::Parser;
use fingerprint::index_fingerprint;
use kerneld::backend::watch::Watched;
use kerneld::backend::{self, Backend};
use kerneld::cli::{filter_for, Cli};
use kerneld::config::{self, Config};
use kerneld::operator::status::VERSION;
use kerneld::server::{Daemon, Parts, Settings};
use kerneld::state::record::Record;
use kerneld::who::trace::Tracer;
use kerneld::{operator::log, QUEUE_BYTES};
use kmod_ipc::{Error as IpcError, How, Key, Queue, TypeFilter};
use nix::fcntl::Flock;
use startup::{Detached, StateDirError, Stopper};
use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub(crate) const EXIT_RUNTIME: u8 = 1;
const EXIT_CONFIG: u8 = 3;
const EXIT_PERMISSION: u8 = 4;

pub(crate) fn fail(code: u8, msg: &str) -> ExitCode {
    // Not eprintln!: a closed stderr must not turn into a panic.
    let _ = writeln!(std::io::stderr(), "kerneld: {msg}");
    ExitCode::from(code)
}

/// A line on stdout; a closed stdout is no reason to fail.
pub(crate) fn say(line: &str) {
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
    if cli.json && !(cli.check_config || cli.print_config) {
        return fail(2, "--json goes with --check-config or --print-config");
    }
    if cli.check_config || cli.print_config {
        return check(&cli, required);
    }
    let cfg = match Config::load(&cli.config, required) {
        Ok(c) => c,
        Err(e) => return fail(EXIT_CONFIG, &format!("configuration error: {e}")),
    };
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
    match startup::prepare_state_dir(&state_dir) {
        Ok(()) => {}
        Err(StateDirError::Create(e)) => return fail(EXIT_RUNTIME, &e),
        Err(StateDirError::Refused(e)) => return fail(EXIT_CONFIG, &e),
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
        match startup::daemonize() {
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

/// `--check-config` and `--print-config`: offline, every error (on
/// stderr, or in the JSON document), and exit status 3 if there is one.
fn check(cli: &Cli, required: bool) -> ExitCode {
    let checked = Config::read_for_check(&cli.config, required);
    let mut warnings = Vec::new();
    if cli.check_config {
        if let Some(dir) = &cli.module_dir {
            match kerneld::operator::lint::module_names(dir) {
                Ok(names) => {
                    warnings = kerneld::operator::lint::unmatched_module_patterns(&checked, &names)
                }
                Err(e) => {
                    return fail(
                        EXIT_CONFIG,
                        &format!(
                        "--module-dir {}: {e}; give a module tree such as /lib/modules/$(uname -r)",
                        dir.display()
                    ),
                    )
                }
            }
        }
    }
    let code = if checked.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_CONFIG)
    };
    if cli.json {
        let doc = if cli.print_config {
            kerneld::operator::lint::print_json(&cli.config, &checked)
        } else {
            kerneld::operator::lint::check_json(&cli.config, &checked, &warnings)
        };
        say(&doc.to_string());
        return code;
    }
    for e in &checked.errors {
        let _ = writeln!(std::io::stderr(), "kerneld: configuration error: {e}");
    }
    for w in &warnings {
        let _ = writeln!(std::io::stderr(), "kerneld: warning: {w}");
    }
    if cli.print_config {
        let mut out = std::io::stdout();
        let _ =
            out.write_all(kerneld::operator::lint::print_text(&cli.config, &checked).as_bytes());
        return code;
    }
    let path = cli.config.display();
    if !checked.errors.is_empty() {
        let _ = writeln!(
            std::io::stderr(),
            "kerneld: {path}: {} configuration errors; kerneld would not start with it, and \
             would refuse it on SIGHUP",
            checked.errors.len()
        );
    } else if !checked.present {
        say(&format!(
            "{path}: not present: defaults (no policy rules; every request is allowed)"
        ));
    } else {
        let warned = match warnings.len() {
            0 => String::new(),
            1 => ", 1 warning".into(),
            n => format!(", {n} warnings"),
        };
        say(&format!(
            "{path}: OK ({} policy rules{warned})",
            checked.config.policy.rules.len()
        ));
    }
    code
}

/// Start the BPF LSM program `module-loads` asks for; None when off or
/// when it could not be started (logged, with what to do).
fn start_module_loads(
    cfg: &Config,
    backend: &Backend,
    key: Key,
) -> Option<kerneld::modload::Running> {
    let pin_dir = kerneld::modload::pin::dir_for(&key.to_string());
    if cfg.module_loads.mode == kerneld::modload::Mode::Off {
        // What a kerneld of this key left pinned does not outlive the
        // setting.
        kerneld::modload::pin::remove_left(&pin_dir);
        return None;
    }
    notify::status("starting: attaching the module load program (BPF LSM)");
    let loaders = Arc::clone(&backend.loaders);
    let loaders: kerneld::modload::Backends = Box::new(move || loaders().ok());
    match kerneld::modload::start(
        cfg.module_loads,
        &backend.module_dir,
        &pin_dir,
        &cfg.policy,
        loaders,
    ) {
        Ok(r) => r,
        Err(e) => {
            log::error(&format!(
                "module-loads = {}: not started: {e}; kerneld serves requests, but loads by \
                 other loaders are neither seen nor decided",
                cfg.module_loads.describe()
            ));
            None
        }
    }
}

/// Run the daemon, from locking its state directory to its stop, in
/// phases: claim, open the backend, build, register, run, stop.
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
    notify::status("starting: claiming the queue");
    let (_lock, mut stopper) = match claim(key, filter, &state_dir) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let backend = backend::open(&backend::Config {
        module_dir: cli.module_dir.clone(),
        config_dirs: cli.modprobe_d.clone(),
    });
    let signals = signals::block_signals();
    let queue = stopper.queue.clone();
    let qid = queue.id();
    let rules = cfg.policy.rules.len();
    // The module load program lives as long as this binding: to the stop.
    let (daemon, _module_loads) = build(&cli, cfg, settings, filter, queue, &state_dir, backend);
    if let Err(code) = register(&cli, &daemon, &state_dir, &mut stopper) {
        return code;
    }

    let serving = format!(
        "serving key {key} (queue id {qid}), {}, {} policy rules{}",
        instance::filter_word(filter),
        rules,
        if stopper.registered.is_some() {
            ", module helper registered"
        } else {
            ""
        }
    );
    log::event(log::Level::Notice, log::Event::Started, &log::Fields::new(), &format!(
        "started, version {VERSION}, pid={me}, qid={qid}, key {key}, {}, delay={}, {}keep, {}debug, state in {}",
        instance::filter_word(filter),
        settings.delay,
        if settings.keep { "" } else { "no" },
        if settings.debug { "" } else { "no" },
        state_dir.display()
    ));

    // Denials go to the audit subsystem too, when the kernel has one.
    kerneld::operator::audit::start();
    let d = Arc::clone(&daemon);
    std::thread::Builder::new()
        .name("kerneld-timer".into())
        .spawn(move || kerneld::work::actions::timer_loop(&d))
        .expect("spawn the timer thread");
    if shim_server::serves_requests(filter) {
        shim_server::spawn_watch(key);
    }
    let receiver_done = Arc::new(AtomicBool::new(false));
    signals::spawn_signal_thread(
        signals,
        Arc::clone(&daemon),
        Arc::clone(&receiver_done),
        cli.config.clone(),
        required,
    );
    notify::ready(&serving);
    if let Some(pipe) = startup.take() {
        startup::ready(pipe);
    }

    kerneld::edge::receiver::receive_loop(&daemon);
    receiver_done.store(true, Ordering::SeqCst);

    stop(&daemon, stopper);
    // The last requests' lines, if the log thread has not written them.
    kerneld::operator::log::flush();
    ExitCode::SUCCESS
}

/// Claim: lock the state directory, take the key's queue (sorting what a
/// dead kerneld left on it), and register this instance on the key.
/// The state directory's lock is held as long as what is returned is.
fn claim(
    key: Key,
    filter: TypeFilter,
    state_dir: &Path,
) -> Result<(Flock<std::fs::File>, Stopper), ExitCode> {
    let me = std::process::id();
    let _lock = match startup::lock_state_dir(state_dir) {
        Ok(f) => f,
        Err(e) => return Err(die(EXIT_RUNTIME, &e)),
    };

    // One kerneld per key and message type; the queue is claimed under
    // the key's lock, so that no other instance starts or stops meanwhile.
    let key_lock = match instance::KeyLock::acquire(key) {
        Ok(l) => l,
        Err(e) => return Err(die(EXIT_RUNTIME, &e)),
    };
    if let Some(other) = key_lock.conflict(filter, me) {
        return Err(die(
            EXIT_RUNTIME,
            &format!(
                "another kerneld, {}, serves key {key} with message types that overlap {}; \
                 stop it first (kill {}), or give this one another --key or a type=N of its own",
                other.describe(),
                instance::filter_word(filter),
                other.pid
            ),
        ));
    }
    // Before the takeover: a request it keeps, read by the dead kerneld,
    // is then watched through this one (shim_server.rs).
    if shim_server::serves_requests(filter) {
        shim_server::register(key);
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
            return Err(die(code, &e.to_string()));
        }
    };
    for f in &claimed.removed {
        log::warn(&format!(
            "removed a message queue at key {key} that was not kerneld's: {}",
            f.describe()
        ));
    }
    if let How::Reused { messages } = claimed.how {
        // Left by a kerneld that died, or shared with live instances of
        // other types: what nobody waits for is not served (takeover.rs).
        let alone = key_lock.others(me).is_empty();
        let sorted = match takeover::sweep(&claimed.queue, filter, alone) {
            Ok(r) => format!(
                "; dropped {} requests whose senders stopped waiting and {} replies nobody reads, \
                 kept {}{}",
                r.stale_requests,
                r.stale_replies,
                r.swept.kept,
                if r.swept.lost > 0 {
                    format!(", {} lost (the queue filled up meanwhile)", r.swept.lost)
                } else {
                    String::new()
                }
            ),
            Err(e) => format!("; could not sort them: {e}"),
        };
        log::notice(&format!(
            "took over kerneld's own queue at key {key} (id {}, {messages} messages waiting){sorted}",
            claimed.queue.id()
        ));
    }
    let queue = claimed.queue;
    let registration = match key_lock.join(me, filter, state_dir) {
        Ok(r) => r,
        Err(e) => {
            let last = key_lock.others(me).is_empty();
            if last {
                let _ = queue.remove();
            }
            key_lock.release(last);
            return Err(die(EXIT_RUNTIME, &e));
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
    match startup::write_pid_file(state_dir) {
        Ok(p) => stopper.pid_file = Some(p),
        Err(e) => log::warn(&e),
    }
    Ok((_lock, stopper))
}

/// Build the daemon: requester tracing, the record of loaded modules,
/// the module load program (module-loads; kept by the caller until the
/// stop) and the handles over the claimed queue.
fn build(
    cli: &Cli,
    cfg: Config,
    settings: Settings,
    filter: TypeFilter,
    queue: Queue,
    state_dir: &Path,
    backend: Backend,
) -> (Arc<Daemon>, Option<kerneld::modload::Running>) {
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
    let (record, warning) = Record::load(state_dir);
    if let Some(w) = warning {
        log::error(&w);
    }
    // Module loads by every loader, through the BPF LSM (module-loads):
    // judged and attached before kerneld says it is ready.  A failure is
    // no reason not to serve requests.
    let module_loads = start_module_loads(&cfg, &backend, queue.key());
    let (files, dirs) = backend.watched.clone();
    let daemon = Daemon::new(Parts {
        settings,
        config: cfg,
        queue,
        filter,
        backend,
        record,
        fingerprint: {
            let (f, d) = (files.clone(), dirs.clone());
            let watched = Watched::new(files, dirs, move || index_fingerprint(&f, &d));
            Box::new(move || watched.get())
        },
        tracer,
    });
    if let Some(dir) = &cli.metrics_dir {
        daemon.set_metrics_dir(dir.clone());
    }
    (daemon, module_loads)
}

/// Register kerneld-modprobe as the kernel's module helper, if asked.
/// Err: it failed, and kerneld stopped.
fn register(
    cli: &Cli,
    daemon: &Daemon,
    state_dir: &Path,
    stopper: &mut Stopper,
) -> Result<(), ExitCode> {
    if cli.register {
        notify::status("starting: registering kerneld-modprobe as the kernel's module helper");
        let shim = cli.shim.clone().or_else(|| {
            std::env::current_exe()
                .ok()
                .map(|p| p.with_file_name("kerneld-modprobe"))
        });
        match helper::register(shim.as_deref(), state_dir) {
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
                log::event(
                    log::Level::Notice,
                    log::Event::Stopped,
                    &log::Fields::new(),
                    "stopped: --register failed",
                );
                return Err(ExitCode::from(EXIT_RUNTIME));
            }
        }
    }
    Ok(())
}

/// Stop: answer what is in flight, write the last figures, remove the
/// queue and put the previous module helper back.
fn stop(daemon: &Daemon, mut stopper: Stopper) {
    notify::stopping();
    log::notice("stopping: answering requests in flight");
    if !daemon.drain(Duration::from_secs(30)) {
        log::warn("requests still in flight after 30 s; stopping anyway");
    }
    // The last figures, with kerneld_up 0: a stopped kerneld is seen as
    // such, not as one whose figures stopped changing.
    daemon.write_metrics(false);
    if let Some(t) = daemon.tracer() {
        t.stop();
    }
    notify::status("stopping: removing the queue, putting the previous module helper back");
    // The receiver may have created the queue again meanwhile.
    stopper.queue = daemon.queue();
    stopper.finish();
    log::event(
        log::Level::Notice,
        log::Event::Stopped,
        &log::Fields::new(),
        "stopped",
    );
}
