#!/usr/bin/env bash
# The whole test suite: pure tests, BPF_PROG_TEST_RUN packet tests, network-namespace
# end-to-end tests, packaging tests. Needs root: BPF programs are loaded into the kernel and
# the end-to-end tests create network namespaces.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ $EUID -ne 0 ]]; then
  echo "test: needs root (loads BPF programs, creates network namespaces); run: sudo $0" >&2
  exit 1
fi
bash scripts/setup.sh
[[ -x "$HOME/.cargo/bin/cargo" ]] && export PATH="$HOME/.cargo/bin:$PATH"

echo "== format and lints"
cargo fmt --all --check
cargo clippy --workspace --all-targets --quiet -- -D warnings

echo "== tests"
# Benchmarks are built by clippy above but not run here: they measure, they do not assert
# (run them with `cargo bench -p <crate>`).
cargo test --workspace --lib --bins --tests
