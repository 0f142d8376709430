#!/usr/bin/env bash
# Build the four xdplb packages: xdplb-director and xdplb-redirector, each as .deb and .rpm.
#
#   bash packaging/build.sh                  # -> target/packages/ (or $CARGO_TARGET_DIR/packages/)
#
# Options:
#   --out DIR        where the packages go
#   --revision N     package revision (Debian "-N", RPM Release N); default 1. Bump it to make an
#                    upgrade of the same upstream version.
#   --quick          build with the "packaging-quick" profile (release without LTO, opt-level 1)
#                    and compress the .debs less: the same files, built faster. The packaging
#                    tests use it; releases do not.
#   --no-build       package what the last build left in the target dir (e.g. a second revision)
#   --tools          only install the pinned cargo-deb if missing (scripts/setup.sh runs this)
#
# One cargo build makes every binary (release profile: stripped; the BPF objects are inside,
# compiled by clang into libbpf-cargo skeletons), then xdplb-gen-assets writes the man pages and
# shell completions from the CLIs' clap definitions. cargo-deb packs the files listed in
# [package.metadata.deb] of director/Cargo.toml and redirector/Cargo.toml (installed here on
# first use); rpmbuild packs packaging/rpm/xdplb.spec (see there why not cargo-generate-rpm).
# Needs: cargo, dpkg-dev (dpkg-shlibdeps), rpm (rpmbuild); scripts/setup.sh installs them.
set -euo pipefail

self=$(cd "$(dirname "$0")" && pwd)/$(basename "$0")
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
[[ -x "$HOME/.cargo/bin/cargo" ]] && export PATH="$HOME/.cargo/bin:$PATH"

# Pinned: a package is an artifact; the tool that builds it should not change under us.
CARGO_DEB_VERSION=3.8.0

target=${CARGO_TARGET_DIR:-$root/target}
out=""
revision=1
profile=release
build=1
deb_flags=()
tools_only=0
while (($#)); do
  case $1 in
  --out) out=$2; shift 2 ;;
  --revision) revision=$2; shift 2 ;;
  --quick) profile=packaging-quick; deb_flags=(--fast); shift ;;
  --no-build) build=0; shift ;;
  --tools) tools_only=1; shift ;;
  -h | --help) sed -n '2,21p' "$self"; exit 0 ;;
  *) echo "build.sh: unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done
out=${out:-$target/packages}
if [[ ! $revision =~ ^[0-9]+$ ]]; then
  echo "build.sh: --revision must be a number, got '$revision'" >&2
  exit 2
fi
for tool in dpkg-shlibdeps rpmbuild; do
  if ! command -v "$tool" >/dev/null; then
    echo "build.sh: $tool missing; run scripts/setup.sh" >&2
    exit 1
  fi
done

if [[ $profile == packaging-quick ]]; then
  # Defined here, not in Cargo.toml: it exists only for the packaging tests.
  export CARGO_PROFILE_PACKAGING_QUICK_INHERITS=release
  export CARGO_PROFILE_PACKAGING_QUICK_LTO=false
  export CARGO_PROFILE_PACKAGING_QUICK_OPT_LEVEL=1
  export CARGO_PROFILE_PACKAGING_QUICK_CODEGEN_UNITS=16
fi

# cargo install into ~/.cargo/bin, once; later runs only compare the version.
if ! cargo deb --version 2>/dev/null | grep -qF "$CARGO_DEB_VERSION"; then
  echo "build.sh: installing cargo-deb $CARGO_DEB_VERSION" >&2
  # Its own target dir: never mix the tool's build with the workspace's.
  env -u CARGO_TARGET_DIR -u CARGO_BUILD_TARGET_DIR \
    cargo install --locked --quiet cargo-deb --version "$CARGO_DEB_VERSION"
fi
((tools_only)) && exit 0

built=$target/$profile
if ((build)); then
  echo "build.sh: cargo build --profile $profile" >&2
  cargo build --profile "$profile" \
    -p xdplb-director -p xdplb-redirector -p xdplb-tablegen -p xdplb-controller -p xdplb-packaging
fi
for bin in xdplb-director xdplb-redirector tablegen xdplb-controller xdplb-gen-assets; do
  if [[ ! -x $built/$bin ]]; then
    echo "build.sh: $built/$bin missing; run without --no-build" >&2
    exit 1
  fi
done
# cargo's strip = "symbols" leaves the linkers' .comment notes (lintian: binary-has-unneeded-
# section); the build id stays.
for bin in xdplb-director xdplb-redirector tablegen xdplb-controller; do
  objcopy --remove-section=.comment "$built/$bin"
done

# Man pages and completions from the clap definitions, next to the binaries, where the
# metadata's target/release/... paths point (cargo-deb maps target/release to the profile).
# Also each package's third-party licence file: the crates its binaries link, from this
# host's dependency graph (docs in the .deb are gzipped; the .rpm ships the text as %license).
assets=$built/xdplb-assets
rm -rf "$assets"
metadata=$built/xdplb-cargo-metadata.json
host=$(rustc -vV | sed -n 's/^host: //p')
cargo metadata --format-version 1 --locked --offline --filter-platform "$host" >"$metadata"
"$built/xdplb-gen-assets" "$assets" "$metadata" >/dev/null
# -n: no name or timestamp in the gzip header, so builds are reproducible.
find "$assets/man" -type f -name '*.[0-9]' -exec gzip -9nf {} +
gzip -9nkf "$assets"/licenses/*.txt

# Debian changelog: one entry for exactly this version. Dated by the last commit (or
# SOURCE_DATE_EPOCH), not by the clock, so that rebuilding a commit gives the same package.
version=$(cargo pkgid -p xdplb-director | sed 's/.*[#@]//')
epoch=${SOURCE_DATE_EPOCH:-$(git -C "$root" log -1 --format=%ct 2>/dev/null || date +%s)}
{
  echo "xdplb ($version-$revision) unstable; urgency=medium"
  echo
  echo "  * Upstream release $version, package revision $revision."
  echo
  echo " -- xdplb developers <xdplb@example.invalid>  $(LC_ALL=C date -u -R -d "@$epoch")"
} >"$assets/changelog"
gzip -9nc "$assets/changelog" >"$assets/changelog.Debian.gz"
# RPM scriptlets: one template per scriptlet, instantiated per package.
for pkg in xdplb-director xdplb-redirector; do
  mkdir -p "$assets/rpm/$pkg"
  for script in post preun postun; do
    sed "s/@PKG@/$pkg/g" "$root/packaging/rpm/$script.sh.in" >"$assets/rpm/$pkg/$script.sh"
  done
done

mkdir -p "$out"
rm -f "$out"/xdplb-{director,redirector}_*"-${revision}_"*.deb "$out"/xdplb-{director,redirector}-*"-$revision."*.rpm
for pkg in xdplb-director xdplb-redirector; do
  cargo deb --quiet --no-build --profile "$profile" -p "$pkg" "${deb_flags[@]}" \
    --deb-revision "$revision" --output "$out" >/dev/null
done

rpmtop=$(mktemp -d)
trap 'rm -rf "$rpmtop"' EXIT
rpmbuild -bb --quiet --target "$(uname -m)" \
  --define "_topdir $rpmtop" \
  --define "_rpmdir $out" \
  --define "_build_name_fmt %%{NAME}-%%{VERSION}-%%{RELEASE}.%%{ARCH}.rpm" \
  --define "xdplb_version $version" \
  --define "xdplb_release $revision" \
  --define "built $built" \
  --define "workspace $root" \
  --define "source_date_epoch $epoch" \
  --define "use_source_date_epoch_as_buildtime 1" \
  --define "clamp_mtime_to_source_date_epoch 1" \
  --define "_buildhost xdplb-build" \
  "$root/packaging/rpm/xdplb.spec" >/dev/null

ls -1 "$out"/xdplb-{director,redirector}{_,-}"$version-$revision"[._]*
