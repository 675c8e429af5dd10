#!/usr/bin/env bash
# Builds llima-box and runs the whole test suite. Needs root: the tests create namespaces,
# mounts and cgroups for real. Installs missing build dependencies with apt first.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "scripts/test.sh: run as root (sudo scripts/test.sh): the tests create namespaces and mounts" >&2
  exit 1
fi
# llima-agent runs llima-init from the build tree as PID 1 of every environment, and refuses it
# if others than root could change it: build with files only their owner can write.
umask 022
scripts/install-deps.sh
cmake --preset default
cmake --build --preset default
ctest --preset default "$@"
