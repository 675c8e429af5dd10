#!/usr/bin/env bash
# Builds llima-box and runs the whole test suite. Needs root: the tests create namespaces,
# mounts and cgroups for real. Installs missing build dependencies with apt first.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "scripts/test.sh: run as root (sudo scripts/test.sh): the tests create namespaces and mounts" >&2
  exit 1
fi
scripts/install-deps.sh
cmake --preset default
cmake --build --preset default
ctest --preset default "$@"
