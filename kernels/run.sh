#!/usr/bin/env bash
# The kernel test matrix: boot each pinned Debian kernel (kernels.tsv) in qemu and run, inside
# it, the BPF program loads of both daemons, the BPF_PROG_TEST_RUN packet suites of the director
# and the redirector, and a smoke test (real TCP and UDP through the whole system in network
# namespaces). `host` runs the same binaries on the running kernel, without qemu.
#
# usage: kernels/run.sh [--accel auto|kvm|tcg] [--no-setup] KERNEL... | all
#        kernels/run.sh --latest     (the newest image each suite of kernels.tsv serves)
#
# KERNEL is a name from kernels.tsv or `host`; `all` is every kernel of the table and the host.
# The test binaries are built on the host (cargo test --no-run) and run in the guest from the
# host's root file system, shared read-only over 9p. Images are cached under
# ${XDPLB_TEST_CACHE:-/var/cache/xdplb-test}/kernels; one that cannot be fetched fails the run.
# Exit status: zero only when every step passed on every kernel asked for.
set -euo pipefail
# One function, called on the last line: bash reads all of it before running any, so editing
# this file while a matrix runs cannot derail the run.
main() {
cd "$(dirname "$0")/.."
ROOT=$PWD
HERE=$ROOT/kernels
# The guest sees the host's root, but with tmpfs over /tmp and /run: a checkout (or a cargo
# target directory) there is shared again on its own and mounted back at its path (init.sh).
TARGET=$(cargo metadata --format-version 1 --no-deps 2>/dev/null | jq -r .target_directory)
[[ -n $TARGET && $TARGET != null ]] || TARGET=$ROOT/target
CACHE=${XDPLB_TEST_CACHE:-/var/cache/xdplb-test}/kernels
# Seconds one guest may take from boot to power-off before it counts as failed (TCG is slow).
GUEST_TIMEOUT=${XDPLB_KERNEL_TIMEOUT:-2400}
# How much longer the lab may wait for daemons and flows in a guest without KVM.
TCG_SLOWDOWN=${XDPLB_KERNEL_SLOWDOWN:-10}
# Modules the guest loads (with their dependencies) when the kernel has them as modules: the
# 9p root and results share, entropy, and what the tests create (veth, bridge, dummy, tun,
# clsact and the BPF classifier).
MODULES=(virtio_pci virtio_rng 9pnet_virtio 9p veth bridge dummy tun sch_ingress cls_bpf act_bpf)

accel=auto setup=1 latest=0
names=()
while (($#)); do
  case $1 in
    --accel) accel=$2; shift ;;
    --no-setup) setup=0 ;;
    --latest) latest=1 ;;
    -h | --help) sed -n '2,15p' "$HERE/run.sh" | sed 's/^# \{0,1\}//'; exit 0 ;;
    all) names+=($(awk '!/^#/ && NF {print $1}' "$HERE/kernels.tsv") host) ;;
    -*) echo "kernels: unknown option $1" >&2; exit 2 ;;
    *) names+=("$1") ;;
  esac
  shift
done
if ((!latest && ${#names[@]} == 0)); then
  echo "kernels: name a kernel of kernels/kernels.tsv, host, or all" >&2
  exit 2
fi
case $accel in auto | kvm | tcg) ;; *) echo "kernels: --accel auto, kvm or tcg" >&2; exit 2 ;; esac
if [[ $EUID -ne 0 ]]; then
  echo "kernels: needs root (loads BPF programs, creates network namespaces)" >&2
  exit 1
fi
for n in "${names[@]}"; do
  if [[ $n != host ]] && ! awk -v n="$n" '$1 == n {f = 1} END {exit !f}' "$HERE/kernels.tsv"; then
    echo "kernels: $n is not in kernels/kernels.tsv (nor host)" >&2
    exit 2
  fi
done

((setup)) && bash scripts/setup.sh
[[ -x "$HOME/.cargo/bin/cargo" ]] && export PATH="$HOME/.cargo/bin:$PATH"

work=$(mktemp -d /tmp/xdplb-kernels.XXXXXX)
qemu_pid=""
cleanup() {
  [[ -n $qemu_pid ]] && kill "$qemu_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

# --- fetching images: apt with a private state dir, through the system's own mirror ---------

# The first Debian (non-security) mirror of the system's apt sources: deb822 first, then the
# one-line format. No host name lives in this repository.
mirror() {
  local f uri=""
  for f in /etc/apt/sources.list.d/*.sources; do
    [[ -r $f ]] || continue
    uri=$(awk '
      /^[[:space:]]*$/ { if (deb && uri !~ /security/ && uri != "") { print uri; exit } deb = 0; uri = ""; next }
      /^Types:/ { for (i = 2; i <= NF; i++) if ($i == "deb") deb = 1 }
      /^URIs:/ { uri = $2 }
      END { if (deb && uri !~ /security/ && uri != "") print uri }' "$f" | head -1)
    [[ -n $uri ]] && break
  done
  if [[ -z $uri && -r /etc/apt/sources.list ]]; then
    uri=$(awk '$1 == "deb" && !/security/ {for (i = 2; i <= NF; i++) if ($i !~ /^\[/ && $i !~ /\]$/ && $i !~ /=/) {print $i; exit}}' /etc/apt/sources.list)
  fi
  [[ -n $uri ]] && echo "$uri"
}

apt_opts=()
apt_ready=0
# A throw-away apt state (lists, cache, sources) under $work that knows the suites of
# kernels.tsv; the system's apt configuration and package state are not touched.
apt_private() {
  ((apt_ready)) && return 0
  local uri arch s
  uri=$(mirror) || true
  if [[ -z $uri ]]; then
    echo "kernels: no Debian mirror found in the system's apt sources" >&2
    return 1
  fi
  arch=$(dpkg --print-architecture)
  mkdir -p "$work/apt/lists/partial" "$work/apt/cache/archives/partial"
  for s in $(awk '!/^#/ && NF {print $2}' "$HERE/kernels.tsv" | sort -u); do
    echo "deb [arch=$arch signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $uri $s main"
  done >"$work/apt/sources.list"
  apt_opts=(-o "Dir::Etc::SourceList=$work/apt/sources.list" -o Dir::Etc::SourceParts=/dev/null
    -o "Dir::State::Lists=$work/apt/lists" -o "Dir::Cache=$work/apt/cache" -o APT::Sandbox::User=root
    -o Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false -o APT::Get::List-Cleanup=0)
  if ! apt-get "${apt_opts[@]}" -qq update >"$work/apt/update.log" 2>&1; then
    echo "kernels: apt-get update of the kernel suites failed:" >&2
    tail -5 "$work/apt/update.log" >&2
    return 1
  fi
  apt_ready=1
}

if ((latest)); then
  apt_private
  while read -r name suite pkg version; do
    echo "$name: pinned $pkg $version; newest linux-image-amd64 in $suite:"
    apt-cache "${apt_opts[@]}" madison linux-image-amd64 | awk -F' [|] ' -v s=" $suite/main " 'index($3, s) {gsub(/ /, "", $2); print "  " $2}'
  done < <(awk '!/^#/ && NF' "$HERE/kernels.tsv")
  exit 0
fi

# The cached .deb of kernel NAME (fetched on first use); prints its path.
fetch() {
  local name=$1 suite pkg version deb
  read -r _ suite pkg version < <(awk -v n="$name" '$1 == n' "$HERE/kernels.tsv")
  deb="$CACHE/${pkg}_${version//:/%3a}_amd64.deb"
  if [[ ! -s $deb ]]; then
    apt_private || return 1
    mkdir -p "$CACHE"
    echo "kernels: $name: fetching $pkg $version from $suite" >&2
    if ! (cd "$work/apt" && apt-get "${apt_opts[@]}" -qq download "$pkg=$version") >"$work/apt/download-$name.log" 2>&1; then
      echo "kernels: $name: cannot fetch $pkg $version from $suite:" >&2
      sed 's/^/  /' "$work/apt/download-$name.log" >&2
      return 1
    fi
    mv "$work/apt/${pkg}_${version//:/%3a}_amd64.deb" "$deb"
  fi
  echo "$deb"
}

# --- the guest: kernel, initramfs --------------------------------------------------------------

# Unpack the image's vmlinuz and the modules the guest needs into DIR; write DIR/initrd.gz.
make_guest() {
  local deb=$1 dir=$2 kver moddir m
  mkdir -p "$dir/x" "$dir/initrd"/{bin,dev,proc,sys,modules,newroot}
  dpkg-deb -x "$deb" "$dir/x"
  kver=$(basename "$(ls -d "$dir/x/lib/modules/"*)")
  moddir=$dir/x/lib/modules/$kver
  cp "$dir/x/boot/vmlinuz-$kver" "$dir/vmlinuz"
  cp "$dir/x/boot/config-$kver" "$dir/initrd/config"
  # The package ships no modules.dep (its postinst makes it): make it here.
  depmod -b "$dir/x" "$kver"
  # Each wanted module after its dependencies (modules.dep lists a module's dependencies; a
  # module built into the kernel is in modules.builtin and needs nothing).
  awk -v want="${MODULES[*]}" -v builtin="$moddir/modules.builtin" '
    function norm(s) { gsub("-", "_", s); return s }
    function base(p) { sub(".*/", "", p); sub(/\.ko(\.[a-z]+)?$/, "", p); return norm(p) }
    function add(p,   i, n, d) {
      if (p in seen) return
      seen[p] = 1
      n = split(deps[p], d, " ")
      for (i = n; i >= 1; i--) add(d[i])
      print p
    }
    BEGIN {
      while ((getline l < builtin) > 0) built[base(l)] = 1
    }
    {
      p = $1; sub(":$", "", p); path[base(p)] = p
      $1 = ""; deps[p] = $0
    }
    END {
      n = split(want, w, " ")
      for (i = 1; i <= n; i++) {
        m = norm(w[i])
        if (m in path) add(path[m])
        else if (!(m in built)) { print "kernels: no module " w[i] > "/dev/stderr"; bad = 1 }
      }
      exit bad
    }' "$moddir/modules.dep" >"$dir/modules.list"
  : >"$dir/initrd/modules/order"
  while read -r m; do
    local b
    b=$(basename "$m")
    case $b in
      *.ko.xz) xz -dc "$moddir/$m" >"$dir/initrd/modules/${b%.xz}"; b=${b%.xz} ;;
      *.ko.zst) zstd -qdc "$moddir/$m" >"$dir/initrd/modules/${b%.zst}"; b=${b%.zst} ;;
      *.ko.gz) gzip -dc "$moddir/$m" >"$dir/initrd/modules/${b%.gz}"; b=${b%.gz} ;;
      *) cp "$moddir/$m" "$dir/initrd/modules/$b" ;;
    esac
    echo "$b" >>"$dir/initrd/modules/order"
  done <"$dir/modules.list"
  cp /bin/busybox "$dir/initrd/bin/busybox"
  install -m 0755 "$HERE/init.sh" "$dir/initrd/init"
  (cd "$dir/initrd" && find . | busybox cpio -o -H newc 2>/dev/null | gzip -1) >"$dir/initrd.gz"
  rm -rf "$dir/x"
  echo "$kver"
}

# qemu's arguments for a guest of DIR writing into RESULTS.
qemu_args() {
  local dir=$1 results=$2 accel=$3
  local -a a=(-name xdplb-kernel-test -machine q35 -m 3072 -smp 2 -nodefaults -no-reboot
    -display none -monitor none -serial "file:$results/console.log" -nic none
    -device virtio-rng-pci
    -kernel "$dir/vmlinuz" -initrd "$dir/initrd.gz"
    -append "console=ttyS0 panic=-1 quiet loglevel=4"
    -virtfs "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap"
    -virtfs "local,path=$results,mount_tag=results,security_model=none"
    -virtfs "local,path=$ROOT,mount_tag=workspace,security_model=none,readonly=on,multidevs=remap")
  if [[ $TARGET != "$ROOT"/* ]]; then
    a+=(-virtfs "local,path=$TARGET,mount_tag=target,security_model=none,readonly=on,multidevs=remap")
  fi
  if [[ $accel == kvm ]]; then
    a+=(-accel kvm -cpu host)
  else
    a+=(-accel tcg,thread=multi -cpu max)
  fi
  printf '%s\n' "${a[@]}"
}

# Boot DIR's kernel in RESULTS with ACCEL, at most LIMIT seconds; prints the seconds taken.
boot() {
  local dir=$1 results=$2 accel=$3 limit=$4 t0 rc=0
  local -a args
  mapfile -t args < <(qemu_args "$dir" "$results" "$accel")
  t0=$(date +%s%N)
  timeout --kill-after=10 "$limit" qemu-system-x86_64 "${args[@]}" >"$results/qemu.log" 2>&1 &
  qemu_pid=$!
  wait "$qemu_pid" || rc=$?
  qemu_pid=""
  echo "$((($(date +%s%N) - t0) / 1000000))"
  return "$rc"
}

# Does KVM boot a guest here? (/dev/kvm may exist and still not run one.) A guest of the first
# kernel whose init prints a line and powers off, within 30 s.
kvm_works() {
  local dir=$1 probe=$work/kvm-probe
  [[ -w /dev/kvm ]] || return 1
  mkdir -p "$probe/results"
  echo "/bin/true" >"$probe/results/suite-path"
  boot "$dir" "$probe/results" kvm 30 >/dev/null 2>&1 || true
  grep -q 'xdplb-guest: suite exited' "$probe/results/console.log" 2>/dev/null
}

# --- the test binaries ------------------------------------------------------------------------

# Build the daemons (the smoke test starts them) and the test binaries; write the plan.
build() {
  local json=$work/cargo.json
  echo "kernels: building the daemons and the test binaries on the host"
  cargo build --quiet -p xdplb-director -p xdplb-redirector -p xdplb-tablegen -p xdplb-lab
  cargo test --quiet --no-run --message-format=json \
    -p xdplb-director --test load --test datapath --test fast_path \
    -p xdplb-redirector --test load --test datapath \
    -p xdplb-lab --test smoke >"$json"
  # step  package  test target  extra arguments (load tests print the verifier's counts)
  while read -r step pkg target extra; do
    jq -r --arg p "$pkg" --arg t "$target" --arg s "$step" --arg x "$extra" '
      select(.reason == "compiler-artifact" and .executable != null
             and .target.name == $t and (.target.kind | index("test"))
             and (.package_id | test("#" + $p + "@|/" + $p + "#")))
      | [$s, (.manifest_path | sub("/Cargo.toml$"; "")), .executable, $x] | @tsv' "$json"
  done >"$work/plan" <<'EOF'
director-load xdplb-director load --nocapture
redirector-load xdplb-redirector load --nocapture
director-packet xdplb-director datapath
director-packet xdplb-director fast_path
redirector-packet xdplb-redirector datapath
smoke xdplb-lab smoke --nocapture
EOF
  if (($(wc -l <"$work/plan") != 6)); then
    echo "kernels: expected 6 test binaries from cargo, found:" >&2
    cat "$work/plan" >&2
    return 1
  fi
}

# --- results --------------------------------------------------------------------------------

STEPS=(director-load redirector-load director-packet redirector-packet smoke)
declare -A verdict=() detail=() took=()
overall=0

# Fold RESULTS/summary into verdict[name/step]; note why a step has no result.
collect() {
  local name=$1 results=$2 why=${3:-} step rc ms log s
  for s in "${STEPS[@]}"; do
    verdict[$name/$s]="FAIL"
    detail[$name/$s]="${why:-no result}"
  done
  [[ -r $results/summary ]] || return 0
  # A step passes when every binary of it in the plan reported, each with exit status 0.
  for s in "${STEPS[@]}"; do
    local planned reported
    planned=$(grep -c "^$s"$'\t' "$results/plan" || true)
    reported=$(grep -c "^$s"$'\t' "$results/summary" || true)
    if ((reported == planned)); then
      verdict[$name/$s]="pass" detail[$name/$s]=""
    elif ((reported > 0)); then
      detail[$name/$s]="${why:-$reported of $planned binaries reported}"
    fi
  done
  while IFS=$'\t' read -r step rc ms log; do
    if [[ $rc != 0 ]]; then
      verdict[$name/$step]="FAIL"
      detail[$name/$step]="exit $rc, see $log"
    fi
    if [[ $step == smoke || $step == *packet ]]; then
      local counts
      counts=$(grep -h '^test result:' "$results/$log" | tail -1 | awk '{s = $4 " " $5 " " $6 " " $7; sub(/;$/, "", s); print s}')
      [[ -n $counts ]] && detail[$name/$step]="${detail[$name/$step]:+${detail[$name/$step]}; }$log: $counts"
    fi
  done <"$results/summary"
  grep -h '^verified_insns' "$results"/*load*.log 2>/dev/null >"$results/verified" || true
}

run_one() {
  local name=$1 results deb dir kver ms rc=0
  results=$work/results/$name
  mkdir -p "$results"
  cp "$work/plan" "$results/plan"
  echo "$HERE/suite.sh" >"$results/suite-path"
  # The shares init.sh mounts back at their paths, as "tag path" lines.
  {
    echo "workspace $ROOT"
    [[ $TARGET == "$ROOT"/* ]] || echo "target $TARGET"
  } >"$results/shares"
  if [[ $name == host ]]; then
    local t0
    t0=$(date +%s%N)
    bash "$HERE/suite.sh" "$results" >"$results/console.log" 2>&1 || true
    took[$name]=$((($(date +%s%N) - t0) / 1000000))
    kernel_of[$name]=$(uname -r)
    collect "$name" "$results"
    return
  fi
  if ! deb=$(fetch "$name"); then
    collect "$name" "$results" "image not fetched"
    return
  fi
  dir=$work/guest/$name
  kver=$(make_guest "$deb" "$dir") || { collect "$name" "$results" "initramfs not built"; return; }
  kernel_of[$name]=$kver
  if [[ $accel == auto ]]; then
    if kvm_works "$dir"; then accel=kvm; else accel=tcg; fi
    echo "kernels: accelerator: $accel"
  fi
  # The lab's waits are sized for a real machine: stretch them in an emulated one.
  if [[ $accel == tcg ]]; then
    echo "XDPLB_LAB_SLOWDOWN=$TCG_SLOWDOWN" >"$results/env"
    # Each packet of the fast-path comparison reads every counter: one random source per case
    # instead of three keeps it within minutes.
    echo "XDPLB_FAST_PATH_SOURCES=1" >>"$results/env"
  fi
  echo "kernels: $name: booting $kver ($accel)"
  ms=$(boot "$dir" "$results" "$accel" "$GUEST_TIMEOUT") || rc=$?
  took[$name]=$ms
  if ((rc == 124 || rc == 137)); then
    collect "$name" "$results" "guest timed out after ${GUEST_TIMEOUT}s"
  elif [[ ! -r $results/summary ]]; then
    collect "$name" "$results" "guest gave no result (qemu exit $rc; see console)"
  else
    collect "$name" "$results"
  fi
  cp "$results/console.log" "$work/results/$name.console.log" 2>/dev/null || true
}

declare -A kernel_of=()
build
for n in "${names[@]}"; do
  run_one "$n"
done

# Keep the logs beside the cache (the work dir goes away).
keep=${XDPLB_TEST_CACHE:-/var/cache/xdplb-test}/kernel-results
mkdir -p "$keep"
for n in "${names[@]}"; do
  rm -rf "${keep:?}/$n" "$keep/$n.console.log"
done
cp -r "$work/results/." "$keep/"

echo
printf '%-6s %-26s' kernel image
printf ' %-18s' "${STEPS[@]}"
printf ' %s\n' "seconds"
for n in "${names[@]}"; do
  printf '%-6s %-26s' "$n" "${kernel_of[$n]:-?}"
  for s in "${STEPS[@]}"; do
    printf ' %-18s' "${verdict[$n/$s]}"
    [[ ${verdict[$n/$s]} == pass ]] || overall=1
  done
  printf ' %s\n' "$(awk -v ms="${took[$n]:-0}" 'BEGIN {printf "%.1f", ms / 1000}')"
done
echo
for n in "${names[@]}"; do
  for s in "${STEPS[@]}"; do
    [[ -n ${detail[$n/$s]} ]] && echo "$n $s: ${detail[$n/$s]}"
  done
  sed "s/^/$n /" "$work/results/$n/verified" 2>/dev/null || true
done
echo "kernels: logs in $keep"
if ((overall)); then
  echo "kernels: FAILED"
  exit 1
fi
echo "kernels: every step passed on ${names[*]}"
}
main "$@"
