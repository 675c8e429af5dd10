#!/usr/bin/env bash
# The clients are built on protobuf's lite runtime (proto/CMakeLists.txt) and call the agent
# through host-cli/grpc_connection.h, not gRPC's library. If the full protobuf runtime or gRPC's
# got linked in, their start-up cost (descriptor parsing; gRPC's threads and channel) would be
# back, and two copies of the API's classes would clash. Checks each program given: linked
# statically, no full-runtime or gRPC code in it; linked against shared libraries, neither
# libprotobuf.so nor libgrpc (libprotobuf-lite.so is fine).
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
  if grep -q 'Shared library: \[libgrpc' <<<"$dynamic" || grep -qw 'grpc_init' <<<"$symbols"; then
    echo "FAIL: $program contains or needs gRPC's library" >&2
    status=1
  fi
  [ $status -eq 0 ] && echo "ok: $program uses the lite runtime only, and no gRPC library"
done
exit $status
