#!/usr/bin/env bash
# The demonstration: Debian's stock 6.12 kernel booted under QEMU (TCG)
# with kerneld as its module loader. A narrated script in the guest
# (tests/vm/demo.sh) starts kerneld, makes the kernel ask for modules
# (a dummy link, a bridge with its dependencies, a user's CAN socket with
# its requester, a request denied by a live rule) and watches the idle
# ones expire. Takes well under a minute once built.
#
# Usage: scripts/demo.sh [--shell]
#   --shell   afterwards, an interactive shell in the guest with kerneld
#             still running ('poweroff -f' leaves)
#
# As root on Debian 12: installs what is missing (scripts/install-deps.sh),
# fetches the kernel package (tests/vm/fetch-kernel.sh), builds the four
# programs the guest runs (kerneld, kerneld-modprobe, kdstat, kdsend).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

shell=0
case "${1:-}" in
    "") ;;
    --shell) shell=1 ;;
    -h | --help)
        sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
        exit 0
        ;;
    *)
        echo "usage: scripts/demo.sh [--shell]" >&2
        exit 2
        ;;
esac
[[ $# -le 1 ]] || {
    echo "usage: scripts/demo.sh [--shell]" >&2
    exit 2
}
if [[ $(id -u) -ne 0 ]]; then
    echo "demo: run as root (it installs packages and builds a guest image with device nodes)" >&2
    exit 4
fi

echo "demo: checking the packages it needs" >&2
scripts/install-deps.sh
echo "demo: Debian's 6.12 kernel package (downloaded once, then cached)" >&2
tests/vm/fetch-kernel.sh 6.12 >/dev/null
echo "demo: building kerneld, kerneld-modprobe, kdstat and kdsend" >&2
cargo build --bins -p kerneld -p kerneld-modprobe -p kdstat
# The guest takes them from the debug build (CARGO_TARGET_DIR honoured).
export KERNELD_BIN_DIR=${KERNELD_BIN_DIR:-${CARGO_TARGET_DIR:-$PWD/target}/debug}

args=(--kernel 6.12 --kerneld --demo)
[[ $shell == 0 ]] || args+=(--interactive)
echo "demo: booting; the guest's output follows" >&2
exec tests/vm/run "${args[@]}"
