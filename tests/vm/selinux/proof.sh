# shellcheck shell=dash
# The SELinux proof, run as the guest's /script.sh (tests/vm/selinux/run.sh
# puts the policy's base64 in front): SELinux enforcing, a requester in
# req_t, a domain with no permission on any message queue, makes the
# kernel ask for a module.  The kernel's upcall must be served by kerneld
# with no denial: the shim's kernel thread waits on the queue, not the
# requester.  One "SELINUX PASS|FAIL" line per check.
. /guest-lib.sh
ok=0
bad=0
pass() { echo "SELINUX PASS $*"; ok=$((ok + 1)); }
fail() { echo "SELINUX FAIL $*"; bad=$((bad + 1)); }
since() { echo $(($(ms) - $1)); }
cnt() { cat "/sys/kernel/kerneld_shim/$1"; }
# Run a command in req_t.
kdstat_ready() { timeout 5 kdstat >/dev/null 2>&1; }
confined() { sh -c 'printf user_u:base_r:req_t >/proc/self/attr/exec && exec "$@"' sh "$@"; }

mount -t selinuxfs selinuxfs /sys/fs/selinux || fail "mount selinuxfs"
echo "$POLICY_B64" | base64 -d >/tmp/policy.bin
cat /tmp/policy.bin >/sys/fs/selinux/load || fail "policy load"
echo 1 >/sys/fs/selinux/enforce
[ "$(cat /sys/fs/selinux/enforce)" = 1 ] && pass "SELinux enforcing, policy loaded ($(wc -c </tmp/policy.bin) bytes)" ||
    fail "not enforcing"

/sbin/insmod "/lib/modules/$(uname -r)/extra/kerneld_shim.ko" || fail "insmod kerneld_shim"
echo /nonexistent/modprobe >/proc/sys/kernel/modprobe
printf 'shim-fallback = modprobe\nshim-modprobe = /sbin/modprobe\nshim-timeout = 30\n' >/etc/kerneld.conf
kerneld --foreground debug </dev/null >/tmp/kerneld.log 2>&1 &
wait_until 10 kdstat_ready
timeout 5 kdstat >/dev/null 2>&1 && pass "kerneld (in $(cat /proc/$!/attr/current)) answers kdstat" || fail "kerneld not ready"

ctx=$(confined cat /proc/self/attr/current | tr -d '\0')
[ "$ctx" = user_u:base_r:req_t ] && pass "a confined process runs in $ctx" || fail "confined context is '$ctx'"

dmesg -c >/dev/null
if confined timeout 10 kdstat >/tmp/kdstat.out 2>&1; then
    fail "kdstat in req_t reached kerneld's queue: req_t has msgq permission"
else
    dmesg | grep -q 'avc:  denied .* tclass=msgq' && pass "req_t cannot use kerneld's queue itself (kdstat fails, AVC: $(dmesg | grep -o 'avc:  denied  { [a-z_ ]* } for  pid=[0-9]* comm="[a-z]*"' | head -n 1))" ||
        fail "kdstat in req_t failed without a msgq denial: $(head -c 200 /tmp/kdstat.out)"
fi

dmesg -c >/dev/null
a=$(cnt answered) t=$(cnt timed_out) u=$(cnt fallback_unread)
t0=$(ms)
confined ip link add d0 type dummy
rc=$?
dt=$(since "$t0")
{ [ "$rc" = 0 ] && loaded dummy; } && pass "ip link add type dummy in req_t: dummy loaded via kerneld in $dt ms" ||
    fail "ip link add in req_t: exit $rc after $dt ms, dummy $(loaded dummy && echo loaded || echo not loaded)"
grep -q 'rtnl-link-dummy' /tmp/kerneld.log && pass "kerneld served rtnl-link-dummy: $(grep 'request_module for.*rtnl-link-dummy' /tmp/kerneld.log | head -n 1 | sed 's/.*request_module for/request_module for/')" ||
    fail "kerneld's log does not mention rtnl-link-dummy"
[ "$(cnt answered)" -gt "$a" ] && [ "$(cnt timed_out)" = "$t" ] && [ "$(cnt fallback_unread)" = "$u" ] &&
    pass "kerneld_shim: answered $a -> $(cnt answered), timed_out $t, fallback_unread $u unchanged" ||
    fail "kerneld_shim counters: answered $a -> $(cnt answered), timed_out $t -> $(cnt timed_out), fallback_unread $u -> $(cnt fallback_unread)"
if dmesg | grep -q 'avc:  denied'; then
    fail "AVC denials during the request: $(dmesg | grep 'avc:  denied' | head -n 2 | tr '\n' '|')"
else
    pass "no AVC denial during the request"
fi
[ "$(cnt fallback_suspend)" -ge 0 ] 2>/dev/null || true
echo "SELINUX RESULT $ok passed, $bad failed"
[ "$bad" = 0 ]
