//! The in-kernel sender (kernel/module/ of the kerneld sources): when the
//! `kerneld_shim` module is loaded, the kernel posts its requests to
//! kerneld's queue itself, and its settings and counters are module
//! parameters in `/sys/module/kerneld_shim/parameters/`.

use std::path::Path;

/// Where the module's parameters are.
pub const PARAMETERS: &str = "/sys/module/kerneld_shim/parameters";

/// Settings, in the order shown.
const SETTINGS: [&str; 4] = ["key", "read_wait_ms", "reply_wait_ms", "fallback"];
/// Counters, in the order shown, with their labels.
const COUNTERS: [(&str, &str); 13] = [
    ("requests", "requests"),
    ("answered", "answered"),
    ("failed", "failed"),
    ("nowait", "nowait"),
    ("fallback_no_queue", "fell back: no queue"),
    ("fallback_unread", "unread"),
    ("fallback_full", "queue full"),
    ("fallback_gone", "queue removed"),
    ("untrusted_queue", "untrusted queues"),
    ("timed_out", "timed out"),
    ("interrupted", "interrupted"),
    ("late_answers", "late answers"),
    ("fallback_suspend", "suspend starting"),
];

/// The module's parameters, name and value, if it is loaded.
pub struct Shim {
    pub settings: Vec<(&'static str, String)>,
    pub counters: Vec<(&'static str, u64)>,
}

impl Shim {
    /// Read the parameters from `dir` (normally [`PARAMETERS`]); `None`
    /// when the module is not loaded.
    pub fn read(dir: &Path) -> Option<Shim> {
        let get = |n: &str| {
            std::fs::read_to_string(dir.join(n))
                .ok()
                .map(|s| s.trim().to_string())
        };
        get("requests")?;
        Some(Shim {
            settings: SETTINGS
                .iter()
                .map(|&n| (n, get(n).unwrap_or_default()))
                .collect(),
            counters: COUNTERS
                .iter()
                .map(|&(n, _)| (n, get(n).and_then(|v| v.parse().ok()).unwrap_or(0)))
                .collect(),
        })
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
            .map(|((_, v), (_, label))| format!("{label} {v}"))
            .collect();
        format!(
            "Requests arrive through the kernel module kerneld_shim (nothing executed): key {key}, read_wait_ms {}, reply_wait_ms {}, fallback {}\n  {}\n",
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
        serde_json::Value::Object(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_parameters() {
        let dir = std::env::temp_dir().join(format!("kdstat-shim-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert!(Shim::read(&dir).is_none(), "not loaded");
        for (n, v) in [
            ("key", "1801810542"),
            ("read_wait_ms", "1000"),
            ("reply_wait_ms", "60000"),
            ("fallback", "Y"),
            ("requests", "7"),
            ("fallback_unread", "2"),
        ] {
            std::fs::write(dir.join(n), format!("{v}\n")).unwrap();
        }
        let s = Shim::read(&dir).unwrap();
        let t = s.text();
        assert!(
            t.contains("key 0x6b65726e, read_wait_ms 1000, reply_wait_ms 60000, fallback Y"),
            "{t}"
        );
        assert!(t.contains("requests 7, answered 0"), "{t}");
        assert!(t.contains("unread 2"), "{t}");
        let j = s.json();
        assert_eq!(j["requests"], 7);
        assert_eq!(j["fallback"], "Y");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
