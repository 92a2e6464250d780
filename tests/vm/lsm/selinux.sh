# shellcheck shell=dash
# The SELinux proof (tests/vm/run --kernel selinux), the guest's
# /script.sh on our kernel booted with lsm=selinux; tests/vm/run puts the
# policy (make-policy.sh) in front as POLICY_B64.  A requester in req_t, a
# domain with no permission on any message queue, makes the kernel ask
# for a module: kerneld must serve it with no denial, because the shim's
# kernel thread waits on the queue, not the requester.
. /guest-lib.sh
failed=0
cnt() { cat "/sys/kernel/kerneld_shim/$1"; }
kdstat_ready() { timeout 5 kdstat >/dev/null 2>&1; }
# confined CMD...: run CMD in req_t.
confined() { sh -c 'printf user_u:base_r:req_t >/proc/self/attr/exec && exec "$@"' sh "$@"; }
qnum() { awk 'NR > 1 { n += $5 } END { print n + 0 }' /proc/sysvipc/msg; }

scenario 1 "SELinux enforces a policy in which req_t may use no message queue"
run1() {
    mount -t selinuxfs selinuxfs /sys/fs/selinux || { fail "mount selinuxfs"; return; }
    echo "$POLICY_B64" | base64 -d >/tmp/policy.bin
    cat /tmp/policy.bin >/sys/fs/selinux/load || { fail "policy load"; return; }
    echo 1 >/sys/fs/selinux/enforce
    [ "$(cat /sys/fs/selinux/enforce)" = 1 ] || { fail "not enforcing"; return; }
    /sbin/insmod "/lib/modules/$(uname -r)/extra/kerneld_shim.ko" || { fail "insmod kerneld_shim"; return; }
    echo /nonexistent/modprobe >/proc/sys/kernel/modprobe
    printf 'shim-fallback = modprobe\nshim-modprobe = /sbin/modprobe\nshim-timeout = 30\n' >/etc/kerneld.conf
    kerneld --foreground debug </dev/null >/tmp/kerneld.log 2>&1 &
    wait_until 10 kdstat_ready || { fail "kerneld does not answer kdstat: $(tail -n 3 /tmp/kerneld.log)"; return; }
    ctx=$(confined cat /proc/self/attr/current | tr -d '\0')
    [ "$ctx" = user_u:base_r:req_t ] || { fail "a confined process runs in '$ctx'"; return; }
    dmesg -c >/dev/null
    if confined timeout 10 kdstat >/tmp/kdstat.out 2>&1; then
        fail "kdstat in req_t reached kerneld's queue: req_t has msgq permission"
        return
    fi
    dmesg | grep -q 'avc:  denied .* tclass=msgq' ||
        { fail "kdstat in req_t failed without a msgq denial: $(head -c 200 /tmp/kdstat.out)"; return; }
    pass "policy of $(wc -c </tmp/policy.bin) bytes; kdstat in $ctx is refused: $(dmesg | grep -o 'avc:  denied  { [a-z_ ]* } for  pid=[0-9]* comm="[a-z]*"' | head -n 1)"
}
run1

scenario 2 "ip link add type dummy in req_t: dummy loaded through kerneld, no AVC denial, nothing left in the queue"
run2() {
    dmesg -c >/dev/null
    a=$(cnt answered) t=$(cnt timed_out) u=$(cnt fallback_unread)
    t0=$(ms)
    confined ip link add d0 type dummy
    rc=$? dt=$(since "$t0")
    { [ "$rc" = 0 ] && loaded dummy; } ||
        { fail "exit $rc after $dt ms, dummy $(loaded dummy && echo loaded || echo not loaded)"; return; }
    grep -q 'rtnl-link-dummy' /tmp/kerneld.log || { fail "kerneld's log does not mention rtnl-link-dummy"; return; }
    [ "$(cnt answered)" -gt "$a" ] && [ "$(cnt timed_out)" = "$t" ] && [ "$(cnt fallback_unread)" = "$u" ] ||
        { fail "kerneld_shim counters: answered $a -> $(cnt answered), timed_out $t -> $(cnt timed_out), fallback_unread $u -> $(cnt fallback_unread)"; return; }
    # A denial known to come (req_t creating a queue) marks the end of what
    # the request may have caused: the kernel's audit thread prints in order.
    confined trigger queue 0x6b647365 0600 >/dev/null 2>&1
    wait_until 5 sh -c "dmesg | grep -q 'avc:  denied  { create } .* tclass=msgq'" ||
        { fail "the marker's AVC denial never came"; return; }
    ! dmesg | grep 'avc:  denied' | grep -qv '{ create } .* tclass=msgq' ||
        { fail "AVC denials during the request: $(dmesg | grep 'avc:  denied' | head -n 2 | tr '\n' '|')"; return; }
    [ "$(qnum)" = 0 ] || { fail "$(qnum) messages left in the queue"; return; }
    pass "in $dt ms; answered $a -> $(cnt answered)"
}
run2

scenario 3 "kerneld stopped: req_t's request takes the usermode helper at once"
run3() {
    kill "$(pidof kerneld)" 2>/dev/null
    wait_until 10 sh -c '! pidof kerneld >/dev/null' || { fail "kerneld did not stop"; return; }
    echo /sbin/modprobe >/proc/sys/kernel/modprobe
    dmesg -c >/dev/null
    t0=$(ms)
    confined ip link add v0 type veth peer name v1
    rc=$? dt=$(since "$t0")
    { [ "$rc" = 0 ] && loaded veth; } ||
        { fail "exit $rc after $dt ms, veth $(loaded veth && echo loaded || echo not loaded)"; return; }
    pass "veth loaded by /sbin/modprobe in $dt ms; fallback_no_queue $(cnt fallback_no_queue)"
}
run3

[ "$failed" = 0 ]
