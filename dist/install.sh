#!/usr/bin/env bash
# Install kerneld (programs, manual pages, systemd unit, configuration,
# shell completions, JSON Schemas, journal catalog), or remove exactly what
# an install put there.
#
#   dist/install.sh [install|uninstall] [PREFIX=/usr/local] [DESTDIR=] [TARGET_DIR=target/release]
#
# Settings come from arguments of the form NAME=VALUE or from the
# environment:
#   PREFIX      where programs, pages and completions go (default /usr/local)
#   DESTDIR     staging root prepended to every path (default: none)
#   TARGET_DIR  where the built programs are (default target/release, built
#               with scripts/build-release.sh if missing there)
#   UNITDIR     systemd unit directory (default /lib/systemd/system for
#               PREFIX=/usr, else PREFIX/lib/systemd/system)
#
# The journal catalog goes to PREFIX/lib/systemd/catalog (journalctl reads
# /usr/lib/ and /usr/local/lib/systemd/catalog); without DESTDIR the
# journal's catalog database is then rebuilt (journalctl --update-catalog),
# at uninstall too.
#
# The configuration always goes to /etc (kerneld reads /etc/kerneld.conf),
# and is not overwritten if present.  Every file installed is listed in
# PREFIX/share/kerneld/installed-files with its checksum; uninstall removes
# those files, except configuration files changed since (it says so), then
# the list, and kerneld's own directories if they are empty.
#
# If the kernel runs the kerneld-modprobe being uninstalled as its module
# helper (a `kerneld --register` is running), uninstall first puts the
# previous helper back with `kerneld-modprobe --unregister` (which reads
# the record in KERNELD_STATE_DIR, default /run/kerneld), so that the
# kernel keeps loading modules; it stops with an error if that fails.
#   KERNELD_PROC_MODPROBE  file instead of /proc/sys/kernel/modprobe (tests)
set -euo pipefail

usage() {
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"
}

action=install
for arg in "$@"; do
    case "$arg" in
        install | uninstall) action=$arg ;;
        PREFIX=* | DESTDIR=* | TARGET_DIR=* | UNITDIR=*) export "${arg?}" ;;
        -h | --help) usage; exit 0 ;;
        *) echo "install.sh: unknown argument '$arg'" >&2; usage >&2; exit 2 ;;
    esac
done

repo=$(cd "$(dirname "$0")/.." && pwd)
PREFIX=${PREFIX:-/usr/local}
PREFIX=${PREFIX%/}
DESTDIR=${DESTDIR:-}
DESTDIR=${DESTDIR%/}
case "$PREFIX" in
    /*) ;;
    *) echo "install.sh: PREFIX must be an absolute path, not '$PREFIX'" >&2; exit 2 ;;
esac
if [[ -z "${UNITDIR:-}" ]]; then
    if [[ "$PREFIX" == /usr ]]; then UNITDIR=/lib/systemd/system; else UNITDIR=$PREFIX/lib/systemd/system; fi
fi
if [[ "$PREFIX" == /usr ]]; then
    zshdir=$PREFIX/share/zsh/vendor-completions # Debian's directory for packages
else
    zshdir=$PREFIX/share/zsh/site-functions
fi
manifest=$PREFIX/share/kerneld/installed-files
catalogdir=$PREFIX/lib/systemd/catalog

# Rebuild the journal's catalog database on this system (not into a
# DESTDIR: a package's triggers do that where it is installed).
update_catalog() {
    if [[ -z "$DESTDIR" ]] && command -v journalctl >/dev/null; then
        journalctl --update-catalog ||
            echo "install.sh: journalctl --update-catalog failed; run it again for journalctl -x" >&2
    fi
}

# The directories that are kerneld's alone: removed at uninstall if empty.
own_dirs=(/etc/kerneld.d /etc/kerneld "$PREFIX/share/doc/kerneld" "$PREFIX/share/kerneld/schema" "$PREFIX/share/kerneld")

if [[ "$action" == uninstall ]]; then
    if [[ ! -f "$DESTDIR$manifest" ]]; then
        echo "install.sh: nothing to uninstall: no $DESTDIR$manifest" >&2
        exit 1
    fi
    proc_modprobe=${KERNELD_PROC_MODPROBE:-/proc/sys/kernel/modprobe}
    shim=$DESTDIR$PREFIX/sbin/kerneld-modprobe
    if [[ -r "$proc_modprobe" ]]; then
        helper=$(head -n 1 "$proc_modprobe" || true)
        if [[ -n "$helper" && ( "$helper" == "$shim" || "$helper" -ef "$shim" ) ]]; then
            echo "install.sh: the kernel runs $helper as its module helper (kerneld --register is running); unregistering it first"
            if [[ ! -x "$shim" ]] || ! "$shim" --unregister; then
                echo "install.sh: could not put the previous module helper back; stop kerneld first" \
                    "(systemctl stop kerneld, or kill \$(cat /run/kerneld/kerneld.pid)) and uninstall again" >&2
                exit 1
            fi
            echo "install.sh: the running kerneld no longer gets the kernel's requests; stop it"
        fi
    fi
    while IFS=$'\t' read -r path sum; do
        [[ -n "$path" ]] || continue
        file=$DESTDIR$path
        if [[ ! -e "$file" && ! -L "$file" ]]; then
            continue
        fi
        if [[ "$path" == /etc/* ]] && [[ "$(sha256sum <"$file" | cut -d' ' -f1)" != "$sum" ]]; then
            echo "install.sh: keeping $file: changed since it was installed"
            continue
        fi
        rm -f "$file"
    done <"$DESTDIR$manifest"
    rm -f "$DESTDIR$manifest"
    for d in "${own_dirs[@]}"; do
        rmdir "$DESTDIR$d" 2>/dev/null || true
    done
    update_catalog
    echo "kerneld uninstalled from ${DESTDIR:-/} (PREFIX=$PREFIX)"
    exit 0
fi

# ---- install ----------------------------------------------------------------

programs=(kerneld kerneld-modprobe kdstat kdsend)
if [[ -z "${TARGET_DIR:-}" ]]; then
    TARGET_DIR=$repo/target/release
    for p in "${programs[@]}"; do
        if [[ ! -x "$TARGET_DIR/$p" ]]; then
            echo "install.sh: building the programs (scripts/build-release.sh)" >&2
            "$repo/scripts/build-release.sh"
            break
        fi
    done
fi
for p in "${programs[@]}"; do
    if [[ ! -x "$TARGET_DIR/$p" ]]; then
        echo "install.sh: $TARGET_DIR/$p is missing; build the workspace first" >&2
        exit 1
    fi
done

# Files an earlier install put in /etc stay ours if unchanged, even though
# this install leaves them alone.
declare -A kept_sums=()
if [[ -f "$DESTDIR$manifest" ]]; then
    while IFS=$'\t' read -r path sum; do
        [[ "$path" == /etc/* ]] && kept_sums[$path]=$sum
    done <"$DESTDIR$manifest"
fi

installed=()
# put MODE SOURCE DEST: install one file at DESTDIR/DEST.
put() {
    local mode=$1 src=$2 dest=$3
    install -D -m "$mode" "$src" "$DESTDIR$dest"
    installed+=("$dest"$'\t'"$(sha256sum <"$DESTDIR$dest" | cut -d' ' -f1)")
}
# put_config SOURCE DEST: as put, unless DEST is there already.
put_config() {
    local src=$1 dest=$2
    if [[ -e "$DESTDIR$dest" ]]; then
        echo "install.sh: keeping the existing $DESTDIR$dest"
        if [[ -n "${kept_sums[$dest]:-}" ]] &&
            [[ "$(sha256sum <"$DESTDIR$dest" | cut -d' ' -f1)" == "${kept_sums[$dest]}" ]]; then
            installed+=("$dest"$'\t'"${kept_sums[$dest]}")
        fi
        return
    fi
    put 644 "$src" "$dest"
}

put 755 "$TARGET_DIR/kerneld" "$PREFIX/sbin/kerneld"
put 755 "$TARGET_DIR/kerneld-modprobe" "$PREFIX/sbin/kerneld-modprobe"
# kdstat and kdsend need root (the queue is root's): sbin, as Debian does.
put 755 "$TARGET_DIR/kdstat" "$PREFIX/sbin/kdstat"
put 755 "$TARGET_DIR/kdsend" "$PREFIX/sbin/kdsend"

for page in "$repo"/man/*.[1-8]; do
    name=$(basename "$page")
    put 644 "$page" "$PREFIX/share/man/man${name##*.}/$name"
done

# The unit names the installed kerneld.
unit=$(mktemp)
trap 'rm -f "$unit"' EXIT
sed "s#^ExecStart=/usr/sbin/kerneld #ExecStart=$PREFIX/sbin/kerneld #" \
    "$repo/dist/kerneld.service" >"$unit"
grep -q "^ExecStart=$PREFIX/sbin/kerneld " "$unit" || {
    echo "install.sh: dist/kerneld.service has no ExecStart=/usr/sbin/kerneld line" >&2
    exit 1
}
put 644 "$unit" "$UNITDIR/kerneld.service"

put_config "$repo/etc/kerneld.conf" /etc/kerneld.conf
put_config "$repo/etc/rare-protocols.conf" /etc/kerneld/rare-protocols.conf
# The drop-in directory /etc/kerneld.conf includes (*.conf), empty: for
# configuration management and other packages.
mkdir -p "$DESTDIR/etc/kerneld.d"

# Completions, generated from the programs' options by xtask and checked
# by its tests (see xtask/src/lib.rs).
for prog in kerneld kdstat kdsend; do
    put 644 "$repo/dist/completions/bash/$prog" "$PREFIX/share/bash-completion/completions/$prog"
    put 644 "$repo/dist/completions/zsh/_$prog" "$zshdir/_$prog"
    put 644 "$repo/dist/completions/fish/$prog.fish" "$PREFIX/share/fish/vendor_completions.d/$prog.fish"
done

# JSON Schemas of kerneld's documents, generated from the code by xtask
# and checked by its tests (see xtask/src/schema.rs).
for schema in "$repo"/schema/*.json; do
    put 644 "$schema" "$PREFIX/share/kerneld/schema/$(basename "$schema")"
done

# The journal catalog: journalctl -x explains kerneld's MESSAGE_IDs.
put 644 "$repo/dist/kerneld.catalog" "$catalogdir/kerneld.catalog"

put 644 "$repo/README.md" "$PREFIX/share/doc/kerneld/README.md"
put 644 "$repo/SECURITY.md" "$PREFIX/share/doc/kerneld/SECURITY.md"

mkdir -p "$(dirname "$DESTDIR$manifest")"
printf '%s\n' "${installed[@]}" >"$DESTDIR$manifest"
chmod 644 "$DESTDIR$manifest"
update_catalog
echo "kerneld installed in ${DESTDIR:-/} (PREFIX=$PREFIX, unit in $UNITDIR): ${#installed[@]} files"
