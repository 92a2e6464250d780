#!/bin/sh
# shellcheck shell=dash
# Scenario 18, run by /init before anything else (busybox sh): kerneld
# starts at the point of the boot where its unit (dist/kerneld.service)
# starts it: /proc, /sys, /dev and /run are mounted, no syslog daemon runs
# yet, udev's coldplug and systemd-modules-load have not run.  It runs as
# the unit runs it (kerneld --foreground --register, standard error kept as
# the journal would keep it), with etc/rare-protocols.conf included from
# /etc/kerneld.conf.  The test waits until it answers (the unit is
# Type=notify: what is ordered after it waits for READY=1), then plays the
# coldplug's first module requests from the kernel: a protocol
# rare-protocols.conf denies (sctp) and a device driver it does not (dummy).
# Then kerneld stops, as at shutdown, and puts the previous helper back.
#
# Prints one line, which tests/vm/run parses:
#   VMTEST PASS 18 ... | VMTEST FAIL 18 ...: detail
# Truth is from /proc/modules; the log must name the rule that denied.

n=18
d="early boot (unit's ordering, rare-protocols.conf): the first requests are governed: sctp denied and left unloaded, the rule named in the log; dummy loads"
log=/run/kdvm-early/kerneld.log
mkdir -p /run/kdvm-early /etc/kerneld

# ms, loaded, wait_until, alive, dead
. /guest-lib.sh
pass() { echo "VMTEST PASS $n $d ($1)"; }
fail() {
    echo "VMTEST FAIL $n $d: $1"
    if [ -s "$log" ]; then
        sed 's/^/VMTEST LOG early: /' "$log"
    fi
}
answers() { timeout 5 kdstat >/dev/null 2>&1; }

main() {
    [ ! -e /dev/log ] || { fail "a syslog socket exists already: not early boot"; return; }
    for m in sctp dummy; do
        ! loaded "$m" || { fail "$m is loaded before kerneld started"; return; }
    done
    previous=$(cat /proc/sys/kernel/modprobe)
    echo "include /etc/kerneld/rare-protocols.conf" >/etc/kerneld.conf
    kerneld --check-config >/dev/null 2>&1 || { fail "kerneld --check-config: $(kerneld --check-config 2>&1)"; return; }

    t0=$(ms)
    kerneld --foreground --register </dev/null >"$log" 2>&1 &
    kpid=$!
    wait_until 20 answers || { fail "kerneld (pid $kpid) does not answer after 20 s"; return; }
    ready=$(($(ms) - t0))
    helper=$(cat /proc/sys/kernel/modprobe)
    [ "$helper" = /sbin/kerneld-modprobe ] || { fail "the kernel's helper is $helper, not /sbin/kerneld-modprobe"; return; }

    # The coldplug's first requests, made by the kernel (request_module).
    out=$(timeout 60 trigger socket 2 1 132 2>&1)
    src=$?
    ip link add early0 type dummy 2>/dev/null
    drc=$?

    loaded sctp && { fail "sctp got loaded (socket: exit $src, $out)"; return; }
    [ "$src" != 0 ] || { fail "the SCTP socket was created without sctp loaded?"; return; }
    loaded dummy || { fail "dummy not loaded (ip link add: exit $drc)"; return; }
    rule='request_module( for [^:]*)?: net-pf-2-proto-132[-a-z0-9]*: denied by policy: deny module sctp sctp_diag \(/etc/kerneld/rare-protocols.conf:[0-9]+\)( \(module [^)]*\))? -> \[[^]]*sctp[^]]*\]'
    grep -E -q "$rule" "$log" || { fail "no '$rule' in the log"; return; }
    grep -E -q 'request_module( for [^:]*)?: rtnl-link-dummy: loaded dummy' "$log" ||
        { fail "no 'request_module ...: rtnl-link-dummy: loaded dummy' in the log"; return; }
    denied=$(timeout 5 kdstat --json | tr ',' '\n' | sed -n 's/.*"denied": *\([0-9]*\).*/\1/p' | head -n 1)
    [ "${denied:-0}" -ge 1 ] || { fail "kdstat --json counts no denial (denied=$denied)"; return; }

    # Shutdown: the previous helper comes back, the queue goes.
    kill -TERM "$kpid"
    wait_until 30 dead "$kpid" || { fail "kerneld still alive 30 s after SIGTERM"; return; }
    wait "$kpid" 2>/dev/null
    now=$(cat /proc/sys/kernel/modprobe)
    [ "$now" = "$previous" ] || { fail "after the stop the helper is $now, not $previous"; return; }
    pass "ready after $ready ms; SCTP socket refused: $out; denials counted: $denied; helper back to $previous"
}

kpid=
main
# After a failure: stop kerneld all the same.
if [ -n "$kpid" ] && alive "$kpid"; then
    kill -TERM "$kpid"
    wait_until 30 dead "$kpid"
    wait "$kpid" 2>/dev/null
fi
# Leave nothing for the scenarios that follow (they start with no module
# of theirs loaded and a fresh kerneld).
ip link del early0 2>/dev/null
loaded dummy && rmmod dummy
loaded sctp && fail "sctp got loaded after all"
rm -rf /run/kerneld /etc/kerneld.conf
