//! One kerneld per key and message type: the instances serving a key are
//! registered in `/run/kerneld/keys` (`KERNELD_KEYS_DIR` for tests).
//!
//! For each key there is a lock file, `KEY.lock`, held (flock) only while
//! an instance starts or stops (or a sender takes a request back), and one
//! file per running instance, `KEY.PID`, which that instance holds locked
//! (an open file description lock) for its whole life and
//! which says what it serves (`pid=... type=... state-dir=...`).  A file
//! nobody holds belongs to an instance that died: it is removed by the
//! next one that starts on the key.
//!
//! At start, under the key's lock, kerneld refuses to run if a live
//! instance serves message types that overlap its own (1995 allowed
//! `type=` partitions on one queue, and those still share it), claims the
//! queue and registers itself.  At stop, under the lock again, it removes
//! the queue only if no other live instance serves it.
//!
//! The senders read the same files to tell whether a live kerneld serves
//! a key ([`registered`]): a queue left behind by a kerneld that was killed is
//! no kerneld, and its requests fall back at once instead of waiting for
//! an answer that never comes.  A sender that must take its request back
//! from such a queue does it under the key's lock ([`KeyLock`]), so that
//! no kerneld starts and reads it meanwhile.

use crate::{Key, TypeFilter};
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

pub(crate) fn parse_filter(word: &str) -> Option<TypeFilter> {
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
    pub(crate) fn parse(text: &str) -> Other {
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

impl Other {
    /// Whether this instance takes messages of type `mtype` (an instance
    /// whose file names no types is taken to serve them all).
    pub fn serves(&self, mtype: i64) -> bool {
        self.filter
            .is_none_or(|f| overlap(f, TypeFilter::Exactly(mtype)))
    }
}

/// The instances registered on `key`, read without the key's lock and
/// without removing anything: the live ones (their files are locked) and
/// the dead ones (files nobody holds: a kerneld killed before it could
/// unregister).  For the senders and kdstat, which must not wait for a
/// kerneld that is starting.  A file being created is seen as dead for
/// the instant before its instance locks it; callers that act on "dead"
/// check again under [`KeyLock`].
pub fn registered(key: Key) -> Registered {
    let mut out = Registered::default();
    let found = match scan(&keys_dir(), key) {
        Ok(f) => f,
        // No directory: no kerneld ever ran here (since boot).
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return out,
        // Root's directory, read by another user: nothing can be told.
        Err(_) => {
            out.unknown = true;
            return out;
        }
    };
    for f in found {
        if f.held {
            out.live.push(f.instance);
        } else {
            out.dead.push(f.instance);
        }
    }
    out
}

/// One instance file of a key, as [`scan`] found it.
struct Found {
    path: PathBuf,
    /// The pid in the file's name.
    pid: u32,
    instance: Other,
    /// Whether its instance holds it (is alive).
    held: bool,
}

/// The instance files of `key` in `dir`, by pid, each read and its lock
/// tested (read-only, taking no lock: the check never disturbs the
/// instance or a kerneld starting on the key).
fn scan(dir: &Path, key: Key) -> std::io::Result<Vec<Found>> {
    let prefix = format!("{}.", key_name(key));
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)?.flatten() {
        let name = e.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(&prefix)) else {
            continue;
        };
        let Ok(pid) = rest.parse::<u32>() else {
            continue;
        };
        let path = e.path();
        let Ok(file) = open_instance_file(&path) else {
            continue;
        };
        let Ok(held) = is_held(&file) else {
            continue;
        };
        let mut instance = Other::parse(&read_small(&file));
        if instance.pid == 0 {
            instance.pid = pid;
        }
        out.push(Found {
            path,
            pid,
            instance,
            held,
        });
    }
    out.sort_by_key(|f| f.instance.pid);
    Ok(out)
}

/// What [`registered`] found on a key.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Registered {
    /// Instances running now.
    pub live: Vec<Other>,
    /// Files left by instances that died without unregistering.
    pub dead: Vec<Other>,
    /// The directory could not be read (not root): nothing is known.
    pub unknown: bool,
}

impl Registered {
    /// The live instance that takes messages of type `mtype`, if any.
    pub fn server_of(&self, mtype: i64) -> Option<&Other> {
        self.live.iter().find(|o| o.serves(mtype))
    }

    /// Whether a live kerneld may take messages of type `mtype`: one
    /// does, or the registry could not be read.
    pub fn may_serve(&self, mtype: i64) -> bool {
        self.unknown || self.server_of(mtype).is_some()
    }
}

/// Whether another live instance (not `me`) on `key` takes messages of
/// type `mtype`.  For the receive path: the registry is read again only
/// when the keys directory changed (an instance started or stopped), so a
/// check costs one `stat` otherwise.
pub fn other_serves(key: Key, me: u32, mtype: i64) -> bool {
    use std::sync::Mutex;
    type Seen = Option<(Key, std::time::SystemTime, Vec<Other>)>;
    static SEEN: Mutex<Seen> = Mutex::new(None);
    let Ok(changed) = std::fs::metadata(keys_dir()).and_then(|m| m.modified()) else {
        return false;
    };
    let mut seen = SEEN.lock().unwrap_or_else(|p| p.into_inner());
    let fresh = matches!(&*seen, Some((k, t, _)) if *k == key && *t == changed);
    if !fresh {
        *seen = Some((key, changed, registered(key).live));
    }
    seen.as_ref()
        .is_some_and(|(_, _, live)| live.iter().any(|o| o.pid != me && o.serves(mtype)))
}

/// What a human needs to know of a queue that no live kerneld serves:
/// which kerneld left it (its pid and pid file, from the instance file it
/// left), what waits in it, and who last read it.  `kerneld (pid 812) is
/// not running; its queue at key 0x6b65726e (id 3) is left with 4 messages
/// (pid file /run/kerneld/kerneld.pid, last receiver pid 812 (gone))`.
pub fn left_behind(key: Key, queue: &crate::Queue) -> String {
    let dead = registered(key).dead;
    let (who, pid_file) = match dead.first() {
        Some(o) => (
            format!("kerneld (pid {}) is not running", o.pid),
            (!o.state_dir.is_empty()).then(|| format!("{}/kerneld.pid", o.state_dir)),
        ),
        None => ("no kerneld is running".to_string(), None),
    };
    let pid_file = pid_file.map_or(String::new(), |p| {
        let state = match std::fs::read_to_string(&p) {
            Ok(t) => format!("names pid {}", t.trim()),
            Err(_) => "missing".to_string(),
        };
        format!("pid file {p} {state}, ")
    });
    match queue.stat() {
        Ok(st) => format!(
            "{who}; its queue at key {key} (id {}) is left with {} message{} ({pid_file}last \
             receiver {})",
            queue.id(),
            st.messages,
            if st.messages == 1 { "" } else { "s" },
            crate::queue::pid_and_comm(st.last_receiver)
        ),
        Err(_) => format!("{who}; its queue at key {key} is gone"),
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
        let mut out = Vec::new();
        for f in scan(&self.dir, self.key).unwrap_or_default() {
            if f.pid == me {
                continue;
            }
            if f.held {
                out.push(f.instance);
            } else {
                // Nobody holds it: its instance is dead.
                let _ = std::fs::remove_file(&f.path);
            }
        }
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
        hold(&file).map_err(|e| format!("cannot lock {}: {e}", path.display()))?;
        let mut file = file;
        writeln!(
            file,
            "pid={me} {} state-dir={}",
            filter_word(filter),
            state_dir.display()
        )
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        Ok(Instance { path, _held: file })
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
    /// Open for the instance's life: closing it (or dying) drops the lock.
    _held: File,
}

impl Instance {
    /// Unregister (under the key's lock).
    pub fn leave(self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// An open file description lock over the whole file: `F_WRLCK` to hold,
/// tested with `F_OFD_GETLK`.  Unlike flock, it can be tested without
/// being taken, so a sender's check never makes a starting kerneld see a
/// dead instance as live; like flock, it belongs to the open file, lives
/// as long as the process holds the file open, and is dropped when the
/// process dies however it dies.
fn whole_file(kind: libc::c_int) -> libc::flock {
    // SAFETY: flock is plain data; zero is a valid value of every field.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = kind as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl
}

/// Open an instance file to test its lock: never through a link, never
/// blocking on a FIFO planted in its place.
fn open_instance_file(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
}

/// The first KiB of an instance file (its one line).
fn read_small(file: &File) -> String {
    use std::io::Read;
    let mut text = String::new();
    let _ = file.take(1024).read_to_string(&mut text);
    text
}

/// Hold the instance lock on `file` (open for writing).
fn hold(file: &File) -> nix::Result<()> {
    nix::fcntl::fcntl(
        file,
        nix::fcntl::FcntlArg::F_OFD_SETLK(&whole_file(libc::F_WRLCK)),
    )
    .map(drop)
}

/// Whether some process holds the instance lock on `file`.
fn is_held(file: &File) -> nix::Result<bool> {
    let mut fl = whole_file(libc::F_WRLCK);
    nix::fcntl::fcntl(file, nix::fcntl::FcntlArg::F_OFD_GETLK(&mut fl))?;
    Ok(fl.l_type != libc::F_UNLCK as libc::c_short)
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
