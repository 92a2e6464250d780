#!/usr/bin/env bash
# Build the Debian package from debian/ (dist/build-deb.sh:
# dpkg-buildpackage, then lintian, which must report no error and no
# warning) and try it as a user would: install it with apt on this machine
# (for real: run it on a throwaway machine, as CI does), check the
# programs, pages, unit and configuration, then remove and purge it and
# check that the kernel's module helper is not left pointing at a removed
# program.  Exits non-zero on the first failure.  Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."

fail() {
    echo "test-deb: FAIL: $*" >&2
    exit 1
}
[[ $(id -u) -eq 0 ]] || fail "must run as root (it installs the package)"

deb=$(dist/build-deb.sh | tail -n 1) || fail "dist/build-deb.sh (the package build or lintian)"
[[ -f "$deb" ]] || fail "build-deb.sh made no package"
[[ "$deb" == /* ]] || deb=$PWD/$deb
version=$(dpkg-deb -f "$deb" Version)
echo "test-deb: $deb ($(du -k "$deb" | cut -f1) KiB)"

# A kerneld package installed before is the administrator's: the test
# upgrades it in place but leaves it installed.
if dpkg-query -W -f='${Status}' kerneld 2>/dev/null | grep -q 'ok installed'; then
    echo "test-deb: kerneld is installed already; it will be left installed" >&2
    remove_after=no
else
    remove_after=yes
fi
# On failure, a package this test installed is purged (configuration
# included, as the test's own last step does).
cleanup() {
    if [[ $remove_after == yes ]] &&
        [[ "$(dpkg-query -W -f='${db:Status-Status}' kerneld 2>/dev/null)" != not-installed ]] &&
        dpkg-query -W kerneld >/dev/null 2>&1; then
        dpkg --purge kerneld >/dev/null 2>&1 || true
    fi
}
trap cleanup EXIT

export DEBIAN_FRONTEND=noninteractive
apt-get install -y -qq "$deb" >/dev/null || fail "apt-get install $deb"
dpkg-query -W -f='${Status} ${Version}\n' kerneld | grep -qx "install ok installed $version" ||
    fail "kerneld $version is not installed: $(dpkg-query -W -f='${Status} ${Version}' kerneld)"

# Programs, on the PATH, of this version.
[[ "$(kerneld --version)" == "kerneld $version" ]] || fail "kerneld --version: $(kerneld --version)"
for p in kerneld-modprobe kdstat kdsend; do
    "$p" --version | grep -q "$version" || fail "$p --version"
done
for p in kerneld kerneld-modprobe kdstat kdsend; do
    [[ -x /usr/sbin/$p ]] || fail "/usr/sbin/$p missing"
done
[[ ! -e /usr/bin/kdstat && ! -e /usr/bin/kdsend ]] || fail "kdstat or kdsend in /usr/bin: they need root, /usr/sbin"
# The shipped configuration is installed, valid, and a conffile.
kerneld --check-config >/dev/null || fail "kerneld --check-config on the installed /etc/kerneld.conf"
kerneld --check-config --config /etc/kerneld/rare-protocols.conf >/dev/null ||
    fail "kerneld --check-config on /etc/kerneld/rare-protocols.conf"
conffiles=$(dpkg-query -W -f='${Conffiles}' kerneld)
for f in /etc/kerneld.conf /etc/kerneld/rare-protocols.conf; do
    grep -q " $f " <<<"$conffiles" || fail "$f is not a conffile"
done

# Pages where man finds them.
for page in "8 kerneld" "8 kerneld-modprobe" "8 kdstat" "8 kdsend" "5 kerneld.conf" "7 kerneld"; do
    read -r sect name <<<"$page"
    # shellcheck disable=SC2086 # two words on purpose
    path=$(man -w $sect "$name") || fail "man -w $sect $name"
    [[ "$path" == "/usr/share/man/man$sect/$name.$sect.gz" ]] || fail "man -w $sect $name: $path"
done
man -w kerneld >/dev/null || fail "man -w kerneld"

# The unit, enabled by dh_installsystemd's maintainer scripts (early, for
# sysinit.target: see the unit), and completions.
unit=/lib/systemd/system/kerneld.service
[[ -f $unit ]] || fail "$unit missing"
if command -v systemd-analyze >/dev/null; then
    systemd-analyze verify "$unit" || fail "systemd-analyze verify $unit"
fi
wants=/etc/systemd/system/sysinit.target.wants/kerneld.service
[[ "$(readlink "$wants")" == "$unit" ]] || fail "kerneld.service is not enabled ($wants)"
for f in /usr/share/bash-completion/completions/kdstat /usr/share/zsh/vendor-completions/_kerneld \
    /usr/share/fish/vendor_completions.d/kdsend.fish /usr/share/kerneld/schema/status.json \
    /usr/share/kerneld/schema/why.json /usr/share/kerneld/schema/record.json \
    /usr/share/kerneld/schema/check-config.json /usr/share/kerneld/schema/print-config.json \
    /usr/lib/systemd/catalog/kerneld.catalog; do
    [[ -s $f ]] || fail "$f missing or empty"
done
# The catalog is compiled (systemd's trigger): journalctl -x explains the
# events.
# Read whole before grep: with pipefail, grep -q quitting at the first
# match would make journalctl die of SIGPIPE and the check fail.
catalog=$(journalctl --list-catalog)
grep -q '^d453e4ba6e84425fa4c87ffaa724afb3 kerneld: ' <<<"$catalog" ||
    fail "journalctl --list-catalog lacks kerneld's entries"

# The installed programs together: the shim (a static PIE) asks the
# installed kerneld, on a private queue key, for a name no module provides.
# The module tree is the Debian one the tests fetched (this machine's own
# kernel may have none).
[[ "$(readelf -l /usr/sbin/kerneld-modprobe | grep -c INTERP)" == 0 ]] ||
    fail "/usr/sbin/kerneld-modprobe is not statically linked"
read -r root kver _ < <(tests/vm/fetch-kernel.sh 6.12)
scratch=$(mktemp -d)
export KERNELD_KEY=0x6b64$((RANDOM % 9000 + 1000))
printf 'shim-fallback = fail\n' >"$scratch/kerneld.conf"
kerneld --foreground --config "$scratch/kerneld.conf" --state-dir "$scratch/state" \
    --module-dir "$root/lib/modules/$kver" keep >"$scratch/kerneld.log" 2>&1 &
kerneld_pid=$!
for _ in $(seq 50); do kdstat >/dev/null 2>&1 && break; sleep 0.1; done
rc=0
KERNELD_CONFIG=$scratch/kerneld.conf /usr/sbin/kerneld-modprobe -q -- test-deb-no-such-module || rc=$?
# kdsend -e answers as modprobe would: 1 for a name no module provides.
send_rc=0
kdsend -e request_module test-deb-no-such-module-either >"$scratch/kdsend.out" 2>&1 || send_rc=$?
recent=$(kdstat --json 2>/dev/null || true)
kill "$kerneld_pid" 2>/dev/null || true
wait "$kerneld_pid" || true
unset KERNELD_KEY
[[ $rc == 1 ]] || fail "kerneld-modprobe for an unknown name exited $rc, not 1: $(cat "$scratch/kerneld.log")"
grep -q test-deb-no-such-module <<<"$recent" ||
    fail "kerneld did not receive the shim's request: $(cat "$scratch/kerneld.log")"
[[ $send_rc == 1 ]] || fail "kdsend -e for an unknown name exited $send_rc, not 1: $(cat "$scratch/kdsend.out")"
rm -rf "$scratch"

if [[ $remove_after == no ]]; then
    echo "test-deb: ok: kerneld $version installs and works (removal not tried: it was installed before)"
    exit 0
fi

# Removal: the programs go, the configuration stays (until purge), and the
# kernel is not left running a helper that no longer exists.
apt-get remove -y -qq kerneld >/dev/null || fail "apt-get remove kerneld"
[[ ! -e /usr/sbin/kerneld && ! -e /usr/sbin/kerneld-modprobe ]] || fail "programs left after removal"
[[ -f /etc/kerneld.conf ]] || fail "/etc/kerneld.conf removed before purge"
if [[ -r /proc/sys/kernel/modprobe ]]; then
    [[ "$(cat /proc/sys/kernel/modprobe)" != /usr/sbin/kerneld-modprobe ]] ||
        fail "/proc/sys/kernel/modprobe still names the removed shim"
fi
dpkg --purge kerneld >/dev/null || fail "dpkg --purge kerneld"
[[ ! -e /etc/kerneld.conf && ! -e /etc/kerneld ]] || fail "configuration left after purge"
[[ ! -e $wants && ! -L $wants ]] || fail "$wants left after purge"
echo "test-deb: ok: kerneld $version installs, works, and removes cleanly"
