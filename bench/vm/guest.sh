#!/bin/sh
# shellcheck shell=dash
# The guest side of the kerneld benchmark, run by the test harness's /init
# in place of /scenarios.sh (bench/vm/run.sh lays it over the harness's
# initramfs).  The same kernel, in the same boot, is served alternately by
# the stock /sbin/modprobe (Debian's kmod) and by kerneld-modprobe +
# kerneld (and, when bench/vm/run.sh --shim-variants put them there, by a
# dynamic PIE and a static non-PIE build of kerneld-modprobe + kerneld;
# on our kernel, by the in-kernel sender and by the floor described
# below), round after round, so all see the same guest:
#
#   unknown  N request_module() calls for names nothing provides
#   dummy    N load/unload cycles of dummy (link add, link del, rmmod)
#
# and then, after the rounds, failover: kerneld SIGKILLed, and the time
# until a request for dummy is served by the fallback, 3 to 5 times per
# path (the in-kernel sender on our kernel, kerneld-modprobe as the helper).
#
# kdvmbench (bench/vm/kdvmbench.c) makes the calls and times each one.
# Output: VMBENCH lines on the console, parsed by kerneld-bench.
# Options on the kernel command line: kdvm_bench=ROUNDS,PER_ROUND.

# bench_options, and the harness's other helpers.
. /guest-lib.sh
read -r rounds per <<EOF
$(bench_options)
EOF

info() { echo "VMBENCH INFO $*"; }

# Without kerneld the shim must fail, not quietly run modprobe: a measure
# of "kerneld" that was modprobe after all would be worthless.
printf 'shim-fallback = fail\nshim-timeout = 30\n' >/etc/kerneld.conf
kerneld --foreground keep </dev/null >/tmp/kerneld.log 2>&1 &
kpid=$!
i=0
until timeout 5 kdstat >/dev/null 2>&1; do
    i=$((i + 1))
    if [ "$i" -gt 100 ]; then
        echo "VMBENCH E setup kerneld not ready after 20 s: $(tr '\n' ' ' </tmp/kerneld.log)"
        echo "VMBENCH END"
        exit 0
    fi
    sleep 0.2
done
info kernel "$(uname -r)"
info kerneld "$(kerneld --version 2>&1)"
info kmod "$(/sbin/modprobe --version 2>&1 | head -n 1)"
info rounds "$rounds" per-round "$per"
info cpus "$(nproc)"
# A guest on jiffies times in 4 ms steps: its figures are to be discarded.
info clocksource "$(cat /sys/devices/system/clocksource/clocksource0/current_clocksource)"

helpers="stock:/sbin/modprobe kerneld:/sbin/kerneld-modprobe"
shim_answered=0
shim_fellback=0
# Our kernel (bench/vm/run.sh --series shim): the in-kernel sender too.
# It serves while loaded, with a helper path that does not exist; the
# helpers' rounds run with it unloaded.
shim_ko=/lib/modules/$(uname -r)/extra/kerneld_shim.ko
# With it, the floor: what no path can go below.  An unknown name posted
# by the in-kernel sender to a queue whose bare C loop (kdvmbench serve)
# answers "not loaded" at once; a dummy cycle whose module is inserted by
# finit_module() before the link add, so that nobody is asked at all.
kerneld_key=$((0x6b65726e))
floor_key=$((0x6b65726f))
dummy_ko=$(find "/lib/modules/$(uname -r)" -name dummy.ko | head -n 1)
if [ -f "$shim_ko" ]; then
    helpers="$helpers shim:in-kernel"
    if [ -n "$dummy_ko" ]; then
        kdvmbench serve "$floor_key" &
        helpers="$helpers floor:floor"
    fi
fi
for v in dynamic static; do
    [ -x "/sbin/kerneld-modprobe-$v" ] &&
        helpers="$helpers kerneld-$v:/sbin/kerneld-modprobe-$v"
done
info helpers "$helpers"
use() {
    if [ "$1" = in-kernel ] || [ "$1" = floor ]; then
        grep -q '^kerneld_shim ' /proc/modules || /sbin/insmod "$shim_ko" ||
            echo "VMBENCH E setup insmod kerneld_shim failed"
        key=$kerneld_key
        [ "$1" = floor ] && key=$floor_key
        echo "$key" >/sys/module/kerneld_shim/parameters/key
        echo /nonexistent/modprobe >/proc/sys/kernel/modprobe
        return
    fi
    if grep -q '^kerneld_shim ' /proc/modules; then
        # Its counters go with it: add them up first.
        p=/sys/kernel/kerneld_shim
        shim_answered=$((shim_answered + $(cat $p/answered)))
        shim_fellback=$((shim_fellback + $(cat $p/fallback_no_queue) + $(cat $p/fallback_unread) + $(cat $p/fallback_full) + $(cat $p/fallback_gone)))
        /sbin/rmmod kerneld_shim || echo "VMBENCH E setup rmmod kerneld_shim failed"
    fi
    echo "$1" >/proc/sys/kernel/modprobe
}

# One round for a helper: unknown names (unique to the round and helper,
# so no negative cache answers them), then dummy cycles.
round() { # LABEL HELPER ROUND N
    use "$2"
    kdvmbench unknown "$4" "kdnx$3$1" "$1"
    if [ "$2" = floor ]; then
        kdvmbench dummy "$4" "$1" "$dummy_ko"
    else
        kdvmbench dummy "$4" "$1"
    fi
}

# Warm-up (page cache, first exec of each helper), not reported.
for h in $helpers; do
    round "warm-${h%%:*}" "${h#*:}" 0 2 >/dev/null
done

# Each round, every helper in turn; which one goes first rotates.
n=$(echo "$helpers" | wc -w)
r=1
while [ "$r" -le "$rounds" ]; do
    k=$(((r - 1) % n))
    i=0
    head=
    tail=
    for h in $helpers; do
        if [ "$i" -lt "$k" ]; then tail="$tail $h"; else head="$head $h"; fi
        i=$((i + 1))
    done
    for h in $head $tail; do
        round "${h%%:*}" "${h#*:}" "$r" "$per"
    done
    r=$((r + 1))
done
use /sbin/modprobe
if [ -f "$shim_ko" ]; then
    # Answers from kerneld and from the floor's loop together.
    info shim-answered "$shim_answered"
    info shim-fell-back "$shim_fellback"
fi

json=$(timeout 10 kdstat --json 2>/dev/null)
for c in request_module succeeded failed cached; do
    info "kerneld-$c" "$(echo "$json" | grep -o "\"$c\":[0-9]*" | head -n 1 | cut -d: -f2)"
done
kill "$kpid" 2>/dev/null
wait "$kpid" 2>/dev/null

# Failover (issue 22): a kerneld started on the key, SIGKILLed, then a
# request for dummy (not loaded), timed by kdvmbench failover from the
# kill to the link's creation.  Without a live kerneld the in-kernel
# sender takes its request back unread after read_wait_ms and runs the
# helper, /sbin/modprobe; kerneld-modprobe sees the queue left behind and
# execs /sbin/modprobe, as shim-fallback = modprobe says (only here: every
# other measure runs with shim-fallback = fail).  Each kerneld takes over
# the queue its predecessor left.
failover() { # LABEL HELPER
    use "$2"
    if [ "$2" = in-kernel ]; then
        echo /sbin/modprobe >/proc/sys/kernel/modprobe
        read_wait=$(cat /sys/module/kerneld_shim/parameters/read_wait_ms)
    fi
    /sbin/rmmod dummy 2>/dev/null
    kerneld --foreground keep </dev/null >>/tmp/kerneld-failover.log 2>&1 &
    fpid=$!
    j=0
    until timeout 5 kdstat >/dev/null 2>&1; do
        j=$((j + 1))
        if [ "$j" -gt 100 ]; then
            echo "VMBENCH E failover $1: kerneld not ready after 20 s: $(tail -n 3 /tmp/kerneld-failover.log | tr '\n' ' ')"
            kill "$fpid" 2>/dev/null
            wait "$fpid" 2>/dev/null
            return
        fi
        sleep 0.2
    done
    kdvmbench failover "$fpid" "$1"
    wait "$fpid" 2>/dev/null
}
fo_reps=$rounds
[ "$fo_reps" -lt 3 ] && fo_reps=3
[ "$fo_reps" -gt 5 ] && fo_reps=5
fo_paths="kerneld:/sbin/kerneld-modprobe"
[ -f "$shim_ko" ] && fo_paths="shim:in-kernel $fo_paths"
printf 'shim-fallback = modprobe\nshim-timeout = 30\n' >/etc/kerneld.conf
info failover-reps "$fo_reps"
r=1
while [ "$r" -le "$fo_reps" ]; do
    for p in $fo_paths; do
        failover "${p%%:*}" "${p#*:}"
    done
    r=$((r + 1))
done
printf 'shim-fallback = fail\nshim-timeout = 30\n' >/etc/kerneld.conf
use /sbin/modprobe
[ -n "${read_wait:-}" ] && info shim-read-wait-ms "$read_wait"
echo "VMBENCH END"
