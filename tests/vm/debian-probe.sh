#!/bin/bash
# The scenarios of the `debian` series (tests/vm/README.md), run in a
# Debian 12 guest booted with systemd as PID 1 and the kerneld package
# installed (build-debian-image.sh), by kdvm-probe.service once the boot is
# over.  Prints VMTEST lines on the serial console, which tests/vm/run
# parses, then powers off.  Truth is from /proc/modules, the journal,
# systemd's view of the units and /proc/sys/kernel/modprobe.

# wait_until, loaded, alive, dead (ms needs trigger, which this guest lacks)
# shellcheck source=guest-lib.sh
. /usr/local/lib/kdvm-guest-lib.sh
ms() { echo $(($(cut -d' ' -f1 /proc/uptime | tr -d .) * 10)); }

shim=/usr/sbin/kerneld-modprobe
boot_helper=/sbin/modprobe # the kernel's CONFIG_MODPROBE_PATH
kdvm=/root/kdvm
failed=0

pass() { echo "VMTEST PASS $n $d ($1)"; }
fail() {
    echo "VMTEST FAIL $n $d: $1"
    failed=1
    journalctl -b -u kerneld --no-pager -n 40 -o short-monotonic 2>&1 | sed 's/^/VMTEST LOG journal: /'
}
note() { echo "VMTEST NOTE $n $1"; }
answers() { timeout 5 kdstat >/dev/null 2>&1; }
active() { [ "$(systemctl is-active kerneld)" = active ]; }
mainpid() { systemctl show -P MainPID kerneld; }
# Kerneld's journal of this boot, messages only.
kjournal() { journalctl -b -u kerneld --no-pager -o cat; }
mono() { systemctl show -P "$2" "$1"; }

echo "VMTEST BOOT debian $(uname -r), systemd $(systemctl --version | sed -n '1s/^systemd \([0-9]*\).*/\1/p'), kerneld $(dpkg-query -W -f='${Version}' kerneld)"
state=$(systemctl is-system-running --wait)
echo "VMTEST NOTE boot $state after $(cut -d' ' -f1 /proc/uptime) s"
if [ "$state" != running ]; then
    systemctl --failed --no-pager --plain | sed 's/^/VMTEST LOG failed: /'
fi

# ---------------------------------------------------------------------------
s1() {
    n=1
    d="early boot: kerneld ready before udev's coldplug and modules-load, the deny rule holds for the first request of the boot"
    active || { fail "kerneld.service is $(systemctl is-active kerneld)"; return; }
    local ready udev mload
    ready=$(mono kerneld ActiveEnterTimestampMonotonic)
    udev=$(mono systemd-udev-trigger ExecMainStartTimestampMonotonic)
    mload=$(mono systemd-modules-load ExecMainStartTimestampMonotonic)
    [ "${ready:-0}" -gt 0 ] && [ "${udev:-0}" -gt 0 ] && [ "${mload:-0}" -gt 0 ] ||
        { fail "timestamps missing: kerneld ready $ready, udev-trigger $udev, modules-load $mload"; return; }
    [ "$ready" -le "$udev" ] || { fail "kerneld ready at $ready us, after udev-trigger started ($udev us)"; return; }
    [ "$ready" -le "$mload" ] || { fail "kerneld ready at $ready us, after modules-load started ($mload us)"; return; }
    [ "$(cat /proc/sys/kernel/modprobe)" = $shim ] || { fail "the helper is $(cat /proc/sys/kernel/modprobe)"; return; }
    local rc
    rc=$(cat /run/kdvm-early.rc 2>/dev/null)
    [ -n "$rc" ] || { fail "kdvm-early.service did not run"; return; }
    [ "$rc" != 0 ] || { fail "ip link add early0 type dummy succeeded in early boot"; return; }
    ! loaded dummy || { fail "dummy is loaded"; return; }
    kjournal | grep -E -q 'request_module( for [^:]*)?: rtnl-link-dummy: denied by policy: deny request rtnl-link-dummy \(/etc/kerneld.conf:[0-9]+\)' ||
        { fail "no denial of rtnl-link-dummy naming /etc/kerneld.conf in the journal"; return; }
    # Every request since kerneld started went through it: the shim never
    # had to fall back.
    ! journalctl -b --no-pager -o cat | grep -q "running $boot_helper" ||
        { fail "the shim fell back to $boot_helper during the boot: $(journalctl -b -o cat | grep "running $boot_helper" | head -n 1)"; return; }
    pass "ready at $((ready / 1000)) ms, udev-trigger at $((udev / 1000)) ms, modules-load at $((mload / 1000)) ms; early0 refused (ip exit $rc)"
}

s2() {
    n=2
    d="systemctl reload kerneld on minbase (no procps): kerneld reloads"
    local pid out
    pid=$(mainpid)
    out=$(systemctl reload kerneld 2>&1) || { fail "systemctl reload: $out; $(systemctl status kerneld --no-pager 2>&1 | tail -n 5)"; return; }
    wait_until 20 sh -c 'journalctl -b -u kerneld -o cat | grep -q "SIGHUP: reload done"' ||
        { fail "no 'SIGHUP: reload done' in the journal 20 s after the reload"; return; }
    [ "$(mainpid)" = "$pid" ] || { fail "main pid changed from $pid to $(mainpid)"; return; }
    active || { fail "kerneld is $(systemctl is-active kerneld) after the reload"; return; }
    pass "pid $pid reloaded: $(kjournal | grep 'SIGHUP: reload done' | tail -n 1)"
}

s3() {
    n=3
    d="systemctl kill -s KILL kerneld: the shim falls back while it is dead, systemd restarts it, the successor takes the queue over and serves"
    local pid new
    pid=$(mainpid)
    # A longer RestartSec for this test only, so that the request below is
    # made while kerneld is dead.
    mkdir -p /run/systemd/system/kerneld.service.d
    printf '[Service]\nRestartSec=8s\n' >/run/systemd/system/kerneld.service.d/kdvm.conf
    systemctl daemon-reload
    systemctl kill -s KILL kerneld
    wait_until 10 dead "$pid" || { fail "kerneld (pid $pid) still alive after SIGKILL"; return; }
    # systemd learns of the death a moment after the process is gone.
    wait_until 10 sh -c '[ "$(systemctl show -P SubState kerneld)" = auto-restart ]'
    local sub
    sub=$(systemctl show -P SubState kerneld)
    ip link add kdk0 type veth peer name kdk1 2>/dev/null
    local vrc=$?
    local sub2
    sub2=$(systemctl show -P SubState kerneld)
    rm -rf /run/systemd/system/kerneld.service.d
    systemctl daemon-reload
    [ "$sub" = auto-restart ] && [ "$sub2" = auto-restart ] ||
        { fail "not in the dead window: SubState $sub before the request, $sub2 after"; return; }
    [ "$vrc" = 0 ] && loaded veth || { fail "veth not loaded while kerneld was dead (ip exit $vrc)"; return; }
    journalctl -b --no-pager -o cat | grep -q "rtnl-link-veth.*running $boot_helper\|running $boot_helper" ||
        { fail "no fallback to $boot_helper in the journal"; return; }
    wait_until 60 active || { fail "kerneld not restarted after 60 s: $(systemctl is-active kerneld)"; return; }
    new=$(mainpid)
    [ "$new" != "$pid" ] || { fail "same main pid $pid"; return; }
    wait_until 10 answers || { fail "the restarted kerneld (pid $new) does not answer kdstat"; return; }
    local took
    took=$(journalctl -b -u kerneld _PID="$new" -o cat --no-pager | grep "took over kerneld's own queue" | head -n 1)
    [ -n "$took" ] || { fail "no takeover line from pid $new in the journal"; return; }
    [ "$(cat /proc/sys/kernel/modprobe)" = $shim ] || { fail "the helper is $(cat /proc/sys/kernel/modprobe)"; return; }
    # The successor serves what comes next.
    ip link add kdb0 type bridge 2>/dev/null || { fail "ip link add kdb0 type bridge failed"; return; }
    loaded bridge || { fail "bridge not loaded"; return; }
    journalctl -b -u kerneld _PID="$new" -o cat --no-pager | grep -q 'rtnl-link-bridge: loaded .*bridge' ||
        { fail "the new kerneld (pid $new) did not log loading bridge"; return; }
    pass "pid $pid killed, veth loaded by the fallback while $sub, pid $new: $took"
}

s4() {
    n=4
    d="systemctl stop kerneld puts the previous helper back; start registers again"
    systemctl stop kerneld || { fail "systemctl stop failed"; return; }
    local h
    h=$(cat /proc/sys/kernel/modprobe)
    [ "$h" = $boot_helper ] || { fail "after the stop the helper is $h, not $boot_helper"; return; }
    systemctl start kerneld || { fail "systemctl start failed: $(systemctl status kerneld --no-pager | tail -n 5)"; return; }
    [ "$(cat /proc/sys/kernel/modprobe)" = $shim ] || { fail "after the start the helper is $(cat /proc/sys/kernel/modprobe)"; return; }
    pass "stopped: $h; started: $shim"
}

s5() {
    n=5
    d="journalctl -x explains kerneld's events from its catalog"
    local cat=/usr/lib/systemd/catalog/kerneld.catalog
    if ! dpkg -L kerneld | grep -qx "$cat"; then
        note "the package ships no $cat yet: scenario 5 not run"
        pass "skipped: no catalog in the package"
        return
    fi
    local x line hit=
    x=$(journalctl -b -x -u kerneld --no-pager 2>&1)
    # Any text line of the catalog (no @FIELD@ to substitute) explaining
    # an entry of this boot.
    while IFS= read -r line; do
        case "$line" in '' | '-- '* | *@*@* | *:\ *) continue ;; esac
        if grep -qF -- "$line" <<<"$x"; then
            hit=$line
            break
        fi
    done <"$cat"
    [ -n "$hit" ] || { fail "journalctl -x -u kerneld shows no text of $cat"; return; }
    pass "explained: $hit"
}

s6() {
    n=6
    d="auditd records kerneld's denial with the requester"
    if ! kerneld --help 2>&1 | grep -qi 'audit record' && ! grep -qai 'audit record' /usr/sbin/kerneld; then
        note "kerneld has no audit records yet: scenario 6 not run"
        pass "skipped: no audit support in kerneld"
        return
    fi
    systemctl is-active -q auditd || { fail "auditd is $(systemctl is-active auditd)"; return; }
    local recs
    # The command README gives a fleet's SIEM.
    recs=$(ausearch -m TRUSTED_APP -i -ts boot 2>/dev/null | grep 'rtnl-link-dummy')
    [ -n "$recs" ] || { fail "no audit record of kerneld naming rtnl-link-dummy (ausearch -m TRUSTED_APP -i -ts boot: $(ausearch -m TRUSTED_APP -i -ts boot 2>&1 | tail -n 3 | tr '\n' '|'))"; return; }
    grep -q 'decision=deny' <<<"$recs" || { fail "the record is no denial: $recs"; return; }
    grep -Eq 'requester_pid=[0-9]+' <<<"$recs" || { fail "the record names no requester: $recs"; return; }
    pass "$(head -n 1 <<<"$recs" | cut -c1-300)"
}

s7() {
    n=7
    d="autopkgtest: debian/tests against the installed package"
    local t names bad=
    names=$(sed -n 's/^Tests: *//p' $kdvm/tests/control | tr ',\n' '  ')
    [ -n "$names" ] || { fail "no Tests: in debian/tests/control"; return; }
    for t in $names; do
        local tmp err
        tmp=$(mktemp -d)
        err=$(cd "$tmp" && AUTOPKGTEST_TMP=$tmp bash "$kdvm/tests/$t" 2>&1 >"$tmp.out")
        local rc=$?
        if [ "$rc" != 0 ]; then
            bad="$bad $t(exit $rc: $(tail -n 3 "$tmp.out" | tr '\n' ' ') $err)"
        elif [ -n "$err" ] && ! grep -A3 "^Tests:.*\b$t\b" $kdvm/tests/control | grep -q allow-stderr; then
            bad="$bad $t(stderr: $err)"
        fi
        rm -rf "$tmp" "$tmp.out"
    done
    [ -z "$bad" ] || { fail "failed:$bad"; return; }
    pass "passed: $names"
}

s8() {
    n=8
    d="upgrade to a newer package keeps the configuration, the record of loaded modules and the registration"
    local old new pid
    old=$(dpkg-query -W -f='${Version}' kerneld)
    pid=$(mainpid)
    grep -q '"bridge"' /run/kerneld/loaded.json || { fail "bridge not in /run/kerneld/loaded.json before the upgrade"; return; }
    local out
    out=$(DEBIAN_FRONTEND=noninteractive apt-get install -y -q $kdvm/next.deb 2>&1) ||
        { fail "apt-get install next.deb: $(tail -n 5 <<<"$out")"; return; }
    new=$(dpkg-query -W -f='${Version}' kerneld)
    [ "$new" != "$old" ] || { fail "still at $old"; return; }
    grep -qx 'deny request rtnl-link-dummy' /etc/kerneld.conf || { fail "the changed /etc/kerneld.conf was replaced"; return; }
    wait_until 30 active || { fail "kerneld is $(systemctl is-active kerneld) after the upgrade"; return; }
    [ "$(mainpid)" != "$pid" ] || { fail "kerneld (pid $pid) was not restarted by the upgrade"; return; }
    [ "$(cat /proc/sys/kernel/modprobe)" = $shim ] || { fail "after the upgrade the helper is $(cat /proc/sys/kernel/modprobe)"; return; }
    wait_until 10 answers || { fail "kerneld does not answer after the upgrade"; return; }
    grep -q '"bridge"' /run/kerneld/loaded.json || { fail "bridge dropped from the record"; return; }
    local why
    why=$(kdstat why bridge 2>&1)
    grep -qi 'rtnl-link-bridge' <<<"$why" || { fail "kdstat why bridge does not name rtnl-link-bridge: $why"; return; }
    ip link add up0 type dummy 2>/dev/null && { fail "dummy allowed after the upgrade"; return; }
    ! loaded dummy || { fail "dummy loaded after the upgrade"; return; }
    pass "$old -> $new, pid $pid -> $(mainpid); policy kept, bridge still recorded"
}

s9() {
    n=9
    d="apt purge leaves nothing behind and restores the kernel's helper"
    local out
    out=$(DEBIAN_FRONTEND=noninteractive apt-get purge -y -q kerneld 2>&1) ||
        { fail "apt-get purge: $(tail -n 5 <<<"$out")"; return; }
    [ "$(cat /proc/sys/kernel/modprobe)" = $boot_helper ] || { fail "after the purge the helper is $(cat /proc/sys/kernel/modprobe)"; return; }
    local left
    left=$(ls -d /usr/sbin/kerneld* /usr/sbin/kd{stat,send} /etc/kerneld* /run/kerneld \
        /etc/systemd/system/*/kerneld.service /lib/systemd/system/kerneld.service 2>/dev/null | tr '\n' ' ')
    [ -z "$left" ] || { fail "left behind: $left"; return; }
    # Purged: unknown to dpkg, or known as not-installed.
    local st
    st=$(dpkg-query -W -f='${db:Status-Status}' kerneld 2>/dev/null)
    [ -z "$st" ] || [ "$st" = not-installed ] ||
        { fail "dpkg still knows kerneld: $st"; return; }
    [ "$(systemctl show -P LoadState kerneld)" = not-found ] || { fail "systemd still has kerneld.service: $(systemctl show -P LoadState kerneld)"; return; }
    # (no pgrep: procps is not in minbase)
    grep -qx kerneld /proc/[0-9]*/comm 2>/dev/null && { fail "a kerneld process is still running"; return; }
    # Module requests work as before kerneld: modprobe loads dummy.
    ip link add pg0 type dummy 2>/dev/null && loaded dummy || { fail "dummy does not load through $boot_helper after the purge"; return; }
    pass "helper $boot_helper, no file, unit or process left"
}

s10() {
    n=10
    d="module-loads = enforce from the boot: the BPF LSM program attached before udev's coldplug, which reaches multi-user with its loads reported and judged (init_module as configured); a finit_module of a file denied by content refused; kmod 30's init_module as configured"
    [ "$state" = running ] || { fail "the boot ended $state"; return; }
    local st js udev rest out
    js=$(timeout 5 kdstat --json 2>&1 | tr -d ' \n')
    case "$js" in
        *'"module_loads":{'*'"attached":true'*) ;;
        *) fail "kdstat --json does not say the program is attached: $(kjournal | grep -i 'module load' | head -n 3 | tr '\n' ' ')"; return ;;
    esac
    kjournal | grep -q 'BPF LSM program is attached: enforce' ||
        { fail "no 'attached: enforce' in kerneld's journal"; return; }
    # Coldplug: udev's workers load with libkmod in process; bookworm's
    # kmod 30 hands them compressed modules through init_module().
    udev=$(kjournal | grep -E 'module load: .* by \(?(udev-worker|systemd-udevd)' | grep -c .)
    [ "$udev" -gt 0 ] ||
        { fail "no module load by udev's coldplug in kerneld's journal: $(kjournal | grep 'module load' | head -n 3 | tr '\n' ' ')"; return; }
    ! kjournal | grep -E 'module load: .* by \(?(udev-worker|systemd-udevd).*: refused' | grep -q . ||
        { fail "coldplug had a load refused: $(kjournal | grep -E 'by \(?(udev-worker|systemd-udevd).*refused' | head -n 1)"; return; }
    st=$(timeout 5 kdstat 2>&1)
    rest=$(echo "$st" | grep -A6 '^module loads' | tr '\n' ' ')
    case "$rest" in
        *init_module*) ;;
        *) fail "kdstat does not say what init_module() leaves unjudged here: $rest"; return ;;
    esac
    loaded af_alg && { fail "af_alg was loaded before the test: $(kjournal | grep -E 'af_alg|net-pf-38' | head -n 3 | tr '\n' ' ')"; return; }
    # A loader that hands the kernel the file, as kmod 31 and later do
    # (finit_module with MODULE_INIT_COMPRESSED_FILE, syscall 313 on
    # x86_64; perl is in minbase): refused by the file's content.
    local f
    f=$(modinfo -n af_alg)
    out=$(perl -e 'open(my $f, "<", $ARGV[0]) or die "$ARGV[0]: $!\n";
        my $p = ""; my $r = syscall(313, fileno($f), $p, 4); print $r == 0 ? "loaded\n" : "$!\n"; exit($r == 0 ? 0 : 1)' "$f" 2>&1) &&
        { fail "finit_module of $f (denied by content) succeeded"; return; }
    case "$out" in
        *"Operation not permitted"*) ;;
        *) fail "finit_module of $f: expected EPERM, got: $out"; return ;;
    esac
    ! loaded af_alg || { fail "af_alg loaded although denied"; return; }
    # (the path as the kernel resolves it: /usr/lib/modules on merged /usr)
    wait_until 5 sh -c "journalctl -b -u kerneld -o cat | grep -q 'finit_module of [^ ]*/$(basename "$f") by perl (pid [0-9]*).*: refused (its content has a deny verdict)'" ||
        { fail "the refusal of perl's finit_module not in the journal: $(kjournal | grep 'by perl' | tail -n 2 | tr '\n' ' ')"; return; }
    # Bookworm's modprobe (kmod 30) decompresses in process and calls
    # init_module(): no file to judge, so module-loads-init-module (allow
    # here) decides, as kdstat says above.
    out=$(modprobe af_alg 2>&1) || { fail "modprobe af_alg (init_module allowed) failed: $out"; return; }
    wait_until 5 sh -c "journalctl -b -u kerneld -o cat | grep -q 'init_module (an image from memory, no file) by modprobe (pid [0-9]*).*: allowed (init_module carries no file'" ||
        { fail "modprobe's init_module not reported as allowed: $(kjournal | grep 'by modprobe' | tail -n 2 | tr '\n' ' ')"; return; }
    note "coldplug: $(kjournal | grep -E 'by \(?(udev-worker|systemd-udevd)' | head -n 1)"
    pass "$udev coldplug loads reported, none refused; finit_module of af_alg refused by content; modprobe's init_module allowed as configured"
}

for s in 1 10 6 5 2 3 4 7 8 9; do
    "s$s"
done
echo "VMTEST DONE failed=$failed"
if [ "${KDVM_SHELL:-0}" != 1 ]; then
    systemctl poweroff --no-block
fi
