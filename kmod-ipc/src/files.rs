//! Files in a state directory (kerneld's record and pid file, the shim's
//! record of the previous helper): read only when they are regular files
//! of bounded size, and written through a new temporary file renamed into
//! place, never through a symbolic link.
//!
//! Whatever sits at a name there is not trusted to be what we left:
//! a FIFO would block the open (and the start, signals included), a link
//! to `/dev/zero` would be read without end, and a link planted at a
//! temporary name would have kerneld write over the file it points to.

use std::fs::{File, Metadata, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

/// What is wrong with a file to be read, as the end of a sentence
/// naming it (`/run/kerneld/loaded.json is a FIFO, not a regular file`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unusable(pub String);

/// `what` of a file type, for the messages.
fn kind(t: std::fs::FileType) -> &'static str {
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else {
        "not a regular file"
    }
}

/// What makes a state directory unsafe to keep files in: whoever may
/// write it could replace them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirProblem {
    /// It is not a directory.
    NotDir,
    /// Another user owns it.
    Owner { uid: u32, euid: u32 },
    /// Its group or others may write it (`mode`, permission bits).
    Writable { mode: u32 },
}

/// The problem with the directory `meta` describes, for this process's
/// effective user; `None`: it may be used.
pub fn dir_problem(meta: &Metadata) -> Option<DirProblem> {
    let euid = nix::unistd::geteuid().as_raw();
    let mode = meta.mode() & 0o7777;
    if !meta.is_dir() {
        Some(DirProblem::NotDir)
    } else if meta.uid() != euid {
        Some(DirProblem::Owner {
            uid: meta.uid(),
            euid,
        })
    } else if mode & 0o022 != 0 {
        Some(DirProblem::Writable { mode })
    } else {
        None
    }
}

/// Read `path` if it is a regular file of at most `max` bytes: `None` if
/// there is nothing there.  Opened without following a symbolic link and
/// without blocking (a FIFO answers at once), checked on the opened file
/// (no race with a rename), and read through it no further than `max`
/// bytes (a file that grows meanwhile is refused as well).
pub fn read_regular(path: &Path, max: u64) -> Result<Option<Vec<u8>>, Unusable> {
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(Unusable(
                "is a symbolic link (none is followed in a state directory)".into(),
            ))
        }
        Err(e) => return Err(Unusable(format!("cannot be opened ({e})"))),
    };
    let meta = file
        .metadata()
        .map_err(|e| Unusable(format!("cannot be examined ({e})")))?;
    if !meta.is_file() {
        return Err(Unusable(format!(
            "is {}, not a regular file",
            kind(meta.file_type())
        )));
    }
    let too_large = |n: u64| {
        Unusable(format!(
            "is {n} bytes, more than the {max} bytes read of it"
        ))
    };
    if meta.len() > max {
        return Err(too_large(meta.len()));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Unusable(format!("cannot be read ({e})")))?;
    if bytes.len() as u64 > max {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(Some(bytes))
}

/// Create `tmp` anew (never through a link or over another file there:
/// a leftover is removed first, the link itself and not what it points
/// to), write `bytes` to it and rename it to `path` (which replaces
/// whatever is at `path`, a link included, without writing through it).
pub fn replace(path: &Path, tmp: &Path, bytes: &[u8], mode: u32) -> Result<(), String> {
    let create = || {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(tmp)
    };
    let file: std::io::Result<File> = match create() {
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
            std::fs::remove_file(tmp).and_then(|()| create())
        }
        r => r,
    };
    let written = file
        .and_then(|mut f| f.write_all(bytes))
        .map_err(|e| format!("cannot write {}: {e}", tmp.display()));
    let renamed = written.and_then(|()| {
        std::fs::rename(tmp, path)
            .map_err(|e| format!("cannot rename {} to {}: {e}", tmp.display(), path.display()))
    });
    if renamed.is_err() {
        let _ = std::fs::remove_file(tmp);
    }
    renamed
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn dir(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("kmod-ipc-files-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_directory_others_may_write_or_own_is_a_problem() {
        use std::os::unix::fs::PermissionsExt;
        let d = dir("own");
        let meta = || std::fs::symlink_metadata(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).unwrap();
        assert_eq!(dir_problem(&meta()), None);
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o775)).unwrap();
        assert_eq!(
            dir_problem(&meta()),
            Some(DirProblem::Writable { mode: 0o775 })
        );
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        let euid = nix::unistd::geteuid().as_raw();
        if euid == 0 {
            std::os::unix::fs::chown(&d, Some(1), None).unwrap();
            assert_eq!(
                dir_problem(&meta()),
                Some(DirProblem::Owner { uid: 1, euid })
            );
        }
        let f = d.join("file");
        std::fs::write(&f, b"").unwrap();
        let m = std::fs::symlink_metadata(&f).unwrap();
        assert_eq!(dir_problem(&m), Some(DirProblem::NotDir));
    }

    #[test]
    fn only_bounded_regular_files_are_read() {
        let d = dir("read");
        let f = d.join("f");
        assert_eq!(read_regular(&f, 10), Ok(None));
        std::fs::write(&f, b"0123456789").unwrap();
        assert_eq!(read_regular(&f, 10), Ok(Some(b"0123456789".to_vec())));
        let e = read_regular(&f, 9).unwrap_err();
        assert!(e.0.contains("is 10 bytes, more than the 9"), "{e:?}");
        let link = d.join("link");
        symlink(&f, &link).unwrap();
        assert!(read_regular(&link, 10)
            .unwrap_err()
            .0
            .contains("symbolic link"));
        let fifo = d.join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        assert!(read_regular(&fifo, 10).unwrap_err().0.contains("a FIFO"));
        assert!(read_regular(&d, 10).unwrap_err().0.contains("a directory"));
        std::fs::remove_dir_all(&d).ok();
    }

    #[test]
    fn a_link_at_the_temporary_name_is_not_written_through() {
        let d = dir("replace");
        let victim = d.join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        let (path, tmp) = (d.join("f"), d.join("f.tmp"));
        symlink(&victim, &tmp).unwrap();
        replace(&path, &tmp, b"new", 0o600).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        assert!(!tmp.exists());
        // A link at the final name is replaced, not followed.
        std::fs::remove_file(&path).unwrap();
        symlink(&victim, &path).unwrap();
        replace(&path, &tmp, b"newer", 0o600).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert!(!std::fs::symlink_metadata(&path).unwrap().is_symlink());
        std::fs::remove_dir_all(&d).ok();
    }
}
