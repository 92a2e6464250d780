#!/bin/sh
# shellcheck shell=dash
# Scenarios run inside the test guest by /init (busybox sh).
# Usage: sh /scenarios.sh kerneld|baseline|shim|modload (shim: shim-scenarios.sh;
# modload: scenario 19 alone, modload-scenarios.sh)
#
# Every scenario prints exactly one line, which tests/vm/run parses:
#   VMTEST PASS <n> <description>
#   VMTEST FAIL <n> <description>: <detail>
# A scenario starts with `scenario N DESCRIPTION` (or a check_* helper,
# which describes its own); pass and fail then give its number and $d.
# Other VMTEST lines (NOTE, LOG) are informative only.
#
# Truth is taken from /proc/modules and /sys, not from log wording; logs are
# only grepped for the requested name. Every command that could hang on a
# broken daemon runs under `timeout`.

mode=${1:-kerneld}

QUEUE_KEY=1801810542 # 0x6b65726e ("kern"), as /proc/sysvipc/msg prints it
SYSLOG=/var/log/messages
# Expiry: kerneld unloads after two consecutive idle sweeps, 2 s apart with
# delay=2; stacks (bridge->stp->llc) may need a sweep or two more per level.
EXPIRE_WAIT=16
failed=0

# ms, loaded, wait_until, alive, dead, since, scenario, pass, fail, note
. /guest-lib.sh

# Names from the arguments that are (not) in /proc/modules.
not_loaded_of() {
    _r=
    for _m in "$@"; do loaded "$_m" || _r="$_r $_m"; done
    echo "${_r# }"
}
loaded_of() {
    _r=
    for _m in "$@"; do loaded "$_m" && _r="$_r $_m"; done
    echo "${_r# }"
}
none_loaded() { [ -z "$(loaded_of "$@")" ]; }

queue_exists() {
    awk -v k="$QUEUE_KEY" '$1 == k { f = 1 } END { exit !f }' /proc/sysvipc/msg
}
no_queue() { ! queue_exists; }
# Messages waiting in the queue at QUEUE_KEY (qnum of /proc/sysvipc/msg).
queue_qnum() {
    awk -v k="$QUEUE_KEY" '$1 == k { print $5; f = 1 } END { if (!f) print "none" }' /proc/sysvipc/msg
}
queue_id() {
    awk -v k="$QUEUE_KEY" '$1 == k { print $2 }' /proc/sysvipc/msg
}

# Anything the daemon logged, on stderr or through syslog.  kerneld writes
# a load's log line just after its answer, so a line looked for right
# after the request is given a few seconds to appear.
klog_now() {
    cat /tmp/kerneld*.log "$SYSLOG" 2>/dev/null | grep -q -e "$1"
}
klog_has() { wait_until 5 klog_now "$1"; }

# The running daemon's own log (stderr of --foreground), extended regex.
log_now() {
    grep -E -q -e "$1" "$KLOG" 2>/dev/null
}
log_has() { wait_until 5 log_now "$1"; }
log_line() {
    grep -E -e "$1" "$KLOG" 2>/dev/null | tail -n 1
}

# Unload modules (in the order given) that are loaded; true if all are gone.
unload() {
    for _m in "$@"; do
        loaded "$_m" && /sbin/rmmod "$_m" 2>/dev/null
    done
    none_loaded "$@"
}

# The requester objects of the recent requests for NAME in kdstat --json,
# one per line, oldest first. serde_json prints an object's keys in one
# order whatever it is, and "name" is always right before "requester".
json_requesters() {
    timeout 10 kdstat --json 2>/dev/null | tr '{' '\n' |
        awk -v n="\"name\":\"$1\",\"requester\":" 'p { print; p = 0 } index($0, n) { p = 1 }'
}
# json_has LINE FIELD VALUE: "FIELD":VALUE is in the object on LINE.
json_has() {
    case "$1" in
        *"\"$2\":$3,"* | *"\"$2\":$3}"*) return 0 ;;
    esac
    return 1
}

# refused_link_add LINK: `ip link add LINK type dummy` must fail (the
# kernel's request for dummy refused); fails the scenario otherwise.
# Leaves run's $out, $rc and $dt.
refused_link_add() {
    run 60 ip link add "$1" type dummy
    [ "$rc" != 0 ] && return 0
    fail "ip link add succeeded (dummy loaded: $(loaded_of dummy))"
    ip link del "$1" 2>/dev/null
    return 1
}

kernel_healthy() {
    ! dmesg | grep -E -q 'BUG:|Oops|WARNING:|blocked for more than|Call Trace'
}

# Run a command under a timeout, leaving its output in $out, status in $rc
# and the time it took in $dt (ms).
run() {
    _t0=$(ms)
    out=$(timeout "$@" 2>&1)
    rc=$?
    dt=$(since "$_t0")
    out=$(echo "$out" | tr '\n' ' ')
}

write_conf() {
    cat >/etc/kerneld.conf <<EOF
shim-fallback = $1
shim-modprobe = /sbin/modprobe
shim-timeout = 30
EOF
}

KPID=
# start_kerneld LOG WORDS...: start the daemon attached, wait until kdstat
# answers (up to 10 s).
KLOG=/tmp/kerneld.log
start_kerneld() {
    _log=$1
    KLOG=$1
    shift
    kerneld --foreground "$@" </dev/null >>"$_log" 2>&1 &
    KPID=$!
    if wait_until 10 kdstat_ok; then
        note "kerneld $* started, pid $KPID, ready after $(since "$_t_start") ms"
        return 0
    fi
    note "kerneld $* (pid $KPID) not ready after 10 s"
    return 1
}
kdstat_ok() { timeout 5 kdstat >/dev/null 2>&1; }

stop_kerneld() { # SIGNAL
    [ -n "$KPID" ] || return 0
    kill "-$1" "$KPID" 2>/dev/null
    wait_until 10 dead "$KPID" || note "kerneld $KPID still alive 10 s after SIG$1"
    wait "$KPID" 2>/dev/null
    KPID=
}

dump_logs() {
    for f in /tmp/kerneld*.log "$SYSLOG"; do
        [ -s "$f" ] || continue
        echo "VMTEST LOG ---- $f"
        sed 's/^/VMTEST LOG /' "$f"
    done
    echo "VMTEST LOG ---- /proc/modules"
    sed 's/^/VMTEST LOG /' /proc/modules
    echo "VMTEST LOG ---- dmesg (last 60)"
    dmesg | tail -n 60 | sed 's/^/VMTEST LOG /'
}

# ---------------------------------------------------------------------------
# Requests that work the same whoever serves them (kerneld or modprobe).

# check_dummy N WHO: ip link add d0 type dummy
check_dummy() {
    scenario "$1" "ip link add d0 type dummy loads dummy via $2"
    run 60 ip link add d0 type dummy
    [ "$rc" = 0 ] || { fail "exit $rc after $dt ms: $out"; return 1; }
    loaded dummy || { fail "link created but dummy not in /proc/modules"; return 1; }
    [ -d /sys/class/net/d0 ] || { fail "no /sys/class/net/d0"; return 1; }
    return 0
}

check_bridge() {
    scenario "$1" "ip link add br0 type bridge loads bridge, stp, llc via $2"
    run 60 ip link add br0 type bridge
    [ "$rc" = 0 ] || { fail "exit $rc after $dt ms: $out"; return 1; }
    _miss=$(not_loaded_of bridge stp llc)
    [ -z "$_miss" ] || { fail "not loaded: $_miss"; return 1; }
    return 0
}

# SCTP: sctp needs libcrc32c, whose init asks the kernel for crypto-crc32c
# (the guest's modules.softdep lacks libcrc32c's "pre: crc32c" so that this
# really happens): a request made while another is being served. A daemon
# that serialises naively deadlocks here, hence the timeout.
check_sctp() {
    scenario "$1" "socket(AF_INET, SOCK_STREAM, IPPROTO_SCTP) loads sctp and crc32c via $2"
    run 90 trigger socket 2 1 132
    [ "$rc" = 0 ] || { fail "exit $rc after $dt ms (timeout would be a deadlock): $out"; return 1; }
    if ! has_libcrc32c; then
        # 7.x: crc32c moved into lib/crc; sctp needs no module for it.
        _miss=$(not_loaded_of sctp)
        [ -z "$_miss" ] || { fail "not loaded: $_miss"; return 1; }
        note "no libcrc32c module in this kernel: sctp alone checked"
        return 0
    fi
    _miss=$(not_loaded_of sctp libcrc32c)
    [ -z "$_miss" ] || { fail "not loaded: $_miss"; return 1; }
    loaded crc32c_generic || loaded crc32c_intel ||
        { fail "no crc32c implementation loaded"; return 1; }
    note "crc32c implementations loaded: $(loaded_of crc32c_generic crc32c_intel)"
    return 0
}

# Whether this kernel has libcrc32c as a module (6.x; 7.x has it in lib/crc).
has_libcrc32c() {
    grep -q '/libcrc32c\.ko' "/lib/modules/$(uname -r)/modules.dep" 2>/dev/null
}

check_nosuchkind() {
    scenario "$1" "ip link add x0 type nosuchkind fails promptly via $2"
    run 60 ip link add x0 type nosuchkind
    [ "$rc" != 0 ] || { fail "it succeeded"; return 1; }
    [ "$dt" -lt 5000 ] || { fail "took $dt ms (exit $rc)"; return 1; }
    [ ! -e /sys/class/net/x0 ] || { fail "x0 exists"; return 1; }
    run 10 ip link show lo
    [ "$rc" = 0 ] || { fail "ip link show lo afterwards: $out"; return 1; }
    kernel_healthy || { fail "kernel complained: $(dmesg | grep -E 'BUG:|Oops|WARNING:|blocked for' | head -n 3 | tr '\n' ' ')"; return 1; }
    return 0
}

# AF_CAN raw socket as uid 1000: net-pf-29 (can), then can-proto-1 (can_raw).
check_can_user() {
    scenario "$1" "socket(AF_CAN, SOCK_RAW, CAN_RAW) as uid 1000 loads can, can_raw via $2"
    run 60 trigger -u 1000 socket 29 3 1
    [ "$rc" = 0 ] || { fail "exit $rc after $dt ms: $out"; return 1; }
    _miss=$(not_loaded_of can can_raw)
    [ -z "$_miss" ] || { fail "not loaded: $_miss"; return 1; }
    return 0
}

# ---------------------------------------------------------------------------
baseline() {
    helper=$(cat /proc/sys/kernel/modprobe)
    note "baseline: kernel helper is $helper"
    [ "$helper" = /sbin/modprobe ] || echo /sbin/modprobe >/proc/sys/kernel/modprobe

    check_dummy 1 modprobe && pass "$dt ms"
    check_bridge 2 modprobe && pass "$dt ms"
    check_sctp 3 modprobe && pass "$dt ms"
    check_nosuchkind 4 modprobe && pass "$dt ms"
    check_can_user 5 modprobe && pass "$dt ms"

    # Loads caused by opening a device node and by mounting a filesystem.
    scenario 6 "open /dev/net/tun loads tun, mount -t binfmt_misc loads binfmt_misc via modprobe"
    run 60 trigger hold /dev/net/tun 0
    if [ "$rc" != 0 ]; then
        fail "trigger hold /dev/net/tun: exit $rc: $out"
    elif ! loaded tun; then
        fail "tun not loaded"
    else
        _tun=$dt
        run 60 mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
        if [ "$rc" != 0 ]; then
            fail "mount: exit $rc: $out"
        elif ! loaded binfmt_misc; then
            fail "binfmt_misc not loaded"
        else
            pass "$_tun ms, $dt ms"
            umount /proc/sys/fs/binfmt_misc
        fi
    fi
}

# ---------------------------------------------------------------------------
kerneld_scenarios() {
    for b in kerneld kerneld-modprobe kdstat; do
        command -v "$b" >/dev/null || note "$b is not in the image"
    done
    write_conf modprobe
    _t_start=$(ms)
    start_kerneld /tmp/kerneld.log debug delay=60
    want_delay=60
    want_keep=nokeep

    reg_ok=1
    run 10 kerneld-modprobe --register
    [ "$rc" = 0 ] || { reg_ok=0; note "kerneld-modprobe --register: exit $rc: $out"; }
    helper=$(cat /proc/sys/kernel/modprobe)
    if [ "$helper" != /sbin/kerneld-modprobe ]; then
        reg_ok=0
        note "after --register the helper is '$helper'; setting it by hand"
        echo /sbin/kerneld-modprobe >/proc/sys/kernel/modprobe
    fi

    # 1 ------------------------------------------------------------------
    if check_dummy 1 kerneld; then
        if [ "$reg_ok" != 1 ]; then
            fail "kerneld-modprobe --register did not install itself"
        elif ! klog_has rtnl-link-dummy && ! timeout 5 kdstat --json 2>/dev/null | grep -q '"dummy"'; then
            fail "neither kerneld's log nor kdstat --json mention rtnl-link-dummy/dummy"
        else
            pass "$dt ms"
        fi
    fi

    # 2 ------------------------------------------------------------------
    if check_bridge 2 kerneld; then
        if klog_has rtnl-link-bridge; then
            pass "$dt ms"
        else
            fail "kerneld's log does not mention rtnl-link-bridge"
        fi
    fi

    # 3 ------------------------------------------------------------------
    if check_sctp 3 kerneld; then
        klog_has crypto-crc32c ||
            note "kerneld's log does not mention the nested crypto-crc32c request"
        if klog_has net-pf-2-proto-132; then
            pass "$dt ms"
        else
            fail "kerneld's log does not mention net-pf-2-proto-132"
        fi
    fi

    # 4 ------------------------------------------------------------------
    if check_nosuchkind 4 kerneld; then
        if kdstat_ok; then
            pass "$dt ms"
        else
            fail "kerneld does not answer kdstat afterwards"
        fi
    fi

    # 5 ------------------------------------------------------------------
    scenario_expiry

    # 6 ------------------------------------------------------------------
    if check_can_user 6 kerneld; then
        if klog_has net-pf-29 || klog_has can-proto-1; then
            pass "$dt ms"
        else
            fail "kerneld's log shows neither net-pf-29 nor can-proto-1"
        fi
    fi

    # 7 ------------------------------------------------------------------
    scenario_kdstat

    # 8 ------------------------------------------------------------------
    scenario_restart

    # 9-11: policy ---------------------------------------------------------
    scenario_deny_request
    scenario_audit
    scenario_deny_dependency

    # 12-14: the requester --------------------------------------------------
    scenario_requester
    scenario_deny_users
    scenario_two_users

    # 16-17: why a module is loaded; where it comes from ------------------
    scenario_why
    scenario_unsigned

    # 19: every module load through the BPF LSM (a kerneld of its own) ----
    . /modload-scenarios.sh
    scenario_module_loads

    # The documents after all those requests, loads and denials, checked
    # against the published JSON Schemas by tests/vm/run on the host.
    dump_json

    # 15: last, since the setting holds until reboot ----------------------
    scenario_modules_disabled

    stop_kerneld TERM
    run 10 kerneld-modprobe --unregister
    note "kerneld-modprobe --unregister: exit $rc, helper now '$(cat /proc/sys/kernel/modprobe)'"
}

# dump_json: kdstat --json and kdstat why --json (a module kerneld loaded,
# one pulled in, one loaded by hand, one never loaded), one document a
# line, for tests/vm/run to validate against schema/.
dump_json() {
    echo "VMTEST JSON status $(timeout 10 kdstat --json 2>&1 | tr -d '\n')"
    for _m in bridge llc veth nosuchmodule; do
        echo "VMTEST JSON why $(timeout 10 kdstat why "$_m" --json 2>&1 | tr -d '\n')"
    done
}

# Idle modules loaded by kerneld expire; in-use, hand-loaded and (with keep)
# new ones stay.
scenario_expiry() {
    scenario 5 "idle modules (dummy, bridge, stp, llc) expire with delay=2; in-use, hand-loaded and keep ones stay"
    ip link del d0 2>/dev/null
    ip link del br0 2>/dev/null

    # By hand, not through the kernel helper: kerneld must leave it alone.
    run 30 /sbin/modprobe veth
    { [ "$rc" = 0 ] && loaded veth; } || { fail "modprobe veth by hand: exit $rc: $out"; return; }

    # In use: an open tun device with an interface attached...
    trigger hold /dev/net/tun 300 >/tmp/hold.out 2>&1 &
    hold=$!
    if ! wait_until 30 grep -q ready /tmp/hold.out || ! loaded tun; then
        fail "trigger hold /dev/net/tun: $(cat /tmp/hold.out)"
        kill "$hold" 2>/dev/null
        return
    fi
    # ...and a mounted filesystem (requests fs-binfmt_misc).
    run 30 mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
    if [ "$rc" != 0 ] || ! loaded binfmt_misc; then
        fail "mount -t binfmt_misc: exit $rc: $out"
        kill "$hold" 2>/dev/null
        return
    fi

    run 10 kdstat delay=2
    [ "$rc" = 0 ] && want_delay=2
    if [ "$rc" != 0 ]; then
        fail "kdstat delay=2: exit $rc: $out"
    else
        _t0=$(ms)
        if ! wait_until "$EXPIRE_WAIT" none_loaded dummy bridge stp llc; then
            fail "still loaded after $EXPIRE_WAIT s: $(loaded_of dummy bridge stp llc)"
        else
            _gone=$(since "$_t0")
            # sctp's per-netns control sockets hold references to sctp itself,
            # so it (and what it uses) can never become unused.
            note "expired after $_gone ms; still loaded of sctp and its dependencies: $(loaded_of sctp libcrc32c crc32c_generic crc32c_intel udp_tunnel ip6_udp_tunnel); sctp refcount $(awk '$1 == "sctp" {print $3}' /proc/modules)"
            _lost=$(not_loaded_of tun binfmt_misc veth)
            if [ -n "$_lost" ]; then
                fail "unloaded although in use or loaded by hand: $_lost"
            else
                scenario_keep "$_gone"
            fi
        fi
    fi
    kill "$hold" 2>/dev/null
    wait "$hold" 2>/dev/null
    umount /proc/sys/fs/binfmt_misc 2>/dev/null
}

scenario_keep() {
    run 10 kdstat keep
    [ "$rc" = 0 ] || { fail "kdstat keep: exit $rc: $out"; return; }
    want_keep=keep
    run 60 ip link add d2 type dummy
    { [ "$rc" = 0 ] && loaded dummy; } || { fail "with keep, ip link add d2 type dummy: exit $rc: $out"; return; }
    ip link del d2
    # Four sweeps: twice what expiry would need.
    sleep 8
    loaded dummy || { fail "with keep, dummy expired anyway"; return; }
    pass "idle ones gone after $1 ms"
}

scenario_kdstat() {
    scenario 7 "kdstat shows the daemon, kdstat --json lists the modules it loaded"
    run 10 kdstat
    [ "$rc" = 0 ] || { fail "kdstat: exit $rc: $out"; return; }
    # The settings are the ones scenario 5 managed to make.
    want="Version [^,]+, pid=$KPID, delay=$want_delay, $want_keep, debug"
    first=$(timeout 10 kdstat 2>&1 | head -n 1)
    echo "$first" | grep -E -q "^$want" ||
        { fail "first line '$first' (want $want)"; return; }
    run 10 kdstat --json
    [ "$rc" = 0 ] || { fail "kdstat --json: exit $rc: $out"; return; }
    echo "$out" | grep -q '"loaded_modules"' || { fail "no loaded_modules in: $out"; return; }
    names=$(echo "$out" | grep -o '"name" *: *"[^"]*"' | sed 's/.*: *"//; s/"$//' | tr '\n' ' ')
    [ -n "$names" ] || { fail "loaded_modules is empty: $out"; return; }
    # kerneld loaded these (scenarios 5 and 6) and, with keep, still has them.
    for m in dummy can can_raw; do
        loaded "$m" || continue
        case " $names" in
            *" $m "*) ;;
            *) fail "$m missing from loaded_modules ($names)"; return ;;
        esac
    done
    case " $names" in
        *" veth "*) fail "veth was loaded by hand but is listed ($names)"; return ;;
    esac
    pass "$names"
}

# The shim without a daemon: fallback to modprobe, or fail at once; and a
# request made while the daemon is dead (queue left behind) waits for the
# next one.
scenario_restart() {
    scenario 8 "shim without kerneld: fallback, fail; kerneld SIGKILLed: a new request and one in flight fall back at once (taken back), the next kerneld serves nothing stale, a crash loop changes nothing"
    stop_kerneld TERM
    wait_until 5 no_queue || { fail "queue still there after SIGTERM"; return; }
    # The helper stays the shim whatever the daemon did on exit.
    echo /sbin/kerneld-modprobe >/proc/sys/kernel/modprobe
    for l in $(ip -o link show type dummy 2>/dev/null | sed 's/^[0-9]*: \([^:@]*\).*/\1/'); do
        ip link del "$l"
    done
    /sbin/rmmod dummy 2>/dev/null

    write_conf modprobe
    run 60 ip link add d3 type dummy
    { [ "$rc" = 0 ] && loaded dummy; } ||
        { fail "shim-fallback = modprobe, no daemon: exit $rc: $out"; return; }
    _fb=$dt
    ip link del d3
    /sbin/rmmod dummy || { fail "/sbin/rmmod dummy: $(/sbin/rmmod dummy 2>&1)"; return; }

    write_conf fail
    run 60 ip link add d4 type dummy
    [ "$rc" != 0 ] || { fail "shim-fallback = fail, no daemon: request succeeded"; return; }
    [ "$dt" -lt 3000 ] || { fail "shim-fallback = fail took $dt ms"; return; }
    ! loaded dummy || { fail "shim-fallback = fail, yet dummy got loaded"; return; }
    _ff=$dt
    write_conf modprobe

    # A request after SIGKILL: the queue stays, no live kerneld serves it.
    _t_start=$(ms)
    start_kerneld /tmp/kerneld2.log debug delay=60 ||
        { fail "second kerneld not ready"; return; }
    _k=$(ms)
    kill -KILL "$KPID"
    run 60 ip link add d1 type dummy
    _kill=$(since "$_k")
    wait "$KPID" 2>/dev/null
    KPID=
    queue_exists || { fail "queue gone after SIGKILL"; return; }
    { [ "$rc" = 0 ] && loaded dummy; } ||
        { fail "request after SIGKILL: exit $rc after $dt ms: $out"; return; }
    # Far below the 30 s shim-timeout it waited before; the benchmark
    # measures it against the 1.5 s goal.
    [ "$_kill" -lt 5000 ] || { fail "request after SIGKILL served $_kill ms after the kill"; return; }
    ip link del d1
    /sbin/rmmod dummy || { fail "/sbin/rmmod dummy: $(/sbin/rmmod dummy 2>&1)"; return; }

    # A request in flight: kerneld stopped (alive, so the shim sends and
    # waits), then killed.  The shim takes its request back and falls back.
    _t_start=$(ms)
    start_kerneld /tmp/kerneld3.log debug delay=60 ||
        { fail "third kerneld not ready"; return; }
    kill -STOP "$KPID"
    wait_until 10 all_stopped "$KPID" || { fail "kerneld did not stop"; return; }
    ip link add d2 type dummy >/tmp/d2.out 2>&1 &
    req=$!
    wait_until 10 queue_holds 1 || { fail "the shim sent nothing to the stopped kerneld ($(queue_qnum) messages)"; kill "$req"; return; }
    _k=$(ms)
    kill -KILL "$KPID"
    wait_until 30 dead "$req" || { kill "$req"; fail "in-flight request not done 30 s after SIGKILL"; return; }
    _infl=$(since "$_k")
    wait "$KPID" 2>/dev/null
    KPID=
    wait "$req"
    _rc=$?
    { [ "$_rc" = 0 ] && [ -d /sys/class/net/d2 ]; } ||
        { fail "in-flight request: exit $_rc: $(cat /tmp/d2.out)"; return; }
    [ "$_infl" -lt 5000 ] || { fail "in-flight request done $_infl ms after the kill"; return; }
    [ "$(queue_qnum)" = 0 ] || { fail "$(queue_qnum) messages left after the fallback: not taken back"; return; }
    grep -q "request taken back" "$SYSLOG" ||
        note "the shim's syslog line does not say 'request taken back'"
    ip link del d2

    # The next kerneld takes the queue over: nothing stale to serve, and
    # no reply left behind.
    _t_start=$(ms)
    start_kerneld /tmp/kerneld4.log debug delay=60 ||
        { fail "fourth kerneld not ready"; return; }
    grep -q "took over kerneld's own queue" /tmp/kerneld4.log ||
        { fail "no takeover line in /tmp/kerneld4.log: $(head -c 600 /tmp/kerneld4.log)"; return; }
    sleep 1
    ! grep -q rtnl-link-dummy /tmp/kerneld4.log ||
        { fail "the next kerneld served a stale request: $(grep rtnl-link-dummy /tmp/kerneld4.log)"; return; }
    [ "$(queue_qnum)" = 0 ] || { fail "$(queue_qnum) messages left in the queue after the takeover"; return; }

    crash_loop d5 /tmp/kerneld5.log || return
    note "failover: SIGKILL to served $_kill ms, in flight $_infl ms, crash loop $_loop ms"
    pass "fallback $_fb ms, fail $_ff ms; after SIGKILL $_kill ms, in flight $_infl ms, crash loop $_loop ms"
}

# crash_loop LINK LOG: kill kerneld ($KPID), make every restart fail
# (a config typo, three tries as systemd would), then `ip link add LINK
# type dummy` must load dummy through the fallback within 5 s; $_loop is
# its time.  Then a kerneld started (log LOG) and stopped takes the queue
# over and removes it, leaving none for the next scenarios.  Fails the
# scenario and returns 1 otherwise.
crash_loop() {
    kill -KILL "$KPID"
    wait "$KPID" 2>/dev/null
    KPID=
    echo "delay = sixty" >>/etc/kerneld.conf
    for _i in 1 2 3; do
        run 10 kerneld --foreground
        [ "$rc" != 0 ] || { fail "kerneld started with a config typo"; write_conf modprobe; return 1; }
    done
    unload dummy || { fail "cannot unload dummy"; write_conf modprobe; return 1; }
    run 60 ip link add "$1" type dummy
    _loop=$dt
    write_conf modprobe
    { [ "$rc" = 0 ] && loaded dummy; } ||
        { fail "request during the crash loop: exit $rc after $_loop ms: $out"; return 1; }
    [ "$_loop" -lt 5000 ] || { fail "request during the crash loop took $_loop ms"; return 1; }
    ip link del "$1"
    _t_start=$(ms)
    start_kerneld "$2" debug delay=60 && stop_kerneld TERM
}

# Whether every thread of PID is stopped (SIGSTOP): until then a thread
# blocked in msgrcv is handed new messages directly.
all_stopped() {
    for _s in /proc/"$1"/task/*/stat; do
        grep -q '^[0-9]* ([^)]*) [tT]' "$_s" || return 1
    done
}
queue_holds() { [ "$(queue_qnum)" = "$1" ]; }

# ---------------------------------------------------------------------------
# Policy (9-11) and requesters (12-14). The helper is the shim with
# shim-fallback = modprobe, as shipped: a denial must not be bypassed by the
# fallback, which is only for a missing daemon.

# restart_kerneld LOG CONF-LINE...: a new kerneld on a fresh kerneld.conf.
restart_kerneld() {
    _rlog=$1
    shift
    stop_kerneld TERM
    wait_until 10 no_queue || note "queue still there 10 s after SIGTERM"
    write_conf modprobe
    for _l in "$@"; do echo "$_l"; done >>/etc/kerneld.conf
    # The in-kernel sender's scenarios (shim-scenarios.sh) keep a helper
    # that does not exist.
    echo "${KDVM_HELPER:-/sbin/kerneld-modprobe}" >/proc/sys/kernel/modprobe
    _t_start=$(ms)
    start_kerneld "$_rlog" debug delay=60
}

# 9: a deny rule on the requested name, from kerneld.conf.
scenario_deny_request() {
    scenario 9 "deny request rtnl-link-dummy (kerneld.conf): ip link add fails, dummy stays unloaded"
    unload dummy || { fail "cannot unload dummy first: $(/sbin/rmmod dummy 2>&1)"; return; }
    restart_kerneld /tmp/kerneld4.log "deny request rtnl-link-dummy" ||
        { fail "kerneld with the rule not ready"; return; }
    refused_link_add d5 || return
    _t=$dt
    loaded dummy && { fail "ip link add failed ($out) but dummy got loaded"; return; }
    [ ! -e /sys/class/net/d5 ] || { fail "d5 exists"; return; }
    log_has 'request_module( for [^:]*)?: rtnl-link-dummy: denied by policy: deny request rtnl-link-dummy \(/etc/kerneld.conf:[0-9]+\) -> \[' ||
        { fail "no 'request_module ...: rtnl-link-dummy: denied by policy: deny request rtnl-link-dummy (/etc/kerneld.conf:N) -> [...]' in $KLOG"; return; }
    pass "refused after $_t ms: $out"
}

# 10: audit mode, set live: the same request loads, the deny is logged.
scenario_audit() {
    scenario 10 "audit mode (kdstat mode=audit): ip link add loads dummy, kerneld logs the would-deny"
    run 10 kdstat mode=audit
    [ "$rc" = 0 ] || { fail "kdstat mode=audit: exit $rc: $out"; return; }
    run 60 ip link add d5 type dummy
    { [ "$rc" = 0 ] && loaded dummy && [ -d /sys/class/net/d5 ]; } ||
        { fail "ip link add d5 type dummy: exit $rc after $dt ms: $out (dummy loaded: $(loaded_of dummy))"; return; }
    _t=$dt
    log_has 'request_module( for [^:]*)?: rtnl-link-dummy: .* ms\), allowed by audit mode \(would deny by deny request rtnl-link-dummy ' ||
        { fail "no 'request_module ...: rtnl-link-dummy: ... ms), allowed by audit mode (would deny by deny request rtnl-link-dummy ...' in $KLOG"; return; }
    ip link del d5
    pass "$_t ms"
}

# 11: a module rule on a dependency blocks the module that needs it.
scenario_deny_dependency() {
    scenario 11 "deny module llc (live): ip link add bridge fails, bridge, stp, llc stay unloaded"
    run 10 kdstat mode=enforce
    [ "$rc" = 0 ] || { fail "kdstat mode=enforce: exit $rc: $out"; return; }
    unload bridge stp llc || { fail "cannot unload first: $(loaded_of bridge stp llc)"; return; }
    run 10 kdstat deny module llc
    [ "$rc" = 0 ] || { fail "kdstat deny module llc: exit $rc: $out"; return; }
    run 60 ip link add b0 type bridge
    if [ "$rc" = 0 ]; then
        fail "ip link add b0 type bridge succeeded (loaded: $(loaded_of bridge stp llc))"
        ip link del b0 2>/dev/null
        return
    fi
    _t=$dt
    none_loaded bridge stp llc || { fail "loaded anyway: $(loaded_of bridge stp llc)"; return; }
    log_has 'request_module( for [^:]*)?: rtnl-link-bridge: denied by policy: deny module llc \(live\) \(module llc\) -> \[[^]]*llc[^]]*\]' ||
        { fail "no 'request_module ...: rtnl-link-bridge: denied by policy: deny module llc (live) (module llc) -> [...llc...]' in $KLOG"; return; }
    pass "refused after $_t ms"
}

# 12: the requester of a kernel request, traced: uid, gid, comm, cgroup,
# in the log, kdstat and kdstat --json.
scenario_requester() {
    scenario 12 "uid 1000's AF_CAN socket: kerneld's log, kdstat and kdstat --json name uid 1000 and trigger"
    _tu=$(log_line 'requester tracing unavailable')
    [ -z "$_tu" ] || { fail "$_tu"; return; }
    restart_kerneld /tmp/kerneld5.log || { fail "kerneld not ready"; return; }
    unload can_raw can || { fail "cannot unload first: $(loaded_of can_raw can)"; return; }
    run 60 trigger -u 1000 socket 29 3 1
    { [ "$rc" = 0 ] && loaded can && loaded can_raw; } ||
        { fail "trigger -u 1000 socket 29 3 1: exit $rc: $out (loaded: $(loaded_of can can_raw))"; return; }
    log_has 'request_module for pid [0-9]+ uid 1000 gid 1000 \(trigger\)( cgroup [^:]*)?: net-pf-29: loaded can'
    _l=$(log_line 'request_module for pid [0-9]+ uid 1000 gid 1000 \(trigger\)( cgroup [^:]*)?: net-pf-29: loaded can')
    [ -n "$_l" ] || { fail "no 'request_module for pid P uid 1000 gid 1000 (trigger) ...: net-pf-29: loaded can' in $KLOG"; return; }
    _pid=$(echo "$_l" | sed -E 's/.*request_module for pid ([0-9]+) .*/\1/')
    _k=$(timeout 10 kdstat 2>&1)
    echo "$_k" | grep -E -q "net-pf-29 from pid $_pid uid 1000 gid 1000 \(trigger\)" ||
        { fail "kdstat has no 'net-pf-29 from pid $_pid uid 1000 gid 1000 (trigger)': $(echo "$_k" | tr '\n' '|')"; return; }
    _j=$(json_requesters net-pf-29 | tail -n 1)
    for _f in "uid 1000" "gid 1000" "pid $_pid" 'comm "trigger"'; do
        json_has "$_j" "${_f% *}" "${_f#* }" ||
            { fail "kdstat --json: recent_requests[net-pf-29].requester lacks \"${_f% *}\":${_f#* }: {$_j"; return; }
    done
    _cg=$(echo "$_j" | sed -n -E 's/.*"cgroup":"([^"]*)".*/\1/p')
    if [ -f /sys/fs/cgroup/cgroup.procs ] && [ "$_cg" != /user.slice/user-1000.slice ]; then
        fail "kdstat --json: requester cgroup is '$_cg', not /user.slice/user-1000.slice: {$_j"
        return
    fi
    pass "pid $_pid, cgroup $_cg"
}

# 13: a rule on the requester: users may not autoload CAN, root may.
scenario_deny_users() {
    scenario 13 "deny request net-pf-29* if uid!=0: uid 1000's AF_CAN socket fails, root's loads can"
    unload can_raw can || { fail "cannot unload first: $(loaded_of can_raw can)"; return; }
    run 10 kdstat deny request 'net-pf-29*' if 'uid!=0'
    [ "$rc" = 0 ] || { fail "kdstat deny request net-pf-29* if uid!=0: exit $rc: $out"; return; }
    run 60 trigger -u 1000 socket 29 3 1
    [ "$rc" != 0 ] || { fail "uid 1000's socket was created (loaded: $(loaded_of can can_raw))"; return; }
    _u="$out"
    loaded can && { fail "uid 1000 was refused ($_u) but can got loaded"; return; }
    log_has 'request_module for pid [0-9]+ uid 1000 [^:]*: net-pf-29: denied by policy: deny request net-pf-29\* if uid!=0 \(live\) -> \[' ||
        { fail "no 'request_module for pid P uid 1000 ...: net-pf-29: denied by policy: deny request net-pf-29* if uid!=0 (live) -> [...]' in $KLOG"; return; }
    run 60 trigger socket 29 3 1
    { [ "$rc" = 0 ] && loaded can && loaded can_raw; } ||
        { fail "root's identical socket: exit $rc: $out (loaded: $(loaded_of can can_raw))"; return; }
    log_has 'request_module for pid [0-9]+ uid 0 gid 0 \(trigger\)( cgroup [^:]*)?: net-pf-29: loaded can' ||
        { fail "no 'request_module for pid P uid 0 gid 0 (trigger): net-pf-29: loaded can' in $KLOG"; return; }
    pass "uid 1000: $_u"
}

# attributed PID UID NAME MODULE: the log and kdstat --json give the request
# for NAME (which loaded MODULE) to task PID of UID; else the scenario fails.
attributed() {
    log_has "request_module for pid $1 uid $2 gid $2 \\(trigger\\)( cgroup [^:]*)?: $3: loaded $4" ||
        { fail "no 'request_module for pid $1 uid $2 gid $2 (trigger) ...: $3: loaded $4' in $KLOG"; return 1; }
    _j=$(json_requesters "$3" | tail -n 1)
    { json_has "$_j" pid "$1" && json_has "$_j" uid "$2" && json_has "$_j" comm '"trigger"'; } ||
        { fail "kdstat --json: $3 not attributed to pid $1 uid $2: {$_j"; return 1; }
}

# 14: two users at the same moment, different modules: each request is
# attributed to its own task.
scenario_two_users() {
    scenario 14 "uid 1000 (AF_CAN) and uid 1001 (AF_ALG) at once: each request is attributed to its own pid and uid"
    # Back to the file's policy (no rules): live rules outlast a reload
    # (SIGHUP), so a new kerneld.
    restart_kerneld /tmp/kerneld-users.log || { fail "kerneld not ready"; return; }
    unload can_raw can af_alg || { fail "cannot unload first: $(loaded_of can_raw can af_alg)"; return; }
    rm -f /tmp/go
    mkfifo /tmp/go
    # Held open read-write here, the FIFO never blocks an open; both wait
    # in read until the two lines arrive at once (however late they came).
    exec 3<>/tmp/go
    (
        exec 3>&-
        read -r _ </tmp/go
        exec trigger -u 1000 socket 29 3 1
    ) >/tmp/u1000.out 2>&1 &
    _p1=$!
    (
        exec 3>&-
        read -r _ </tmp/go
        exec trigger -u 1001 socket 38 5 0
    ) >/tmp/u1001.out 2>&1 &
    _p2=$!
    sleep 0.5
    printf 'go\ngo\n' >&3
    exec 3>&-
    wait_until 60 dead "$_p1"
    wait "$_p1"
    _r1=$?
    wait_until 60 dead "$_p2"
    wait "$_p2"
    _r2=$?
    { [ "$_r1" = 0 ] && [ "$_r2" = 0 ]; } ||
        { fail "uid 1000: exit $_r1 $(cat /tmp/u1000.out); uid 1001: exit $_r2 $(cat /tmp/u1001.out)"; return; }
    _miss=$(not_loaded_of can can_raw af_alg)
    [ -z "$_miss" ] || { fail "not loaded: $_miss"; return; }
    attributed "$_p1" 1000 net-pf-29 can &&
        attributed "$_p1" 1000 can-proto-1 can_raw &&
        attributed "$_p2" 1001 net-pf-38 af_alg || return
    pass "pid $_p1 uid 1000 net-pf-29, can-proto-1; pid $_p2 uid 1001 net-pf-38"
}

# why_note MODULE: kdstat why MODULE, each line as a note (for the record).
why_note() {
    timeout 10 kdstat why "$1" 2>&1 | sed 's/^/VMTEST NOTE kdstat why: /'
}

# 16: kdstat why: the chain bridge -> stp -> llc that kerneld loaded for
# ip's request, and veth, loaded by hand in scenario 5; the record keeps
# it across a restart.
scenario_why() {
    scenario 16 "kdstat why: llc pulled in by stp, stp by bridge, for ip's rtnl-link-bridge; veth loaded by hand; kept across a restart"
    ip link del br0 2>/dev/null
    unload bridge stp llc || { fail "cannot unload first: $(loaded_of bridge stp llc)"; return; }
    loaded veth || /sbin/modprobe veth || { fail "cannot load veth by hand"; return; }
    run 60 ip link add br6 type bridge
    { [ "$rc" = 0 ] && [ -z "$(not_loaded_of bridge stp llc)" ]; } ||
        { fail "ip link add br6 type bridge: exit $rc: $out (missing: $(not_loaded_of bridge stp llc))"; return; }
    _req='requested by pid [0-9]+ \(ip, uid 0, gid 0[^)]*\), allowed by default'
    run 10 kdstat why llc
    echo "$out" | grep -E -q "^llc: loaded [0-9-]+ [0-9:]+ for rtnl-link-bridge \(pulled in by stp\) $_req .* now: live, refcount [0-9]+, held by (bridge stp|stp bridge)" ||
        { fail "kdstat why llc: exit $rc: $out"; return; }
    run 10 kdstat why stp
    echo "$out" | grep -E -q "^stp: loaded .* for rtnl-link-bridge \(pulled in by bridge\) $_req" ||
        { fail "kdstat why stp: exit $rc: $out"; return; }
    run 10 kdstat why bridge
    echo "$out" | grep -E -q "^bridge: loaded .* for rtnl-link-bridge $_req; pulled in llc, stp" ||
        { fail "kdstat why bridge: exit $rc: $out"; return; }
    why_note bridge
    why_note llc
    run 10 kdstat why veth
    echo "$out" | grep -E -q "^veth: not loaded by kerneld .*the kernel says: live, refcount [0-9]+" ||
        { fail "kdstat why veth: exit $rc: $out"; return; }
    why_note veth
    run 10 kdstat why llc --json
    echo "$out" | grep -q '"pulled_in_by":"stp"' || { fail "kdstat why llc --json: $out"; return; }
    _lm=$(timeout 5 kdstat --json | sed -n 's/.*"loaded_modules":\(.*\),"next_sweep_seconds".*/\1/p')
    json_has "$_lm" comm '"ip"' ||
        { fail "kdstat --json: no requester with comm \"ip\" in loaded_modules: $_lm"; return; }
    restart_kerneld /tmp/kerneld7.log || { fail "kerneld not ready after restart"; return; }
    run 10 kdstat why llc
    echo "$out" | grep -E -q "^llc: loaded .* \(pulled in by stp\) $_req" ||
        { fail "after a restart, kdstat why llc: exit $rc: $out"; return; }
    ip link del br6
    pass
}

# 17: provenance. The guest's can-bcm is a copy with its signature stripped
# (build-initramfs.sh); can and can-raw are Debian's, signed. With
# `deny module * if !signed if uid!=0`, uid 1000 may autoload can and
# can_raw but not can_bcm, and the log names the rule; root may.
scenario_unsigned() {
    scenario 17 "deny module * if !signed if uid!=0: uid 1000 loads signed can, can_raw; its unsigned can_bcm is refused, rule named; root's loads"
    _s=$(modinfo -F signer can_bcm 2>&1)
    [ -z "$_s" ] || { fail "the guest's can_bcm is signed ($_s): the image is wrong"; return; }
    unload can_bcm can_raw can || { fail "cannot unload first: $(loaded_of can_bcm can_raw can)"; return; }
    restart_kerneld /tmp/kerneld8.log 'deny module * if !signed if uid!=0' ||
        { fail "kerneld with the rule not ready"; return; }
    run 60 trigger -u 1000 socket 29 3 1
    { [ "$rc" = 0 ] && loaded can && loaded can_raw; } ||
        { fail "uid 1000's CAN_RAW socket: exit $rc: $out (loaded: $(loaded_of can can_raw)) $(log_line 'denied by policy: ')"; return; }
    run 60 trigger -u 1000 socket 29 2 2
    [ "$rc" != 0 ] || { fail "uid 1000's CAN_BCM socket was created (loaded: $(loaded_of can_bcm))"; return; }
    _u=$out
    loaded can_bcm && { fail "uid 1000 was refused ($_u) but can_bcm got loaded"; return; }
    log_has 'request_module for pid [0-9]+ uid 1000 [^:]*: can-proto-2: denied by policy: deny module \* if !signed uid!=0 \(/etc/kerneld.conf:[0-9]+\) \(module can_bcm, unsigned, in-tree\) -> \[can_bcm\] \(' ||
        { fail "no 'request_module for pid P uid 1000 ...: can-proto-2: denied by policy: deny module * if !signed uid!=0 (/etc/kerneld.conf:N) (module can_bcm, unsigned, in-tree) -> [can_bcm]' in $KLOG: $(log_line can-proto-2)"; return; }
    note "$(log_line 'can-proto-2: denied by policy: ')"
    run 60 trigger socket 29 2 2
    { [ "$rc" = 0 ] && loaded can_bcm; } ||
        { fail "root's CAN_BCM socket: exit $rc: $out (loaded: $(loaded_of can_bcm))"; return; }
    timeout 5 kdstat policy | grep -E -q '^ +1 hits  deny module \* if !signed uid!=0' ||
        { fail "kdstat policy does not count 1 hit: $(timeout 5 kdstat policy | tr '\n' '|')"; return; }
    why_note can_raw
    why_note can_bcm
    pass "uid 1000: $_u"
}

# 15: kernel.modules_disabled=1 (it cannot be undone until reboot, so this
# runs last): the kernel still asks, kerneld refuses at once and says why.
scenario_modules_disabled() {
    scenario 15 "kernel.modules_disabled=1: ip link add fails, kerneld answers with the reason, dummy stays out"
    unload dummy || { fail "cannot unload dummy first: $(/sbin/rmmod dummy 2>&1)"; return; }
    echo 1 >/proc/sys/kernel/modules_disabled ||
        { fail "cannot set kernel.modules_disabled"; return; }
    refused_link_add d6 || return
    loaded dummy && { fail "dummy got loaded"; return; }
    wait_until 10 log_has 'rtnl-link-dummy: could not insert dummy: not permitted \(kernel\.modules_disabled=1' ||
        { fail "no 'rtnl-link-dummy: could not insert dummy: not permitted (kernel.modules_disabled=1' in $KLOG: $(log_line rtnl-link-dummy)"; return; }
    pass "refused after $dt ms"
}

# ---------------------------------------------------------------------------
case "$mode" in
    baseline) baseline ;;
    kerneld) kerneld_scenarios ;;
    # scenario 19 alone (tests/vm/run --script with `sh /scenarios.sh modload`)
    modload)
        . /modload-scenarios.sh
        scenario_module_loads
        ;;
    shim)
        . /shim-scenarios.sh
        shim_scenarios
        ;;
    *) echo "VMTEST FAIL 0 unknown mode: $mode" ;;
esac

if [ "$failed" != 0 ] || [ "${KDVM_VERBOSE:-0}" = 1 ]; then
    dump_logs
fi
