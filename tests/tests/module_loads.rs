//! module-loads (the BPF LSM program over every module load): the
//! settings as --check-config reads them, and a kerneld asked for it that
//! serves requests whether or not the program can be attached on this
//! host.  Loads themselves, refused and reported, are the VM tests'
//! (tests/vm, scenario 19: real kernels with the BPF LSM).
//!
//! Needs the binaries: `cargo build --workspace --bins` first.

use kerneld_tests::daemon::{check_config, Kerneld};
use kerneld_tests::fake::TempDir;

#[test]
fn check_config_reads_the_module_load_settings_and_names_a_bad_value() {
    let dir = TempDir::new();
    let good = dir.join("good.conf");
    std::fs::write(
        &good,
        "module-loads = enforce\nmodule-loads-unknown = refuse\nmodule-loads-init-module = allow\n\
         module-loads-pin = yes\n",
    )
    .unwrap();
    let out = check_config(&good);
    assert_eq!(out.code(), 0, "{out:?}");

    let bad = dir.join("bad.conf");
    std::fs::write(
        &bad,
        "module-loads = sometimes\nmodule-loads-unknown = maybe\nmodule-loads-pin = always\n",
    )
    .unwrap();
    let out = check_config(&bad);
    assert_eq!(out.code(), 3, "{out:?}");
    assert!(
        out.stderr
            .contains(":1: module-loads is off, observe or enforce, not \"sometimes\""),
        "{out:?}"
    );
    assert!(
        out.stderr
            .contains(":2: module-loads-unknown is allow or refuse, not \"maybe\""),
        "{out:?}"
    );
    assert!(
        out.stderr
            .contains(":3: module-loads-pin is yes or no, not \"always\""),
        "{out:?}"
    );
}

#[test]
fn kerneld_asked_for_the_program_serves_requests_with_or_without_it() {
    let k = Kerneld::builder()
        .config("module-loads = observe\n")
        .start();
    let log = k.log();
    // Attached (a host with the BPF LSM, as root), or not, and why: never
    // silence, and never a kerneld that does not serve.
    assert!(
        log.contains("module loads: the BPF LSM program is attached: observe")
            || log.contains("module-loads = observe: not started: "),
        "{log}"
    );
    assert!(log.contains("started, version"), "{log}");
    // It answers.
    assert_eq!(k.status_json()["schema"], 1, "{log}");
}

#[test]
fn the_status_says_the_mode_what_this_host_can_judge_and_counts_loads() {
    let tree = TempDir::new();
    std::fs::create_dir_all(tree.join("kernel")).unwrap();
    for f in ["a.ko.xz", "b.ko.zst", "c.ko"] {
        std::fs::write(tree.join("kernel").join(f), f).unwrap();
    }
    let k = Kerneld::builder()
        .module_dir(&tree.join(""))
        .config("module-loads = enforce\nmodule-loads-init-module = refuse\n")
        .start();
    let log = k.log();
    let j = k.status_json();
    let m = &j["module_loads"];
    assert_eq!(m["mode"], "enforce", "{j}");
    assert_eq!(m["unknown_files"], "allow", "{j}");
    assert_eq!(m["init_module_loads"], "refuse", "{j}");
    assert_eq!(m["on_stop"], "detach", "{j}");
    assert_eq!(m["pinned_in"], serde_json::Value::Null, "{j}");
    // Attached, or not and why: the status and the log agree.
    let attached = log.contains("module loads: the BPF LSM program is attached: enforce");
    assert_eq!(m["attached"], attached, "{j}\n{log}");
    assert_eq!(m["error"].is_null(), attached, "{j}");
    // The host's facts, worked out at start: two compressed formats, of
    // which a kernel decompresses one at most, so libkmod loads one of
    // them through init_module.
    let h = &m["host"];
    assert_eq!(h["module_files"], 3, "{j}");
    assert_eq!(h["compressed_files"]["xz"], 1, "{j}");
    assert_eq!(h["compressed_files"]["zstd"], 1, "{j}");
    assert_eq!(h["compressed_loads"], "init_module", "{j}");
    let summary = h["summary"].as_str().unwrap();
    assert!(
        summary.starts_with("2 of the 3 module files are compressed"),
        "{j}"
    );
    assert!(
        summary.contains("judges them wholesale by module-loads-init-module"),
        "{j}"
    );
    assert_eq!(m["counters"]["refused"], 0, "{j}");
    // The text says the same.
    let text = k.control("status").text_lossy().to_string();
    assert!(
        text.contains(
            "\nmodule loads (BPF LSM): enforce (unknown files: allow, init_module: refuse), "
        ),
        "{text}"
    );
    assert!(
        text.contains(&format!("  can judge: {summary}\n")),
        "{text}"
    );
    assert!(text.contains("  loads seen: 0 finit_module, "), "{text}");
}
