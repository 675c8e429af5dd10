#!/usr/bin/env bash
# Builds what is missing and runs the benchmark suite: one table of every figure of DESIGN.md's
# performance targets, with the machine it was measured on. Takes a few minutes in full.
#
#   sudo tests/bench/run.sh [--baseline DIR_WITH_THE_ORIGINAL_SCRIPTS] [--quick]
#
# Further arguments go to llima_bench (--environments N, --benchmark_filter=..., ...). Google
# Benchmark's progress goes to stderr, the table to stdout.
set -euo pipefail
cd "$(dirname "$0")/../.."

if [ "$(id -u)" -ne 0 ]; then
  echo "usage: sudo $0 [--baseline DIR] [--quick]   (the agent under test needs root)" >&2
  exit 2
fi
[ -f build/default/build.ninja ] || cmake --preset default >&2
cmake --build --preset default --target llima_bench llima-agent llima-box >&2
exec build/default/tests/bench/llima_bench "$@"
