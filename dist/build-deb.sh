#!/usr/bin/env bash
# Build the Debian package target/debian/kerneld_<version>_<arch>.deb from
# the workspace: a release build, dist/install.sh into a staging tree
# (PREFIX=/usr), the control files of dist/debian/, dpkg-deb.
# Prints the path of the package on its last line.
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in cargo dpkg-deb dpkg-shlibdeps; do
    command -v "$tool" >/dev/null || {
        echo "build-deb: $tool not found (scripts/install-deps.sh installs it)" >&2
        exit 1
    }
done

version=$(sed -n '/^\[workspace\.package\]/,/^\[/s/^version = "\(.*\)"$/\1/p' Cargo.toml)
[[ -n "$version" ]] || { echo "build-deb: no version in Cargo.toml" >&2; exit 1; }
arch=$(dpkg --print-architecture)
out=target/debian
stage=$out/kerneld_${version}_$arch
deb=$stage.deb

scripts/build-release.sh
built=$(target/release/kerneld --version)
[[ "$built" == "kerneld $version" ]] || {
    echo "build-deb: target/release/kerneld says '$built', Cargo.toml $version" >&2
    exit 1
}

rm -rf "$stage" "$deb"
mkdir -p "$stage"
dist/install.sh install PREFIX=/usr DESTDIR="$stage" TARGET_DIR=target/release >/dev/null
# dpkg keeps its own list of the package's files.
rm "$stage/usr/share/kerneld/installed-files"
rmdir "$stage/usr/share/kerneld"
# Debian policy: compressed manual pages, a copyright file.
gzip -9n "$stage"/usr/share/man/man*/*
install -m 644 dist/debian/copyright "$stage/usr/share/doc/kerneld/copyright"

# Library dependencies, from the binaries themselves.
shlibs_dir=$(mktemp -d)
trap 'rm -rf "$shlibs_dir"' EXIT
mkdir "$shlibs_dir/debian"
printf 'Source: kerneld\n\nPackage: kerneld\nArchitecture: any\n' >"$shlibs_dir/debian/control"
abs_stage=$(cd "$stage" && pwd)
depends=$(cd "$shlibs_dir" && dpkg-shlibdeps -O \
    "$abs_stage"/usr/sbin/kerneld "$abs_stage"/usr/sbin/kerneld-modprobe \
    "$abs_stage"/usr/bin/kdstat "$abs_stage"/usr/bin/kdsend 2>/dev/null |
    sed -n 's/^shlibs:Depends=//p')
[[ "$depends" == *libc6* && "$depends" == *libkmod2* ]] || {
    echo "build-deb: dpkg-shlibdeps found '$depends', expected libc6 and libkmod2" >&2
    exit 1
}

mkdir -m 755 "$stage/DEBIAN"
install -m 644 dist/debian/conffiles "$stage/DEBIAN/conffiles"
install -m 755 dist/debian/postinst dist/debian/prerm dist/debian/postrm "$stage/DEBIAN/"
size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
cat >"$stage/DEBIAN/control" <<EOF
Package: kerneld
Version: $version
Architecture: $arch
Maintainer: kerneld maintainers <kerneld@example.invalid>
Installed-Size: $size
Depends: $depends
Recommends: kmod
Section: admin
Priority: optional
Homepage: https://example.invalid/kerneld
Description: load kernel modules on request, unload them when idle
 kerneld serves the kernel's request_module() calls over the SysV message
 queue protocol of the 1995 kerneld: a small helper registered in
 /proc/sys/kernel/modprobe passes each request to the daemon, which loads
 the module through libkmod, answers, and unloads the modules it loaded
 once they are idle.
 .
 Requests are decided against a policy (which names may be requested,
 which modules loaded, by whom), and every decision is logged with the
 task that caused it.  kdstat shows and tunes the running daemon; kdsend
 sends requests by hand.  Without kerneld running, the helper hands
 requests to modprobe, so modules keep loading.
EOF
(cd "$stage" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' |
    sort -z | xargs -0 md5sum) >"$stage/DEBIAN/md5sums"
chmod 644 "$stage/DEBIAN/md5sums"

dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb" >/dev/null
echo "build-deb: $(du -k "$deb" | cut -f1) KiB, installed $size KiB, Depends: $depends" >&2
echo "$deb"
