#!/usr/bin/env bash
# Build the Debian source package (.dsc and .tar.xz) with the crates of
# Cargo.lock vendored into it, so that it builds as Debian builds: with no
# network.  The vendored crates are not in the repository; this script
# puts them into a copy of the tree (cargo vendor, vendor/ and the
# .cargo/config.toml that makes cargo use it), and dpkg-source packs that.
#
# Usage: dist/build-source.sh [--check]
#   --check   then unpack the source package and build the binary package
#             from it in a network namespace without network (unshare -n),
#             with an empty CARGO_HOME and its own target directory
#
# The results go to $CARGO_TARGET_DIR/debian-source (target/debian-source
# by default); the path of the .dsc is the last line on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."

check=0
case "${1:-}" in
    --check) check=1 ;;
    "") ;;
    *)
        echo "usage: $0 [--check]" >&2
        exit 2
        ;;
esac
for tool in cargo dpkg-source git; do
    command -v "$tool" >/dev/null || {
        echo "build-source: $tool not found (scripts/install-deps.sh installs it)" >&2
        exit 1
    }
done

version=$(dpkg-parsechangelog -S Version)
out=${CARGO_TARGET_DIR:-$PWD/target}/debian-source
rm -rf "$out"
mkdir -p "$out"
src=$out/kerneld-$version

# The tree as git has it (committed or not, ignored files left out).
git ls-files -z --cached --others --exclude-standard |
    while IFS= read -r -d '' f; do [[ -e "$f" ]] && printf '%s\0' "$f"; done |
    tar --null -T - -cf - | tar -C "$out" --one-top-level="kerneld-$version" -xf -

echo "build-source: cargo vendor (the crates of Cargo.lock)" >&2
mkdir -p "$src/.cargo"
# cargo vendor prints the configuration that points cargo at vendor/.
(cd "$src" && cargo vendor --locked --versioned-dirs vendor) >"$src/.cargo/config.toml"
grep -q 'directory = "vendor"' "$src/.cargo/config.toml" || {
    echo "build-source: cargo vendor wrote no source replacement" >&2
    exit 1
}

# dpkg-source leaves out some of the crates' files (its default
# tar-ignore: Cargo.toml.orig, .gitignore, ...), which cargo would miss
# against each crate's list of file checksums: keep only the checksum of
# the crate itself, as Debian's own vendored Rust sources do.
find "$src/vendor" -name .cargo-checksum.json -print0 |
    xargs -0 sed -i -E 's/"files":\{[^}]*\}/"files":{}/'

echo "build-source: dpkg-source -b ($(du -sm "$src/vendor" | cut -f1) MiB vendored)" >&2
(cd "$out" && dpkg-source -b "kerneld-$version" >&2)
dsc=$out/kerneld_$version.dsc
rm -rf "$src"

if [[ $check == 1 ]]; then
    command -v unshare >/dev/null || {
        echo "build-source: unshare not found (util-linux)" >&2
        exit 1
    }
    [[ $(id -u) -eq 0 ]] || {
        echo "build-source: --check needs root (unshare -n)" >&2
        exit 4
    }
    (cd "$out" && dpkg-source -x "$dsc" build >&2)
    profile=()
    if ! dpkg-query -W -f='${Status}' cargo-web 2>/dev/null | grep -q 'ok installed'; then
        profile=(--build-profiles=pkg.kerneld.rustup)
    fi
    echo "build-source: dpkg-buildpackage -b in a namespace without network" >&2
    # An empty CARGO_HOME (nothing fetched before) and no target dir from
    # outside: everything comes from the source package.  rustup's
    # toolchain, if that is the cargo, stays where it is.
    (
        cd "$out/build"
        export CARGO_HOME=$out/cargo-home RUSTUP_HOME=${RUSTUP_HOME:-$HOME/.rustup}
        unset CARGO_TARGET_DIR
        mkdir -p "$CARGO_HOME"
        unshare -n -- sh -c '! getent ahosts deb.debian.org >/dev/null 2>&1 || exit 9
            exec dpkg-buildpackage -us -uc -b "$@"' sh "${profile[@]}" >&2
    ) || {
        echo "build-source: the offline build failed (above)" >&2
        exit 1
    }
    echo "build-source: the source package builds without network" >&2
fi
echo "$dsc"
