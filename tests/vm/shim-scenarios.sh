#!/bin/sh
# shellcheck shell=dash disable=SC2154,SC2034
# Scenarios of the in-kernel sender (kernel/, the kerneld_shim module), on
# our patched 6.12 kernel with 2 CPUs.  Sourced by scenarios.sh (mode shim),
# whose helpers they use; same output contract (one VMTEST PASS/FAIL line
# per scenario).
#
# In the kerneld scenarios /proc/sys/kernel/modprobe names a path that does
# not exist: whatever loads was asked for without executing anything.  The
# shim's own scenarios (21-28, 30) set it to /sbin/modprobe where a fallback is
# expected, or where one that must not happen would show.

NO_HELPER=/nonexistent/modprobe
SHIM_PARAMS=/sys/module/kerneld_shim/parameters
SHIM_COUNTERS=/sys/kernel/kerneld_shim
SHIM_KO=/lib/modules/$(uname -r)/extra/kerneld_shim.ko

cnt() { cat "$SHIM_COUNTERS/$1" 2>/dev/null || echo 0; }
helper() { echo "$1" >/proc/sys/kernel/modprobe; }

shim_scenarios() {
    for b in kerneld kdstat; do
        command -v "$b" >/dev/null || note "$b is not in the image"
    done
    note "$(nproc) CPUs, clocksource $(cat /sys/devices/system/clocksource/clocksource0/current_clocksource)"
    # Before insmod: the handler slot's suite ran at boot with the slot free.
    shim_kunit
    if ! /sbin/insmod "$SHIM_KO"; then
        note "insmod $SHIM_KO failed: $(dmesg | tail -n 5 | tr '\n' '|')"
    fi
    helper "$NO_HELPER"
    # restart_kerneld (scenarios 9-14) sets the helper to this.
    KDVM_HELPER=$NO_HELPER
    write_conf modprobe
    _t_start=$(ms)
    start_kerneld /tmp/kerneld.log debug delay=60
    want_delay=60
    want_keep=nokeep

    # 1-4 ----------------------------------------------------------------
    _a=$(cnt answered)
    if check_dummy 1 "the in-kernel sender"; then
        if [ "$(cat /proc/sys/kernel/modprobe)" != "$NO_HELPER" ]; then
            fail "the helper is $(cat /proc/sys/kernel/modprobe), not $NO_HELPER"
        elif [ "$(cnt answered)" -le "$_a" ]; then
            fail "kerneld_shim's answered counter did not move ($(cnt answered))"
        elif ! klog_has rtnl-link-dummy; then
            fail "kerneld's log does not mention rtnl-link-dummy"
        else
            pass "$dt ms"
        fi
    fi
    if check_bridge 2 "the in-kernel sender"; then
        klog_has rtnl-link-bridge && pass "$dt ms" ||
            fail "kerneld's log does not mention rtnl-link-bridge"
    fi
    if check_sctp 3 "the in-kernel sender"; then
        if ! klog_has net-pf-2-proto-132; then
            fail "kerneld's log does not mention net-pf-2-proto-132"
        elif has_libcrc32c && ! klog_has crypto-crc32c; then
            fail "kerneld's log does not mention the nested crypto-crc32c"
        else
            pass "$dt ms"
        fi
    fi
    if check_nosuchkind 4 "the in-kernel sender"; then
        kdstat_ok && pass "$dt ms" || fail "kerneld does not answer kdstat afterwards"
    fi

    # 5, 7 ----------------------------------------------------------------
    scenario_expiry
    scenario_kdstat

    # 9-11, 12 (full pid), 13, 14 -------------------------------------------
    scenario_deny_request
    scenario_audit
    scenario_deny_dependency
    shim_requester
    scenario_deny_users
    scenario_two_users

    # 21-28, 30: the shim itself -----------------------------------------
    shim_no_kerneld
    shim_killed_kerneld
    shim_squatted
    shim_nowait
    shim_slow_load
    shim_died_serving
    shim_unload_burst
    shim_kdstat
    shim_suspend

    dump_json

    # 15: last, it holds until reboot -------------------------------------
    helper "$NO_HELPER"
    scenario_modules_disabled
    stop_kerneld TERM
}

# 29: the KUnit suites of the patch series (CONFIG_KMOD_HANDLER_KUNIT_TEST,
# CONFIG_SYSVIPC_MSG_KERNEL_KUNIT_TEST) ran at boot and passed.  KUnit logs
# at KERN_INFO, under the console's "quiet": the kernel log has them.
shim_kunit() {
    scenario 29 "the series' KUnit suites passed at boot"
    _k=$(dmesg 2>/dev/null)
    _bad=
    for _s in kmod_handler sysvipc_msg_kernel; do
        _l=$(echo "$_k" | grep -E "(not )?ok [0-9]+ $_s( |\$)" | tail -n 1)
        case "$_l" in
            "") _bad="$_bad $_s: no result in the kernel log;" ;;
            *"not ok"*) _bad="$_bad $_s failed;" ;;
            *"# SKIP"*) _bad="$_bad $_s skipped;" ;;
        esac
    done
    if [ -z "$_bad" ]; then
        pass
    else
        fail "$_bad"
        echo "$_k" | grep -E "# Subtest|(not )?ok [0-9]+ |Expected" |
            sed 's/^/VMTEST LOG kunit: /' | tail -n 40
    fi
}

# 12: the requester as the kernel module names it, with a pid above 65535
# (the header's 16 bits could not carry it) and no tracepoint.
shim_requester() {
    scenario 12 "uid 1000's AF_CAN socket, pid above 65535: kerneld's log, kdstat and --json name the full pid, uid, gid, trigger and cgroup"
    restart_kerneld /tmp/kerneld5.log || { fail "kerneld not ready"; return; }
    unload can_raw can || { fail "cannot unload first: $(loaded_of can_raw can)"; return; }
    echo 4194304 >/proc/sys/kernel/pid_max
    run 600 trigger pid-above 70000
    [ "$rc" = 0 ] || { fail "trigger pid-above 70000: exit $rc: $out"; return; }
    run 60 trigger -u 1000 socket 29 3 1
    { [ "$rc" = 0 ] && loaded can && loaded can_raw; } ||
        { fail "trigger -u 1000 socket 29 3 1: exit $rc: $out"; return; }
    log_has 'request_module for pid [0-9]+ uid 1000 gid 1000 \(trigger\) cgroup /user.slice/user-1000.slice: net-pf-29: loaded can'
    _l=$(log_line 'request_module for pid [0-9]+ uid 1000 gid 1000 \(trigger\) cgroup /user.slice/user-1000.slice: net-pf-29: loaded can')
    [ -n "$_l" ] || { fail "no 'request_module for pid P uid 1000 gid 1000 (trigger) cgroup /user.slice/user-1000.slice: net-pf-29: loaded can' in $KLOG: $(log_line net-pf-29)"; return; }
    _pid=$(echo "$_l" | sed -E 's/.*request_module for pid ([0-9]+) .*/\1/')
    [ "$_pid" -gt 65535 ] || { fail "pid $_pid is not above 65535"; return; }
    _k=$(timeout 10 kdstat 2>&1)
    echo "$_k" | grep -E -q "net-pf-29 from pid $_pid uid 1000 gid 1000 \(trigger\)" ||
        { fail "kdstat has no 'net-pf-29 from pid $_pid uid 1000 gid 1000 (trigger)': $(echo "$_k" | tr '\n' '|')"; return; }
    _j=$(json_requesters net-pf-29 | tail -n 1)
    for _f in "uid 1000" "gid 1000" "pid $_pid" 'comm "trigger"' 'cgroup "/user.slice/user-1000.slice"'; do
        json_has "$_j" "${_f% *}" "${_f#* }" ||
            { fail "kdstat --json: requester lacks \"${_f% *}\":${_f#* }: {$_j"; return; }
    done
    pass "pid $_pid"
}

# 21: no kerneld: the usermode helper runs; with fallback=N the request fails.
shim_no_kerneld() {
    scenario 21 "no kerneld: request_module() runs the usermode helper; with fallback=N it fails and nothing loads"
    stop_kerneld TERM
    wait_until 10 no_queue || { fail "queue still there after SIGTERM"; return; }
    helper /sbin/modprobe
    unload dummy || { fail "cannot unload dummy first"; return; }
    _n=$(cnt fallback_no_queue)
    run 60 ip link add d7 type dummy
    { [ "$rc" = 0 ] && loaded dummy; } || { fail "with fallback=Y: exit $rc: $out"; return; }
    _fb=$dt
    [ "$(cnt fallback_no_queue)" -gt "$_n" ] || { fail "fallback_no_queue did not move"; return; }
    ip link del d7
    unload dummy || { fail "cannot unload dummy"; return; }
    echo N >"$SHIM_PARAMS/fallback"
    run 60 ip link add d8 type dummy
    echo Y >"$SHIM_PARAMS/fallback"
    [ "$rc" != 0 ] || { fail "with fallback=N the link was made"; ip link del d8; return; }
    ! loaded dummy || { fail "with fallback=N dummy got loaded"; return; }
    pass "helper path $_fb ms, fallback=N $dt ms"
}

# 22: kerneld SIGKILLed, its queue left behind: the request is taken back
# after read_wait_ms and the helper runs; nothing stale stays queued, the
# next kerneld serves nothing twice, and a crash loop changes nothing.
shim_killed_kerneld() {
    scenario 22 "kerneld SIGKILLed, queue left: the request is taken back after about 1 s, the helper loads dummy; the next kerneld serves nothing stale; a crash loop changes nothing"
    _t_start=$(ms)
    start_kerneld /tmp/kerneld6.log debug delay=60 || { fail "kerneld not ready"; return; }
    helper /sbin/modprobe
    unload dummy || { fail "cannot unload dummy first"; return; }
    _n=$(cnt fallback_unread)
    _k=$(ms)
    kill -KILL "$KPID"
    run 60 ip link add d9 type dummy
    _took=$(since "$_k")
    wait "$KPID" 2>/dev/null
    KPID=
    queue_exists || { fail "queue gone after SIGKILL"; return; }
    { [ "$rc" = 0 ] && loaded dummy; } || { fail "exit $rc after $dt ms: $out"; return; }
    [ "$(cnt fallback_unread)" -gt "$_n" ] || { fail "fallback_unread did not move"; return; }
    [ "$_took" -lt 5000 ] || { fail "served $_took ms after the kill"; return; }
    _q=$(queue_qnum)
    [ "$_q" = 0 ] || { fail "$_q messages left in the queue"; return; }
    ip link del d9
    # The next kerneld takes the queue over and finds nothing to serve twice.
    _t_start=$(ms)
    start_kerneld /tmp/kerneld7.log debug delay=60 || { fail "next kerneld not ready"; return; }
    sleep 1
    ! log_now rtnl-link-dummy || { fail "the next kerneld served the stale request: $(log_line rtnl-link-dummy)"; return; }
    [ "$(queue_qnum)" = 0 ] || { fail "$(queue_qnum) messages left after the takeover"; return; }
    crash_loop d9 /tmp/kerneld7b.log || return
    note "in-kernel failover: SIGKILL to served $_took ms, crash loop $_loop ms"
    pass "after SIGKILL $_took ms, crash loop $_loop ms"
}

# 23: a queue someone else made at the key is no kerneld: nothing is sent
# to it, the helper runs (dummy loads); with fallback=N the request fails.
shim_squatted() {
    scenario 23 "a squatted queue (uid 1000's 0600, root's 0666): nothing queued, handled as without kerneld: the helper loads dummy; with fallback=N it fails"
    stop_kerneld TERM
    wait_until 10 no_queue || { fail "queue still there"; return; }
    helper /sbin/modprobe
    _n=$(cnt untrusted_queue)
    for _who in "-u 1000 queue $QUEUE_KEY 600" "queue $QUEUE_KEY 666"; do
        unload dummy || { fail "cannot unload dummy first"; return; }
        # shellcheck disable=SC2086
        _id=$(trigger $_who) || { fail "trigger $_who: $_id"; return; }
        run 60 ip link add d10 type dummy
        _q=$(queue_qnum)
        _r1=$rc
        ip link del d10 2>/dev/null
        unload dummy || { trigger rmqueue "$_id"; fail "cannot unload dummy"; return; }
        echo N >"$SHIM_PARAMS/fallback"
        run 60 ip link add d11 type dummy
        echo Y >"$SHIM_PARAMS/fallback"
        _q2=$(queue_qnum)
        trigger rmqueue "$_id"
        [ "$_r1" = 0 ] || { fail "trigger $_who: fallback=Y: the link was not made"; return; }
        [ "$rc" != 0 ] || { ip link del d11; fail "trigger $_who: fallback=N: the link was made"; return; }
        [ "$_q" = 0 ] && [ "$_q2" = 0 ] || { fail "trigger $_who: $_q/$_q2 messages handed to the squatter"; return; }
    done
    [ "$(cnt untrusted_queue)" -ge $((_n + 4)) ] || { fail "untrusted_queue $(cnt untrusted_queue), was $_n"; return; }
    pass
}

# 24: request_module_nowait() (nfnetlink's bind) sends id 0 and returns.
shim_nowait() {
    scenario 24 "request_module_nowait() (nfnetlink bind): sent with id 0, bind returns, kerneld gets nfnetlink-subsys-1"
    helper "$NO_HELPER"
    _t_start=$(ms)
    start_kerneld /tmp/kerneld8.log debug delay=60 || { fail "kerneld not ready"; return; }
    _n=$(cnt nowait)
    run 30 trigger nlbind 1
    [ "$rc" = 0 ] || { fail "trigger nlbind 1: exit $rc: $out"; return; }
    [ "$(cnt nowait)" -gt "$_n" ] || { fail "nowait counter did not move"; return; }
    wait_until 10 log_has 'received request_module .*id 0 .*nfnetlink-subsys-1' ||
        { fail "no 'received request_module ... id 0 ... nfnetlink-subsys-1' in $KLOG: $(log_line nfnetlink)"; return; }
    pass "$dt ms"
}

# 25: a load slower than read_wait_ms: kerneld read it, so the shim waits
# for the answer; served once, no fallback.
shim_slow_load() {
    scenario 25 "a load that takes 2 s (longer than read_wait_ms): the shim waits for kerneld's answer, served once, no fallback"
    helper "$NO_HELPER"
    unload dummy || { fail "cannot unload dummy first"; return; }
    mkdir -p /etc/modprobe.d
    rm -f /tmp/slow.count
    echo 'install dummy echo x >>/tmp/slow.count; sleep 2; /sbin/modprobe --ignore-install dummy' >/etc/modprobe.d/slow.conf
    restart_kerneld /tmp/kerneld9.log || { fail "kerneld not ready"; rm -f /etc/modprobe.d/slow.conf; return; }
    _u=$(cnt fallback_unread)
    _t=$(cnt timed_out)
    run 60 ip link add d11 type dummy
    rm -f /etc/modprobe.d/slow.conf
    { [ "$rc" = 0 ] && loaded dummy; } || { fail "exit $rc after $dt ms: $out"; return; }
    ip link del d11
    _c=$(wc -l </tmp/slow.count)
    [ "$_c" = 1 ] || { fail "the install command ran $_c times"; return; }
    [ "$(cnt fallback_unread)" = "$_u" ] || { fail "it fell back (fallback_unread $(cnt fallback_unread))"; return; }
    [ "$(cnt timed_out)" = "$_t" ] || { fail "it timed out"; return; }
    restart_kerneld /tmp/kerneld10.log || note "kerneld not ready after the slow load"
    pass "$dt ms"
}

# 30: kerneld SIGKILLed while it serves a 5 s load it read, once within
# the first wait (read_wait_ms) and once after it.  The shim watches the
# kerneld registered in /sys/kernel/kerneld_shim/server, so the requester
# falls back to the helper at once rather than after reply_wait_ms (60 s);
# the next kerneld registers and serves.
shim_died_serving() {
    scenario 30 "kerneld SIGKILLed during a 5 s load it read (at once, and 1.5 s in): the requester returns at once (under 5 s of the kill, not reply_wait_ms), the helper loads dummy (fallback_died), nothing times out; the restarted kerneld registers (kdstat), serves the next request, and registers again with a reloaded module"
    mkdir -p /etc/modprobe.d
    _took=
    for _after in 0 1.5; do
        died_round "$_after" || { rm -f /etc/modprobe.d/slow.conf; return; }
        _took="$_took ${_tk} ms (killed ${_after} s in)"
    done
    # The next kerneld takes the queue over, registers, and serves.
    helper "$NO_HELPER"
    _t_start=$(ms)
    start_kerneld /tmp/kerneld13.log debug delay=60 || { fail "next kerneld not ready"; return; }
    _s=$(cat "$SHIM_COUNTERS/server" 2>&1)
    [ "$_s" = "$KPID" ] || { fail "after the restart server is '$_s', not $KPID"; return; }
    run 10 kdstat
    case "$out" in
        *"kerneld pid $KPID registered"*) ;;
        *) fail "kdstat does not show kerneld pid $KPID registered: $out"; return ;;
    esac
    unload dummy || { fail "cannot unload dummy"; return; }
    _a=$(cnt answered)
    _u=$(cnt fallback_unread)
    _died=$(cnt fallback_died)
    run 60 ip link add d13 type dummy
    { [ "$rc" = 0 ] && loaded dummy; } || { fail "next request: exit $rc after $dt ms: $out"; return; }
    ip link del d13
    [ "$(cnt answered)" -gt "$_a" ] || { fail "the next request was not answered by kerneld"; return; }
    [ "$(cnt fallback_unread)" = "$_u" ] || { fail "the next request fell back (fallback_unread)"; return; }
    [ "$(cnt fallback_died)" = "$_died" ] || { fail "fallback_died moved on the next request"; return; }
    [ "$(queue_qnum)" = 0 ] || { fail "$(queue_qnum) messages left in the queue"; return; }
    log_has 'request_module .*rtnl-link-dummy' || { fail "the next kerneld does not log rtnl-link-dummy"; return; }
    # A module loaded after kerneld started: kerneld registers within 5 s.
    /sbin/rmmod kerneld_shim || { fail "rmmod kerneld_shim failed"; return; }
    /sbin/insmod "$SHIM_KO" || { fail "insmod $SHIM_KO failed"; return; }
    wait_until 10 registered "$KPID" || { fail "kerneld $KPID did not register with the reloaded module (server $(cat "$SHIM_COUNTERS/server"))"; return; }
    rm -f /tmp/died.*
    note "kerneld died serving a request: the requester returned$_took after SIGKILL"
    pass "returned$_took after SIGKILL; next request $dt ms"
}

registered() { [ "$(cat "$SHIM_COUNTERS/server" 2>/dev/null)" = "$1" ]; }

# died_round SECONDS: a kerneld registers, reads a 5 s load, is SIGKILLed
# SECONDS after its install command started; the requester must get dummy
# from the helper through fallback_died.  Leaves _tk (ms from the kill).
died_round() {
    helper "$NO_HELPER"
    unload dummy || { fail "cannot unload dummy first"; return 1; }
    rm -f /tmp/died.*
    # The install command outlives kerneld: died.done says it finished.
    echo 'install dummy echo x >>/tmp/died.count; sleep 5; /sbin/modprobe --ignore-install dummy; echo x >/tmp/died.done' >/etc/modprobe.d/slow.conf
    # Not restart_kerneld: a SIGKILLed kerneld's queue stays, on purpose.
    stop_kerneld TERM
    write_conf modprobe
    _t_start=$(ms)
    start_kerneld "/tmp/kerneld12-$1.log" debug delay=60 || { fail "kerneld not ready"; return 1; }
    _s=$(cat "$SHIM_COUNTERS/server" 2>&1)
    [ "$_s" = "$KPID" ] || { fail "server is '$_s', not kerneld's pid $KPID"; return 1; }
    log_has 'registered with the in-kernel sender' || { fail "kerneld did not log its registration"; return 1; }
    _died=$(cnt fallback_died)
    _t=$(cnt timed_out)
    (ip link add d12 type dummy >/tmp/died.out 2>&1; echo "$?" >/tmp/died.rc) &
    _req=$!
    # kerneld read the request: its install command runs.
    wait_until 10 test -s /tmp/died.count || { fail "kerneld did not start the install command"; return 1; }
    # From here the helper loads dummy as it is, at once.
    rm -f /etc/modprobe.d/slow.conf
    helper /sbin/modprobe
    sleep "$1"
    _k=$(ms)
    kill -KILL "$KPID"
    wait_until 90 dead "$_req"
    _tk=$(since "$_k")
    wait "$KPID" 2>/dev/null
    KPID=
    wait "$_req" 2>/dev/null
    { [ "$(cat /tmp/died.rc 2>/dev/null)" = 0 ] && loaded dummy; } ||
        { fail "killed $1 s in: ip link add: exit $(cat /tmp/died.rc 2>/dev/null) $_tk ms after the kill: $(cat /tmp/died.out 2>/dev/null)"; return 1; }
    [ "$(cnt fallback_died)" = $((_died + 1)) ] || { fail "killed $1 s in: fallback_died $(cnt fallback_died), was $_died"; return 1; }
    [ "$(cnt timed_out)" = "$_t" ] || { fail "killed $1 s in: it timed out ($_tk ms after the kill)"; return 1; }
    [ "$_tk" -lt 5000 ] || { fail "killed $1 s in: returned $_tk ms after the kill"; return 1; }
    ip link del d12
    # The orphaned install command ends before anything else is asked.
    wait_until 15 test -e /tmp/died.done || note "the install command had not ended 15 s later"
    _c=$(wc -l </tmp/died.count)
    [ "$_c" = 1 ] || { fail "killed $1 s in: the install command ran $_c times"; return 1; }
}

# 26: rmmod kerneld_shim while requests run on both CPUs: each request is
# answered (by kerneld or the helper), the module goes, the kernel is fine.
shim_unload_burst() {
    scenario 26 "rmmod kerneld_shim during a burst of requests on 2 CPUs: it unloads, every request returns, the kernel stays healthy"
    helper /sbin/modprobe
    _pids=
    for _i in 1 2 3 4; do
        (
            _j=0
            while [ "$_j" -lt 25 ]; do
                ip link add "b$_i$_j" type "nosuchkind$_i$_j" 2>/dev/null
                _j=$((_j + 1))
            done
            echo 'done' >"/tmp/burst.$_i"
        ) &
        _pids="$_pids $!"
    done
    _unloads=0
    _tries=0
    while [ "$_unloads" -lt 3 ] && [ "$_tries" -lt 400 ]; do
        _tries=$((_tries + 1))
        if /sbin/rmmod kerneld_shim 2>/dev/null; then
            _unloads=$((_unloads + 1))
            /sbin/insmod "$SHIM_KO" || { fail "insmod after rmmod failed"; break; }
        fi
        sleep 0.05
    done
    for _p in $_pids; do
        wait_until 120 dead "$_p" || { fail "a request loop is stuck"; return; }
    done
    _done=$(cat /tmp/burst.* 2>/dev/null | grep -c 'done')
    rm -f /tmp/burst.*
    [ "$_done" = 4 ] || { fail "$_done of 4 loops finished"; return; }
    [ "$_unloads" -ge 1 ] || { fail "rmmod never succeeded in $_tries tries"; return; }
    kernel_healthy || { fail "kernel complained: $(dmesg | grep -E 'BUG:|Oops|WARNING:|blocked for' | head -n 3 | tr '\n' ' ')"; return; }
    loaded kerneld_shim || /sbin/insmod "$SHIM_KO"
    helper "$NO_HELPER"
    unload dummy
    _d=$d
    check_dummy "$n" "the reloaded kerneld_shim" || return
    d=$_d
    pass "$_unloads unloads in $_tries tries; then the reloaded module loads dummy"
}

# 27: kdstat shows the in-kernel sender and its counters.
shim_kdstat() {
    scenario 27 "kdstat and kdstat --json show kerneld_shim, its settings and counters"
    run 10 kdstat
    [ "$rc" = 0 ] || { fail "kdstat: exit $rc: $out"; return; }
    case "$out" in
        *"Requests arrive through the kernel module kerneld_shim"*"key 0x6b65726e, read_wait_ms 1000, reply_wait_ms 60000, fallback Y"*"requests "*) ;;
        *) fail "kdstat: $out"; return ;;
    esac
    run 10 kdstat --json
    case "$out" in
        *'"kernel_shim":{'*'"requests":'*) ;;
        *) fail "kdstat --json has no kernel_shim: $out"; return ;;
    esac
    pass
}

# 28: suspend with requests in flight (/sys/power/pm_test freezer, then
# devices): one request kerneld has read and is still serving (a 2 s
# install command), a loop of requests around it.  Suspend waits for the
# one in flight instead of freezing kerneld under it, the freeze succeeds,
# every request returns, none waits out reply_wait_ms or falls back.  With
# an 8 s load in flight the suspend is refused after 5 s, before freezing.
shim_suspend() {
    scenario 28 "suspend (pm_test freezer, then devices) with requests in flight, one of them read by kerneld: each suspend succeeds, every request returns, none times out; with an 8 s load in flight the suspend is refused before freezing"
    [ -w /sys/power/pm_test ] || { fail "no /sys/power/pm_test (CONFIG_PM_DEBUG)"; return; }
    helper "$NO_HELPER"
    mkdir -p /etc/modprobe.d
    echo 'install dummy sleep 2; /sbin/modprobe --ignore-install dummy' >/etc/modprobe.d/slow.conf
    _t=$(cnt timed_out)
    _a=$(cnt answered)
    _res=
    for _lvl in freezer devices; do
        restart_kerneld "/tmp/kerneld11-$_lvl.log" || { fail "kerneld not ready"; rm -f /etc/modprobe.d/slow.conf; return; }
        unload dummy || { fail "cannot unload dummy first"; rm -f /etc/modprobe.d/slow.conf; return; }
        # Counted from here: a starting kerneld's own first request (its
        # audit socket) stays unread while it makes it, and falls back.
        _u=$(cnt fallback_unread)
        rm -f /tmp/susp.stop /tmp/susp.done
        (
            while [ ! -e /tmp/susp.stop ]; do
                ip link add s0 type nosuchkind28 2>/dev/null
            done
            echo finished >/tmp/susp.done
        ) &
        _loop=$!
        (ip link add s1 type dummy; echo "$?" >/tmp/susp.dummy) &
        _slow=$!
        # kerneld has read the dummy request and runs its 2 s install.
        wait_until 10 log_now 'received request_module .*rtnl-link-dummy' || note "kerneld did not log rtnl-link-dummy before the suspend"
        echo "$_lvl" >/sys/power/pm_test
        _k=$(ms)
        run 90 sh -c 'echo mem >/sys/power/state'
        _took=$(since "$_k")
        echo none >/sys/power/pm_test
        touch /tmp/susp.stop
        wait_until 60 dead "$_loop" || { fail "pm_test $_lvl: the request loop is stuck"; return; }
        wait_until 60 dead "$_slow" || { fail "pm_test $_lvl: the dummy request is stuck"; return; }
        [ "$rc" = 0 ] || { fail "pm_test $_lvl: echo mem >/sys/power/state: exit $rc after $_took ms: $out; $(dmesg | grep -E -i 'freez|suspend|kerneld_shim' | tail -n 4 | tr '\n' '|')"; rm -f /etc/modprobe.d/slow.conf; return; }
        { [ "$(cat /tmp/susp.dummy)" = 0 ] && loaded dummy; } || { fail "pm_test $_lvl: the dummy request failed ($(cat /tmp/susp.dummy))"; rm -f /etc/modprobe.d/slow.conf; return; }
        ip link del s1
        [ "$(cnt fallback_unread)" = "$_u" ] || { fail "pm_test $_lvl: fallback_unread moved from $_u to $(cnt fallback_unread)"; rm -f /etc/modprobe.d/slow.conf; return; }
        _res="$_res $_lvl ${_took} ms"
    done
    # A load longer than suspend waits for requests in flight (5 s): the
    # suspend is refused at once, before any task is frozen, and the
    # request is still served.
    echo 'install dummy sleep 8; /sbin/modprobe --ignore-install dummy' >/etc/modprobe.d/slow.conf
    restart_kerneld /tmp/kerneld11-refused.log || { fail "kerneld not ready"; rm -f /etc/modprobe.d/slow.conf; return; }
    unload dummy || { fail "cannot unload dummy first"; rm -f /etc/modprobe.d/slow.conf; return; }
    rm -f /tmp/susp.dummy
    (ip link add s1 type dummy; echo "$?" >/tmp/susp.dummy) &
    _slow=$!
    wait_until 10 log_now 'received request_module .*rtnl-link-dummy' || note "kerneld did not log rtnl-link-dummy before the suspend"
    echo freezer >/sys/power/pm_test
    _k=$(ms)
    run 90 sh -c 'echo mem >/sys/power/state'
    _took=$(since "$_k")
    echo none >/sys/power/pm_test
    wait_until 60 dead "$_slow" || { fail "the 8 s dummy request is stuck"; rm -f /etc/modprobe.d/slow.conf; return; }
    rm -f /etc/modprobe.d/slow.conf
    [ "$rc" != 0 ] || { fail "a suspend with an 8 s load in flight succeeded"; return; }
    dmesg | grep -q 'kerneld_shim: 1 request(s) still waiting for kerneld' || { fail "no 'still waiting' warning: $(dmesg | tail -n 3 | tr '\n' '|')"; return; }
    { [ "$(cat /tmp/susp.dummy)" = 0 ] && loaded dummy; } || { fail "the 8 s dummy request failed ($(cat /tmp/susp.dummy))"; return; }
    ip link del s1
    _res="$_res; refused after $_took ms with an 8 s load in flight"
    rm -f /tmp/susp.*
    [ "$(cnt timed_out)" = "$_t" ] || { fail "timed_out moved to $(cnt timed_out)"; return; }
    [ "$(cnt answered)" -gt "$_a" ] || { fail "answered did not move"; return; }
    ! dmesg | grep -q -E 'Freezing of tasks failed|Freezing user space processes failed' || { fail "$(dmesg | grep -E 'Freezing' | tail -n 2 | tr '\n' ' ')"; return; }
    kernel_healthy || { fail "kernel complained: $(dmesg | grep -E 'BUG:|Oops|WARNING:|blocked for' | head -n 3 | tr '\n' ' ')"; return; }
    note "suspend with requests in flight:$_res; $(($(cnt answered) - _a)) answered, $(cnt fallback_suspend) sent to the helper while a suspend started"
    pass "echo mem took$_res"
}
