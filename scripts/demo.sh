#!/usr/bin/env bash
# The README's demo: installs what is missing, builds, and runs the whole system in network
# namespaces on this machine (client, ECMP router learning the VIPs from two directors over BGP,
# three backends), showing connections spreading, a live `tablegen drain` with zero broken
# connections, a backend taken out and back, a director dying while traffic flows, and a
# graceful drain of a director's announcements. Exits non-zero if any promise broke.
# Ctrl-C stops it and removes everything it created. Needs root (namespaces, BPF).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ $EUID -ne 0 ]]; then
  echo "demo: needs root (creates network namespaces, loads BPF programs); run: sudo $0" >&2
  exit 1
fi
bash scripts/setup.sh
[[ -x "$HOME/.cargo/bin/cargo" ]] && export PATH="$HOME/.cargo/bin:$PATH"

# A debug build: the data path is BPF in the kernel either way, the build is faster, and it
# reuses what `scripts/test.sh` built.
echo "demo: building ..."
cargo build --quiet -p xdplb-lab -p xdplb-director -p xdplb-redirector -p xdplb-tablegen
target_dir=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
exec "$target_dir/debug/xdplb-lab" demo "$@"
