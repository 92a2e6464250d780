//! `metrics-dir`: the status in the Prometheus text format, written at
//! each sweep as DIR/kerneld.prom for node_exporter's textfile collector.
//!
//! The figures are those of `kdstat --prometheus`: the same JSON status
//! document, with the in-kernel sender's counters when its module is
//! loaded, through the same renderer (kdstat's library).  The file is
//! replaced whole by a rename, so that the collector never reads half of
//! it, and nothing is opened through a symbolic link: the temporary file
//! is created exclusively (a link in its place is not followed) and the
//! rename replaces a link named kerneld.prom rather than writing where it
//! points.

use nix::errno::Errno;
use nix::fcntl::{openat, renameat, OFlag};
use nix::sys::stat::Mode;
use nix::unistd::{unlinkat, UnlinkatFlags};
use serde_json::Value;
use std::io::Write;
use std::path::Path;

/// The file's name in the directory.
pub(crate) const FILE: &str = "kerneld.prom";
/// The temporary file: hidden, and without the `.prom` ending the
/// collector reads.
const TEMP: &str = ".kerneld.prom.tmp";

/// The exposition of `status` (the JSON status document): `up` false for
/// the file left when kerneld stops.
pub(crate) fn render(mut status: Value, up: bool) -> Result<String, String> {
    let shim = kdstat::shim::Shim::read_loaded();
    if let (Some(s), Value::Object(m)) = (shim, &mut status) {
        m.insert("kernel_shim".into(), s.json());
    }
    kdstat::prometheus::render(&status, up, kdstat::prometheus::helper_is_shim())
}

/// Write `text` as DIR/kerneld.prom, atomically.
pub(crate) fn write(dir: &Path, text: &str) -> Result<(), String> {
    let what = |step: &str, e: Errno| {
        format!(
            "cannot write the metrics file {}: {step}: {}",
            dir.join(FILE).display(),
            e.desc()
        )
    };
    let d = nix::fcntl::open(
        dir,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| what("opening the directory", e))?;
    let create = || {
        openat(
            &d,
            TEMP,
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o644),
        )
    };
    // A temporary file left by a kerneld that died while writing it.
    let fd = match create() {
        Err(Errno::EEXIST) => {
            unlinkat(&d, TEMP, UnlinkatFlags::NoRemoveDir)
                .map_err(|e| what("removing a stale temporary file", e))?;
            create()
        }
        r => r,
    }
    .map_err(|e| what("creating the temporary file", e))?;
    let mut f = std::fs::File::from(fd);
    let written = f.write_all(text.as_bytes()).and_then(|()| f.sync_data());
    drop(f);
    if let Err(e) = written {
        let _ = unlinkat(&d, TEMP, UnlinkatFlags::NoRemoveDir);
        return Err(what(
            "writing the temporary file",
            Errno::from_raw(e.raw_os_error().unwrap_or(0)),
        ));
    }
    renameat(&d, TEMP, &d, FILE).map_err(|e| {
        let _ = unlinkat(&d, TEMP, UnlinkatFlags::NoRemoveDir);
        what("renaming the temporary file", e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tempdir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!(
            "kerneld-textfile-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_link_in_place_of_either_file_is_replaced_not_followed() {
        let d = tempdir();
        let victim = d.join("victim");
        std::fs::write(&victim, "keep").unwrap();
        std::os::unix::fs::symlink(&victim, d.join(FILE)).unwrap();
        std::os::unix::fs::symlink(&victim, d.join(TEMP)).unwrap();
        write(&d, "kerneld_up 1\n").unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
        let m = std::fs::symlink_metadata(d.join(FILE)).unwrap();
        assert!(m.file_type().is_file());
        assert_eq!(
            std::fs::read_to_string(d.join(FILE)).unwrap(),
            "kerneld_up 1\n"
        );
        assert!(!d.join(TEMP).exists());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_missing_directory_is_reported_with_its_path() {
        let d = tempdir().join("absent");
        let e = write(&d, "x").unwrap_err();
        assert!(e.contains("absent/kerneld.prom"), "{e}");
        assert!(e.contains("opening the directory"), "{e}");
    }
}
