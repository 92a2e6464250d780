#!/usr/bin/env bash
# The SELinux proof of kernel/README.md: boot a kernel built from kernel/
# (patches, kerneld.config) plus kernel/selinux.config under QEMU, load a
# policy (make-policy.sh) in which the requester's domain has no message
# queue permission, enforce it, and run proof.sh.
# Usage: tests/vm/selinux/run.sh LINUX_TREE   (built: bzImage and modules)
# Needs: root, gcc, checkpolicy, qemu-system-x86_64, busybox-static, kmod;
# the project's binaries in target/debug.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../../.." && pwd)
k=$(cd "${1:?usage: run.sh LINUX_TREE}" && pwd)
w=$(mktemp -d)
trap 'rm -rf "$w"' EXIT
export LIBCLANG_PATH=${LIBCLANG_PATH:-/usr/lib/llvm-14/lib}
bindgen=${BINDGEN:-/var/cache/kerneld-kernel/tools/bin/bindgen}
mk=(make LLVM=1 RUSTC=/usr/bin/rustc HOSTRUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc BINDGEN="$bindgen")
kver=$("${mk[@]}" -s -C "$k" kernelrelease)
"${mk[@]}" -s -C "$k" INSTALL_MOD_PATH="$w/root" DEPMOD=/bin/true modules_install
mkdir -p "$w/mod" "$w/root/lib/modules/$kver/extra"
cp "$repo"/kernel/module/Kbuild "$repo"/kernel/module/*.rs "$repo"/kernel/module/*.c "$w/mod/"
cp "$repo/kmod-ipc/src/wire.rs" "$w/mod/wire.rs"
"${mk[@]}" -s -C "$k" M="$w/mod" modules >/dev/null
cp "$w/mod/kerneld_shim.ko" "$w/root/lib/modules/$kver/extra/"
depmod -b "$w/root" "$kver"
"$here/make-policy.sh" "$k" "$w/policy.bin"
{
    echo "POLICY_B64='$(base64 -w0 "$w/policy.bin")'"
    cat "$here/proof.sh"
} >"$w/script.sh"
KERNELD_VM_SCRIPT="$w/script.sh" "$repo/tests/vm/build-initramfs.sh" "$w/root" "$kver" "$w/initramfs.gz"
# kdvm_reboot=1: init reboots when done, and -no-reboot ends QEMU.
timeout 300 qemu-system-x86_64 -accel tcg -m 512 -smp 2 -nographic -no-reboot -net none \
    -kernel "$k/arch/x86/boot/bzImage" -initrd "$w/initramfs.gz" \
    -append "console=ttyS0 panic=-1 quiet kdvm_mode=shim kdvm_script=1 kdvm_reboot=1 security=selinux selinux=1" </dev/null |
    tr -d '\r' | tee "$w/console.log" | grep -a 'SELINUX\|VMTEST DONE' || true
grep -q 'SELINUX RESULT [0-9]* passed, 0 failed' "$w/console.log"
