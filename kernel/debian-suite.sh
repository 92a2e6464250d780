# shellcheck shell=bash
# Sourced by kernel/build.sh and tests/vm/fetch-kernel.sh: read another
# Debian suite (trixie-backports) through package lists of its own, never
# the system's sources: with that suite in /etc/apt, an `apt-get upgrade`
# would pull a newer Debian into this host.  Nothing is installed; packages
# are only downloaded (`apt-get download`) and unpacked by the caller.
#
# debian_suite DIR SUITE
#   Writes DIR/sources.list naming SUITE of deb.debian.org, and sets the
#   array debian_suite_opts to apt options that read only it, with lists
#   and downloads under DIR.  Updates DIR's lists once (when it has none).
# debian_suite_update
#   Updates the lists debian_suite_opts names (e.g. a pinned version is not
#   in lists older than it).
debian_suite() {
    local dir=$1 suite=$2
    mkdir -p "$dir/lists/partial" "$dir/cache/archives/partial"
    echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian $suite main" \
        >"$dir/sources.list"
    debian_suite_opts=(-o "Dir::Etc::sourcelist=$dir/sources.list" -o Dir::Etc::sourceparts=/dev/null
        -o "Dir::State::Lists=$dir/lists" -o "Dir::Cache=$dir/cache")
    if ! compgen -G "$dir/lists/*_Packages*" >/dev/null; then
        debian_suite_update
    fi
}

debian_suite_update() {
    echo "apt-get update of a private list (${debian_suite_opts[1]#*=})" >&2
    apt-get "${debian_suite_opts[@]}" update >&2 || echo "apt-get update failed" >&2
}
