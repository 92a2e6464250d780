#!/usr/bin/env bash
# Build the initramfs of the `debian` series: a Debian 12 system booted
# with systemd as PID 1 (rdinit=/lib/systemd/systemd, no disk, no virtio),
# with the kerneld package installed as apt would install it.
#
# Usage: tests/vm/build-debian-image.sh ROOT KVER DEB OUTPUT
#   ROOT, KVER  as printed by fetch-kernel.sh (unpacked kernel package)
#   DEB         the kerneld .deb to install (dist/build-deb.sh's)
#   OUTPUT      initramfs file to write (zstd'd cpio)
#
# The base system (mmdebstrap's minbase with systemd-sysv, udev, kmod,
# iproute2 and auditd, from Debian's archive) is made once and cached as a
# tarball in ${KERNELD_VM_CACHE:-/var/cache/kerneld-vm}/debian/, keyed by
# the mmdebstrap command below; later runs unpack it, install DEB, add the
# modules of modules.list, the probe and its units, and pack.  The guest
# also gets a copy of DEB with a higher version, for the upgrade scenario,
# and debian/tests/ for the autopkgtest scenario.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)

if [[ $# -ne 4 ]]; then
    echo "usage: $0 ROOT KVER DEB OUTPUT" >&2
    exit 2
fi
root=$1 kver=$2 deb=$3 out=$4
moddir="$root/lib/modules/$kver"

log() { echo "build-debian-image: $*" >&2; }
die() {
    log "error: $*"
    exit 1
}

[[ $(id -u) -eq 0 ]] || die "must run as root (the image has root's files and device nodes)"
[[ -f "$moddir/modules.dep" ]] || die "$moddir/modules.dep missing (run fetch-kernel.sh)"
[[ -f "$deb" ]] || die "$deb: no such package (dist/build-deb.sh builds it)"
for tool in mmdebstrap zstd cpio dpkg-deb depmod; do
    command -v "$tool" >/dev/null || die "$tool not found (scripts/install-deps.sh installs it)"
done

# --- the base system, cached ---------------------------------------------------
# Documentation, manual pages and translations are left out (dpkg's
# path-exclude, which stays in the image and so applies to the kerneld
# package too): the guest unpacks the whole image into memory under TCG.
mirror=${KERNELD_VM_MIRROR:-http://deb.debian.org/debian}
# shellcheck disable=SC2054 # --include takes a comma-separated list
mm=(mmdebstrap --variant=minbase
    --include=systemd-sysv,udev,kmod,iproute2,auditd
    --dpkgopt='path-exclude=/usr/share/man/*'
    --dpkgopt='path-exclude=/usr/share/locale/*'
    --dpkgopt='path-exclude=/usr/share/doc/*'
    --dpkgopt='path-exclude=/usr/share/info/*'
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin'
    bookworm)
cache=${KERNELD_VM_CACHE:-/var/cache/kerneld-vm}/debian
key=$(printf '%s\n' "${mm[@]}" "$mirror" | sha256sum | cut -c1-16)
base=$cache/base-$key.tar
# A leftover that is not a tarball (an interrupted or older run) is made again.
[[ ! -e "$base" || -f "$base" ]] || rm -rf "$base"
if [[ ! -s "$base" ]]; then
    mkdir -p "$cache"
    log "making the base system (mmdebstrap from $mirror, once; about a minute)"
    t0=$SECONDS
    # mmdebstrap reads a sources.list from a standard input that is not a
    # terminal: give it none.
    # mmdebstrap reads the format from the name: "*.tar", or it makes a
    # directory.
    tmp=$cache/base-$key.tmp.tar
    "${mm[@]}" "$tmp" "$mirror" </dev/null >&2 || {
        rm -rf "$tmp"
        die "mmdebstrap failed (above); it needs Debian's archive at $mirror"
    }
    mv "$tmp" "$base"
    # Older bases (another package list) are of no use any more.
    find "$cache" -maxdepth 1 -type f -name 'base-*.tar' ! -name "base-$key.tar" -delete
    log "base system $(du -m "$base" | cut -f1) MiB in $((SECONDS - t0)) s"
fi

stage=$(mktemp -d "${TMPDIR:-/tmp}/kerneld-debian.XXXXXX")
trap 'rm -rf "$stage"' EXIT
tar -C "$stage" -xf "$base"

# --- modules ---------------------------------------------------------------
# Those of modules.list with what they need, as build-initramfs.sh does,
# and the kernel's indexes made for this subset.
mkdir -p "$stage/lib/modules/$kver"
cp "$moddir"/modules.{builtin,builtin.modinfo,order} "$stage/lib/modules/$kver/" 2>/dev/null || true
add_module() {
    local deps kind path rel
    deps=$(modprobe -d "$root" -S "$kver" --show-depends "$1" 2>&1) ||
        die "modprobe --show-depends $1: $deps"
    while read -r kind path _; do
        [[ "$kind" == insmod ]] || continue
        rel="/lib/modules/$kver/${path#*/lib/modules/"$kver"/}"
        mkdir -p "$stage$(dirname "$rel")"
        cp -n "$path" "$stage$rel"
    done <<<"$deps"
}
while read -r name _; do
    [[ -z "$name" || "$name" == \#* ]] && continue
    add_module "$name"
done <"$here/modules.list"
# Drivers of the guest's own devices (PS/2 input, the PC speaker, the
# PIIX4 SMBus of QEMU's pc machine), which udev's coldplug loads: the
# loads scenario 10 sees decided at boot.
for name in evdev pcspkr i2c_piix4; do
    add_module "$name"
done
depmod -b "$stage" "$kver"

# --- the package ---------------------------------------------------------------
# Installed with dpkg in the image, maintainer scripts included: the unit
# is enabled (nothing is started: no systemd runs in the chroot).
version=$(dpkg-deb -f "$deb" Version)
mkdir -p "$stage/root/kdvm"
cp "$deb" "$stage/root/kdvm/current.deb"
chroot "$stage" dpkg -i /root/kdvm/current.deb >&2 || die "dpkg -i $deb in the image failed"
# The upgrade's target: the same package with a higher version.
next="$version+kdvm1"
rebuild=$stage/root/kdvm/rebuild
dpkg-deb -R "$deb" "$rebuild"
sed -i "s/^Version: .*/Version: $next/" "$rebuild/DEBIAN/control"
dpkg-deb -Zxz -z1 --root-owner-group -b "$rebuild" "$stage/root/kdvm/next.deb" >/dev/null
rm -rf "$rebuild"
# The package's own tests (autopkgtest, debian/tests/).
cp -r "$repo/debian/tests" "$stage/root/kdvm/tests"

# --- the guest's configuration ---------------------------------------------
# The administrator's policy: the conffile changed, which an upgrade keeps.
printf '\n# kdvm: the first module request of the boot is denied\ndeny request rtnl-link-dummy\n' \
    >>"$stage/etc/kerneld.conf"
# Every module load of the boot decided in the kernel (scenario 10): af_alg
# denied by its content, unknown files and init_module() as by default.
printf '\n# kdvm: module loads enforced from the boot\nmodule-loads = enforce\ndeny module af_alg\n' \
    >>"$stage/etc/kerneld.conf"
echo kdvm >"$stage/etc/hostname"
# A fixed machine id: no first boot (systemd-firstboot would prompt).
echo 6b6572e56c64766d6b6572e56c64766d >"$stage/etc/machine-id"
# The serial getty's vhangup() would cut the probe off the console.
for u in serial-getty@ttyS0.service getty@tty1.service systemd-firstboot.service; do
    ln -sf /dev/null "$stage/etc/systemd/system/$u"
done
install -m 0755 "$here/debian-probe.sh" "$stage/usr/local/sbin/kdvm-probe"
install -m 0644 "$here/guest-lib.sh" "$stage/usr/local/lib/kdvm-guest-lib.sh"
install -m 0644 /dev/stdin "$stage/etc/systemd/system/kdvm-early.service" <<'EOF'
# Scenario 1: a module request in early boot.  Ordered only after udev's
# coldplug and modules-load, which kerneld.service is ordered before.
[Unit]
Description=kdvm: an early-boot module request
DefaultDependencies=no
After=systemd-udev-trigger.service systemd-modules-load.service
Before=sysinit.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c 'ip link add early0 type dummy; echo $? >/run/kdvm-early.rc'

[Install]
WantedBy=sysinit.target
EOF
# Type=exec, not oneshot: a oneshot's start job would hold the boot
# unfinished, and the probe waits for the boot to finish.
install -m 0644 /dev/stdin "$stage/etc/systemd/system/kdvm-probe.service" <<'EOF'
[Unit]
Description=kdvm: the kerneld scenarios, then power off
After=multi-user.target

[Service]
Type=exec
ExecStart=/usr/local/sbin/kdvm-probe
StandardOutput=tty
StandardError=inherit
TTYPath=/dev/ttyS0
TTYReset=no
TTYVHangup=no

[Install]
WantedBy=multi-user.target
EOF
for u in kdvm-early.service:sysinit.target kdvm-probe.service:multi-user.target; do
    mkdir -p "$stage/etc/systemd/system/${u#*:}.wants"
    ln -sf "/etc/systemd/system/${u%%:*}" "$stage/etc/systemd/system/${u#*:}.wants/${u%%:*}"
done

# --- pack ------------------------------------------------------------------
(cd "$stage" && find . -print0 | cpio --null -o -H newc --quiet) | zstd -q -T0 -3 >"$out.tmp"
mv "$out.tmp" "$out"
log "kerneld $version (and $next for the upgrade) in $(du -m "$out" | cut -f1) MiB"
