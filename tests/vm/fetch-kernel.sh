#!/usr/bin/env bash
# Fetch (once) a Debian kernel image package for the VM tests and unpack it
# without installing it on the host.
#
# Usage: tests/vm/fetch-kernel.sh SERIES        (SERIES = 6.12 | 6.1 | 7.3)
#
# 7.3 comes from trixie-backports, read through package lists of its own
# under the cache (never the system's sources: an upgrade would then pull
# a newer Debian into the host); its image and modules are two packages.
#
# Prints one line on stdout:  ROOT KVER VMLINUZ
#   ROOT     unpacked package root (ROOT/lib/modules/KVER is depmod'ed)
#   KVER     kernel release, e.g. 6.12.117+deb12-amd64
#   VMLINUZ  path of the bootable kernel image
#
# The result is cached in ${KERNELD_VM_CACHE:-/var/cache/kerneld-vm}/SERIES;
# a later call just prints the cached line and makes no apt calls.
# Set KERNELD_VM_REFRESH=1 to look for a newer package again.
set -euo pipefail

series=${1:-}
case "$series" in
    6.12 | 6.1 | 7.3) ;;
    *)
        echo "usage: $0 6.12|6.1|7.3" >&2
        exit 2
        ;;
esac

cache=${KERNELD_VM_CACHE:-/var/cache/kerneld-vm}
dir="$cache/$series"
stamp="$dir/kernel.info"

log() { echo "fetch-kernel[$series]: $*" >&2; }

if [[ -s "$stamp" && "${KERNELD_VM_REFRESH:-0}" != 1 ]]; then
    read -r root kver vmlinuz <"$stamp"
    if [[ -f "$vmlinuz" && -f "$root/lib/modules/$kver/modules.dep.bin" ]]; then
        echo "$root $kver $vmlinuz"
        exit 0
    fi
    log "cache entry $stamp is stale, fetching again"
fi

# 7.3: apt with package lists of its own for trixie-backports.
apt_opts=()
if [[ $series == 7.3 ]]; then
    # shellcheck source=../../kernel/debian-suite.sh
    . "$(dirname "${BASH_SOURCE[0]}")/../../kernel/debian-suite.sh"
    debian_suite "$dir/apt" trixie-backports
    apt_opts=("${debian_suite_opts[@]}")
fi

# Newest generic amd64 image of the series. The escaped dot after the series
# keeps 6.1 from matching 6.12; cloud and rt flavours carry an extra word
# before -amd64 and are dropped explicitly.
find_pkg() {
    local re="^linux-image-${series//./\\.}\\.[0-9][^ ]*-amd64-unsigned\$"
    # 7.x: the image package only depends on linux-base-* (modules.order,
    # modules.builtin), linux-binary-* (the image) and linux-modules-*, and
    # there is no -unsigned one.
    [[ $series == 7.* ]] && re="^linux-image-${series//./\\.}\\.[0-9][^ ]*-amd64\$"
    apt-cache "${apt_opts[@]}" search --names-only "^linux-image-${series//./\\.}\\." 2>/dev/null |
        awk '{print $1}' |
        grep -E "$re" |
        grep -Ev -e '-(cloud|rt)-amd64(-unsigned)?$' |
        sort -V | tail -n 1
}

pkg=$(find_pkg || true)
if [[ -z "$pkg" ]]; then
    # A fresh machine may have empty package lists: refresh once and retry.
    log "no linux-image-$series.*-amd64-unsigned in apt lists, running apt-get update"
    apt-get "${apt_opts[@]}" update >&2 || log "apt-get update failed"
    pkg=$(find_pkg || true)
fi
if [[ -z "$pkg" ]]; then
    echo "fetch-kernel: no package linux-image-$series.*-amd64-unsigned found by apt-cache search" >&2
    exit 1
fi

mkdir -p "$dir"
pkgdir="$dir/$pkg"
root="$pkgdir/root"
if [[ ! -d "$root/lib/modules" ]]; then
    size=$(apt-cache "${apt_opts[@]}" show --no-all-versions "$pkg" 2>/dev/null | sed -n 's/^Size: //p' | head -n 1)
    log "downloading $pkg${size:+ ($((size / 1048576)) MiB)}"
    rm -rf "$pkgdir"
    mkdir -p "$pkgdir/dl"
    # apt-get download writes into the current directory, as user _apt when
    # it may (else it warns and downloads as root).
    chown _apt "$pkgdir/dl" 2>/dev/null || true
    # apt shows its progress on a terminal, and its Get: line in any case.
    pkgs=("$pkg")
    if [[ $series == 7.* ]]; then
        flavour=${pkg#linux-image-}
        pkgs=("linux-base-$flavour" "linux-binary-$flavour" "linux-modules-$flavour")
    fi
    (cd "$pkgdir/dl" && apt-get "${apt_opts[@]}" download "${pkgs[@]}" >&2)
    debs=$(find "$pkgdir/dl" -name '*.deb')
    [[ -n "$debs" ]] || {
        echo "fetch-kernel: apt-get download ${pkgs[*]} produced no .deb" >&2
        exit 1
    }
    # Unpack into a temporary name so an interrupted run is never taken for
    # a complete one.
    for deb in $debs; do
        log "unpacking $(basename "$deb")"
        dpkg -x "$deb" "$pkgdir/root.tmp"
    done
    if [[ $series == 7.* ]]; then
        # Merged /usr, and the image beside its modules: link them where
        # the 6.x packages put them.
        ln -s usr/lib "$pkgdir/root.tmp/lib"
        mkdir -p "$pkgdir/root.tmp/boot"
        for k in "$pkgdir"/root.tmp/usr/lib/modules/*/vmlinuz; do
            v=${k%/vmlinuz}
            ln -s "../usr/lib/modules/${v##*/}/vmlinuz" "$pkgdir/root.tmp/boot/vmlinuz-${v##*/}"
        done
    fi
    mv "$pkgdir/root.tmp" "$root"
    rm -rf "$pkgdir/dl"
fi

kver=$(find "$root/lib/modules" -mindepth 1 -maxdepth 1 -type d -printf '%f\n' | sort -V | tail -n 1)
vmlinuz="$root/boot/vmlinuz-$kver"
[[ -n "$kver" && -f "$vmlinuz" ]] || {
    echo "fetch-kernel: $pkg has no boot/vmlinuz-KVER with lib/modules/KVER" >&2
    exit 1
}

if [[ ! -f "$root/lib/modules/$kver/modules.dep.bin" ]]; then
    log "depmod $kver"
    depmod -b "$root" "$kver"
fi

echo "$root $kver $vmlinuz" >"$stamp.tmp"
mv "$stamp.tmp" "$stamp"
echo "$root $kver $vmlinuz"
