#!/bin/sh
# shellcheck shell=dash
# The guest side of the module-loads benchmark (kerneld-bench --only
# modload): bench/vm/run.sh --guest lays it over the test harness's
# initramfs as /scenarios.sh.  What the BPF LSM program adds to a module
# load: dummy, uncompressed and put in the module tree (so it has an
# allow verdict), loaded and removed by kdvmbench modload with
#
#   off      no program (no kerneld at all)
#   observe  module-loads = observe
#   enforce  module-loads = enforce
#
# each round in turn (the first one rotates).  finit_module() runs the
# sleepable kernel_read_file hook, which hashes the file in the kernel
# (bpf_ima_file_hash) and looks the hash up; init_module() runs the
# kernel_load_data hook, with no file and no hash: the hook's cost without
# the hash.  kdvmbench times the system call alone.
# Output: VMBENCH lines on the console, parsed by kerneld-bench.
# Options on the kernel command line: kdvm_bench=ROUNDS,PER_ROUND.

# bench_options, and the harness's other helpers.
. /guest-lib.sh
read -r rounds per <<EOF
$(bench_options)
EOF

info() { echo "VMBENCH INFO $*"; }
bail() {
    echo "VMBENCH E setup $*"
    echo "VMBENCH END"
    exit 0
}

grep -q bpf /sys/kernel/security/lsm 2>/dev/null ||
    mount -t securityfs securityfs /sys/kernel/security 2>/dev/null
tree=/lib/modules/$(uname -r)
src=$(find "$tree" -name 'dummy.ko*' | head -n 1)
[ -n "$src" ] || bail "no dummy module in $tree"
mkdir -p "$tree/updates/kdbench"
ko=$tree/updates/kdbench/dummy.ko
case "$src" in
    *.xz) xzcat "$src" >"$ko" ;;
    *) cp "$src" "$ko" ;;
esac || bail "cannot put dummy.ko in $tree/updates"
/sbin/rmmod dummy 2>/dev/null

info kernel "$(uname -r)"
info kerneld "$(kerneld --version 2>&1)"
info lsm "$(cat /sys/kernel/security/lsm 2>/dev/null)"
info module-bytes "$(wc -c <"$ko")"
info module-files "$(find "$tree" -name '*.ko*' | wc -l)"
info rounds "$rounds" per-round "$per"
info clocksource "$(cat /sys/devices/system/clocksource/clocksource0/current_clocksource)"

KEY=0x6b64626d
kpid=
start() { # MODE
    printf 'module-loads = %s\ndeny module dccp\n' "$1" >/tmp/kdbench.conf
    : >/tmp/kdbench.log
    kerneld --foreground --key "$KEY" --state-dir /run/kdbench --config /tmp/kdbench.conf \
        </dev/null >/tmp/kdbench.log 2>&1 &
    kpid=$!
    i=0
    until grep -q 'BPF LSM program is attached' /tmp/kdbench.log; do
        i=$((i + 1))
        if [ "$i" -gt 150 ] || ! kill -0 "$kpid" 2>/dev/null; then
            echo "VMBENCH E $1 the program was not attached: $(tr '\n' ' ' </tmp/kdbench.log)"
            kill "$kpid" 2>/dev/null
            wait "$kpid" 2>/dev/null
            kpid=
            return 1
        fi
        sleep 0.2
    done
}
stop() {
    [ -n "$kpid" ] || return 0
    kill -TERM "$kpid" 2>/dev/null
    wait "$kpid" 2>/dev/null
    kpid=
}
round() { # MODE N
    if [ "$1" != off ]; then
        start "$1" || return
        # The time to judge the tree, as kerneld logs it.
        judged=$(grep 'module loads: judged' /tmp/kdbench.log | tail -n 1)
    fi
    kdvmbench modload "$2" "$1" "$ko"
    stop
}

modes="off observe enforce"
for m in $modes; do
    round "$m" 2 | sed 's/^VMBENCH S \([a-z]*\) /VMBENCH S \1 warm-/'
done
n=$(echo "$modes" | wc -w)
r=1
while [ "$r" -le "$rounds" ]; do
    k=$(((r - 1) % n))
    i=0
    head=
    tail=
    for m in $modes; do
        if [ "$i" -lt "$k" ]; then tail="$tail $m"; else head="$head $m"; fi
        i=$((i + 1))
    done
    for m in $head $tail; do
        round "$m" "$per"
    done
    r=$((r + 1))
done
info judged "${judged#*module loads: }"
rm -r "$tree/updates/kdbench"
echo "VMBENCH END"
