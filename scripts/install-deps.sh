#!/usr/bin/env bash
# Install what building and testing kerneld needs on Debian 12 (as root).
# Safe to run again: apt does nothing for packages already present, and
# nothing is downloaded when all are.  apt's own output shows the
# progress: the package lists fetched, what will be installed and the
# download size, each package as it is fetched and unpacked.
set -euo pipefail

packages=(
    # libkmod for the daemon (kmod-sys generates bindings with bindgen)
    libkmod-dev libclang-dev pkg-config gcc libc6-dev
    # the BPF LSM program of module-loads (cargo feature bpf-lsm): clang
    # compiles it for the bpf target, against the kernel's UAPI headers
    clang llvm linux-libc-dev
    # the real-kernel test: QEMU, the guest's userland, kernel packages
    qemu-system-x86 busybox-static kmod xz-utils zstd cpio
    # its debian series: a Debian 12 system made from Debian's archive
    # (root mode: nothing it recommends is needed)
    mmdebstrap
    # its SELinux series compiles a policy
    checkpolicy
    # manual page checks; the shell scripts' check in .ci/run
    mandoc man-db shellcheck
    # the Debian package: dpkg-buildpackage and dpkg-shlibdeps (dpkg-dev),
    # debhelper (dh, dh_installsystemd), lintian, and the check of the
    # installed unit (systemd-analyze verify); journalctl also checks the
    # journal catalog (tests/tests/catalog.rs)
    dpkg-dev debhelper lintian systemd
    # the journal test reads kerneld's entries back with journalctl --file
    # (systemd-journal-remote writes the journal file)
    systemd-journal-remote
    # the Prometheus test checks kdstat --prometheus and kerneld's
    # textfile with promtool check metrics (Debian ships promtool only
    # in the prometheus package)
    prometheus
)

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [[ ${#missing[@]} -eq 0 ]]; then
    echo "install-deps: all ${#packages[@]} packages present" >&2
else
    if [[ $(id -u) -ne 0 ]]; then
        echo "install-deps: missing ${missing[*]}; run as root (sudo $0)" >&2
        exit 4
    fi
    export DEBIAN_FRONTEND=noninteractive
    echo "install-deps: 1/2: apt-get update (the package lists)" >&2
    apt-get update >&2
    echo "install-deps: 2/2: installing ${#missing[@]} packages and what they need:" \
        "${missing[*]}" >&2
    # -q: apt's lines (Get:, Unpacking, Setting up) without the progress
    # bar, which would fill a log with carriage returns.
    apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
    echo "install-deps: done" >&2
fi
command -v cargo >/dev/null || {
    echo "install-deps: cargo not found; install Rust (rustup) first" >&2
    exit 1
}
