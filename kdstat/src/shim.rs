//! The in-kernel sender (kernel/module/ of the kerneld sources): when the
//! `kerneld_shim` module is loaded, the kernel posts its requests to
//! kerneld's queue itself; its settings are module parameters in
//! `/sys/module/kerneld_shim/parameters/`, its counters files in
//! `/sys/kernel/kerneld_shim/`, beside the pid of the kerneld registered
//! as serving it (`server`, readable by root only).

use std::path::Path;

/// Where the module's settings are.
pub const PARAMETERS: &str = "/sys/module/kerneld_shim/parameters";
/// Where the module's counters are, one file each.
pub const COUNTERS_DIR: &str = "/sys/kernel/kerneld_shim";

/// Settings, in the order shown.
const SETTINGS: [&str; 4] = ["key", "read_wait_ms", "reply_wait_ms", "fallback"];
/// A counter of the module: its file, its label in the text status, its
/// help in the Prometheus exposition (`kerneld_shim_NAME_total`).
pub struct Counter {
    pub name: &'static str,
    pub label: &'static str,
    pub help: &'static str,
}

/// The counters, in the order shown: the one list kdstat reads, shows and
/// exports.
pub const COUNTERS: [Counter; 14] = [
    Counter {
        name: "requests",
        label: "requests",
        help: "Requests the kernel module posted to kerneld's queue",
    },
    Counter {
        name: "answered",
        label: "answered",
        help: "Requests kerneld answered with success",
    },
    Counter {
        name: "failed",
        label: "failed",
        help: "Requests kerneld answered with a failure",
    },
    Counter {
        name: "nowait",
        label: "nowait",
        help: "Requests posted without waiting for an answer",
    },
    Counter {
        name: "fallback_no_queue",
        label: "fell back: no queue",
        help: "Requests left to modprobe: no kerneld queue",
    },
    Counter {
        name: "fallback_unread",
        label: "unread",
        help: "Requests left to modprobe: kerneld did not read the request in time",
    },
    Counter {
        name: "fallback_full",
        label: "queue full",
        help: "Requests left to modprobe: kerneld's queue was full",
    },
    Counter {
        name: "fallback_gone",
        label: "queue removed",
        help: "Requests left to modprobe: the queue was removed while waiting",
    },
    Counter {
        name: "untrusted_queue",
        label: "untrusted queues",
        help: "Queues refused because they were not kerneld's",
    },
    Counter {
        name: "timed_out",
        label: "timed out",
        help: "Requests whose answer did not come in time",
    },
    Counter {
        name: "interrupted",
        label: "interrupted",
        help: "Waits for an answer interrupted by a signal",
    },
    Counter {
        name: "late_answers",
        label: "late answers",
        help: "Answers that came after their requester gave up",
    },
    Counter {
        name: "fallback_suspend",
        label: "suspend starting",
        help: "Requests left to modprobe: a suspend was starting",
    },
    Counter {
        name: "fallback_died",
        label: "kerneld died",
        help: "Requests left to modprobe: kerneld died holding the request",
    },
];

/// The module's settings and counters, name and value, if it is loaded.
pub struct Shim {
    pub settings: Vec<(&'static str, String)>,
    pub counters: Vec<(&'static str, u64)>,
    /// The registered kerneld's pid, 0 for none; `None` when unreadable
    /// (kdstat not run as root, or a module without the file).
    pub server: Option<u64>,
}

impl Shim {
    /// Read the settings from `params` and the counters from `counters`
    /// (normally [`PARAMETERS`] and [`COUNTERS_DIR`]); `None` when the
    /// module is not loaded.
    pub fn read(params: &Path, counters: &Path) -> Option<Shim> {
        let get = |dir: &Path, n: &str| {
            std::fs::read_to_string(dir.join(n))
                .ok()
                .map(|s| s.trim().to_string())
        };
        get(counters, "requests")?;
        Some(Shim {
            settings: SETTINGS
                .iter()
                .map(|&n| (n, get(params, n).unwrap_or_default()))
                .collect(),
            counters: COUNTERS
                .iter()
                .map(|c| {
                    let v = get(counters, c.name).and_then(|v| v.parse().ok());
                    (c.name, v.unwrap_or(0))
                })
                .collect(),
            server: get(counters, "server").and_then(|v| v.parse().ok()),
        })
    }

    /// Read from where the loaded module has them.
    pub fn read_loaded() -> Option<Shim> {
        Shim::read(Path::new(PARAMETERS), Path::new(COUNTERS_DIR))
    }

    fn setting(&self, n: &str) -> &str {
        self.settings
            .iter()
            .find(|(k, _)| *k == n)
            .map_or("", |(_, v)| v)
    }

    /// Two lines for kdstat's status.
    pub fn text(&self) -> String {
        let key = self.setting("key");
        let key = key
            .parse::<i64>()
            .map_or(key.to_string(), |k| format!("{k:#x}"));
        let counters: Vec<String> = self
            .counters
            .iter()
            .zip(COUNTERS.iter())
            .map(|((_, v), c)| format!("{} {v}", c.label))
            .collect();
        let server = match self.server {
            Some(0) => "no kerneld registered".to_string(),
            Some(pid) => format!("kerneld pid {pid} registered"),
            None => "registered kerneld unknown (root may read it)".to_string(),
        };
        format!(
            "Requests arrive through the kernel module kerneld_shim (nothing executed): key {key}, read_wait_ms {}, reply_wait_ms {}, fallback {}; {server}\n  {}\n",
            self.setting("read_wait_ms"),
            self.setting("reply_wait_ms"),
            self.setting("fallback"),
            counters.join(", ")
        )
    }

    /// As JSON, for `kdstat --json` (`"kernel_shim"`).
    pub fn json(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        for (k, v) in &self.settings {
            m.insert((*k).into(), v.clone().into());
        }
        for (k, v) in &self.counters {
            m.insert((*k).into(), (*v).into());
        }
        if let Some(pid) = self.server {
            m.insert("server".into(), pid.into());
        }
        serde_json::Value::Object(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_settings_and_counters() {
        let dir = std::env::temp_dir().join(format!("kdstat-shim-{}", std::process::id()));
        let (params, counters) = (dir.join("parameters"), dir.join("counters"));
        std::fs::create_dir_all(&params).unwrap();
        std::fs::create_dir_all(&counters).unwrap();
        assert!(Shim::read(&params, &counters).is_none(), "not loaded");
        for (d, n, v) in [
            (&params, "key", "1801810542"),
            (&params, "read_wait_ms", "1000"),
            (&params, "reply_wait_ms", "60000"),
            (&params, "fallback", "Y"),
            (&counters, "requests", "7"),
            (&counters, "fallback_unread", "2"),
        ] {
            std::fs::write(d.join(n), format!("{v}\n")).unwrap();
        }
        let s = Shim::read(&params, &counters).unwrap();
        let t = s.text();
        assert!(
            t.contains("key 0x6b65726e, read_wait_ms 1000, reply_wait_ms 60000, fallback Y"),
            "{t}"
        );
        assert!(t.contains("requests 7, answered 0"), "{t}");
        assert!(t.contains("unread 2"), "{t}");
        assert!(t.contains("fallback Y; registered kerneld unknown"), "{t}");
        assert!(t.contains("kerneld died 0"), "{t}");
        let j = s.json();
        assert_eq!(j["requests"], 7);
        assert_eq!(j["fallback"], "Y");
        assert!(j.get("server").is_none(), "unreadable: left out");
        std::fs::write(counters.join("server"), "4321\n").unwrap();
        std::fs::write(counters.join("fallback_died"), "3\n").unwrap();
        let s = Shim::read(&params, &counters).unwrap();
        let t = s.text();
        assert!(t.contains("fallback Y; kerneld pid 4321 registered"), "{t}");
        assert!(t.contains("kerneld died 3"), "{t}");
        assert_eq!(s.json()["server"], 4321);
        assert_eq!(s.json()["fallback_died"], 3);
        std::fs::write(counters.join("server"), "0\n").unwrap();
        let t = Shim::read(&params, &counters).unwrap().text();
        assert!(t.contains("fallback Y; no kerneld registered"), "{t}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
