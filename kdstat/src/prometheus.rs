//! The status as Prometheus text exposition (format 0.0.4): what
//! `kdstat --prometheus` prints and what kerneld writes for
//! node_exporter's textfile collector (`metrics-dir`).  Both render the
//! same JSON status document (`kdstat --json`), so the figures have one
//! source.
//!
//! prometheus-client writes the format (names with `_total` and units,
//! escaping of help and label values); the status is handed to it as
//! constant metrics of a collector, since the figures are already counted
//! by kerneld.

use kmod_ipc::escape::escape;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Whether the kernel's module helper (/proc/sys/kernel/modprobe, or the
/// file `KERNELD_PROC_MODPROBE` names, a test hook shared with kerneld and
/// the shim) is kerneld's shim, kerneld-modprobe; None when unreadable.
pub fn helper_is_shim() -> Option<bool> {
    let path = std::env::var_os("KERNELD_PROC_MODPROBE")
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from("/proc/sys/kernel/modprobe"), PathBuf::from);
    let value = std::fs::read_to_string(path).ok()?;
    let helper = PathBuf::from(value.trim_end_matches('\n'));
    Some(helper.file_name().is_some_and(|n| n == "kerneld-modprobe"))
}

/// The exposition of `status` (the JSON status document, with
/// `kernel_shim` when the module is loaded).  `up`: whether kerneld
/// serves (false in the file kerneld leaves when it stops); `helper`: see
/// [`helper_is_shim`] (None leaves the series out).
pub fn render(status: &Value, up: bool, helper: Option<bool>) -> Result<String, String> {
    if status.get("schema").and_then(Value::as_u64) != Some(1) {
        return Err(format!(
            "the status document has schema {}, not 1: this kdstat does not know its fields; \
             use a kdstat of the same version as kerneld",
            status.get("schema").unwrap_or(&Value::Null)
        ));
    }
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Status {
        doc: status.clone(),
        up,
        helper,
    }));
    let mut out = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)
        .map_err(|_| "could not write the Prometheus text".to_string())?;
    Ok(out)
}

/// The status document as a collector of constant metrics.
#[derive(Debug)]
struct Status {
    doc: Value,
    up: bool,
    helper: Option<bool>,
}

fn uint(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

/// A label value from the document, its control characters shown
/// C-style as kdstat shows them ([`escape`]): the format escapes only
/// backslash, quote and line feed, and a label must not drive the
/// terminal of whoever reads the output.
fn label(v: &Value) -> String {
    escape(v.as_str().unwrap_or("")).into_owned()
}

/// One series without labels.
fn one(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    metric: impl EncodeMetric,
) -> Result<(), std::fmt::Error> {
    let e = enc.encode_descriptor(name, help, unit, metric.metric_type())?;
    metric.encode(e)
}

/// A counter family: one series per label set.
fn counters<L: EncodeLabelSet>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: &[(L, u64)],
) -> Result<(), std::fmt::Error> {
    let mut e = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, v) in series {
        ConstCounter::new(*v).encode(e.encode_family(labels)?)?;
    }
    Ok(())
}

impl Collector for Status {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let d = &self.doc;
        let c = &d["counters"];
        let e = &mut enc;
        one(
            e,
            "kerneld_up",
            "Whether kerneld serves its queue (0 in the file it leaves when it stops)",
            None,
            ConstGauge::new(i64::from(self.up)),
        )?;
        let version = label(&d["version"]);
        let mut info = e.encode_descriptor(
            "kerneld_build_info",
            "kerneld's version, as a label",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(1i64).encode(info.encode_family(&[("version", version)])?)?;
        one(
            e,
            "kerneld_start_time",
            "When kerneld started, unix time",
            Some(&Unit::Seconds),
            ConstGauge::new(uint(&d["started_at"]) as f64),
        )?;
        let by_type: Vec<([(&str, String); 1], u64)> = c["requests"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| ([("type", escape(k).into_owned())], uint(v)))
                    .collect()
            })
            .unwrap_or_default();
        counters(
            e,
            "kerneld_requests",
            "Messages received, by request type",
            &by_type,
        )?;
        counters(
            e,
            "kerneld_answers",
            "Actions finished, by result: one per action, however many identical \
             requests were merged into it",
            &[
                ([("result", "succeeded")], uint(&c["succeeded"])),
                ([("result", "failed")], uint(&c["failed"])),
            ],
        )?;
        for (name, field, help) in [
            (
                "kerneld_requests_denied",
                "denied",
                "Module requests the policy denied (among the failed answers)",
            ),
            (
                "kerneld_requests_cached",
                "cached",
                "Module requests answered from the negative cache (among the answers)",
            ),
            (
                "kerneld_requests_merged",
                "merged",
                "Requests merged into an identical action in progress",
            ),
            (
                "kerneld_messages_malformed",
                "bad_messages",
                "Messages refused as malformed",
            ),
            (
                "kerneld_waiters_refused",
                "waiters_refused",
                "Requests refused because too many identical ones waited already",
            ),
            (
                "kerneld_modules_unloaded_idle",
                "expired",
                "Modules the idle sweep unloaded",
            ),
            (
                "kerneld_unread_replies_removed",
                "replies_purged",
                "Unread replies removed from the queue (their clients gave up)",
            ),
            (
                "kerneld_replies_dropped",
                "replies_dropped",
                "Replies dropped: their client stopped waiting before the queue had room",
            ),
            (
                "kerneld_journal_lines_dropped",
                "journal_dropped",
                "Log lines the journal did not take",
            ),
        ] {
            one(e, name, help, None, ConstCounter::new(uint(&c[field])))?;
        }
        one(
            e,
            "kerneld_negative_cache_entries",
            "Failed or denied names answered from memory for now",
            None,
            ConstGauge::new(uint(&c["negative_cache_entries"]) as i64),
        )?;
        let loaded = d["loaded_modules"].as_array().map_or(0, Vec::len);
        one(
            e,
            "kerneld_modules_loaded",
            "Modules kerneld loaded that are in its record (unloaded when idle)",
            None,
            ConstGauge::new(loaded as i64),
        )?;
        let jobs = d["jobs"].as_array().map_or(0, Vec::len);
        one(
            e,
            "kerneld_jobs",
            "Actions in progress",
            None,
            ConstGauge::new(jobs as i64),
        )?;
        if let Some(q) = d["queue"].as_object().filter(|q| q.contains_key("id")) {
            one(
                e,
                "kerneld_queue_messages",
                "Messages waiting in kerneld's queue",
                None,
                ConstGauge::new(uint(&q["messages"]) as i64),
            )?;
            one(
                e,
                "kerneld_queue",
                "Bytes waiting in kerneld's queue",
                Some(&Unit::Bytes),
                ConstGauge::new(uint(&q["bytes"]) as i64),
            )?;
            one(
                e,
                "kerneld_queue_capacity",
                "Capacity of kerneld's queue",
                Some(&Unit::Bytes),
                ConstGauge::new(uint(&q["max_bytes"]) as i64),
            )?;
        }
        self.policy(e)?;
        if let Some(m) = d.get("module_loads").filter(|m| m.is_object()) {
            module_loads(e, m)?;
        }
        if let Some(shim) = self.helper {
            one(
                e,
                "kerneld_module_helper_shim",
                "Whether the kernel's module helper (/proc/sys/kernel/modprobe) is \
                 kerneld-modprobe",
                None,
                ConstGauge::new(i64::from(shim)),
            )?;
        }
        if let Some(k) = d.get("kernel_shim").and_then(Value::as_object) {
            for crate::shim::Counter {
                name: field, help, ..
            } in crate::shim::COUNTERS
            {
                one(
                    e,
                    &format!("kerneld_shim_{field}"),
                    &format!("In-kernel sender (kerneld_shim): {help}"),
                    None,
                    ConstCounter::new(k.get(field).map_or(0, uint)),
                )?;
            }
            // Left out when unreadable (not root): unknown is not "no".
            if let Some(server) = k.get("server").and_then(Value::as_u64) {
                let this = d.get("pid").and_then(Value::as_u64);
                one(
                    e,
                    "kerneld_shim_server_registered",
                    "Whether this kerneld is registered with the in-kernel sender, which then \
                     does not wait for a request it holds after it died",
                    None,
                    ConstGauge::new(i64::from(this == Some(server))),
                )?;
            }
        }
        Ok(())
    }
}

impl Status {
    fn policy(&self, e: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let p = &self.doc["policy"];
        let rules = p["rules"].as_array().map(Vec::as_slice).unwrap_or_default();
        one(
            e,
            "kerneld_policy_rules",
            "Policy rules in force",
            None,
            ConstGauge::new(rules.len() as i64),
        )?;
        one(
            e,
            "kerneld_policy_enforcing",
            "1: the policy is enforced; 0: audit mode (would-denies are only logged)",
            None,
            ConstGauge::new(i64::from(p["mode"] != "audit")),
        )?;
        // The same rule twice from the same place (added live twice) is
        // one series: a label set may appear once.
        let mut hits: BTreeMap<(String, String), u64> = BTreeMap::new();
        for r in rules {
            let key = (label(&r["rule"]), label(&r["origin"]));
            *hits.entry(key).or_default() += uint(&r["hits"]);
        }
        let series: Vec<([(&str, String); 2], u64)> = hits
            .into_iter()
            .map(|((rule, origin), n)| ([("rule", rule), ("origin", origin)], n))
            .collect();
        counters(
            e,
            "kerneld_policy_rule_hits",
            "Decisions made by each policy rule (the rule's text and where it was written)",
            &series,
        )
    }
}

/// A gauge family: one series per label set.
fn gauges<L: EncodeLabelSet>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: &[(L, i64)],
) -> Result<(), std::fmt::Error> {
    let mut e = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, v) in series {
        ConstGauge::new(*v).encode(e.encode_family(labels)?)?;
    }
    Ok(())
}

/// The series of `module_loads`: the BPF LSM program over every load.
fn module_loads(e: &mut DescriptorEncoder, m: &Value) -> Result<(), std::fmt::Error> {
    let c = &m["counters"];
    let mode: Vec<([(&str, &str); 1], i64)> = ["off", "observe", "enforce"]
        .into_iter()
        .map(|x| ([("mode", x)], i64::from(m["mode"] == x)))
        .collect();
    gauges(
        e,
        "kerneld_module_loads_mode",
        "The module-loads setting: 1 for the mode in force (off, observe, enforce)",
        &mode,
    )?;
    one(
        e,
        "kerneld_module_loads_attached",
        "Whether the BPF LSM program over module loads is attached",
        None,
        ConstGauge::new(i64::from(m["attached"] == true)),
    )?;
    counters(
        e,
        "kerneld_module_loads",
        "Module loads the program saw, by system call (finit_module: a file; init_module: an \
         image from memory)",
        &[
            ([("syscall", "finit_module")], uint(&c["finit_module"])),
            ([("syscall", "init_module")], uint(&c["init_module"])),
        ],
    )?;
    counters(
        e,
        "kerneld_module_load_verdicts",
        "Module loads by the program's verdict: allowed, denied or unknown content \
         (finit_module), or fallback (an init_module after a refused finit_module)",
        &[
            ([("verdict", "allowed")], uint(&c["allowed"])),
            ([("verdict", "denied")], uint(&c["denied"])),
            ([("verdict", "unknown")], uint(&c["unknown"])),
            ([("verdict", "fallback")], uint(&c["fallback"])),
        ],
    )?;
    for (name, field, help) in [
        (
            "kerneld_module_loads_refused",
            "refused",
            "Module loads the kernel refused on the program's verdict (enforce mode)",
        ),
        (
            "kerneld_module_loads_would_be_refused",
            "would_be_refused",
            "Module loads enforce mode would refuse (observe mode)",
        ),
        (
            "kerneld_module_requests_seen",
            "requests",
            "Module requests of the kernel the program saw (not loads)",
        ),
        (
            "kerneld_module_load_events",
            "reported",
            "Events read from the module load program",
        ),
        (
            "kerneld_module_load_events_unreadable",
            "unreadable",
            "Events of the module load program kerneld could not read",
        ),
    ] {
        one(e, name, help, None, ConstCounter::new(uint(&c[field])))?;
    }
    if let Some(v) = m["verdicts"].as_object() {
        one(
            e,
            "kerneld_module_load_verdict_files",
            "Module files judged for the verdicts in force",
            None,
            ConstGauge::new(v.get("files").map_or(0, uint) as i64),
        )?;
        one(
            e,
            "kerneld_module_load_verdicts_denied",
            "Module contents with a deny verdict",
            None,
            ConstGauge::new(v.get("denied").map_or(0, uint) as i64),
        )?;
        one(
            e,
            "kerneld_module_load_verdicts_build",
            "How long hashing and judging the module tree took",
            Some(&Unit::Seconds),
            ConstGauge::new(v.get("duration_ms").and_then(Value::as_f64).unwrap_or(0.0) / 1000.0),
        )?;
    }
    if let Some(s) = m["host"]["compressed_loads"].as_str() {
        one(
            e,
            "kerneld_module_loads_compressed_by_init_module",
            "1: this host's libkmod loads compressed modules through init_module, which enforce \
             mode judges wholesale (module-loads-init-module), not by content",
            None,
            ConstGauge::new(i64::from(s == "init_module")),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc() -> Value {
        json!({
            "schema": 1, "version": "0.1.0", "started_at": 1700000000, "pid": 4242,
            "jobs": [], "loaded_modules": [{"name": "dummy"}],
            "counters": {"requests": {"request_module": 5, "status": 2},
                "succeeded": 3, "failed": 2, "merged": 1, "expired": 0, "cached": 1,
                "denied": 1, "bad_messages": 1, "replies_dropped": 0, "replies_purged": 0,
                "journal_dropped": 0, "waiters_refused": 0, "negative_cache_entries": 1},
            "queue": {"id": 3, "messages": 0, "bytes": 0, "max_bytes": 65536},
            "policy": {"mode": "enforce", "rules": [
                {"rule": "deny request \"x\\y\"\x1bz", "origin": "live", "hits": 2},
                {"rule": "deny request \"x\\y\"\x1bz", "origin": "live", "hits": 1}]},
            "kernel_shim": {"requests": 7, "fallback_unread": 2, "untrusted_queue": 3,
                "server": 4242},
            "module_loads": {"mode": "enforce", "attached": true,
                "host": {"compressed_loads": "init_module"},
                "verdicts": {"files": 17, "denied": 1, "duration_ms": 525.0},
                "counters": {"finit_module": 3, "init_module": 2, "requests": 4,
                    "allowed": 1, "denied": 2, "unknown": 0, "fallback": 1,
                    "refused": 3, "would_be_refused": 0, "reported": 9, "unreadable": 0}}
        })
    }

    #[test]
    fn the_figures_become_series_named_as_prometheus_wants() {
        let t = render(&doc(), true, Some(true)).unwrap();
        for want in [
            "kerneld_up 1\n",
            "kerneld_build_info{version=\"0.1.0\"} 1\n",
            "kerneld_start_time_seconds 1700000000",
            "kerneld_requests_total{type=\"request_module\"} 5\n",
            "kerneld_answers_total{result=\"failed\"} 2\n",
            "kerneld_requests_denied_total 1\n",
            "kerneld_messages_malformed_total 1\n",
            "kerneld_modules_loaded 1\n",
            "kerneld_queue_capacity_bytes 65536\n",
            "kerneld_module_helper_shim 1\n",
            "kerneld_shim_fallback_unread_total 2\n",
            "kerneld_shim_late_answers_total 0\n",
            "kerneld_shim_fallback_died_total 0\n",
            "kerneld_shim_untrusted_queue_total 3\n",
            "kerneld_shim_server_registered 1\n",
            "# TYPE kerneld_requests_total counter\n",
            "kerneld_module_loads_mode{mode=\"enforce\"} 1\n",
            "kerneld_module_loads_mode{mode=\"observe\"} 0\n",
            "kerneld_module_loads_attached 1\n",
            "kerneld_module_loads_total{syscall=\"init_module\"} 2\n",
            "kerneld_module_load_verdicts_total{verdict=\"denied\"} 2\n",
            "kerneld_module_load_verdicts_total{verdict=\"fallback\"} 1\n",
            "kerneld_module_loads_refused_total 3\n",
            "kerneld_module_requests_seen_total 4\n",
            "kerneld_module_load_verdict_files 17\n",
            "kerneld_module_load_verdicts_build_seconds 0.525\n",
            "kerneld_module_loads_compressed_by_init_module 1\n",
        ] {
            assert!(t.contains(want), "{want:?} missing in:\n{t}");
        }
    }

    #[test]
    fn rule_texts_are_escaped_and_listed_once() {
        let t = render(&doc(), false, None).unwrap();
        let want = "kerneld_policy_rule_hits_total{rule=\"deny request \\\"x\\\\y\\\"\\\\x1bz\",origin=\"live\"} 3\n";
        assert!(t.contains(want), "{t}");
        assert_eq!(t.matches("kerneld_policy_rule_hits_total{").count(), 1);
        assert!(t.contains("kerneld_up 0\n"), "{t}");
        assert!(!t.contains("kerneld_module_helper_shim"), "{t}");
    }

    #[test]
    fn another_schema_is_refused() {
        let e = render(&json!({"schema": 2}), true, None).unwrap_err();
        assert!(e.contains("schema 2"), "{e}");
        assert!(render(&json!([]), true, None).is_err());
    }
}
