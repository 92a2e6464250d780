#!/usr/bin/env bash
# All tests: unit and integration tests (real queues, real binaries, libkmod
# on a real Debian module tree), the Debian package (built, installed with
# apt, removed), then the real-kernel test (stock Debian kernels booted
# under QEMU, their request_module() calls served by kerneld; and a Debian
# system booted with systemd, with the package just built installed).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
# The module trees the tests resolve against, and the kernels they boot.
tests/vm/fetch-kernel.sh 6.12 >/dev/null
tests/vm/fetch-kernel.sh 6.1 >/dev/null

# Where cargo puts the binaries, which the VM test boots with.
export KERNELD_BIN_DIR=${KERNELD_BIN_DIR:-${CARGO_TARGET_DIR:-$PWD/target}/debug}
# With the BPF LSM program of module-loads (built by clang), which the
# VM test's scenario 19 loads.
cargo build --workspace --bins --features kerneld/bpf-lsm
cargo test --workspace --features kerneld/bpf-lsm
dist/test-deb.sh
# The package test-deb.sh built is the one the debian series installs.
KERNELD_DEB=${CARGO_TARGET_DIR:-$PWD/target}/debian/kerneld_$(dpkg-parsechangelog -S Version)_$(dpkg --print-architecture).deb
export KERNELD_DEB
tests/vm/run --kernel all
