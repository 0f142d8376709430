#!/usr/bin/env bash
# The whole test suite: pure tests, BPF_PROG_TEST_RUN packet tests, network-namespace
# end-to-end tests, packaging tests, and the BPF tests again in Debian 12's kernel under qemu.
# Needs root: BPF programs are loaded into the kernel and the end-to-end tests create network
# namespaces.
#
# Every stage runs even when an earlier one fails, and every test binary runs even when
# another fails (--no-fail-fast), so one failure never hides the rest; the exit status is
# non-zero when anything failed, and the last lines name what did.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ $EUID -ne 0 ]]; then
  echo "test: needs root (loads BPF programs, creates network namespaces); run: sudo $0" >&2
  exit 1
fi
bash scripts/setup.sh
[[ -x "$HOME/.cargo/bin/cargo" ]] && export PATH="$HOME/.cargo/bin:$PATH"

failed=()
stage() {
  local name=$1
  shift
  echo "== $name"
  "$@" || failed+=("$name")
}

stage "format" cargo fmt --all --check
stage "lints" cargo clippy --workspace --all-targets --quiet -- -D warnings

# Benchmarks are built by clippy above but not run here: they measure, they do not assert
# (run them with `cargo bench -p <crate>`).
log=$(mktemp)
trap 'rm -f "$log"' EXIT
tests() {
  cargo test --workspace --lib --bins --tests --no-fail-fast 2>&1 | tee "$log"
}
stage "tests" tests

# The same BPF programs, packet tests and a smoke test in Debian 12's own kernel (6.1), booted
# in qemu: the host's kernel is not the one the packages target. `bash kernels/run.sh all` runs
# the whole matrix (docs/development/kernels.md).
stage "kernel 6.1" bash kernels/run.sh --no-setup 6.1

if ((${#failed[@]})); then
  echo "test: FAILED: ${failed[*]}" >&2
else
  echo "test: every stage passed"
fi
# Last, one line over every test binary (cargo prints a result per binary).
awk '/^test result:/ {
    for (i = 2; i <= NF; i++) {
      if ($(i) ~ /^passed;?$/) p += $(i - 1)
      if ($(i) ~ /^failed;?$/) f += $(i - 1)
      if ($(i) ~ /^ignored;?$/) s += $(i - 1)
    }
  }
  END { printf "tests: %d passed, %d failed, %d skipped\n", p, f, s }' "$log"
((${#failed[@]} == 0))
