#!/usr/bin/env bash
# Install every system package xdplb's build, tests and lab need on Debian 12.
# Idempotent and quiet when everything is already there. Needs root to install.
set -euo pipefail

# Debian packages: build (clang for BPF, libelf/zlib for libbpf), lab and tests (iproute2,
# ethtool, tcpdump), packaging tests.
PKGS=(
  clang llvm libelf-dev zlib1g-dev libbpf-dev bpftool gcc gcc-multilib pkg-config make
  iproute2 iputils-ping ethtool tcpdump procps psmisc
)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  if [[ $EUID -ne 0 ]]; then
    echo "setup: missing packages: ${missing[*]}; run as root to install them" >&2
    exit 1
  fi
  echo "setup: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  [[ -x "$HOME/.cargo/bin/cargo" ]] && export PATH="$HOME/.cargo/bin:$PATH"
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: no Rust toolchain (cargo) found; install Rust >= 1.82 (rustup) and run again" >&2
  exit 1
fi
