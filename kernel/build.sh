#!/usr/bin/env bash
# Build the kerneld kernel: Debian's linux-source-6.12 (or 7.3) with the
# patch series of kernel/patches/ (or kernel/patches-7.3/), the config
# fragment kernel/kerneld.config and Rust for Linux, and the Rust module
# kernel/module/ (kerneld_shim.ko) against it.
#
# Usage: kernel/build.sh [--series 6.12|7.3] [--no-deps] [--print] [-j N]
#   --series   the kernel: 6.12 (default; bookworm's linux-source-6.12) or
#              7.3 (trixie-backports' linux-source-7.3, read through
#              package lists of its own, never the system's sources)
#   --no-deps  do not apt-get install or cargo install anything
#   --print    print only the result line (for scripts)
#   -j N       make jobs (default: the number of CPUs)
#
# Prints one line on stdout, as tests/vm/fetch-kernel.sh does:
#   ROOT KVER VMLINUZ
#   ROOT     a module tree (ROOT/lib/modules/KVER, depmod'ed) holding the
#            kernel's modules and extra/kerneld_shim.ko
#   KVER     the kernel release (6.12.N-kerneld, 7.3.N-kerneld)
#   VMLINUZ  the bootable image (bzImage)
#
# Everything is cached outside the repository, under
# ${KERNELD_KERNEL_CACHE:-/var/cache/kerneld-kernel}:
#   k-SERIES-HASH/  the kernel build tree, image and modules; HASH covers
#            the linux-source version, the patches, the fragment, the
#            kernel part of this script and the toolchain (rustc, bindgen,
#            clang)
#   m-SERIES-HASH/  the module and the ROOT above; HASH adds the module's
#            sources and kmod-ipc/src/wire.rs, which it includes
#   src/     the pinned linux-source package when it is not the installed
#            one; apt-trixie-backports/ the private package lists
# A warm machine therefore rebuilds nothing, and a change to the module
# alone rebuilds the module alone (seconds).  Older entries of the same
# series are removed once a new one is complete.
#
# Each series builds one pinned source version (below): a security upload
# of linux-source-* never changes what is built unseen.  When the pinned
# version is no longer offered, the build stops and says so; check that
# the series still applies to the new one, then move the pin.
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
series=6.12
while [[ $# -gt 0 ]]; do
    case "$1" in
        --series) series=${2:?--series needs 6.12 or 7.3}; shift 2 ;;
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

log() { echo "kernel/build.sh[$series]: $*" >&2; }
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

# --- the series -------------------------------------------------------------
# src_pkg=src_ver: the pinned source; patches: its series; llvm: the LLVM=
# value (clang, lld, llvm-ar, ...) and libclang for bindgen; cfg_gone: lines
# of kerneld.config the series' Kconfig no longer has, not checked there.
case "$series" in
    6.12)
        src_pkg=linux-source-6.12
        src_ver=6.12.118-1~deb12u1
        src_suite= # bookworm-security, the system's own sources
        patches=$here/patches
        llvm=1
        llvm_pkgs=(clang lld llvm libclang-dev)
        libclang=/usr/lib/llvm-14/lib
        cfg_gone=()
        ;;
    7.3)
        src_pkg=linux-source-7.3
        src_ver=7.3.4-1~bpo13+1
        src_suite=trixie-backports
        patches=$here/patches-7.3
        # 7.x wants clang and libclang 17 or newer; bookworm has 19.
        llvm=-19
        llvm_pkgs=(clang-19 lld-19 llvm-19 libclang-19-dev)
        libclang=/usr/lib/llvm-19/lib
        # Sysctl support is no longer an option (always there with
        # PROC_FS); libcrc32c is gone, crc32c() is in lib/crc.
        cfg_gone=(CONFIG_PROC_SYSCTL CONFIG_LIBCRC32C)
        ;;
    *) die "--series must be 6.12 or 7.3, not $series" ;;
esac

# --- what it needs --------------------------------------------------------
apt_pkgs=(rustc-web rust-web-src rust-web-clippy rustfmt-web
    "${llvm_pkgs[@]}" flex bison bc libelf-dev libssl-dev cpio make
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

# The pinned source: the installed package if it is that version, else
# that version downloaded (apt-get download, nothing installed).
tarball=/usr/src/$src_pkg.tar.xz
if [[ -n $src_suite || ! -f $tarball ||
    $(dpkg-query -W -f='${Version}' "$src_pkg" 2>/dev/null || true) != "$src_ver" ]]; then
    sdir=$cache/src/${src_pkg}_$src_ver
    tarball=$sdir/$src_pkg.tar.xz
    if [[ ! -f $tarball ]]; then
        apt_opts=()
        if [[ -n $src_suite ]]; then
            # shellcheck source=debian-suite.sh
            . "$here/debian-suite.sh"
            debian_suite "$cache/apt-$src_suite" "$src_suite"
            apt_opts=("${debian_suite_opts[@]}")
        fi
        rm -rf "$sdir.tmp"
        mkdir -p "$sdir.tmp"
        # apt-get download writes into the current directory, as user _apt
        # when it may.
        chown _apt "$sdir.tmp" 2>/dev/null || true
        fetch() { (cd "$sdir.tmp" && apt-get "${apt_opts[@]}" download "$src_pkg=$src_ver" >&2); }
        if ! fetch; then
            # Lists older than the pin do not know it: refresh once.
            if [[ -n $src_suite ]]; then
                debian_suite_update
            elif [[ $deps == 1 ]]; then
                apt-get update -qq >&2 || true
            fi
            fetch || die "$src_pkg $src_ver, the version this series is pinned to, is not offered
  (apt-cache policy $src_pkg${src_suite:+, with the options of kernel/debian-suite.sh for $src_suite,} shows what is).
  A security upload replaced it: check that $(basename "$patches")/ still applies to the
  new version (kernel/README.md), then set src_ver in kernel/build.sh to it."
        fi
        deb=$(find "$sdir.tmp" -name "${src_pkg}_*.deb" | head -n 1)
        [[ -n $deb ]] || die "apt-get download $src_pkg=$src_ver produced no .deb in $sdir.tmp"
        dpkg-deb --fsys-tarfile "$deb" | tar -xO "./usr/src/$src_pkg.tar.xz" >"$sdir.tmp/$src_pkg.tar.xz" ||
            die "$deb holds no usr/src/$src_pkg.tar.xz"
        rm -f "$deb"
        rm -rf "$sdir"
        mv "$sdir.tmp" "$sdir"
    fi
fi
srcver=$src_ver

# Every make, the module's too, must use Debian's rustc-web (paired with
# rust-web-src), not a rustup toolchain earlier in PATH: a module built by
# another rustc than the kernel's crates fails with E0514.
export LIBCLANG_PATH=${LIBCLANG_PATH:-$libclang}
mk=(make "LLVM=$llvm" RUSTC=/usr/bin/rustc HOSTRUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc
    BINDGEN="$bindgen" -j"$jobs")

clang=clang
[[ $llvm == 1 ]] || clang=clang$llvm
toolchain="$(/usr/bin/rustc --version) | $("$bindgen" --version) | $($clang --version | head -n 1)"
khash=$( {
    echo "$src_pkg $srcver"
    echo "$toolchain"
    cat "$here/kerneld.config"
    # The kernel part of this script, not the module's.
    sed '/^# --- the module/,$d' "$here/build.sh"
    for p in "$patches"/[0-9]*.patch; do
        # The cover letter changes no code.
        [[ $(basename "$p") == 0000-cover-letter.patch ]] && continue
        echo "$(basename "$p")"
        cat "$p"
    done
} | sha256sum | cut -c1-16)
kdir=$cache/k-$series-$khash

# --- the kernel -------------------------------------------------------------
if [[ ! -f $kdir/done ]]; then
    log "building the kernel ($src_pkg $srcver, cache $kdir; 5 to 20 minutes on 2 CPUs)"
    t0=$SECONDS
    # Built in place (the tree's Makefiles know their absolute path); the
    # done file, written last, marks a complete build.
    rm -rf "$kdir"
    mkdir -p "$kdir"
    klog=$kdir/build.log
    tar -C "$kdir" -xf "$tarball"
    mv "$kdir/$src_pkg" "$kdir/linux"
    src=$kdir/linux
    for p in "$patches"/[0-9]*.patch; do
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
        o=${line#\# }
        o=${o%%[= ]*}
        [[ " ${cfg_gone[*]} " != *" $o "* ]] || continue
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
mdir=$cache/m-$series-$mhash
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

# Older builds of this series: keep only the current ones (and what they
# point to).  k-HASH and m-HASH, without a series, are from before 7.3.
for old in "$cache"/k-"$series"-* "$cache"/m-"$series"-* "$cache"/k-???????????????? "$cache"/m-????????????????; do
    [[ -f $old/done ]] || continue
    [[ $old == "$kdir" || $old == "$mdir" ]] && continue
    rm -rf "$old"
done

[[ $print == 1 ]] || log "kernel $kver: $kdir/bzImage; module $mdir/root/lib/modules/$kver/extra/kerneld_shim.ko"
echo "$mdir/root $kver $kdir/bzImage"
