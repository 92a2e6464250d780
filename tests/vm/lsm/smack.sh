# shellcheck shell=dash
# The Smack proof (tests/vm/run --kernel smack), the guest's /script.sh on
# our kernel booted with lsm=smack.  kerneld runs labelled kd, so its queue
# is kd's; a requester labelled req, as uid 1000 (no CAP_MAC_OVERRIDE),
# has no rule to kd.  Its request_module() must be served by kerneld at
# once, with no Smack denial: the shim's kernel thread, not the requester,
# talks to the queue.
. /guest-lib.sh
failed=0
cnt() { cat "/sys/kernel/kerneld_shim/$1"; }
kdstat_ready() { timeout 5 kdstat >/dev/null 2>&1; }
# labelled LABEL CMD...: run CMD with the Smack label LABEL.
labelled() { sh -c 'printf %s "$0" >/proc/self/attr/current && exec "$@"' "$@"; }
qnum() { awk 'NR > 1 { n += $5 } END { print n + 0 }' /proc/sysvipc/msg; }
# The kernel's audit thread prints denials a little later, in order.
denials() { dmesg | grep 'lsm=SMACK.*action=denied'; }
denied() { denials | grep -q "$1"; }
# A queue of kd's that its mode opens to everybody (not kerneld's).
KD_KEY=0x6b64736d
# req opening that queue is a denial known to come: the marker after a
# request (its line names the queue's id, not kerneld's queue).
marker() {
    dmesg -c >/dev/null
    labelled req trigger -u 1000 msgget "$KD_KEY" >/dev/null 2>&1
}

scenario 1 "Smack enforces: uid 1000 labelled req cannot open a queue of kd's that its mode opens to all"
run1() {
    mount -t smackfs smackfs /sys/fs/smackfs || { fail "mount smackfs"; return; }
    # req may read and run the floor's (_) files; nothing gives it kd.
    echo "req _ rx" >/sys/fs/smackfs/load2 || { fail "load2 rule"; return; }
    kd_id=$(labelled kd trigger queue "$KD_KEY" 0666 2>&1) || { fail "a queue of kd's: $kd_id"; return; }
    MARKER="object=\"kd\".* ipc_key=$kd_id *\$"
    out=$(labelled kd trigger -u 1000 msgget "$KD_KEY" 2>&1) ||
        { fail "uid 1000 labelled kd cannot open kd's queue: $out"; return; }
    dmesg -c >/dev/null
    if out=$(labelled req trigger -u 1000 msgget "$KD_KEY" 2>&1); then
        fail "uid 1000 labelled req opened kd's queue: $out"
        return
    fi
    wait_until 5 denied "$MARKER" || { fail "the msgget failed without a Smack denial: $out"; return; }
    pass "$out: $(denials | grep -o 'fn=[a-z_]* action=denied subject="[a-z]*" object="[a-z]*"' | head -n 1)"
}
run1

scenario 2 "uid 1000 labelled req opens an AF_CAN socket: can and can_raw loaded through kerneld labelled kd at once, no Smack denial"
run2() {
    /sbin/insmod "/lib/modules/$(uname -r)/extra/kerneld_shim.ko" || { fail "insmod kerneld_shim"; return; }
    echo /nonexistent/modprobe >/proc/sys/kernel/modprobe
    printf 'shim-fallback = modprobe\nshim-modprobe = /sbin/modprobe\nshim-timeout = 30\n' >/etc/kerneld.conf
    labelled kd kerneld --foreground debug </dev/null >/tmp/kerneld.log 2>&1 &
    wait_until 10 kdstat_ready || { fail "kerneld does not answer kdstat: $(tail -n 3 /tmp/kerneld.log)"; return; }
    kl=$(tr -d '\0' <"/proc/$(pidof kerneld)/attr/current")
    [ "$kl" = kd ] || { fail "kerneld is labelled '$kl'"; return; }
    dmesg -c >/dev/null
    a=$(cnt answered) t=$(cnt timed_out) u=$(cnt fallback_unread)
    t0=$(ms)
    out=$(labelled req trigger -u 1000 socket 29 3 1 2>&1)
    rc=$? dt=$(since "$t0")
    { [ "$rc" = 0 ] && loaded can_raw; } ||
        { fail "exit $rc after $dt ms ($out), can_raw $(loaded can_raw && echo loaded || echo not loaded)"; return; }
    # Every denial the request caused is printed before the marker's.
    dmesg >/tmp/request.dmesg
    marker
    wait_until 5 denied "$MARKER" || { fail "Smack's denial of the marker never came"; return; }
    grep -q 'net-pf-29' /tmp/kerneld.log || { fail "kerneld's log does not mention net-pf-29"; return; }
    [ "$(cnt answered)" -ge $((a + 2)) ] && [ "$(cnt timed_out)" = "$t" ] && [ "$(cnt fallback_unread)" = "$u" ] ||
        { fail "kerneld_shim counters: answered $a -> $(cnt answered), timed_out $t -> $(cnt timed_out), fallback_unread $u -> $(cnt fallback_unread)"; return; }
    other=$({ cat /tmp/request.dmesg; dmesg; } | grep 'lsm=SMACK.*action=denied' | grep -v "$MARKER")
    [ -z "$other" ] || { fail "Smack denials during the request: $(echo "$other" | head -n 2 | tr '\n' '|')"; return; }
    [ "$(qnum)" = 0 ] || { fail "$(qnum) messages left in kerneld's queue"; return; }
    pass "kerneld labelled $kl, in $dt ms; answered $a -> $(cnt answered)"
}
run2

[ "$failed" = 0 ]
