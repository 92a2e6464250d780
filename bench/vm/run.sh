#!/usr/bin/env bash
# Boot the real-kernel test guest (tests/vm) with the benchmark in place of
# its scenarios, and print the guest's VMBENCH lines on stdout.
#
# Usage: bench/vm/run.sh [--series 6.12|6.1|shim|shim-7.3] [--smp N] [--rounds R] [--per-round N]
#                        [--shim-variants] [--guest SCRIPT]
#   --series shim  our patched 6.12 (kernel/build.sh) with 2 CPUs: the
#                  in-kernel sender (kerneld_shim.ko) is measured too, in
#                  the same boot, against both helpers; shim-7.3: the
#                  same on our patched 7.3 (kernel/build.sh --series 7.3)
#   --smp N        virtual CPUs of the guest (default 1; 2 for shim, as the
#                  real-kernel test boots it).  Under TCG a wake-up from one
#                  vCPU to another costs far more than on hardware, and the
#                  in-kernel path makes two per request
#   --shim-variants  also measure kerneld with two other builds of
#                  kerneld-modprobe, for comparison with the installed static
#                  PIE: the plain dynamic PIE of `cargo build`, and a static
#                  non-PIE (built here into target/bench-shim-variants).
#                  Under TCG every exec of position-independent code is
#                  translated anew, see bench/README.md
#   --guest        run SCRIPT in the guest instead of bench/vm/guest.sh
#                  (for experiments; it finds /bin/kdvmbench and the
#                  harness's tools)
#
# The harness's own tools are used unchanged: fetch-kernel.sh for the
# Debian kernel, build-initramfs.sh for the guest (kmod, busybox, the
# project's binaries from KERNELD_BIN_DIR, default target/release).  A
# second cpio archive is appended to that initramfs; the kernel unpacks
# both in order, so its /scenarios.sh (bench/vm/guest.sh) and
# /bin/kdvmbench replace or add to the first.  /init runs it as usual.
#
# Environment: KERNELD_BIN_DIR, KERNELD_VM_CACHE as for tests/vm/run;
# KERNELD_VM_TIMEOUT (seconds for the boot, default 900).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)

series=6.12
rounds=10
per=10
guest=$here/guest.sh
shim_variants=0
smp=
while [[ $# -gt 0 ]]; do
    case "$1" in
        --series)
            series=${2:?}
            shift 2
            ;;
        --rounds)
            rounds=${2:?}
            shift 2
            ;;
        --per-round)
            per=${2:?}
            shift 2
            ;;
        --smp)
            smp=${2:?}
            [[ $smp =~ ^[1-8]$ ]] || { echo "bench/vm/run.sh: --smp takes 1 to 8, not $smp" >&2; exit 2; }
            shift 2
            ;;
        --shim-variants)
            shim_variants=1
            shift
            ;;
        --guest)
            guest=${2:?}
            shift 2
            ;;
        -h | --help)
            sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
            exit 0
            ;;
        *)
            echo "bench/vm/run.sh: unknown argument $1" >&2
            exit 2
            ;;
    esac
done

export KERNELD_BIN_DIR=${KERNELD_BIN_DIR:-$repo/target/release}
for b in kerneld kerneld-modprobe kdstat; do
    [[ -x "$KERNELD_BIN_DIR/$b" ]] || {
        echo "bench/vm/run.sh: $KERNELD_BIN_DIR/$b not built (scripts/build-release.sh)" >&2
        exit 1
    }
done

extra=
if [[ $series == shim || $series == shim-* ]]; then
    kseries=6.12
    [[ $series == shim ]] || kseries=${series#shim-}
    read -r root kver vmlinuz < <("$repo/kernel/build.sh" --series "$kseries" --print)
    smp=${smp:-2}
    # It cannot power off; a reboot ends QEMU (-no-reboot).
    extra=" kdvm_reboot=1"
else
    read -r root kver vmlinuz < <("$repo/tests/vm/fetch-kernel.sh" "$series")
fi
smp=${smp:-1}
work=$(mktemp -d "${TMPDIR:-/tmp}/kerneld-vmbench.XXXXXX")
trap 'rm -rf "$work"' EXIT

# 7.x lacks modules the list names for 6.x (libcrc32c): skip them there.
KERNELD_VM_MISSING_OK=$([[ $series == *7.* ]] && echo 1 || echo 0) \
    "$repo/tests/vm/build-initramfs.sh" "$root" "$kver" "$work/base.gz"

mkdir -p "$work/overlay/bin" "$work/overlay/sbin"
install -m 0755 "$guest" "$work/overlay/scenarios.sh"
cc -static -O2 -Wall -o "$work/overlay/bin/kdvmbench" "$here/kdvmbench.c"
files=(scenarios.sh bin/kdvmbench)
if [[ $shim_variants == 1 ]]; then
    echo "vm-bench: building a dynamic PIE and a static non-PIE kerneld-modprobe (target/bench-shim-variants)" >&2
    variants=$repo/target/bench-shim-variants
    (cd "$repo" && cargo build --release --quiet -p kerneld-modprobe --target-dir "$variants/dynamic")
    (cd "$repo" && cargo rustc --release --quiet -p kerneld-modprobe --bin kerneld-modprobe \
        --target-dir "$variants/static" -- -C target-feature=+crt-static -C relocation-model=static)
    install -m 0755 "$variants/dynamic/release/kerneld-modprobe" "$work/overlay/sbin/kerneld-modprobe-dynamic"
    install -m 0755 "$variants/static/release/kerneld-modprobe" "$work/overlay/sbin/kerneld-modprobe-static"
    files+=(sbin/kerneld-modprobe-dynamic sbin/kerneld-modprobe-static)
fi
(cd "$work/overlay" && printf '%s\n' "${files[@]}" | cpio --quiet -o -H newc) |
    gzip -6 >"$work/overlay.gz"
cat "$work/base.gz" "$work/overlay.gz" >"$work/initramfs.gz"

echo "vm-bench: booting $kver under QEMU (TCG): $rounds rounds of $per requests per helper and measure" >&2
rc=0
t0=$SECONDS
timeout "${KERNELD_VM_TIMEOUT:-900}" qemu-system-x86_64 -accel tcg -m 512 -smp "$smp" -nographic \
    -no-reboot -net none -kernel "$vmlinuz" -initrd "$work/initramfs.gz" \
    -append "console=ttyS0 panic=-1 quiet kdvm_mode=bench kdvm_bench=$rounds,$per$extra" \
    </dev/null >"$work/console.log" 2>&1 || rc=$?
echo "vm-bench: guest ran $((SECONDS - t0)) s" >&2
tr -d '\r' <"$work/console.log" | grep -a '^VMBENCH' || true
if ! tr -d '\r' <"$work/console.log" | grep -q -a '^VMBENCH END'; then
    echo "vm-bench: the guest did not finish (qemu exit $rc); end of the console log:" >&2
    tr -d '\r' <"$work/console.log" | tail -n 60 >&2
    exit 1
fi
