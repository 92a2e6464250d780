//! Tell the in-kernel sender (the kerneld_shim module, kernel/module/)
//! which process serves its key: it watches that process while it waits
//! for an answer, so that a kerneld killed holding a request costs the
//! requester a fraction of a second rather than `reply_wait_ms`.
//!
//! The module takes the writer's own pid only; kerneld registers once it
//! holds its key's lock (before a takeover, so that a request the takeover
//! keeps is watched through this kerneld), then again from a watch thread
//! whenever the registration is missing or names another process (the
//! module may be loaded, or reloaded, after kerneld started).  Failures
//! are logged, never fatal: without a registration the module waits as it
//! always did.

use kerneld::operator::log;
use kmod_ipc::instances::overlap;
use kmod_ipc::wire::TYPE_REQUEST_MODULE;
use kmod_ipc::{Key, TypeFilter};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

/// The module's key parameter.
pub(crate) const KEY_PARAM: &str = "/sys/module/kerneld_shim/parameters/key";
/// The registration file (root only).
pub(crate) const SERVER: &str = "/sys/kernel/kerneld_shim/server";
/// How often the watch thread checks the registration: two small sysfs
/// reads.
const WATCH_EVERY: Duration = Duration::from_secs(5);

/// The module's key, as its parameter file shows it: an int parameter,
/// printed in decimal.
pub(crate) fn parse_key(text: &str) -> Option<i32> {
    text.trim().parse().ok()
}

/// Whether kerneld `me`, serving `our_key`, must write its pid: the module
/// serves the same key and the registration (`None`: unreadable) names
/// another process or none.
pub(crate) fn must_register(
    module_key: Option<i32>,
    our_key: Key,
    registered: Option<u32>,
    me: u32,
) -> bool {
    module_key == Some(our_key.0) && registered != Some(me)
}

/// What one check did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Nothing to do: no module, another key, or registered already.
    Nothing,
    /// Registered now.
    Registered,
}

/// The files of one module (the real ones, or a test's).
pub(crate) struct Files {
    pub(crate) key_param: PathBuf,
    pub(crate) server: PathBuf,
}

impl Files {
    pub(crate) fn loaded() -> Files {
        Files {
            key_param: PathBuf::from(KEY_PARAM),
            server: PathBuf::from(SERVER),
        }
    }

    /// Register `me` if `must_register` says so.
    pub(crate) fn check(&self, key: Key, me: u32) -> Result<Outcome, String> {
        let module_key = match std::fs::read_to_string(&self.key_param) {
            Ok(t) => parse_key(&t),
            // Not loaded: nothing to tell.
            Err(_) => return Ok(Outcome::Nothing),
        };
        if module_key != Some(key.0) {
            return Ok(Outcome::Nothing);
        }
        let registered = read_pid(&self.server);
        if !must_register(module_key, key, registered, me) {
            return Ok(Outcome::Nothing);
        }
        std::fs::write(&self.server, format!("{me}\n")).map_err(|e| {
            format!(
                "cannot register with the in-kernel sender ({}: {e}): a kerneld killed while \
                 serving one of its requests costs that request reply_wait_ms; kerneld must \
                 run as root",
                self.server.display()
            )
        })?;
        Ok(Outcome::Registered)
    }
}

fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Whether a kerneld taking `filter` serves request_module() (the only
/// requests the module sends and waits for).
pub(crate) fn serves_requests(filter: TypeFilter) -> bool {
    overlap(filter, TypeFilter::Exactly(TYPE_REQUEST_MODULE))
}

/// The last failure logged, so that a lasting one is logged once.
static LAST_ERROR: Mutex<Option<String>> = Mutex::new(None);

/// One check against the loaded module, logged: a registration once, a
/// failure once until it changes.
pub(crate) fn register(key: Key) {
    let me = std::process::id();
    let r = Files::loaded().check(key, me);
    let mut last = LAST_ERROR.lock().unwrap_or_else(|p| p.into_inner());
    match r {
        Ok(Outcome::Registered) => {
            *last = None;
            log::notice(&format!(
                "registered with the in-kernel sender (kerneld_shim, key {key}) as pid {me}: \
                 requests it sends are not awaited after this kerneld died"
            ));
        }
        Ok(Outcome::Nothing) => *last = None,
        Err(e) => {
            if last.as_deref() != Some(e.as_str()) {
                log::warn(&e);
                *last = Some(e);
            }
        }
    }
}

/// Keep the registration, every `WATCH_EVERY`, for as long as kerneld
/// runs.
pub(crate) fn spawn_watch(key: Key) {
    let spawned = std::thread::Builder::new()
        .name("kerneld-shim".into())
        .spawn(move || loop {
            std::thread::sleep(WATCH_EVERY);
            register(key);
        });
    if let Err(e) = spawned {
        log::warn(&format!(
            "cannot start the thread that keeps kerneld registered with the in-kernel \
             sender: {e}; registered at start only"
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: Key = Key(0x6b65726e);

    fn files(tag: &str) -> (PathBuf, Files) {
        let dir = std::env::temp_dir().join(format!("kerneld-shim-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let f = Files {
            key_param: dir.join("key"),
            server: dir.join("server"),
        };
        (dir, f)
    }

    #[test]
    fn parses_the_key_as_the_kernel_prints_it() {
        assert_eq!(parse_key("1801810542\n"), Some(0x6b65726e));
        assert_eq!(parse_key("-5\n"), Some(-5));
        assert_eq!(parse_key("0x6b65726e\n"), None);
        assert_eq!(parse_key(""), None);
        assert_eq!(parse_key("99999999999"), None);
    }

    #[test]
    fn decides_when_to_write() {
        assert!(must_register(Some(KEY.0), KEY, Some(0), 42));
        assert!(must_register(Some(KEY.0), KEY, Some(41), 42));
        assert!(must_register(Some(KEY.0), KEY, None, 42));
        assert!(!must_register(Some(KEY.0), KEY, Some(42), 42));
        assert!(!must_register(Some(7), KEY, Some(0), 42), "another key");
        assert!(!must_register(None, KEY, Some(0), 42), "no module");
    }

    #[test]
    fn registers_once_and_again_when_replaced() {
        let (dir, f) = files("reg");
        assert_eq!(f.check(KEY, 42), Ok(Outcome::Nothing), "no module");
        std::fs::write(&f.key_param, "1801810542\n").unwrap();
        std::fs::write(&f.server, "0\n").unwrap();
        assert_eq!(f.check(KEY, 42), Ok(Outcome::Registered));
        assert_eq!(std::fs::read_to_string(&f.server).unwrap(), "42\n");
        assert_eq!(f.check(KEY, 42), Ok(Outcome::Nothing), "registered already");
        std::fs::write(&f.server, "43\n").unwrap();
        assert_eq!(f.check(KEY, 42), Ok(Outcome::Registered), "another pid");
        assert_eq!(std::fs::read_to_string(&f.server).unwrap(), "42\n");
        std::fs::write(&f.key_param, "7\n").unwrap();
        std::fs::write(&f.server, "0\n").unwrap();
        assert_eq!(f.check(KEY, 42), Ok(Outcome::Nothing), "another key");
        assert_eq!(std::fs::read_to_string(&f.server).unwrap(), "0\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_refused_write_says_what_failed() {
        let (dir, f) = files("refused");
        std::fs::write(&f.key_param, "1801810542\n").unwrap();
        // A directory where the file should be: the write fails.
        std::fs::create_dir(&f.server).unwrap();
        let e = f.check(KEY, 42).unwrap_err();
        assert!(
            e.contains("cannot register with the in-kernel sender"),
            "{e}"
        );
        assert!(e.contains("server"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn only_a_kerneld_serving_requests_registers() {
        assert!(serves_requests(TypeFilter::UpTo(255)));
        assert!(serves_requests(TypeFilter::Any));
        assert!(serves_requests(TypeFilter::Exactly(TYPE_REQUEST_MODULE)));
        assert!(!serves_requests(TypeFilter::Exactly(1)));
    }
}
