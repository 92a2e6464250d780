//! With the `bpf-lsm` feature: compile the BPF LSM program
//! (bpf/modload.bpf.c) with clang into OUT_DIR, for the daemon to embed.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var_os("CARGO_FEATURE_BPF_LSM").is_none() {
        return;
    }
    let src = "bpf/modload.bpf.c";
    println!("cargo:rerun-if-changed={src}");
    println!("cargo:rerun-if-env-changed=CLANG");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"))
        .join("modload.bpf.o");
    let clang = std::env::var("CLANG").unwrap_or_else(|_| "clang".into());
    // linux/types.h wants asm/types.h, which Debian keeps under the
    // multiarch directory: not on clang's BPF target's search path.
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let multiarch = match arch.as_str() {
        "x86_64" => "x86_64-linux-gnu",
        "aarch64" => "aarch64-linux-gnu",
        other => other,
    };
    let status = Command::new(&clang)
        .args(["-target", "bpf", "-g", "-O2", "-Wall", "-Werror"])
        .arg(format!("-I/usr/include/{multiarch}"))
        .args(["-c", src, "-o"])
        .arg(&out)
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => panic!("{clang} failed to compile {src} ({s}); see its messages above"),
        Err(e) => panic!(
            "cannot run {clang} ({e}): the bpf-lsm feature needs clang and the kernel headers \
             (scripts/install-deps.sh installs them), or set CLANG"
        ),
    }
}
