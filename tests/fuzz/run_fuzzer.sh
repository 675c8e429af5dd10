#!/bin/bash
# Runs one fuzz target for a fixed time on a fresh copy of its seed corpus: the seeds are never
# written to, and what the run adds (new inputs in WORK_DIR/corpus, a failing input in
# WORK_DIR/artifacts) stays in the build directory. Fails when the target finds a crash, a
# violated invariant, a sanitizer report, a leak or an input slower than 5 s.
#
# usage: run_fuzzer.sh FUZZER SEED_DIR WORK_DIR SECONDS [LIBFUZZER_OPTION...]
set -euo pipefail

fuzzer="$1" seeds="$2" work="$3" seconds="$4"
shift 4

rm -rf "$work"
mkdir -p "$work/corpus" "$work/artifacts"
cp -- "$seeds"/* "$work/corpus/"

"$fuzzer" -max_total_time="$seconds" -timeout=5 -rss_limit_mb=2048 -print_final_stats=1 \
  -artifact_prefix="$work/artifacts/" "$@" "$work/corpus" && exit 0
status=$?
for input in "$work/artifacts"/*; do
  [ -e "$input" ] && echo "failing input: $input (reproduce: $fuzzer $input)"
done
exit "$status"
