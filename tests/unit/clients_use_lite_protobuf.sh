#!/usr/bin/env bash
# The clients are built on protobuf's lite runtime (proto/CMakeLists.txt). If the full runtime
# got linked in as well, its start-up cost would be back and the two copies of the API's
# classes would clash. Checks each program given: linked statically, no full-runtime code in
# it; linked against shared libraries, no libprotobuf.so (libprotobuf-lite.so is fine).
set -euo pipefail
status=0
for program in "$@"; do
  # Read whole before grep: `grep -q` stopping early would fail the pipeline (pipefail).
  dynamic=$(readelf -d "$program")
  symbols=$(nm -C "$program")
  if grep -q 'Shared library: \[libprotobuf\.so' <<<"$dynamic"; then
    echo "FAIL: $program needs the full libprotobuf.so" >&2
    status=1
  fi
  if grep -q 'google::protobuf::DescriptorPool::' <<<"$symbols"; then
    echo "FAIL: $program contains or needs google::protobuf::DescriptorPool (the full runtime)" >&2
    status=1
  fi
  [ $status -eq 0 ] && echo "ok: $program uses the lite runtime only"
done
exit $status
