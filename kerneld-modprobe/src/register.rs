//! `--register` and `--unregister`: make the kernel run the shim (or stop).
//!
//! A human runs these, so they report on stdout and stderr.  Test hooks:
//! `KERNELD_PROC_MODPROBE` replaces /proc/sys/kernel/modprobe and
//! `KERNELD_STATE_DIR` replaces /run/kerneld.

use crate::config::DEFAULT_MODPROBE;
use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::MetadataExt;
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
        fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    }
    // Record first: if writing /proc then fails, the record is harmless.
    write_value(&record, &current)?;
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
    let previous = match fs::read_to_string(&record) {
        Ok(s) => Some(s.strip_suffix('\n').unwrap_or(&s).to_string()),
        Err(e) if e.kind() == ErrorKind::NotFound => None,
        Err(e) => return Err(format!("reading {}: {e}", record.display())),
    };
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
