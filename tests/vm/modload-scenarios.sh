#!/bin/sh
# shellcheck shell=dash
# out (set by run), pass, fail, note, unload, loaded, dead, wait_until: scenarios.sh's.
# shellcheck disable=SC2154
# Scenario 19, sourced by scenarios.sh: every module load on the host seen,
# and decided, through kerneld's BPF LSM program (module-loads).  A kerneld
# of its own (key, state directory, configuration), beside the main one.
#
# The guest's kmod is Debian 12's (kmod 30): modprobe and insmod try
# finit_module(2) and, when it fails, init_module(2) with the image, which
# carries no file.  `trigger finit FILE` and `trigger init FILE` make one
# call each.

ML_KEY=0x6d6c6f64
ML_LOG=/tmp/kerneld-modload.log
ML_CONF=/tmp/kerneld-modload.conf
ML_PID=
# What follows a compressed file's path: 7.x reads it under an id of its
# own (READING_MODULE_COMPRESSED), which the log line says.
ML_Z='\( (compressed, decompressed by the kernel)\)\{0,1\}'

ml_start() { # WORDS of the configuration, one per line
    printf '%s\n' "$@" >"$ML_CONF"
    kerneld --foreground --key "$ML_KEY" --state-dir /run/kerneld-modload \
        --config "$ML_CONF" debug </dev/null >>"$ML_LOG" 2>&1 &
    ML_PID=$!
    wait_until 15 ml_ready
}
ml_ready() { KERNELD_KEY=$ML_KEY timeout 5 kdstat >/dev/null 2>&1; }
# A plain kerneld (no rules, no program) on a key of its own: a loader
# with libkmod in its process, as systemd-udevd is.
LK_KEY=0x6d6c3032
LK_PID=
lk_start() {
    : >/tmp/kerneld-libkmod.conf
    kerneld --foreground --key "$LK_KEY" --state-dir /run/kerneld-libkmod \
        --config /tmp/kerneld-libkmod.conf </dev/null >>/tmp/kerneld-libkmod.log 2>&1 &
    LK_PID=$!
    wait_until 15 lk_ready
}
lk_ready() { KERNELD_KEY=$LK_KEY timeout 5 kdstat >/dev/null 2>&1; }
lk_stop() {
    kill -TERM "$LK_PID" 2>/dev/null
    wait "$LK_PID" 2>/dev/null
}
ml_stop() { # SIGNAL
    [ -n "$ML_PID" ] || return 0
    kill "-$1" "$ML_PID" 2>/dev/null
    wait_until 10 dead "$ML_PID"
    wait "$ML_PID" 2>/dev/null
    ML_PID=
}
ml_log_now() { grep -q -- "$1" "$ML_LOG"; }
ml_log_has() { wait_until 5 ml_log_now "$1"; }
# The module image of FILE (.ko or .ko.xz).
ml_plain() {
    case "$1" in
        *.xz) xzcat "$1" ;;
        *) cat "$1" ;;
    esac
}
ml_file() { find "/lib/modules/$(uname -r)" -name "$1.ko*" | head -n 1; }
ml_dummy_loads() { run 20 trigger finit "$dummy"; loaded dummy; }

scenario_module_loads() {
    scenario 19 "module loads by any loader seen through the BPF LSM: reported with their caller, a denied one as would be refused (observe); a denied file's finit_module refused by content, a copy too, root's insmod and modprobe with their init_module fallback, a libkmod loader in-process, an unknown file and init_module as configured, a changed tree judged again, a rule added live too (enforce); kerneld killed: loads as without it, or refused still when pinned, the pins replaced by the next kerneld and removed by a stop"
    if ! grep -q bpf /sys/kernel/security/lsm 2>/dev/null; then
        mount -t securityfs securityfs /sys/kernel/security 2>/dev/null
    fi
    note "active LSMs: $(cat /sys/kernel/security/lsm 2>/dev/null)"
    dummy=$(ml_file dummy)
    veth=$(ml_file veth)
    if [ -z "$dummy" ] || [ -z "$veth" ]; then
        fail "no dummy or veth module file"
        return
    fi
    unload dummy
    unload veth

    # Observe: an insmod by hand (init_module), a finit_module, a request.
    ml_start "module-loads = observe" "deny module dummy" ||
        { fail "kerneld (observe) not ready: $(tail -n 5 "$ML_LOG" | tr '\n' ' ')"; return; }
    ml_log_has 'BPF LSM program is attached: observe' ||
        { fail "no 'attached: observe' in $ML_LOG: $(tail -n 5 "$ML_LOG" | tr '\n' ' ')"; return; }
    run 20 insmod "$veth"
    loaded veth || { fail "insmod veth (observe) did not load it: $out"; return; }
    ml_log_has 'module load: .* by insmod (pid [0-9]*)' ||
        { fail "insmod's load not reported with its caller: $(grep 'module load' "$ML_LOG" | tail -n 3 | tr '\n' ' ')"; return; }
    sum=$(sha256sum "$dummy" | cut -d' ' -f1)
    run 20 trigger finit "$dummy"
    loaded dummy || { fail "trigger finit dummy (observe) did not load it: $out"; return; }
    ml_log_has "finit_module of $dummy$ML_Z by trigger (pid [0-9]*), cgroup id [0-9]*, sha256 $sum: would be refused (its content has a deny verdict; observe mode)" ||
        { fail "finit_module of dummy not reported with caller and sha256 $sum: $(grep 'module load' "$ML_LOG" | tail -n 3 | tr '\n' ' ')"; return; }
    why=$(KERNELD_KEY=$ML_KEY timeout 5 kdstat why dummy 2>&1 | tr '\n' ' ')
    case "$why" in
        *"load seen"*"finit_module of $dummy"*" by trigger"*"sha256 $sum"*) ;;
        *) fail "kdstat why dummy does not name the loader, file and hash: $why"; return ;;
    esac
    whyj=$(KERNELD_KEY=$ML_KEY timeout 5 kdstat why dummy --json 2>&1 | tr -d ' \n')
    case "$whyj" in
        # (the daemon sends its keys sorted)
        *'"loads":[{'*'"comm":"trigger"'*'"outcome":"would-be-refused"'*"\"sha256\":\"$sum\""*'"syscall":"finit_module"'*) ;;
        *) fail "kdstat why dummy --json has no load with the hash, loader and outcome: $whyj"; return ;;
    esac
    note "19: observe: $(grep "finit_module of $dummy" "$ML_LOG" | tail -n 1)"
    note "19: kdstat why dummy: $why"
    unload dummy
    unload veth
    ml_stop TERM

    # Enforce: dummy denied by a module rule, judged by content.
    ml_start "module-loads = enforce" "deny module dummy" ||
        { fail "kerneld (enforce) not ready: $(tail -n 5 "$ML_LOG" | tr '\n' ' ')"; return; }
    ml_log_has 'module loads: judged [0-9]* module files' ||
        { fail "no 'judged N module files' in $ML_LOG"; return; }
    note "19: $(grep 'module loads: judged' "$ML_LOG" | tail -n 1)"
    run 20 trigger finit "$dummy"
    loaded dummy && { fail "denied dummy got loaded by finit_module: $out"; return; }
    case "$out" in
        *"Operation not permitted"*) ;;
        *) fail "finit_module of denied dummy: expected EPERM, got: $out"; return ;;
    esac
    ml_log_has "finit_module of $dummy$ML_Z by trigger (pid [0-9]*).*: refused (its content has a deny verdict)" ||
        { fail "refusal of dummy not reported: $(grep 'module load' "$ML_LOG" | tail -n 3 | tr '\n' ' ')"; return; }
    # The same bytes under another name and path: refused too.
    cp "$dummy" /tmp/renamed.ko.xz
    run 20 trigger finit /tmp/renamed.ko.xz
    loaded dummy && { fail "a copy of dummy's file got loaded: $out"; return; }
    ml_log_has "finit_module of /tmp/renamed.ko.xz$ML_Z by trigger.*refused" ||
        { fail "the copy's refusal not reported"; return; }
    # Root's insmod and modprobe: refused, their init_module fallback too
    # (kmod up to 30 retries a failed finit_module with init_module).
    for loader in "insmod $dummy" "modprobe dummy"; do
        # shellcheck disable=SC2086
        run 20 $loader
        loaded dummy && { fail "denied dummy got loaded by $loader: $out"; return; }
    done
    ml_log_has "by modprobe (pid [0-9]*).*: refused" ||
        { fail "modprobe's refusal not reported: $(grep 'module load' "$ML_LOG" | tail -n 3 | tr '\n' ' ')"; return; }
    note "19: modprobe dummy: $(grep 'by modprobe' "$ML_LOG" | tail -n 1)"
    # A loader with libkmod in its own process, as systemd-udevd: a plain
    # kerneld (no rules, another key) asked for dummy.  Its load is seen
    # with its pid whatever the call; a finit_module is refused by
    # content, an init_module (how this kmod 30 has it load .ko.xz in
    # process) only by module-loads-init-module = refuse, below.
    if ! lk_start; then
        fail "the plain kerneld (libkmod loader) not ready: $(tail -n 3 /tmp/kerneld-libkmod.log | tr '\n' ' ')"
        return
    fi
    run 20 kdsend --key "$LK_KEY" -e request_module dummy
    lk_stop
    ml_log_has "module load: .* by kerneld[^ ]* (pid $LK_PID)" ||
        { fail "the libkmod loader's load not reported with its pid $LK_PID: $(grep 'module load' "$ML_LOG" | tail -n 3 | tr '\n' ' ')"; return; }
    if ml_log_now "finit_module of .* by kerneld[^ ]* (pid $LK_PID)"; then
        loaded dummy && { fail "a libkmod loader's finit_module of denied dummy loaded it: $out"; return; }
    fi
    note "19: libkmod in-process (enforce, init_module allowed): $(grep "(pid $LK_PID)" "$ML_LOG" | tail -n 1)"
    unload dummy
    # An allowed module loads.
    run 20 trigger finit "$veth"
    loaded veth || { fail "allowed veth not loaded by finit_module (enforce): $out"; return; }
    note "19: enforce: $(grep ': refused (its content' "$ML_LOG" | head -n 1)"
    unload veth
    # A file kerneld did not judge: allowed and reported (the default).
    ml_plain "$veth" >/tmp/unknown.ko || { fail "cannot decompress $veth"; return; }
    # A byte more: content no file of the tree has (an uncompressed tree
    # has veth's image itself); the kernel loads it as unsigned.
    printf '\n' >>/tmp/unknown.ko
    run 20 trigger finit /tmp/unknown.ko
    loaded veth || { fail "an unknown file was not loaded (module-loads-unknown = allow): $out"; return; }
    ml_log_has "finit_module of /tmp/unknown.ko by trigger.*: allowed (no verdict for its content)" ||
        { fail "the unknown file's load not reported as such"; return; }
    unload veth
    # The same bytes put into the tree as a denied module: judged again.
    mkdir -p "/lib/modules/$(uname -r)/updates"
    cp /tmp/unknown.ko "/lib/modules/$(uname -r)/updates/dummy.ko"
    ml_log_has 'module tree changed: judged' ||
        { fail "no 'module tree changed: judged' after a module file was added"; return; }
    run 20 trigger finit /tmp/unknown.ko
    rm -r "/lib/modules/$(uname -r)/updates"
    loaded veth && { fail "a file whose content became denied still loaded: $out"; return; }
    ml_log_has "finit_module of /tmp/unknown.ko by trigger.*: refused (its content has a deny verdict)" ||
        { fail "the new verdict's refusal not reported"; return; }
    # A rule added live (kdstat, no SIGHUP) reaches the verdicts.
    out=$(KERNELD_KEY=$ML_KEY timeout 5 kdstat deny module veth 2>&1) ||
        { fail "kdstat deny module veth failed: $out"; return; }
    ml_log_has 'policy changed live: judged' ||
        { fail "no 'policy changed live: judged' after a rule added live"; return; }
    run 20 trigger finit "$veth"
    loaded veth && { fail "veth loaded after a live rule denied it: $out"; return; }
    ml_log_has "finit_module of $veth$ML_Z by trigger.*: refused (its content has a deny verdict)" ||
        { fail "the live rule's refusal not reported"; return; }
    st=$(KERNELD_KEY=$ML_KEY timeout 5 kdstat --json 2>&1 | tr -d ' \n')
    case "$st" in
        *'"module_loads":{'*'"attached":true'*) ;;
        *) fail "kdstat --json does not say the program is attached: $st"; return ;;
    esac
    note "19: live rule: $(grep 'policy changed live' "$ML_LOG" | tail -n 1)"
    note "19: status: $(KERNELD_KEY=$ML_KEY timeout 5 kdstat | grep -A3 '^module loads' | tr '\n' ' ')"
    ml_stop TERM

    # Unknown files and init_module refused when configured so.
    ml_start "module-loads = enforce" "module-loads-unknown = refuse" \
        "module-loads-init-module = refuse" ||
        { fail "kerneld (enforce, refuse) not ready"; return; }
    printf 'x' >>/tmp/unknown.ko
    run 20 trigger finit /tmp/unknown.ko
    loaded veth && { fail "an unknown file loaded with module-loads-unknown = refuse: $out"; return; }
    ml_log_has "finit_module of /tmp/unknown.ko by trigger.*: refused (no verdict for its content)" ||
        { fail "the unknown file's refusal not reported"; return; }
    ml_plain "$veth" >/tmp/image.ko
    run 20 trigger init /tmp/image.ko
    loaded veth && { fail "init_module loaded veth with module-loads-init-module = refuse: $out"; return; }
    ml_log_has 'init_module (an image from memory, no file) by trigger (pid [0-9]*), cgroup id [0-9]*: refused (init_module carries no file' ||
        { fail "the refused init_module not reported: $(grep 'module load' "$ML_LOG" | tail -n 3 | tr '\n' ' ')"; return; }
    note "19: init_module refused: $(grep 'init_module (an image' "$ML_LOG" | tail -n 1)"
    # The libkmod loader again: its init_module (.ko.xz here) refused; a
    # finit_module (an uncompressed tree) of dummy's known file loads.
    lk_start || { fail "the plain kerneld (libkmod loader) not ready"; return; }
    run 20 kdsend --key "$LK_KEY" -e request_module dummy
    lk_stop
    ml_log_has "by kerneld[^ ]* (pid $LK_PID)" ||
        { fail "the libkmod loader's load not reported with its pid $LK_PID"; return; }
    if ml_log_now "init_module (an image from memory, no file) by kerneld[^ ]* (pid $LK_PID)"; then
        loaded dummy && { fail "the libkmod loader's init_module loaded dummy with init_module refused: $out"; return; }
        ml_log_has "by kerneld[^ ]* (pid $LK_PID).*: refused" ||
            { fail "the libkmod loader's refusal not reported with its pid $LK_PID"; return; }
    fi
    unload dummy
    note "19: libkmod in-process (init_module refused): $(grep "(pid $LK_PID)" "$ML_LOG" | tail -n 1)"

    # Killed: the program goes with it; loads are as without kerneld.
    ml_stop KILL
    run 20 trigger finit "$dummy"
    loaded dummy || { fail "after kerneld was killed, dummy still refused: $out"; return; }
    unload dummy

    # Pinned (module-loads-pin): killed, kerneld leaves the program
    # refusing; the next kerneld replaces it (one program after); stopped
    # on request, it removes its pins and loads are as without kerneld.
    pins=/sys/fs/bpf/kerneld/$ML_KEY
    ml_start "module-loads = enforce" "module-loads-pin = yes" "deny module dummy" ||
        { fail "kerneld (pinned) not ready: $(tail -n 5 "$ML_LOG" | tr '\n' ' ')"; return; }
    ml_log_has 'BPF LSM program is attached: enforce .*, pinned; ' ||
        { fail "no 'attached: enforce ..., pinned' in $ML_LOG: $(grep 'module' "$ML_LOG" | tail -n 3 | tr '\n' ' ')"; return; }
    [ -e "$pins/$ML_PID/kernel_read_file" ] ||
        { fail "no pinned link $pins/$ML_PID/kernel_read_file: $(find /sys/fs/bpf 2>&1 | tr '\n' ' ')"; return; }
    ml_stop KILL
    run 20 trigger finit "$dummy"
    loaded dummy && { fail "after a pinned kerneld was killed, denied dummy loaded: $out"; return; }
    case "$out" in
        *"Operation not permitted"*) ;;
        *) fail "finit_module of dummy with the pinned program: expected EPERM, got: $out"; return ;;
    esac
    ml_start "module-loads = enforce" "module-loads-pin = yes" "deny module dummy" ||
        { fail "kerneld (pinned, again) not ready"; return; }
    ml_log_has 'left pinned is replaced by this one' ||
        { fail "the restarted kerneld did not replace the pinned program: $(grep 'module' "$ML_LOG" | tail -n 3 | tr '\n' ' ')"; return; }
    left=$(ls "$pins")
    [ "$left" = "$ML_PID" ] || { fail "pins after the restart: $left, not only $ML_PID"; return; }
    run 20 trigger finit "$dummy"
    loaded dummy && { fail "denied dummy loaded under the replacing program: $out"; return; }
    ml_stop TERM
    left=$(ls "$pins" 2>&1)
    [ -z "$left" ] || { fail "pins left after a stop on request: $left"; return; }
    run 20 trigger finit "$dummy"
    if ! loaded dummy; then
        # kerneld closes its links after unpinning them, which detaches
        # the program before it exits; a pin removed alone detaches it a
        # moment later, from a kernel work queue.
        note "19: pinned: the first load after the stop was refused: $out"
        wait_until 5 ml_dummy_loads ||
            { fail "after a pinned kerneld stopped on request, dummy still refused: $out"; return; }
    fi
    unload dummy
    note "19: pinned: $(grep -e 'left pinned' -e 'pins in' "$ML_LOG" | tr '\n' ' ')"
    pass
}
