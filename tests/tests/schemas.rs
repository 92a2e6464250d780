//! The published JSON Schemas (schema/*.json, generated from the document
//! types by xtask) against what the real programs print: the status
//! (`kdstat --json`) and `kdstat why --json` of the real kerneld after
//! requests, denials and with modules in its record.
//!
//! Needs the binaries: `cargo build --workspace --bins` first.  Loads of
//! real modules are the VM tests' (tests/vm); here the modules loaded are
//! those of a record as kerneld writes it after a load.

use jsonschema::Validator;
use kerneld_tests::daemon::{Kerneld, LIMIT};
use kerneld_tests::fake::{bin, run};
use kmod_ipc::MsgType;
use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;

/// The validator of the committed schema/NAME.
fn validator(name: &str) -> Validator {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../schema")
        .join(name);
    let text = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let schema: Value = serde_json::from_slice(&text)
        .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
    jsonschema::validator_for(&schema)
        .unwrap_or_else(|e| panic!("{} is not a valid JSON Schema: {e}", path.display()))
}

/// Why `doc` does not match the schema: one line per error, with where.
fn errors(v: &Validator, doc: &Value) -> Vec<String> {
    v.iter_errors(doc)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

fn assert_valid(v: &Validator, doc: &Value) {
    let errs = errors(v, doc);
    assert!(errs.is_empty(), "{errs:#?}\nin {doc:#}");
}

fn kdstat_json(k: &Kerneld, args: &[&str]) -> Value {
    let out = run(
        Command::new(bin("kdstat"))
            .args(args)
            .arg("--key")
            .arg(k.key_arg()),
        LIMIT,
    );
    assert_eq!(out.code(), 0, "{out:?}");
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"))
}

/// A record as kerneld writes it after loading bridge for `ip` (with the
/// dependency it pulled in), and an entry of an older kerneld that kept
/// neither requester nor rule.
fn record() -> String {
    json!({
        "bridge": {
            "requested_as": "rtnl-link-bridge", "dependencies": ["stp"],
            "loaded_at": 1_700_000_000u64, "unused_sweeps": 0,
            "requester": {"pid": 802, "uid": 0, "gid": 0, "comm": "ip",
                          "cgroup": "/init.scope", "namespaces": ["net:[4026531840]"],
                          "parent_comm": "sh"},
            "allowed_by": "default",
        },
        "stp": {
            "requested_as": "rtnl-link-bridge", "dependencies": [],
            "loaded_at": 1_700_000_000u64, "unused_sweeps": 1,
            "requester": {"pid": 802, "uid": 0, "gid": 0, "comm": "ip"},
            "allowed_by": "default", "pulled_in_by": "bridge",
        },
        "dummy": {
            "requested_as": "rtnl-link-dummy", "dependencies": [],
            "loaded_at": 1_700_000_000u64, "unused_sweeps": 0,
        },
    })
    .to_string()
}

#[test]
fn the_status_after_requests_and_denials_matches_its_schema() {
    let status = validator("status.json");
    // delay=600: the first sweep, which would forget the recorded modules
    // (not in this kernel), is far off.
    let k = Kerneld::builder()
        .config("deny request kdtest-denied-*\n")
        .record(&record())
        .arg("delay=600")
        .start();
    // Freshly started.
    assert_valid(&status, &kdstat_json(&k, &["--json"]));
    let r = k.request(MsgType::RequestModule, "kdtest-nosuch");
    assert_ne!(r.status, 0, "{r:?}");
    let r = k.request(MsgType::RequestModule, "kdtest-denied-1");
    assert!(r.text_lossy().contains("denied by policy"), "{r:?}");
    let r = k.request(MsgType::DelayedRelease, "dummy");
    assert_eq!(r.status, 0, "{r:?}");

    let doc = kdstat_json(&k, &["--json"]);
    assert_valid(&status, &doc);
    // What was validated has what this test made happen: the arrays are
    // not empty, so their items' schemas were applied.
    assert_eq!(doc["counters"]["denied"], 1, "{doc}");
    assert_eq!(doc["loaded_modules"].as_array().unwrap().len(), 3, "{doc}");
    assert!(
        doc["recent_requests"].as_array().unwrap().len() >= 2,
        "{doc}"
    );
    assert_eq!(doc["policy"]["rules"][0]["hits"], 1, "{doc}");
    assert!(doc["next_sweep_seconds"].is_number(), "{doc}");

    // The daemon's own answer (kdsend status json), without kdstat.
    let r = k.control("json");
    let own: Value = serde_json::from_slice(&r.text).unwrap();
    assert_valid(&status, &own);
}

#[test]
fn the_status_schema_refuses_what_kerneld_never_sends() {
    let status = validator("status.json");
    let k = Kerneld::builder().arg("keep").start();
    let doc = kdstat_json(&k, &["--json"]);
    assert_valid(&status, &doc);
    assert!(doc["next_sweep_seconds"].is_null(), "{doc}");

    let mut missing = doc.clone();
    missing.as_object_mut().unwrap().remove("counters");
    assert_ne!(errors(&status, &missing), Vec::<String>::new());
    let mut bad_mode = doc.clone();
    bad_mode["policy"]["mode"] = json!("permissive");
    assert_ne!(errors(&status, &bad_mode), Vec::<String>::new());
    let mut bad_queue = doc;
    bad_queue["queue"] = json!({"id": "3"});
    assert_ne!(errors(&status, &bad_queue), Vec::<String>::new());
}

#[test]
fn why_answers_match_their_schema() {
    let why = validator("why.json");
    let k = Kerneld::builder().record(&record()).arg("keep").start();
    // Asked for, pulled in, recorded by an older kerneld, an alias, and
    // a module kerneld did not load.
    for name in [
        "bridge",
        "stp",
        "dummy",
        "rtnl-link-bridge",
        "kdtest_nosuch",
    ] {
        let doc = kdstat_json(&k, &["why", name, "--json"]);
        assert_valid(&why, &doc);
        let loaded = doc["modules"][0]["loaded_by_kerneld"].as_bool().unwrap();
        assert_eq!(loaded, name != "kdtest_nosuch", "{doc}");
    }
    // A module kerneld loaded always says what it was requested as.
    let mut doc = kdstat_json(&k, &["why", "bridge", "--json"]);
    doc["modules"][0]
        .as_object_mut()
        .unwrap()
        .remove("requested_as");
    assert_ne!(errors(&why, &doc), Vec::<String>::new());
}

/// `kerneld --check-config --json` and `--print-config --json` of a file
/// with an include, an error and a rule that matches no module of a tree.
#[test]
fn check_and_print_config_documents_match_their_schemas() {
    let dir = kerneld_tests::fake::TempDir::new();
    std::fs::create_dir_all(dir.join("modules")).unwrap();
    std::fs::write(
        dir.join("modules/modules.builtin"),
        "kernel/fs/ext4/ext4.ko\n",
    )
    .unwrap();
    std::fs::write(dir.join("extra.conf"), "deny module sctpp\nbogus line\n").unwrap();
    let conf = dir.join("kerneld.conf");
    std::fs::write(
        &conf,
        format!("delay = 30\ninclude {}\n", dir.join("extra.conf").display()),
    )
    .unwrap();
    let check = validator("check-config.json");
    let print = validator("print-config.json");
    for (args, v) in [
        (&["--check-config", "--json"][..], &check),
        (&["--print-config", "--json"][..], &print),
    ] {
        let out = run(
            Command::new(bin("kerneld"))
                .args(args)
                .arg("--config")
                .arg(&conf)
                .env_remove("KERNELD_CONFIG"),
            LIMIT,
        );
        assert_eq!(out.code(), 3, "the bogus line is an error: {out:?}");
        let doc: Value =
            serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"));
        assert_valid(v, &doc);
        assert_eq!(doc["errors"][0]["line"], 2, "{doc:#}");
    }
    // A valid file, checked against a module tree: a warning, still ok.
    std::fs::write(dir.join("extra.conf"), "deny module sctpp\n").unwrap();
    let out = run(
        Command::new(bin("kerneld"))
            .args(["--check-config", "--json", "--module-dir"])
            .arg(dir.join("modules"))
            .arg("--config")
            .arg(&conf)
            .env_remove("KERNELD_CONFIG"),
        LIMIT,
    );
    assert_eq!(out.code(), 0, "{out:?}");
    let doc: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_valid(&check, &doc);
    assert_eq!(
        (doc["ok"].clone(), doc["rules"].clone()),
        (json!(true), json!(1))
    );
    assert!(
        doc["warnings"][0]["problem"]
            .as_str()
            .is_some_and(|p| p.contains("sctpp")),
        "{doc:#}"
    );
    // The schemas reject what the documents never are.
    assert!(!check.is_valid(&json!({"schema": 1, "ok": "yes"})));
}
