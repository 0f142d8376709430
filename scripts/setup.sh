#!/usr/bin/env bash
# Install every system package xdplb's build, tests and lab need on Debian 12.
# Idempotent and quiet when everything is already there. Needs root to install.
set -euo pipefail

# Debian packages: build (clang for BPF, libelf/zlib for libbpf), lab and tests (iproute2,
# ethtool, tcpdump), packaging tests, the kernel test matrix.
PKGS=(
  clang llvm libelf-dev zlib1g-dev libbpf-dev bpftool gcc gcc-multilib pkg-config make
  iproute2 iputils-ping ethtool tcpdump procps psmisc
  # packaging: dpkg-shlibdeps and rpmbuild to build; lintian, debootstrap and systemd
  # (systemd-analyze), systemd-container (systemd-nspawn boots the units) to test the packages
  dpkg-dev rpm lintian debootstrap debian-archive-keyring systemd systemd-container
  # the kernel test matrix (kernels/run.sh): qemu boots Debian's kernels with an initramfs of
  # busybox and the image's modules (depmod from kmod); jq reads cargo's JSON
  qemu-system-x86 busybox-static kmod jq
)
# bird2 (BGP: the lab's router and directors run BIRD 2) is installed apart, below: its
# package starts a bird service on the host, which we do not want.

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

# BIRD 2: the lab runs its own bird processes in its namespaces (lab/src/bgp.rs); the host's
# packaged service must not run (it would speak for the host, not for the lab). A policy-rc.d
# that refuses every start keeps the package's postinst from starting it, and the unit is
# disabled and stopped in case an earlier install left it enabled or running.
if ! dpkg-query -W -f='${Status}' bird2 2>/dev/null | grep -q "install ok installed"; then
  if [[ $EUID -ne 0 ]]; then
    echo "setup: bird2 missing; run as root to install it" >&2
    exit 1
  fi
  echo "setup: installing bird2 (its service stays stopped and disabled)"
  placed_policy=0
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 0755 /usr/sbin/policy-rc.d
    placed_policy=1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends bird2 >/dev/null || {
    if ((placed_policy)); then rm -f /usr/sbin/policy-rc.d; fi
    exit 1
  }
  if ((placed_policy)); then rm -f /usr/sbin/policy-rc.d; fi
fi
if [[ $EUID -eq 0 ]] && command -v systemctl >/dev/null 2>&1 && [[ -d /run/systemd/system ]]; then
  systemctl disable --now bird.service >/dev/null 2>&1 || true
fi

# consul (cluster/ tests start a real `consul agent`). Debian 12 has no consul package;
# Debian 11 (bullseye) ships consul 1.8.7. We fetch only that .deb through a throw-away apt
# state dir pointed at the system's own Debian mirror (no host name in this repo, and the
# system's sources and package state stay untouched), then copy the binary to /usr/local/bin.
# Installing the package itself would also pull a systemd unit and a daemon user we don't want.
install_consul() {
  local uri="" arch tmp opts
  if [[ -r /etc/apt/sources.list.d/debian.sources ]]; then
    uri=$(awk '/^URIs:/ && !/security/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)
  fi
  if [[ -z $uri && -r /etc/apt/sources.list ]]; then
    uri=$(awk '$1 == "deb" && !/security/ {for (i = 2; i <= NF; i++) if ($i !~ /^\[/ && $i !~ /\]$/ && $i !~ /=/) {print $i; exit}}' /etc/apt/sources.list)
  fi
  if [[ -z $uri ]]; then
    echo "setup: consul: no Debian mirror found in the apt sources; install consul >= 1.8 by hand" >&2
    return 1
  fi
  arch=$(dpkg --print-architecture)
  tmp=$(mktemp -d)
  # shellcheck disable=SC2064
  trap "rm -rf '$tmp'; trap - RETURN" RETURN
  mkdir -p "$tmp/lists/partial" "$tmp/cache/archives/partial"
  echo "deb [arch=$arch signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $uri bullseye main" >"$tmp/sources.list"
  opts=(-o "Dir::Etc::SourceList=$tmp/sources.list" -o Dir::Etc::SourceParts=/dev/null
    -o "Dir::State::Lists=$tmp/lists" -o "Dir::Cache=$tmp/cache" -o APT::Sandbox::User=root
    -o Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false -o APT::Get::List-Cleanup=0)
  echo "setup: installing consul (binary from Debian bullseye's consul package) into /usr/local/bin"
  apt-get "${opts[@]}" -qq update
  (cd "$tmp" && apt-get "${opts[@]}" -qq download consul)
  dpkg-deb -x "$tmp"/consul_*.deb "$tmp/root"
  install -m 0755 "$tmp/root/usr/bin/consul" /usr/local/bin/consul
  consul version >/dev/null
}
if ! command -v consul >/dev/null 2>&1; then
  if [[ $EUID -ne 0 ]]; then
    echo "setup: consul missing; run as root to install it" >&2
    exit 1
  fi
  install_consul
fi

# prometheus (lab/tests/metrics.rs scrapes the daemons with a real Prometheus; promtool lints
# their /metrics). The tests run their own server (temp storage, a lab namespace's address):
# the package's own service is kept from starting while it installs (policy-rc.d refuses every
# start) and is then disabled and stopped, so the host runs no Prometheus of its own.
if ! command -v promtool >/dev/null 2>&1; then
  if [[ $EUID -ne 0 ]]; then
    echo "setup: prometheus missing; run as root to install it" >&2
    exit 1
  fi
  echo "setup: installing prometheus (its service stays disabled and stopped)"
  policy=/usr/sbin/policy-rc.d
  had_policy=0
  [[ -e $policy ]] && had_policy=1
  if ((!had_policy)); then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 0755 "$policy"
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null ||
    { ((had_policy)) || rm -f "$policy"; exit 1; }
  ((had_policy)) || rm -f "$policy"
fi
# Also on a host where it was already installed: no packaged Prometheus left running.
if command -v systemctl >/dev/null 2>&1 && [[ $EUID -eq 0 ]] &&
  systemctl list-unit-files prometheus.service >/dev/null 2>&1; then
  systemctl disable --now prometheus.service >/dev/null 2>&1 || true
  systemctl disable --now prometheus-node-exporter.service >/dev/null 2>&1 || true
fi

if ! command -v cargo >/dev/null 2>&1; then
  [[ -x "$HOME/.cargo/bin/cargo" ]] && export PATH="$HOME/.cargo/bin:$PATH"
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: no Rust toolchain (cargo) found; install Rust >= 1.91 (rustup) and run again" >&2
  exit 1
fi

# cargo-deb (packaging/build.sh packs the .debs with it), at the version build.sh pins.
bash "$(dirname "$0")/../packaging/build.sh" --tools
