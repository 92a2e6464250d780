#!/usr/bin/env bash
# Build the Debian package from the source package in debian/ with
# dpkg-buildpackage (binary only, unsigned), and check it with lintian.
# The results (.deb, .buildinfo, .changes) go to $CARGO_TARGET_DIR/debian
# (target/debian by default); the path of the .deb is the last line on
# stdout.  Lintian's errors and warnings fail the build; its output is on
# stderr.
#
# Cargo builds in CARGO_TARGET_DIR (default: the workspace's target/), so
# a package build reuses the release build of scripts/build-release.sh.
# Rust: Debian 12's cargo-web if installed (debian/control's
# Build-Depends), else the cargo on PATH (rustup's) with the build profile
# pkg.kerneld.rustup (see debian/README.source).
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in cargo dpkg-buildpackage dh lintian; do
    command -v "$tool" >/dev/null || {
        echo "build-deb: $tool not found (scripts/install-deps.sh installs it)" >&2
        exit 1
    }
done

version=$(dpkg-parsechangelog -S Version)
cargo_version=$(sed -n '/^\[workspace\.package\]/,/^\[/s/^version = "\(.*\)"$/\1/p' Cargo.toml)
[[ "$version" == "$cargo_version" ]] || {
    echo "build-deb: debian/changelog is at $version, Cargo.toml at $cargo_version:" \
        "add a changelog entry (dch -v $cargo_version)" >&2
    exit 1
}
arch=$(dpkg --print-architecture)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
out=$CARGO_TARGET_DIR/debian
mkdir -p "$out"

profile=()
if ! dpkg-query -W -f='${Status}' cargo-web 2>/dev/null | grep -q 'ok installed'; then
    profile=(--build-profiles=pkg.kerneld.rustup)
fi

# dpkg-buildpackage writes its results next to the source tree, in ..;
# they are moved to $out, and the parent's copies of an earlier build
# are replaced, not mixed with.
name=kerneld_$version
parent=$(cd .. && pwd)
rm -f "$parent/${name}_$arch".{deb,buildinfo,changes} "$parent/kerneld-dbgsym_${version}_$arch.deb"
echo "build-deb: dpkg-buildpackage -us -uc -b -tc ${profile[*]} (cargo in $CARGO_TARGET_DIR)" >&2
# Its output (cargo's progress, debhelper's commands) goes to stderr, so
# that stdout keeps the one line callers read.
dpkg-buildpackage -us -uc -b -tc "${profile[@]}" >&2
results=("${name}_$arch.deb" "${name}_$arch.buildinfo" "${name}_$arch.changes")
[[ -f "$parent/kerneld-dbgsym_${version}_$arch.deb" ]] && results+=("kerneld-dbgsym_${version}_$arch.deb")
for f in "${results[@]}"; do
    mv -f "$parent/$f" "$out/$f"
done
deb=$out/${name}_$arch.deb

# Lintian on the .changes checks the package and the build's metadata.
# --fail-on error,warning: the goal is no error and no warning.
echo "build-deb: lintian $out/${name}_$arch.changes" >&2
lintian --fail-on error,warning --display-info --pedantic \
    "$out/${name}_$arch.changes" >&2 || {
    echo "build-deb: lintian found errors or warnings (above)" >&2
    exit 1
}
echo "build-deb: $(du -k "$deb" | cut -f1) KiB, Depends: $(dpkg-deb -f "$deb" Depends)" >&2
echo "$deb"
