#!/usr/bin/env bash
# Install what building and testing kerneld needs on Debian 12 (as root).
# Safe to run again: apt does nothing for packages already present.
set -euo pipefail

packages=(
    # libkmod for the daemon (kmod-sys generates bindings with bindgen)
    libkmod-dev libclang-dev pkg-config gcc libc6-dev
    # the real-kernel test: QEMU, the guest's userland, kernel packages
    qemu-system-x86 busybox-static kmod xz-utils zstd cpio
    # manual page checks
    mandoc man-db
    # the Debian package: dpkg-shlibdeps (dpkg-dev), the check of the
    # installed unit (systemd-analyze verify)
    dpkg-dev systemd
)

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [[ ${#missing[@]} -gt 0 ]]; then
    if [[ $(id -u) -ne 0 ]]; then
        echo "install-deps: missing ${missing[*]}; run as root (sudo $0)" >&2
        exit 4
    fi
    echo "install-deps: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
command -v cargo >/dev/null || {
    echo "install-deps: cargo not found; install Rust (rustup) first" >&2
    exit 1
}
