#!/usr/bin/env bash
# Benchmarks: kerneld against exec'ing modprobe and against the bare SysV
# queue, throughput, a storm of identical requests, the kernel path in a
# QEMU guest, memory and size; one run measures everything, prints the
# tables and writes bench/results/latest.json and latest.md.
#
# Usage: scripts/bench.sh [kerneld-bench options]   (as root)
#   --quick     fewer repetitions, a smoke test of the whole run
#   --no-vm     leave out the VM sections (5, 10)
#   --only LIST sections to run (e.g. --only modload: the BPF LSM program's
#               cost); results are then only printed, unless --write
#   --help      every option of kerneld-bench
#
# Benchmarks are not tests: nothing here fails on a slow figure.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
# The Debian module tree both kerneld and modprobe resolve against, and
# the kernel the VM section boots.
tests/vm/fetch-kernel.sh 6.12 >/dev/null
# Our kernels with the in-kernel sender (section 5b, 6.12 and 7.3): built
# once (5 to 20 minutes each), then cached by kernel/build.sh.  Only
# section 5b boots them: not with --no-vm, nor with an --only without vm
# or shim.
only=
prev=
for a in "$@"; do
    [[ $prev == --only ]] && only=$a
    prev=$a
done
if [[ " $* " != *" --no-vm "* ]] && { [[ -z $only ]] || [[ ",$only," == *,vm,* || ",$only," == *,shim,* ]]; }; then
    kernel/build.sh --series 6.12 >/dev/null
    kernel/build.sh --series 7.3 >/dev/null
fi
# Release builds, as installed (the shim a static PIE): the bench starts
# kerneld and the shim, the VM section puts kerneld, kerneld-modprobe,
# kdstat and kdsend in the guest.
scripts/build-release.sh
# With the BPF LSM program, for section 10 (module-loads); off unless
# configured, so the other sections are unchanged.
cargo build --release -p kerneld --bin kerneld --features bpf-lsm
cargo build --release -p kerneld-bench
exec target/release/kerneld-bench "$@"
