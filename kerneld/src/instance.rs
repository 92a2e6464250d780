//! One kerneld per key and message type: the instances serving a key are
//! registered in `/run/kerneld/keys` (`KERNELD_KEYS_DIR` for tests).
//!
//! For each key there is a lock file, `KEY.lock`, held (flock) only while
//! an instance starts or stops, and one file per running instance,
//! `KEY.PID`, which that instance holds locked for its whole life and
//! which says what it serves (`pid=... type=... state-dir=...`).  A file
//! nobody holds belongs to an instance that died: it is removed by the
//! next one that starts on the key.
//!
//! At start, under the key's lock, kerneld refuses to run if a live
//! instance serves message types that overlap its own (1995 allowed
//! `type=` partitions on one queue, and those still share it), claims the
//! queue and registers itself.  At stop, under the lock again, it removes
//! the queue only if no other live instance serves it.

use kmod_ipc::{Key, TypeFilter};
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Where the key files live.
pub fn keys_dir() -> PathBuf {
    std::env::var_os("KERNELD_KEYS_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/run/kerneld/keys"))
}

/// How long to wait for an instance that is starting or stopping on the
/// same key to release the key's lock (it holds it for milliseconds).
const LOCK_PATIENCE: Duration = Duration::from_secs(10);

/// `type=N` as the command line writes it.
pub fn filter_word(f: TypeFilter) -> String {
    match f {
        TypeFilter::Any => "type=0".into(),
        TypeFilter::Exactly(n) => format!("type={n}"),
        TypeFilter::UpTo(n) => format!("type=-{n}"),
    }
}

fn parse_filter(word: &str) -> Option<TypeFilter> {
    let n: i64 = word.strip_prefix("type=")?.parse().ok()?;
    Some(match n {
        0 => TypeFilter::Any,
        n if n < 0 => TypeFilter::UpTo(n.checked_neg()?),
        n => TypeFilter::Exactly(n),
    })
}

/// Whether two instances would take each other's messages.
pub fn overlap(a: TypeFilter, b: TypeFilter) -> bool {
    use TypeFilter::*;
    match (a, b) {
        (Any, _) | (_, Any) => true,
        // Both take type 1 at least.
        (UpTo(_), UpTo(_)) => true,
        (UpTo(m), Exactly(n)) | (Exactly(n), UpTo(m)) => (1..=m).contains(&n),
        (Exactly(n), Exactly(m)) => n == m,
    }
}

/// Another live instance on the key, as its file describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Other {
    pub pid: u32,
    pub filter: Option<TypeFilter>,
    pub state_dir: String,
}

impl Other {
    fn parse(text: &str) -> Other {
        let mut o = Other {
            pid: 0,
            filter: None,
            state_dir: String::new(),
        };
        let line = text.lines().next().unwrap_or("");
        // The state directory is last and may hold blanks.
        let (fields, dir) = match line.split_once(" state-dir=") {
            Some((f, d)) => (f, Some(d)),
            None => (line, None),
        };
        for field in fields.split_whitespace() {
            if let Some(v) = field.strip_prefix("pid=") {
                o.pid = v.parse().unwrap_or(0);
            } else if field.starts_with("type=") {
                o.filter = parse_filter(field);
            }
        }
        o.state_dir = dir.unwrap_or("").to_string();
        o
    }

    /// `pid 1234 (type=-255, state dir /run/kerneld)`.
    pub fn describe(&self) -> String {
        format!(
            "pid {} ({}, state dir {})",
            self.pid,
            self.filter.map_or("types unknown".into(), filter_word),
            if self.state_dir.is_empty() {
                "unknown"
            } else {
                &self.state_dir
            }
        )
    }
}

/// The key's lock, held while an instance starts or stops.
pub struct KeyLock {
    dir: PathBuf,
    key: Key,
    path: PathBuf,
    lock: Flock<File>,
}

fn key_name(key: Key) -> String {
    format!("{:#010x}", key.0 as u32)
}

impl KeyLock {
    /// Take the lock of `key`, waiting up to [`LOCK_PATIENCE`] for an
    /// instance that is starting or stopping.
    pub fn acquire(key: Key) -> Result<KeyLock, String> {
        let dir = keys_dir();
        if let Some(parent) = dir.parent() {
            // /run/kerneld is the default state directory: mode 0700.
            if !parent.exists() {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(parent)
                    .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
            }
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let path = dir.join(format!("{}.lock", key_name(key)));
        let end = Instant::now() + LOCK_PATIENCE;
        loop {
            let file = open_lock_file(&path)?;
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(lock) => {
                    // The last instance to stop removes the file: make sure
                    // the one locked is still the one at the path.
                    let same = match (lock.metadata(), std::fs::metadata(&path)) {
                        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
                        _ => false,
                    };
                    if same {
                        return Ok(KeyLock {
                            dir,
                            key,
                            path,
                            lock,
                        });
                    }
                }
                Err((_, Errno::EWOULDBLOCK)) => {
                    if Instant::now() >= end {
                        return Err(format!(
                            "another kerneld has been starting or stopping on key {key} for {}s \
                             ({} stays locked); try again, or look for a stuck kerneld",
                            LOCK_PATIENCE.as_secs(),
                            path.display()
                        ));
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err((_, e)) => return Err(format!("cannot lock {}: {e}", path.display())),
            }
        }
    }

    fn instance_path(&self, pid: u32) -> PathBuf {
        self.dir.join(format!("{}.{pid}", key_name(self.key)))
    }

    /// The other live instances on the key; files of dead ones are
    /// removed on the way.
    pub fn others(&self, me: u32) -> Vec<Other> {
        let prefix = format!("{}.", key_name(self.key));
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for e in rd.flatten() {
            let name = e.file_name();
            let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(&prefix)) else {
                continue;
            };
            let Ok(pid) = rest.parse::<u32>() else {
                continue;
            };
            if pid == me {
                continue;
            }
            let path = e.path();
            let Ok(file) = File::open(&path) else {
                continue;
            };
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                // Nobody holds it: its instance is dead.
                Ok(_stale) => {
                    let _ = std::fs::remove_file(&path);
                }
                Err((_, Errno::EWOULDBLOCK)) => {
                    let mut o = Other::parse(&std::fs::read_to_string(&path).unwrap_or_default());
                    if o.pid == 0 {
                        o.pid = pid;
                    }
                    out.push(o);
                }
                Err(_) => {}
            }
        }
        out.sort_by_key(|o| o.pid);
        out
    }

    /// The first live instance whose types overlap `filter`.
    pub fn conflict(&self, filter: TypeFilter, me: u32) -> Option<Other> {
        self.others(me)
            .into_iter()
            .find(|o| o.filter.is_none_or(|f| overlap(f, filter)))
    }

    /// Register this instance (pid `me`), held until [`Instance::leave`]
    /// or the process ends.
    pub fn join(&self, me: u32, filter: TypeFilter, state_dir: &Path) -> Result<Instance, String> {
        let path = self.instance_path(me);
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            // Not through a link planted there, nor blocking on a FIFO.
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&path)
            .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        let mut lock = Flock::lock(file, FlockArg::LockExclusiveNonblock)
            .map_err(|(_, e)| format!("cannot lock {}: {e}", path.display()))?;
        writeln!(
            lock,
            "pid={me} {} state-dir={}",
            filter_word(filter),
            state_dir.display()
        )
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        Ok(Instance { path, _lock: lock })
    }

    /// Release the lock; the last instance of the key also removes the
    /// lock file, so keys used once leave nothing behind.
    pub fn release(self, last: bool) {
        if last {
            let _ = std::fs::remove_file(&self.path);
        }
        drop(self.lock);
    }
}

/// This instance's registration on its key.
pub struct Instance {
    path: PathBuf,
    _lock: Flock<File>,
}

impl Instance {
    /// Unregister (under the key's lock).
    pub fn leave(self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Open (creating it) a file that is only ever locked, never truncated:
/// another process may hold its lock and have written its pid there.
/// Never through a link: one planted there would have kerneld create or
/// open the file it names.
pub fn open_lock_file(path: &Path) -> Result<File, String> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use TypeFilter::*;

    #[test]
    fn overlapping_types() {
        assert!(overlap(UpTo(255), UpTo(8)));
        assert!(overlap(UpTo(255), Exactly(2)));
        assert!(overlap(Exactly(2), UpTo(2)));
        assert!(!overlap(Exactly(256), UpTo(255)));
        assert!(!overlap(Exactly(2), Exactly(3)));
        assert!(overlap(Exactly(3), Exactly(3)));
        assert!(overlap(Any, Exactly(3)));
    }

    #[test]
    fn files_describe_instances() {
        let o = Other::parse("pid=42 type=-255 state-dir=/run/kerneld\n");
        assert_eq!(o.pid, 42);
        assert_eq!(o.filter, Some(UpTo(255)));
        assert_eq!(o.describe(), "pid 42 (type=-255, state dir /run/kerneld)");
        assert_eq!(parse_filter("type=7"), Some(Exactly(7)));
        assert_eq!(parse_filter(&filter_word(UpTo(9))), Some(UpTo(9)));
        assert_eq!(parse_filter("type=-9223372036854775808"), None);
        assert_eq!(Other::parse("garbage").filter, None);
        let spaced = Other::parse("pid=7 type=2 state-dir=/tmp/a b\n");
        assert_eq!((spaced.pid, spaced.state_dir.as_str()), (7, "/tmp/a b"));
    }
}
