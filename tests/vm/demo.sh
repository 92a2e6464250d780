#!/bin/sh
# shellcheck shell=dash
# The narrated demonstration, run in the guest by /init instead of the
# scenarios (tests/vm/run --demo, which scripts/demo.sh calls). It prints
# readable text, not VMTEST lines; the exit status says whether everything
# happened as told (each surprise is printed with "!!").
#
# With kdvm_shell=1 on the kernel command line (KDVM_SHELL=1 from /init),
# kerneld keeps running and the hints for the interactive shell come last.

SYSLOG=/var/log/messages
problems=0
# Modules this demonstration makes the kernel ask for.
MODS="dummy bridge stp llc can can_raw af_alg"

say() { printf '%s\n' "$@"; }
step() { printf '\n== %s\n' "$*"; }
oops() {
    printf '!! %s\n' "$*"
    problems=$((problems + 1))
}
# ms, loaded, wait_until, alive, dead
. /guest-lib.sh
loaded_of() {
    _r=
    for _m in "$@"; do loaded "$_m" && _r="$_r $_m"; done
    echo "${_r# }"
}

# show 'COMMAND': print it as typed, run it, indent its output, and tell how
# long it took and its exit status if not 0. $rc keeps the status.
show() {
    printf '$ %s\n' "$1"
    _t0=$(ms)
    eval "$1" >/tmp/demo.out 2>&1
    rc=$?
    _dt=$(($(ms) - _t0))
    sed 's/^/    /' /tmp/demo.out
    if [ "$rc" != 0 ]; then
        printf '    [exit %s after %s ms]\n' "$rc" "$_dt"
    elif [ -n "${2:-}" ]; then
        printf '    [%s ms]\n' "$_dt"
    fi
}

# kerneld's lines in syslog since the last call, without the syslog prefix.
_mark=0
mark() { _mark=$(wc -l <"$SYSLOG"); }
newlog() {
    sleep 0.3 # syslogd writes what it receives a moment later
    say "kerneld's log (syslog):"
    tail -n "+$((_mark + 1))" "$SYSLOG" |
        sed -n -E 's/^.* [a-z]+\.[a-z]+ (kerneld(-modprobe)?)\[[0-9]+\]: /    \1: /p' |
        grep -v -e ': control: ' || say "    (nothing)"
    mark
}

helper_is_shim() { [ "$(cat /proc/sys/kernel/modprobe)" = /sbin/kerneld-modprobe ]; }
helper_not_shim() { ! helper_is_shim; }
# The requester object of the last recent request for NAME (kdstat --json).
json_requester() {
    kdstat --json | tr '{' '\n' |
        awk -v n="\"name\":\"$1\",\"requester\":" 'p { l = $0; p = 0 } index($0, n) { p = 1 } END { print "{" l }' |
        sed 's/}.*/}/'
}

# On an interactive console SeaBIOS left the terminal's line wrapping off.
[ "${KDVM_SHELL:-0}" != 1 ] || printf '\033[?7h'
cat <<EOF

kerneld demonstration
=====================
Linux $(uname -r): Debian's own kernel, unmodified, booted under QEMU
with a small initramfs (busybox, kmod, kerneld and its tools, some of
Debian's modules). Nothing is loaded yet:
EOF
show "cat /proc/modules"
[ -s /tmp/demo.out ] || say "    (empty)"

# ---------------------------------------------------------------------------
step "1. Start kerneld"
say "kerneld creates the SysV message queue of 1995 (key 0x6b65726e). With" \
    "--register it puts its shim, kerneld-modprobe, in /proc/sys/kernel/modprobe:" \
    "the program the kernel runs for every request_module(). delay=3 makes it" \
    "look for idle modules every 3 seconds (the classic default is 60)."
show "cat /proc/sys/kernel/modprobe"
mark
show "kerneld --register delay=3"
wait_until 10 helper_is_shim || oops "the helper is still $(cat /proc/sys/kernel/modprobe)"
show "cat /proc/sys/kernel/modprobe"
wait_until 5 kdstat >/dev/null 2>&1 || oops "kdstat gets no answer"
newlog

# ---------------------------------------------------------------------------
step "2. A link type nobody loaded: ip link add d0 type dummy"
say "No driver for link type \"dummy\" is loaded, so the kernel calls" \
    "request_module(\"rtnl-link-dummy\"). That runs the shim, which passes the" \
    "name to kerneld over the queue and waits. kerneld finds the module behind" \
    "the alias with libkmod, loads it and answers; then the kernel makes d0."
show "ip link add d0 type dummy" time
loaded dummy || oops "dummy is not loaded"
show "ip link show d0"
newlog
say "kdstat asks kerneld what it is doing (the 1995 tool, with more lines):"
show "kdstat"

# ---------------------------------------------------------------------------
step "3. One request, three modules: a bridge"
say "bridge needs stp, which needs llc. kerneld loads them in dependency order," \
    "as modprobe would, and notes all three as loaded by it."
show "ip link add br0 type bridge" time
[ "$(loaded_of bridge stp llc)" = "bridge stp llc" ] ||
    oops "loaded of bridge, stp, llc: $(loaded_of bridge stp llc)"
newlog
show "/sbin/lsmod | grep -E '^(Module|bridge|stp|llc) '"

# ---------------------------------------------------------------------------
step "4. Who asked? A user opens a CAN socket"
say "The kernel runs its helper as root from a kernel thread: the shim cannot" \
    "know who caused the request. kerneld follows the kernel's tracepoint" \
    "module:module_request, which fires in the requesting task, and reads that" \
    "task's uid, gid, command and cgroup while it waits for its module." \
    "trigger is a small test program: -u 1000 joins the cgroup" \
    "/user.slice/user-1000.slice and becomes uid 1000, then it calls" \
    "socket(AF_CAN, SOCK_RAW, CAN_RAW): the kernel asks for net-pf-29 (can)," \
    "then for can-proto-1 (can_raw)."
show "trigger -u 1000 socket 29 3 1" time
[ "$(loaded_of can can_raw)" = "can can_raw" ] || oops "loaded of can, can_raw: $(loaded_of can can_raw)"
newlog
show "kdstat | grep -A 3 '^recent requests:'"
say "kdstat --json has the same for programs, in recent_requests[].requester:"
json_requester net-pf-29 | sed 's/^/    /'

# ---------------------------------------------------------------------------
step "5. Policy: a live rule refuses users, not root"
say "Rules match the requested name (request) or any module that would be" \
    "loaded (module), and may look at the requester. This one, given live," \
    "lasts until kerneld restarts (a reload, SIGHUP, keeps it):" \
    "users may no longer make the kernel load socket families."
show "kdstat deny request 'net-pf-*' if 'uid!=0'"
mark
say "" "uid 1000 asks for an AF_ALG socket (the kernel's crypto API, net-pf-38):"
show "trigger -u 1000 socket 38 5 0"
[ "$rc" != 0 ] || oops "uid 1000's AF_ALG socket was created"
loaded af_alg && oops "af_alg got loaded for uid 1000"
newlog
say "" "root's identical request is allowed:"
show "trigger socket 38 5 0" time
loaded af_alg || oops "af_alg is not loaded for root"
newlog

# ---------------------------------------------------------------------------
step "6. Idle modules expire"
say "Delete the links (the sockets closed when trigger exited). Nothing uses" \
    "these modules now. Every 3 s kerneld sweeps: a module it loaded that is" \
    "unused at two sweeps in a row is unloaded, with the dependencies only it" \
    "held (the second chance of Linux 2.2's autoclean). Modules kerneld did not" \
    "load are never touched."
show "ip link del d0; ip link del br0"
show "cat /proc/modules"
_t0=$(ms)
# shellcheck disable=SC2086 # MODS is a list
_last=$(loaded_of $MODS)
say "watching /proc/modules (every 0.5 s):"
while [ -n "$_last" ] && [ $(($(ms) - _t0)) -lt 30000 ]; do
    sleep 0.5
    # shellcheck disable=SC2086
    _now=$(loaded_of $MODS)
    if [ "$_now" != "$_last" ]; then
        _s=$(($(ms) - _t0))
        printf '    after %d.%d s: %s\n' $((_s / 1000)) $((_s % 1000 / 100)) \
            "${_now:+still loaded: }${_now:-all unloaded}"
        _last=$_now
    fi
done
[ -z "$_last" ] || oops "still loaded after 30 s: $_last"
newlog
show "cat /proc/modules"
[ -s /tmp/demo.out ] || say "    (empty)"
show "kdstat | grep -E '^(loaded by kerneld|requests:)'"

# ---------------------------------------------------------------------------
if [ "${KDVM_SHELL:-0}" != 1 ]; then
    step "7. kerneld stops"
    say "On SIGTERM kerneld answers what is in flight, removes its queue and" \
        "puts back the helper it replaced."
    # shellcheck disable=SC2016 # shown as typed, expanded by show's eval
    show 'kill $(cat /run/kerneld/kerneld.pid)'
    wait_until 10 helper_not_shim ||
        oops "the helper is still the shim"
    show "cat /proc/sys/kernel/modprobe"
    newlog
fi

echo
if [ "$problems" = 0 ]; then
    say "Everything happened as described."
else
    say "!! $problems thing(s) did not happen as described (see the !! lines)."
fi

if [ "${KDVM_SHELL:-0}" = 1 ]; then
    step "Your turn"
    cat <<'EOF'
kerneld keeps running (delay=3; the live rule is still there). Try:
    kdstat                          what kerneld is doing
    kdstat --watch 1                the same every second (Ctrl-C stops)
    ip link add d1 type dummy       a request; then ip link del d1
    trigger -u 1000 socket 29 3 1   uid 1000's CAN socket (now refused)
    kdstat policy                   the rules and how often they decided
    kdstat mode=audit               log what would be denied, load anyway
    lsmod                           modules (kmod's lsmod)
    tail /var/log/messages          kerneld's log
    poweroff -f                     leave
EOF
fi
[ "$problems" = 0 ]
