#!/usr/bin/env bash
# Print the path of a cached tarball holding a minimal Debian root (debootstrap minbase plus
# the runtime dependencies of our packages and systemd), creating it on first use. The path is
# all that goes to stdout; progress and errors go to stderr.
#
# The packaging tests unpack a fresh copy per test, install our .deb/.rpm into it and throw it
# away. The root is the host's own suite (our binaries link the host's glibc) fetched from the
# mirror in the host's apt sources: no host name lives in this repo.
#
# usage: debian-root.sh [CACHE_DIR]   (default: $XDPLB_TEST_CACHE or /var/cache/xdplb-test)
set -euo pipefail
# stdout carries the path alone (the tests parse it); everything else goes to stderr.
exec 3>&1 1>&2

cache=${1:-${XDPLB_TEST_CACHE:-/var/cache/xdplb-test}}
# libelf1/zlib1g: what the binaries link; procps: /bin/kill for ExecReload; systemd:
# systemd-analyze and deb-systemd-helper inside the root, as on a real host; iproute2: the
# director's route tokens (`ip route`), a dependency of its package.
include=libelf1,zlib1g,systemd,procps,iproute2

mirror="" suite=""
for f in /etc/apt/sources.list.d/*.sources; do
  [[ -r $f ]] || continue
  # deb822: the first stanza of type deb that is not the security archive.
  read -r mirror suite < <(awk '
    /^[[:space:]]*$/ { if (deb && uri !~ /security/ && uri != "") { print uri, suite; exit } deb = 0; uri = ""; suite = ""; next }
    /^Types:/ { for (i = 2; i <= NF; i++) if ($i == "deb") deb = 1 }
    /^URIs:/ { uri = $2 }
    /^Suites:/ { suite = $2 }
    END { if (deb && uri !~ /security/ && uri != "") print uri, suite }' "$f") || true
  [[ -n $mirror ]] && break
done
if [[ -z $mirror && -r /etc/apt/sources.list ]]; then
  read -r mirror suite < <(awk '$1 == "deb" && !/security/ {
      n = 0; for (i = 2; i <= NF; i++) { if ($i ~ /^\[/ || $i ~ /\]$/ || $i ~ /=/) continue; w[n++] = $i }
      if (n >= 2) { print w[0], w[1]; exit } }' /etc/apt/sources.list) || true
fi
if [[ -z $mirror || -z $suite ]]; then
  echo "debian-root: no Debian mirror/suite found in the apt sources" >&2
  exit 1
fi

arch=$(dpkg --print-architecture)
tarball="$cache/debian-$suite-$arch-minbase-${include//,/-}.tar"
mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9
if [[ ! -s $tarball ]]; then
  work=$(mktemp -d "$cache/build.XXXXXX")
  trap 'rm -rf "$work"' EXIT
  echo "debian-root: debootstrap $suite ($arch) from $mirror into the cache (once)" >&2
  debootstrap --variant=minbase --arch="$arch" --include="$include" \
    --keyring=/usr/share/keyrings/debian-archive-keyring.gpg \
    "$suite" "$work/root" "$mirror" >"$work/log" 2>&1 || {
    tail -20 "$work/log" >&2
    exit 1
  }
  rm -rf "$work/root/var/cache/apt/archives/"*.deb "$work/root/var/lib/apt/lists/"* 2>/dev/null || true
  tar -C "$work/root" --numeric-owner -cf "$work/root.tar" .
  mv "$work/root.tar" "$tarball"
fi
echo "$tarball" >&3
