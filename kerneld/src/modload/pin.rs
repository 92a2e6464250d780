//! `module-loads-pin = yes`: the program's links pinned in the BPF
//! filesystem, so that the program outlives a kerneld that dies.
//!
//! Each kerneld pins under `/sys/fs/bpf/kerneld/KEY/PID/`, one file per
//! hook.  A link lives while a pin or an open descriptor holds it, and the
//! program with its maps (the verdicts, the settings) while a link does:
//! the pins alone keep it deciding.  A kerneld that starts attaches its
//! own program first, then removes what an earlier one of the same key
//! left, so that there is no moment without a program and, after it, one
//! program only.  A kerneld that stops on request removes its own pins.

use std::path::{Path, PathBuf};

/// Where the BPF filesystem is mounted (systemd mounts it there).
pub(crate) const BPFFS: &str = "/sys/fs/bpf";

/// The pins of the kerneld of `key`.
pub fn dir_for(key: &str) -> PathBuf {
    Path::new(BPFFS).join("kerneld").join(key)
}

/// Remove every kerneld's pins under `dir` but `keep`'s: the links they
/// held detach (unless a running kerneld holds them open).  Returns the
/// names removed (the pids of the kerneld that pinned them), and what
/// could not be removed, with why.
pub(crate) fn remove_stale(dir: &Path, keep: Option<&Path>) -> (Vec<String>, Vec<String>) {
    let (mut removed, mut failed) = (Vec::new(), Vec::new());
    let Ok(entries) = std::fs::read_dir(dir) else {
        return (removed, failed);
    };
    for e in entries.flatten() {
        let p = e.path();
        if Some(p.as_path()) == keep {
            continue;
        }
        let name = e.file_name().to_string_lossy().into_owned();
        match std::fs::remove_dir_all(&p) {
            Ok(()) => removed.push(name),
            Err(err) => failed.push(format!("{}: {err}", p.display())),
        }
    }
    (removed, failed)
}

/// Remove what an earlier kerneld of this key left pinned, logging it:
/// done when this kerneld will not pin (module-loads off, or pin = no).
pub fn remove_left(dir: &Path) {
    let (removed, failed) = remove_stale(dir, None);
    for r in removed {
        crate::operator::log::notice(&format!(
            "module loads: removed the program a kerneld (pid {r}) left pinned in {}: it is \
             detached",
            dir.display()
        ));
    }
    for f in failed {
        crate::operator::log::error(&format!(
            "module loads: cannot remove a pinned program ({f}): it stays attached; remove \
             the directory by hand"
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_pins_go_and_ours_stay() {
        let d = std::env::temp_dir().join(format!("kerneld-pins-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        for pid in ["100", "200"] {
            std::fs::create_dir_all(d.join(pid)).unwrap();
            std::fs::write(d.join(pid).join("kernel_read_file"), "").unwrap();
        }
        let (removed, failed) = remove_stale(&d, Some(&d.join("200")));
        assert_eq!((removed, failed), (vec!["100".to_string()], vec![]));
        assert!(d.join("200/kernel_read_file").exists());
        assert!(!d.join("100").exists());
        // No directory: nothing to do.
        assert_eq!(
            remove_stale(&d.join("none"), None),
            (Vec::new(), Vec::new())
        );
        std::fs::remove_dir_all(&d).unwrap();
        assert_eq!(
            dir_for("0x6b65726e"),
            Path::new("/sys/fs/bpf/kerneld/0x6b65726e")
        );
    }
}
