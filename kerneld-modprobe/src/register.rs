//! `--register` and `--unregister`: make the kernel run the shim (or stop).
//!
//! A human runs these, so they report on stdout and stderr.  Test hooks:
//! `KERNELD_PROC_MODPROBE` replaces /proc/sys/kernel/modprobe and
//! `KERNELD_STATE_DIR` replaces /run/kerneld.

use crate::config::DEFAULT_MODPROBE;
use kmod_ipc::files::{self, DirProblem};
use std::fs;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

const PROC_ENV: &str = "KERNELD_PROC_MODPROBE";
const STATE_ENV: &str = "KERNELD_STATE_DIR";
const PROC_DEFAULT: &str = "/proc/sys/kernel/modprobe";
const STATE_DEFAULT: &str = "/run/kerneld";
const RECORD: &str = "previous-modprobe";

fn env_path(var: &str, default: &str) -> PathBuf {
    std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(default))
}

fn proc_path() -> PathBuf {
    env_path(PROC_ENV, PROC_DEFAULT)
}

fn record_path() -> PathBuf {
    env_path(STATE_ENV, STATE_DEFAULT).join(RECORD)
}

/// The value of a sysctl-style file, without its final newline.
fn read_value(path: &Path) -> Result<String, String> {
    fs::read_to_string(path)
        .map(|s| s.strip_suffix('\n').unwrap_or(&s).to_string())
        .map_err(|e| format!("reading {}: {e}", path.display()))
}

fn write_value(path: &Path, value: &str) -> Result<(), String> {
    // procfs takes the newline as the end of the value.
    fs::write(path, format!("{value}\n")).map_err(|e| format!("writing {}: {e}", path.display()))
}

/// The longest record read back: a path of PATH_MAX bytes and a newline.
const RECORD_MAX: u64 = 4097;

/// Write the record as kerneld writes its own files: through a new
/// temporary file renamed into place, so a link planted at either name is
/// replaced, not written through (root runs this, in a directory others
/// could have prepared).
fn write_record(path: &Path, value: &str) -> Result<(), String> {
    let tmp = path.with_extension("tmp");
    files::replace(path, &tmp, format!("{value}\n").as_bytes(), 0o644)
}

/// The record, if there is one: only a regular file of bounded size,
/// opened without following a link or blocking (a FIFO there would
/// otherwise hang `--unregister`).
fn read_record(path: &Path) -> Result<Option<String>, String> {
    match files::read_regular(path, RECORD_MAX) {
        Ok(None) => Ok(None),
        Ok(Some(bytes)) => {
            let s = String::from_utf8(bytes)
                .map_err(|_| format!("{} is not valid UTF-8; remove it", path.display()))?;
            Ok(Some(s.strip_suffix('\n').unwrap_or(&s).to_string()))
        }
        Err(files::Unusable(why)) => Err(format!("{} {why}; remove it", path.display())),
    }
}

/// The record's directory, created if missing; refused when another user
/// owns it or others may write it, since they could then choose the
/// helper that `--unregister` gives back to the kernel.
fn record_dir(dir: &Path) -> Result<(), String> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let meta =
        fs::symlink_metadata(dir).map_err(|e| format!("examining {}: {e}", dir.display()))?;
    match files::dir_problem(&meta) {
        None => {}
        Some(DirProblem::NotDir) => {
            return Err(format!("{} is not a directory; remove it", dir.display()))
        }
        Some(DirProblem::Owner { uid, euid }) => {
            return Err(format!(
                "{} is owned by uid {uid}, not by uid {euid}: its owner could choose the helper \
                 restored by --unregister; chown {euid} {} or remove it",
                dir.display(),
                dir.display()
            ))
        }
        Some(DirProblem::Writable { mode }) => {
            return Err(format!(
                "{} has mode {mode:04o}: others may write it and choose the helper restored by \
                 --unregister; chmod go-w {}",
                dir.display(),
                dir.display()
            ))
        }
    }
    Ok(())
}

/// Whether `path` names this very program (by name or by inode, so a
/// symlink or hard link to the shim counts).
pub fn is_self(path: &Path) -> bool {
    let (Ok(me), Ok(it)) = (fs::metadata("/proc/self/exe"), fs::metadata(path)) else {
        return false;
    };
    me.dev() == it.dev() && me.ino() == it.ino()
}

fn own_path() -> Result<PathBuf, String> {
    let me = fs::read_link("/proc/self/exe").map_err(|e| format!("reading /proc/self/exe: {e}"))?;
    if me.to_string_lossy().ends_with(" (deleted)") {
        return Err(format!(
            "{} was deleted or replaced; run the installed program",
            me.display()
        ));
    }
    Ok(me)
}

/// Point the kernel at the shim, recording what it ran before.
pub fn register() -> Result<String, String> {
    let me = own_path()?;
    let proc = proc_path();
    let record = record_path();
    let current = read_value(&proc)?;
    if Path::new(&current) == me || is_self(Path::new(&current)) {
        // Recording now would lose the real previous value.
        return Ok(format!(
            "{} already runs {}; nothing changed",
            proc.display(),
            me.display()
        ));
    }
    if let Some(dir) = record.parent() {
        record_dir(dir)?;
    }
    // Record first: if writing /proc then fails, the record is harmless.
    write_record(&record, &current)?;
    let me_str = me
        .to_str()
        .ok_or_else(|| format!("{} is not valid UTF-8", me.display()))?;
    write_value(&proc, me_str)?;
    Ok(format!(
        "{} now runs {} (was {current:?}, recorded in {})",
        proc.display(),
        me.display(),
        record.display()
    ))
}

/// Give the kernel back its previous helper (or /sbin/modprobe).
pub fn unregister() -> Result<String, String> {
    let proc = proc_path();
    let record = record_path();
    if let Some(dir) = record.parent().filter(|d| d.exists()) {
        record_dir(dir)?;
    }
    let previous = read_record(&record)?;
    let restore = match &previous {
        // A record naming the shim would leave it registered.
        Some(p) if !is_self(Path::new(p)) => p.clone(),
        _ => DEFAULT_MODPROBE.to_string(),
    };
    write_value(&proc, &restore)?;
    if previous.is_some() {
        fs::remove_file(&record).map_err(|e| format!("removing {}: {e}", record.display()))?;
    }
    Ok(format!("{} now runs {restore:?}", proc.display()))
}
