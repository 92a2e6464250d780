#!/usr/bin/env bash
# Build the gzip'd cpio (newc) initramfs the VM tests boot with.
#
# Usage: tests/vm/build-initramfs.sh ROOT KVER OUTPUT
#   ROOT, KVER  as printed by fetch-kernel.sh (unpacked kernel package)
#   OUTPUT      initramfs file to write
#
# The image is the whole guest: busybox, Debian's kmod, the project's
# binaries from ${KERNELD_BIN_DIR:-<repo>/target/debug} (each one optional,
# so the modprobe baseline works before they exist), the static helper
# trigger, the shared libraries all of them need, and the modules of
# modules.list with their dependencies at their package paths. With
# KERNELD_VM_SCRIPT=FILE, FILE becomes /script.sh (init runs it instead of
# the scenarios when the kernel command line says kdvm_script=1).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)

if [[ $# -ne 3 ]]; then
    echo "usage: $0 ROOT KVER OUTPUT" >&2
    exit 2
fi
root=$1 kver=$2 out=$3
bindir=${KERNELD_BIN_DIR:-$repo/target/debug}
moddir="$root/lib/modules/$kver"

log() { echo "build-initramfs: $*" >&2; }
die() {
    log "error: $*"
    exit 1
}

[[ -f "$moddir/modules.dep" ]] || die "$moddir/modules.dep missing (run fetch-kernel.sh)"
[[ $(id -u) -eq 0 ]] || die "must run as root (device nodes are created with mknod)"

stage=$(mktemp -d "${TMPDIR:-/tmp}/kerneld-initramfs.XXXXXX")
trap 'rm -rf "$stage"' EXIT

mkdir -p "$stage"/{bin,sbin,usr/bin,usr/sbin,lib,lib64,etc,dev,proc,sys,tmp,run,root,home/user,var/log}
chmod 1777 "$stage/tmp"

# --- busybox and its applet links -------------------------------------------
busybox=$(command -v busybox) || die "busybox not found (apt-get install busybox-static)"
cp "$busybox" "$stage/bin/busybox"
# kmod provides the module tools: the real modprobe is the fallback and the
# baseline, busybox's would not read the .bin indexes or xz modules alike.
kmod_tools=" modprobe insmod rmmod lsmod depmod modinfo "
while read -r applet; do
    name=${applet##*/}
    [[ "$kmod_tools" == *" $name "* ]] && continue
    [[ -e "$stage/$applet" ]] || ln -s /bin/busybox "$stage/$applet"
done < <("$stage/bin/busybox" --list-full)

# --- kmod ------------------------------------------------------------------
kmod=$(command -v kmod) || die "kmod not found (apt-get install kmod)"
cp "$kmod" "$stage/bin/kmod"
for tool in $kmod_tools; do
    ln -sf /bin/kmod "$stage/sbin/$tool"
done

# --- the project's binaries ------------------------------------------------
# Debug builds carry hundreds of MB of DWARF; strip it from the copies so
# the guest unpacks quickly under TCG (symbols stay for backtraces).
add_bin() {
    local src="$bindir/$1" dst="$stage/$2/$1"
    if [[ -x "$src" ]]; then
        cp "$src" "$dst"
        strip --strip-debug "$dst" 2>/dev/null || true
    else
        log "note: $src not built, leaving it out"
    fi
}
add_bin kerneld sbin
add_bin kerneld-modprobe sbin
add_bin kdstat bin
add_bin kdsend bin

# --- helper and guest scripts ----------------------------------------------
cc -static -O2 -Wall -o "$stage/bin/trigger" "$here/trigger.c"
install -m 0755 "$here/init" "$stage/init"
install -m 0755 "$here/scenarios.sh" "$stage/scenarios.sh"
install -m 0755 "$here/shim-scenarios.sh" "$stage/shim-scenarios.sh"
install -m 0644 "$here/modload-scenarios.sh" "$stage/modload-scenarios.sh"
install -m 0755 "$here/early-boot.sh" "$stage/early-boot.sh"
install -m 0644 "$here/guest-lib.sh" "$stage/guest-lib.sh"
# The policy file the early-boot scenario includes, as installed.
mkdir -p "$stage/etc/kerneld"
install -m 0644 "$repo/etc/rare-protocols.conf" "$stage/etc/kerneld/rare-protocols.conf"
if [[ -n "${KERNELD_VM_SCRIPT:-}" ]]; then
    install -m 0755 "$KERNELD_VM_SCRIPT" "$stage/script.sh"
fi

# --- shared libraries ------------------------------------------------------
# ldd prints the transitive closure, so one pass over every ELF suffices.
copy_lib() {
    local lib=$1
    [[ -e "$stage$lib" ]] && return 0
    mkdir -p "$stage$(dirname "$lib")"
    cp -L "$lib" "$stage$lib"
}
while IFS= read -r -d '' f; do
    [[ -L "$f" ]] && continue
    [[ $(head -c 4 "$f" | od -An -c | tr -d ' ') == '177ELF' ]] || continue
    # Static binaries make ldd fail; they need nothing.
    deps=$(ldd "$f" 2>/dev/null) || continue
    while read -r lib; do
        copy_lib "$lib"
    done < <(awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' <<<"$deps")
done < <(find "$stage/bin" "$stage/sbin" -type f -print0)

# --- modules ---------------------------------------------------------------
mkdir -p "$stage/lib/modules/$kver"
nmods=0
while read -r name _; do
    [[ -z "$name" || "$name" == \#* ]] && continue
    if ! deps=$(modprobe -d "$root" -S "$kver" --show-depends "$name" 2>&1); then
        if [[ "${KERNELD_VM_MISSING_OK:-0}" == 1 && "$deps" == *"not found"* ]]; then
            echo "build-initramfs: $name is not in $kver; left out" >&2
            continue
        fi
        die "modprobe --show-depends $name: $deps"
    fi
    while read -r kind path _; do
        # "builtin NAME" lines need no file.
        [[ "$kind" == insmod ]] || continue
        rel=${path#"$root"}
        rel="/lib/modules/$kver/${rel#*/lib/modules/"$kver"/}"
        if [[ ! -e "$stage$rel" ]]; then
            mkdir -p "$stage$(dirname "$rel")"
            cp "$path" "$stage$rel"
            nmods=$((nmods + 1))
        fi
    done <<<"$deps"
done <"$here/modules.list"
# Our own kernel (kernel/build.sh) carries the in-kernel sender.
if [[ -f "$moddir/extra/kerneld_shim.ko" ]]; then
    mkdir -p "$stage/lib/modules/$kver/extra"
    cp "$moddir/extra/kerneld_shim.ko" "$stage/lib/modules/$kver/extra/"
fi
# can-bcm without its signature: the unsigned module of scenario 17. The
# appended signature ends with a 12-byte struct module_signature (its last
# field the signature's length, big-endian) and the 28-byte magic.
bcm=$(find "$stage/lib/modules/$kver" -name 'can-bcm.ko*' | head -n 1)
if [[ -n "$bcm" ]]; then
    plain=${bcm%.ko*}.ko
    case "$bcm" in
        *.ko.xz) xz -dc "$bcm" >"$plain.tmp" ;;
        *.ko.zst) zstd -qdc "$bcm" >"$plain.tmp" ;;
        *.ko.gz) gzip -dc "$bcm" >"$plain.tmp" ;;
        *) cp "$bcm" "$plain.tmp" ;;
    esac
    rm -f "$bcm"
    if tail -c 28 "$plain.tmp" | grep -qa '^~Module signature appended~$'; then
        siglen=$(tail -c 32 "$plain.tmp" | head -c 4 | od -An -tu1 |
            awk '{print $1 * 16777216 + $2 * 65536 + $3 * 256 + $4}')
        truncate -s $(($(stat -c %s "$plain.tmp") - 40 - siglen)) "$plain.tmp"
    fi
    mv "$plain.tmp" "$plain"
fi
cp "$moddir"/modules.order "$moddir"/modules.builtin* "$stage/lib/modules/$kver/"
depmod -b "$stage" "$kver"
# libcrc32c's softdep (pre: crc32c) makes modprobe and libkmod load crc32c
# before it, so its init would never ask the kernel for crypto-crc32c. Drop
# it in the guest: scenario 3 is about that request nested inside another.
sed -i '/^softdep libcrc32c /d' "$stage/lib/modules/$kver/modules.softdep"
log "$nmods module files for $kver"

# --- /dev, users ------------------------------------------------------------
# The kernel opens /dev/console for init before anything is mounted; /dev/null
# is where Rust's runtime reopens closed stdio. devtmpfs covers both later.
mknod -m 600 "$stage/dev/console" c 5 1
mknod -m 666 "$stage/dev/null" c 1 3
cat >"$stage/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
user:x:1000:1000:user:/home/user:/bin/sh
user2:x:1001:1001:second user:/home/user:/bin/sh
EOF
cat >"$stage/etc/group" <<'EOF'
root:x:0:
user:x:1000:
user2:x:1001:
EOF
chown 1000:1000 "$stage/home/user"

# --- pack --------------------------------------------------------------------
mkdir -p "$(dirname "$out")"
(cd "$stage" && find . -print0 | LC_ALL=C sort -z |
    cpio --null --quiet -o -H newc) | gzip -6 >"$out.tmp"
mv "$out.tmp" "$out"
log "wrote $out ($(du -k "$out" | cut -f1) KiB packed, $(du -sk "$stage" | cut -f1) KiB unpacked)"
