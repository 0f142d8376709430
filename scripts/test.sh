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
# One test binary at a time per crate keeps network-namespace tests from fighting over the
# two cores; tests inside a binary still run in parallel where they are independent.
cargo test --workspace --all-targets
