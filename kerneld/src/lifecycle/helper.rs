//! `--register`: make the kernel run the shim while kerneld runs, and put
//! the previous helper back at stop.
//!
//! Registration runs `kerneld-modprobe --register`, which proves that the
//! shim is there and runs, writes its path to /proc/sys/kernel/modprobe and
//! records the previous value in the state directory
//! (`previous-modprobe`).  The restore at stop is kerneld's own: it reads
//! that record and writes it back without running the shim, which may be
//! gone by then (an uninstall while kerneld runs).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The helper put back when there is no record of the previous one.
pub(crate) const DEFAULT_HELPER: &str = "/sbin/modprobe";
/// The record of the previous helper, in the state directory.
pub(crate) const RECORD: &str = "previous-modprobe";
/// The longest record read back: a path of PATH_MAX bytes and a newline.
const RECORD_MAX: u64 = 4097;

/// /proc/sys/kernel/modprobe, or the file `KERNELD_PROC_MODPROBE` names
/// (a test hook, shared with the shim).
pub(crate) fn proc_path() -> PathBuf {
    kerneld::operator::status::proc_modprobe_path()
}

fn read_value(path: &Path) -> std::io::Result<String> {
    let s = std::fs::read_to_string(path)?;
    Ok(s.strip_suffix('\n').unwrap_or(&s).to_string())
}

/// What `--register` did, for the restore at stop.
#[derive(Debug, Clone)]
pub(crate) struct Registered {
    /// The value kerneld's registration left in the kernel's file.
    pub(crate) value: String,
    proc: PathBuf,
    record: PathBuf,
}

/// Run `SHIM --register`; the shim's report, or why it failed.
pub(crate) fn register(
    shim: Option<&Path>,
    state_dir: &Path,
) -> Result<(Registered, String), String> {
    let Some(shim) = shim else {
        return Err(
            "--register: cannot tell where kerneld-modprobe is (no path to this program); \
             give --shim PATH"
                .into(),
        );
    };
    let out = Command::new(shim)
        .arg("--register")
        .env("KERNELD_STATE_DIR", state_dir)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            format!(
                "--register: cannot run {}: {e}; install kerneld-modprobe beside kerneld or give --shim PATH",
                shim.display()
            )
        })?;
    if !out.status.success() {
        let why = String::from_utf8_lossy(&out.stderr).trim().to_string();
        return Err(format!(
            "--register: {} --register failed ({}): {}; the kernel would never ask kerneld for a module",
            shim.display(),
            out.status,
            if why.is_empty() { "no message" } else { &why }
        ));
    }
    let proc = proc_path();
    let value = read_value(&proc)
        .map_err(|e| format!("--register: reading {} afterwards: {e}", proc.display()))?;
    let report = String::from_utf8_lossy(&out.stdout).trim().to_string();
    Ok((
        Registered {
            value,
            proc,
            record: state_dir.join(RECORD),
        },
        report,
    ))
}

/// Put the previous helper back, if the kernel still runs what kerneld
/// registered; the line to log.
pub(crate) fn restore(reg: &Registered) -> Result<String, String> {
    let current =
        read_value(&reg.proc).map_err(|e| format!("reading {}: {e}", reg.proc.display()))?;
    // Bounded, without following a link or blocking on a FIFO: stop must
    // not hang on whatever sits at that name.
    let previous = match kmod_ipc::files::read_regular(&reg.record, RECORD_MAX) {
        Ok(p) => p.map(|b| {
            let s = String::from_utf8_lossy(&b).into_owned();
            s.strip_suffix('\n').unwrap_or(&s).to_string()
        }),
        Err(kmod_ipc::files::Unusable(why)) => {
            return Err(format!("{} {why}", reg.record.display()))
        }
    };
    if current != reg.value {
        // Someone else changed it since (kerneld-modprobe --unregister,
        // an uninstall, the administrator): theirs to keep.
        let _ = std::fs::remove_file(&reg.record);
        return Ok(format!(
            "{} runs {current:?}, not {:?} as kerneld registered: left as it is",
            reg.proc.display(),
            reg.value
        ));
    }
    let restore = match previous {
        Some(p) if !p.is_empty() && p != reg.value => p,
        _ => DEFAULT_HELPER.to_string(),
    };
    std::fs::write(&reg.proc, format!("{restore}\n"))
        .map_err(|e| format!("writing {restore:?} to {}: {e}", reg.proc.display()))?;
    let _ = std::fs::remove_file(&reg.record);
    Ok(format!(
        "{} runs {restore:?} again (the helper before kerneld)",
        reg.proc.display()
    ))
}
