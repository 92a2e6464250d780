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
        "module-loads = enforce\nmodule-loads-unknown = refuse\nmodule-loads-init-module = allow\n",
    )
    .unwrap();
    let out = check_config(&good);
    assert_eq!(out.code(), 0, "{out:?}");

    let bad = dir.join("bad.conf");
    std::fs::write(
        &bad,
        "module-loads = sometimes\nmodule-loads-unknown = maybe\n",
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
