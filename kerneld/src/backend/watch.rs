//! A fingerprint of files, recomputed only when inotify says they changed.
//!
//! kerneld drops its negative cache when the module index or modprobe.d
//! changes, and tells by a fingerprint of stat() results.  Computing it
//! takes some thirty system calls (the index files, every modprobe.d
//! directory and entry), too many to pay on every request.  [`Watched`]
//! computes it, watches every path it reads, and computes it again only
//! after an event: while nothing changes, a request costs one non-blocking
//! read(2) of the inotify descriptor.
//!
//! Every path is watched, files through symbolic links too (inotify
//! follows them, as stat() does); the parent directory of each file sees
//! it replaced by rename, as depmod does; a path that does not exist is
//! watched through its nearest existing ancestor, so that its creation is
//! seen.  Any event at all means "recompute"; the fingerprint decides
//! whether it really changed.  Without inotify (no instance or watch left)
//! the fingerprint is computed every time, as before.
//!
//! [`generation`] tells libkmod contexts (`kmod.rs`) the same thing: it
//! changes whenever the fingerprint had to be recomputed, so a context
//! validated at the current generation need not stat its index and
//! configuration files again.  The daemon watches every path libkmod
//! checks (the module directory through the index files' parent, every
//! modprobe.d directory and entry); 0 means "not known", and contexts
//! then always validate.

use nix::errno::Errno;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

static GENERATION: AtomicU64 = AtomicU64::new(0);
static NEXT_GENERATION: AtomicU64 = AtomicU64::new(1);

/// Changes each time a [`Watched`] recomputes; 0 when nothing is watched
/// with inotify (so no caller may take "unchanged" for granted).
pub(crate) fn generation() -> u64 {
    GENERATION.load(Ordering::Acquire)
}

const MASK: AddWatchFlags = AddWatchFlags::IN_ATTRIB
    .union(AddWatchFlags::IN_CLOSE_WRITE)
    .union(AddWatchFlags::IN_MODIFY)
    .union(AddWatchFlags::IN_CREATE)
    .union(AddWatchFlags::IN_DELETE)
    .union(AddWatchFlags::IN_MOVED_FROM)
    .union(AddWatchFlags::IN_MOVED_TO)
    .union(AddWatchFlags::IN_DELETE_SELF)
    .union(AddWatchFlags::IN_MOVE_SELF);

/// A fingerprint of `files` and of `dirs` with their entries.
pub struct Watched {
    files: Vec<PathBuf>,
    dirs: Vec<PathBuf>,
    compute: Box<dyn Fn() -> u64 + Send + Sync>,
    state: Mutex<State>,
}

struct State {
    /// The watches in force; None: compute every time.
    inotify: Option<Inotify>,
    /// The fingerprint when the watches were set.
    value: u64,
}

impl Watched {
    /// `compute` must read only `files`, `dirs` and the entries of `dirs`.
    pub fn new(
        files: Vec<PathBuf>,
        dirs: Vec<PathBuf>,
        compute: impl Fn() -> u64 + Send + Sync + 'static,
    ) -> Watched {
        Watched {
            files,
            dirs,
            compute: Box::new(compute),
            state: Mutex::new(State {
                inotify: None,
                value: 0,
            }),
        }
    }

    /// The fingerprint as of now.
    pub fn get(&self) -> u64 {
        let mut st = self.state.lock().unwrap();
        if let Some(fd) = &st.inotify {
            if !changed(fd) {
                return st.value;
            }
        }
        // First call, an event, or no inotify.  Watch first, then read:
        // a change made in between is both read and reported.
        st.inotify = self.arm();
        st.value = (self.compute)();
        let g = match st.inotify {
            Some(_) => NEXT_GENERATION.fetch_add(1, Ordering::Relaxed),
            None => 0,
        };
        GENERATION.store(g, Ordering::Release);
        st.value
    }

    /// A fresh inotify instance watching every path; None if any watch
    /// cannot be set.
    fn arm(&self) -> Option<Inotify> {
        let fd = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).ok()?;
        for f in &self.files {
            watch(&fd, f)?;
            watch(&fd, f.parent().unwrap_or(Path::new("/")))?;
        }
        for d in &self.dirs {
            watch(&fd, d)?;
            if let Ok(rd) = std::fs::read_dir(d) {
                for e in rd.flatten() {
                    watch(&fd, &e.path())?;
                }
            }
        }
        Some(fd)
    }
}

/// Watch `path`, or its nearest existing ancestor if it does not exist.
fn watch(fd: &Inotify, path: &Path) -> Option<()> {
    let mut p = path;
    loop {
        match fd.add_watch(p, MASK) {
            Ok(_) => return Some(()),
            Err(Errno::ENOENT | Errno::ENOTDIR) => p = p.parent()?,
            Err(_) => return None,
        }
    }
}

/// Whether any event arrived (read them all); an error counts as a change.
fn changed(fd: &Inotify) -> bool {
    // Only whether something arrived matters, not what.  The buffer holds
    // one event with the longest name (16 + NAME_MAX + 1 bytes), the least
    // a read of inotify accepts; zeroing it costs little next to the read,
    // and `Inotify::read_events` would zero 4 KiB and allocate.
    let mut buf = [0u8; 512];
    let mut any = false;
    loop {
        match nix::unistd::read(fd, &mut buf) {
            Ok(n) if n > 0 => any = true,
            Err(Errno::EAGAIN) => return any,
            Err(Errno::EINTR) => {}
            _ => return true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::{Hash, Hasher};
    use std::os::unix::fs::MetadataExt;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    fn stamp_all(files: &[PathBuf], dirs: &[PathBuf]) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        let mut stamp = |p: &Path| {
            if let Ok(m) = std::fs::metadata(p) {
                (m.ino(), m.mtime(), m.mtime_nsec(), m.size()).hash(&mut h);
            }
        };
        files.iter().for_each(|f| stamp(f));
        for d in dirs {
            stamp(d);
            if let Ok(rd) = std::fs::read_dir(d) {
                let mut v: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
                v.sort();
                v.iter().for_each(|p| stamp(p));
            }
        }
        h.finish()
    }

    struct Fixture {
        root: PathBuf,
        w: Watched,
        computed: Arc<AtomicUsize>,
    }

    fn fixture(tag: &str) -> Fixture {
        let root = std::env::temp_dir().join(format!("kerneld-watch-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("modules")).unwrap();
        std::fs::create_dir_all(root.join("etc/modprobe.d")).unwrap();
        std::fs::create_dir_all(root.join("elsewhere")).unwrap();
        std::fs::write(root.join("modules/modules.dep.bin"), "1").unwrap();
        std::fs::write(root.join("elsewhere/real.conf"), "blacklist a\n").unwrap();
        std::os::unix::fs::symlink(
            root.join("elsewhere/real.conf"),
            root.join("etc/modprobe.d/link.conf"),
        )
        .unwrap();
        let files = vec![
            root.join("modules/modules.dep.bin"),
            root.join("modules/modules.alias.bin"),
        ];
        let dirs = vec![root.join("etc/modprobe.d"), root.join("run/modprobe.d")];
        let computed = Arc::new(AtomicUsize::new(0));
        let (f2, d2, c2) = (files.clone(), dirs.clone(), computed.clone());
        let w = Watched::new(files, dirs, move || {
            c2.fetch_add(1, Ordering::SeqCst);
            stamp_all(&f2, &d2)
        });
        Fixture { root, w, computed }
    }

    /// Every kind of change is seen by the next get(), which then agrees
    /// with a fresh computation; nothing is recomputed while nothing
    /// changes.
    #[test]
    fn changes_are_seen_and_quiet_is_cheap() {
        let f = fixture("changes");
        let r = &f.root;
        let fresh = |w: &Watched| -> bool { w.get() == (w.compute)() };
        let v0 = f.w.get();
        let g0 = generation();
        assert_ne!(g0, 0);
        for _ in 0..5 {
            assert_eq!(f.w.get(), v0);
        }
        assert_eq!(generation(), g0, "quiet: same generation");
        assert_eq!(
            f.computed.load(Ordering::SeqCst),
            1,
            "quiet: no recomputation"
        );

        let mut last = v0;
        let mut step = |what: &str, change: &dyn Fn()| {
            let before = f.computed.load(Ordering::SeqCst);
            let g = generation();
            change();
            let v = f.w.get();
            assert_ne!(generation(), g, "{what}: same generation");
            assert!(
                f.computed.load(Ordering::SeqCst) > before,
                "{what}: not recomputed"
            );
            assert_ne!(v, last, "{what}: fingerprint unchanged");
            assert!(fresh(&f.w), "{what}: stale fingerprint");
            last = v;
        };
        let write = |p: &str, text: &str| std::fs::write(r.join(p), text).unwrap();
        step("rewrite in place", &|| {
            write("modules/modules.dep.bin", "22")
        });
        step("rename over (depmod)", &|| {
            write("modules/tmp", "333");
            std::fs::rename(r.join("modules/tmp"), r.join("modules/modules.dep.bin")).unwrap();
        });
        step("missing file appears", &|| {
            write("modules/modules.alias.bin", "x")
        });
        step("new .conf", &|| write("etc/modprobe.d/new.conf", "x"));
        step("edit through a symlink", &|| {
            write("elsewhere/real.conf", "blacklist ab\n")
        });
        step("missing directory appears", &|| {
            std::fs::create_dir_all(r.join("run/modprobe.d")).unwrap()
        });
        step("file in the new directory", &|| {
            write("run/modprobe.d/z.conf", "x")
        });
        step("conf removed", &|| {
            std::fs::remove_file(r.join("etc/modprobe.d/new.conf")).unwrap()
        });
        step("directory removed", &|| {
            std::fs::remove_dir_all(r.join("run")).unwrap()
        });
        let _ = std::fs::remove_dir_all(r);
    }
}
