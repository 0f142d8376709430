#!/bin/bash
# The matrix's test binaries, run in whatever kernel this runs on: a guest booted by
# kernels/run.sh (chrooted into the host's tree, see init.sh) or the host itself.
#
# usage: suite.sh RESULTS_DIR
# RESULTS_DIR/plan has one line per test binary: step, working directory, binary, arguments
# (tab-separated). Each binary's output goes to RESULTS_DIR/NN-step.log and one line per binary
# to RESULTS_DIR/summary: step, exit status, milliseconds, log file name. RESULTS_DIR/env, if
# present, holds VAR=value lines to export first (XDPLB_LAB_SLOWDOWN for an emulated guest).
set -u
R=$1
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export RUST_BACKTRACE=1
if [[ -r $R/env ]]; then
  while IFS= read -r kv; do
    [[ $kv == *=* ]] && export "${kv?}"
  done <"$R/env"
fi
uname -r >"$R/uname"
: >"$R/summary"
n=0
while IFS=$'\t' read -r step dir bin args; do
  n=$((n + 1))
  log=$(printf '%02d-%s.log' "$n" "$step")
  echo "suite: $step: $bin $args"
  t0=$(date +%s%N)
  # shellcheck disable=SC2086 # the arguments are words
  (cd "$dir" && exec "$bin" $args) >"$R/$log" 2>&1
  rc=$?
  t1=$(date +%s%N)
  printf '%s\t%s\t%s\t%s\n' "$step" "$rc" "$(((t1 - t0) / 1000000))" "$log" >>"$R/summary"
  echo "suite: $step: exit $rc after $(((t1 - t0) / 1000000)) ms"
done <"$R/plan"
[[ -r /proc/uptime ]] && cut -d' ' -f1 /proc/uptime >"$R/uptime"
sync
