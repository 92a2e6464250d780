#!/usr/bin/env bash
# Build the release programs into target/release, as they are installed:
# kerneld, kdstat and kdsend as usual, and kerneld-modprobe linked as a
# static position-independent executable.
#
# Why static PIE for the shim: the kernel execs it once per request_module(),
# so its start-up is what every request pays.  With no dynamic loader there
# are no libraries to map and no symbols to look up; position independence
# keeps ASLR for a program that runs as root on names unprivileged users can
# influence.  Cargo cannot give one binary its own target features, so the
# shim is built by `cargo rustc`, after the rest.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --bins -p kerneld -p kdstat "$@"
cargo rustc --release -p kerneld-modprobe --bin kerneld-modprobe "$@" \
    -- -C target-feature=+crt-static

shim=target/release/kerneld-modprobe
# A static PIE: ELF type DYN, no program interpreter.
if ! readelf -h "$shim" | grep -q 'Type: *DYN' || readelf -l "$shim" | grep -q INTERP; then
    echo "build-release: $shim is not a static PIE (readelf -hl $shim)" >&2
    exit 1
fi
