# shellcheck shell=dash
# Helpers shared by the guest's scripts (scenarios.sh, early-boot.sh,
# demo.sh, the LSM proofs of lsm/, the bench guests of bench/vm/), sourced
# from /guest-lib.sh in the initramfs (busybox sh).

# Milliseconds since boot (trigger ms: busybox has no date +%N).
ms() { trigger ms; }

loaded() { grep -q "^$1 " /proc/modules; }

# wait_until SECONDS CMD...: poll CMD until it succeeds or time runs out.
wait_until() {
    _end=$(($(ms) + $1 * 1000))
    shift
    while ! "$@"; do
        [ "$(ms)" -ge "$_end" ] && return 1
        sleep 0.2
    done
}

# A child that exited but was not reaped yet is a zombie: still in /proc.
alive() {
    [ -r "/proc/$1/stat" ] || return 1
    ! grep -q '^[0-9]* ([^)]*) Z' "/proc/$1/stat"
}
dead() { ! alive "$1"; }

# since T: milliseconds since T (an earlier ms).
since() { echo $(($(ms) - $1)); }

# scenario N DESCRIPTION: the scenario that pass and fail speak of.
scenario() {
    n=$1
    d=$2
}
# pass [DETAIL]: "VMTEST PASS N DESCRIPTION (DETAIL)".
pass() {
    if [ $# = 0 ]; then
        echo "VMTEST PASS $n $d"
    else
        echo "VMTEST PASS $n $d ($1)"
    fi
}
# fail DETAIL: "VMTEST FAIL N DESCRIPTION: DETAIL".
fail() {
    echo "VMTEST FAIL $n $d: $1"
    failed=$((failed + 1))
}
note() { echo "VMTEST NOTE $*"; }

# bench_options: "ROUNDS PER_ROUND" from kdvm_bench=ROUNDS,PER_ROUND on the
# kernel command line (bench/vm/run.sh), else "10 10": for the bench
# guests (bench/vm/guest.sh, modload-guest.sh).
bench_options() {
    _rounds=10
    _per=10
    read -r _cmdline </proc/cmdline
    for _word in $_cmdline; do
        case "$_word" in
            kdvm_bench=*,*)
                _v=${_word#kdvm_bench=}
                _rounds=${_v%,*}
                _per=${_v#*,}
                ;;
        esac
    done
    echo "$_rounds $_per"
}
