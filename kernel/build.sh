#!/usr/bin/env bash
# Build the kerneld kernel: Debian's linux-source-6.12 with the patch series
# of kernel/patches/, the config fragment kernel/kerneld.config and Rust for
# Linux, and the Rust module kernel/module/ (kerneld_shim.ko) against it.
#
# Usage: kernel/build.sh [--no-deps] [--print] [-j N]
#   --no-deps  do not apt-get install or cargo install anything
#   --print    print only the result line (for scripts)
#   -j N       make jobs (default: the number of CPUs)
#
# Prints one line on stdout, as tests/vm/fetch-kernel.sh does:
#   ROOT KVER VMLINUZ
#   ROOT     a module tree (ROOT/lib/modules/KVER, depmod'ed) holding the
#            kernel's modules and extra/kerneld_shim.ko
#   KVER     the kernel release (6.12.N-kerneld)
#   VMLINUZ  the bootable image (bzImage)
#
# Everything is cached outside the repository, under
# ${KERNELD_KERNEL_CACHE:-/var/cache/kerneld-kernel}:
#   k-HASH/  the kernel build tree, image and modules; HASH covers the
#            linux-source version, the patches, the fragment, the kernel
#            part of this script and the toolchain (rustc, bindgen, clang)
#   m-HASH/  the module and the ROOT above; HASH adds the module's sources
#            and kmod-ipc/src/wire.rs, which it includes
# A warm machine therefore rebuilds nothing, and a change to the module
# alone rebuilds the module alone (seconds).  Older entries are removed
# once a new one is complete.
#
# Needs root for apt-get.  First run: 5 to 20 minutes on 2 CPUs.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
cache=${KERNELD_KERNEL_CACHE:-/var/cache/kerneld-kernel}
BINDGEN_VERSION=0.73.2

deps=1
print=0
jobs=$(nproc)
while [[ $# -gt 0 ]]; do
    case "$1" in
        --no-deps) deps=0; shift ;;
        --print) print=1; shift ;;
        -j) jobs=${2:?-j needs a number}; shift 2 ;;
        -h | --help)
            sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
            exit 0
            ;;
        *) echo "build.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done

log() { echo "kernel/build.sh: $*" >&2; }
die() { log "error: $*"; exit 1; }
# Long steps write to a log file; on failure its tail is shown.
quiet() {
    local logf=$1
    shift
    if ! "$@" >>"$logf" 2>&1; then
        log "failed: $* (log $logf):"
        tail -n 40 "$logf" >&2
        exit 1
    fi
}

# --- what it needs --------------------------------------------------------
apt_pkgs=(linux-source-6.12 rustc-web rust-web-src rust-web-clippy rustfmt-web
    clang lld llvm libclang-dev flex bison bc libelf-dev libssl-dev cpio make
    xz-utils kmod patch)
missing=()
for p in "${apt_pkgs[@]}"; do
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed' || missing+=("$p")
done
if [[ ${#missing[@]} -gt 0 ]]; then
    [[ $deps == 1 ]] || die "missing packages: ${missing[*]} (run without --no-deps)"
    log "apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2 || true
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

# bindgen: Debian's is too old for Rust for Linux 6.12 (it wants >= 0.65.1).
bindgen=
for b in "$cache/tools/bin/bindgen" "$HOME/.cargo/bin/bindgen"; do
    if [[ -x "$b" ]] && "$b" --version 2>/dev/null | grep -q " $BINDGEN_VERSION\$"; then
        bindgen=$b
        break
    fi
done
if [[ -z "$bindgen" ]]; then
    [[ $deps == 1 ]] || die "bindgen $BINDGEN_VERSION not installed (run without --no-deps)"
    log "cargo install --locked bindgen-cli --version $BINDGEN_VERSION (a few minutes)"
    mkdir -p "$cache/tools"
    # Built by the workspace's cargo; Debian's rustc-web is only for the kernel.
    cargo install --locked bindgen-cli --version "$BINDGEN_VERSION" --root "$cache/tools" >&2
    bindgen=$cache/tools/bin/bindgen
fi

tarball=/usr/src/linux-source-6.12.tar.xz
[[ -f $tarball ]] || die "$tarball missing (apt-get install linux-source-6.12)"
srcver=$(dpkg-query -W -f='${Version}' linux-source-6.12)

# Every make, the module's too, must use Debian's rustc-web (paired with
# rust-web-src), not a rustup toolchain earlier in PATH: a module built by
# another rustc than the kernel's crates fails with E0514.
export LIBCLANG_PATH=${LIBCLANG_PATH:-/usr/lib/llvm-14/lib}
mk=(make LLVM=1 RUSTC=/usr/bin/rustc HOSTRUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc
    BINDGEN="$bindgen" -j"$jobs")

toolchain="$(/usr/bin/rustc --version) | $("$bindgen" --version) | $(clang --version | head -n 1)"
khash=$( {
    echo "linux-source-6.12 $srcver"
    echo "$toolchain"
    cat "$here/kerneld.config"
    # The kernel part of this script, not the module's.
    sed '/^# --- the module/,$d' "$here/build.sh"
    for p in "$here"/patches/[0-9]*.patch; do
        # The cover letter changes no code.
        [[ $(basename "$p") == 0000-cover-letter.patch ]] && continue
        echo "$(basename "$p")"
        cat "$p"
    done
} | sha256sum | cut -c1-16)
kdir=$cache/k-$khash

# --- the kernel -------------------------------------------------------------
if [[ ! -f $kdir/done ]]; then
    log "building the kernel (linux-source-6.12 $srcver, cache $kdir; 5 to 20 minutes on 2 CPUs)"
    t0=$SECONDS
    # Built in place (the tree's Makefiles know their absolute path); the
    # done file, written last, marks a complete build.
    rm -rf "$kdir"
    mkdir -p "$kdir"
    klog=$kdir/build.log
    tar -C "$kdir" -xf "$tarball"
    mv "$kdir/linux-source-6.12" "$kdir/linux"
    src=$kdir/linux
    for p in "$here"/patches/[0-9]*.patch; do
        [[ $(basename "$p") == 0000-cover-letter.patch ]] && continue
        quiet "$klog" patch -d "$src" -p1 --forward --no-backup-if-mismatch -i "$p"
    done
    # A release of our own, so the modules never mix with Debian's.
    echo "-kerneld" >"$src/localversion-kerneld"
    quiet "$klog" "${mk[@]}" -C "$src" tinyconfig
    quiet "$klog" "$src/scripts/kconfig/merge_config.sh" -m -O "$src" "$src/.config" "$here/kerneld.config"
    quiet "$klog" "${mk[@]}" -C "$src" olddefconfig
    # Kconfig drops what it cannot satisfy without a word: check each line.
    bad=
    while IFS= read -r line; do
        case "$line" in
            CONFIG_*=*) grep -qx -- "$line" "$src/.config" || bad+=" $line" ;;
            "# CONFIG_"*" is not set")
                o=${line#\# }
                o=${o%% *}
                ! grep -q "^$o=" "$src/.config" || bad+=" $o=n"
                ;;
        esac
    done <"$here/kerneld.config"
    [[ -z $bad ]] || die "the kernel config lacks:$bad (see $klog; 'make rustavailable' says why Rust would be off)"
    quiet "$klog" "${mk[@]}" -C "$src" bzImage modules
    quiet "$klog" "${mk[@]}" -C "$src" INSTALL_MOD_PATH="$kdir/modroot" DEPMOD=/bin/true modules_install
    cp "$src/arch/x86/boot/bzImage" "$kdir/bzImage"
    "${mk[@]}" -s -C "$src" kernelrelease >"$kdir/kver"
    echo "built in $((SECONDS - t0)) s" >"$kdir/done"
    log "kernel built in $((SECONDS - t0)) s"
fi
kver=$(cat "$kdir/kver")
ksrc=$kdir/linux

# --- the module -------------------------------------------------------------
mhash=$( {
    echo "$khash"
    cat "$here"/module/Kbuild "$here"/module/*.rs "$here"/module/*.c "$repo/kmod-ipc/src/wire.rs"
} | sha256sum | cut -c1-16)
mdir=$cache/m-$mhash
if [[ ! -f $mdir/done ]]; then
    t0=$SECONDS
    rm -rf "$mdir.tmp"
    mkdir -p "$mdir.tmp/src"
    cp "$here"/module/Kbuild "$here"/module/*.rs "$here"/module/*.c "$mdir.tmp/src/"
    cp "$repo/kmod-ipc/src/wire.rs" "$mdir.tmp/src/wire.rs"
    mlog=$mdir.tmp/build.log
    quiet "$mlog" "${mk[@]}" -C "$ksrc" M="$mdir.tmp/src" modules
    root=$mdir.tmp/root
    mkdir -p "$root/lib/modules"
    cp -a "$kdir/modroot/lib/modules/$kver" "$root/lib/modules/"
    rm -f "$root/lib/modules/$kver/build" "$root/lib/modules/$kver/source"
    mkdir -p "$root/lib/modules/$kver/extra"
    cp "$mdir.tmp/src/kerneld_shim.ko" "$root/lib/modules/$kver/extra/"
    depmod -b "$root" "$kver"
    echo "built in $((SECONDS - t0)) s" >"$mdir.tmp/done"
    rm -rf "$mdir"
    mv "$mdir.tmp" "$mdir"
    log "module built in $((SECONDS - t0)) s"
fi

# Older builds: keep only the current ones (and what they point to).
for old in "$cache"/k-* "$cache"/m-*; do
    [[ -f $old/done ]] || continue
    [[ $old == "$kdir" || $old == "$mdir" ]] && continue
    rm -rf "$old"
done

[[ $print == 1 ]] || log "kernel $kver: $kdir/bzImage; module $mdir/root/lib/modules/$kver/extra/kerneld_shim.ko"
echo "$mdir/root $kver $kdir/bzImage"
