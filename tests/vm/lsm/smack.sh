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
denials() { dmesg | grep 'lsm=SMACK.*action=denied'; }

scenario 1 "Smack enforces: uid 1000 labelled req cannot open a kd file that its mode allows"
run1() {
    mount -t smackfs smackfs /sys/fs/smackfs || { fail "mount smackfs"; return; }
    # req may use the floor (_); nothing gives it kd.
    echo "req _ rx" >/sys/fs/smackfs/load2 || { fail "load2 rule"; return; }
    labelled kd sh -c 'echo secret >/tmp/kd.file && chmod 666 /tmp/kd.file'
    /sbin/insmod "/lib/modules/$(uname -r)/extra/kerneld_shim.ko" || { fail "insmod kerneld_shim"; return; }
    echo /nonexistent/modprobe >/proc/sys/kernel/modprobe
    printf 'shim-fallback = modprobe\nshim-modprobe = /sbin/modprobe\nshim-timeout = 30\n' >/etc/kerneld.conf
    labelled kd kerneld --foreground debug </dev/null >/tmp/kerneld.log 2>&1 &
    wait_until 10 kdstat_ready || { fail "kerneld does not answer kdstat: $(tail -n 3 /tmp/kerneld.log)"; return; }
    kl=$(tr -d '\0' <"/proc/$(pidof kerneld)/attr/current")
    [ "$kl" = kd ] || { fail "kerneld is labelled '$kl'"; return; }
    dmesg -c >/dev/null
    if out=$(labelled req trigger -u 1000 hold /tmp/kd.file 0 2>&1); then
        fail "uid 1000 labelled req opened /tmp/kd.file: $out"
        return
    fi
    denials | grep -q 'object="kd"' || { fail "the open failed without a Smack denial: $out"; return; }
    pass "kerneld labelled $kl; req's open refused: $(denials | grep -o 'subject="[a-z]*" object="[a-z]*" requested=[a-z]*' | head -n 1)"
}
run1

scenario 2 "uid 1000 labelled req opens an AF_CAN socket: can and can_raw loaded through kerneld at once, no Smack denial"
run2() {
    dmesg -c >/dev/null
    a=$(cnt answered) t=$(cnt timed_out) u=$(cnt fallback_unread)
    t0=$(ms)
    out=$(labelled req trigger -u 1000 socket 29 3 1 2>&1)
    rc=$? dt=$(since "$t0")
    { [ "$rc" = 0 ] && loaded can_raw; } ||
        { fail "exit $rc after $dt ms ($out), can_raw $(loaded can_raw && echo loaded || echo not loaded)"; return; }
    grep -q 'net-pf-29' /tmp/kerneld.log || { fail "kerneld's log does not mention net-pf-29"; return; }
    [ "$(cnt answered)" -ge $((a + 2)) ] && [ "$(cnt timed_out)" = "$t" ] && [ "$(cnt fallback_unread)" = "$u" ] ||
        { fail "kerneld_shim counters: answered $a -> $(cnt answered), timed_out $t -> $(cnt timed_out), fallback_unread $u -> $(cnt fallback_unread)"; return; }
    [ -z "$(denials)" ] || { fail "Smack denials during the request: $(denials | head -n 2 | tr '\n' '|')"; return; }
    [ "$(qnum)" = 0 ] || { fail "$(qnum) messages left in the queue"; return; }
    pass "in $dt ms; answered $a -> $(cnt answered)"
}
run2

[ "$failed" = 0 ]
