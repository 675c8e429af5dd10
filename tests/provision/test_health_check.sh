#!/bin/bash
# Checks provision/health-check.sh (the readiness probe's check) against a real gRPC server with
# the standard health service: success when SERVING, failure when NOT_SERVING, when nothing
# listens on the socket, and when there is no socket. curl is required (a failure, not a skip).
#
# usage: test_health_check.sh HEALTH_CHECK_SH HEALTH_SERVER
set -uo pipefail

check="$1" server="$2"
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

if ! command -v curl >/dev/null 2>&1; then
  echo "FAIL: curl is not installed"
  exit 1
fi

tmp="$(mktemp -d)"
pids=()
cleanup() {
  exec 3>&- 4>&- 2>/dev/null
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
  rm -rf "$tmp"
}
trap cleanup EXIT

start_server() { # FD SOCKET serving|not-serving: serves until FD is closed
  local fd="$1" sock="$2" mode="$3"
  local out="$tmp/$mode.out"
  mkfifo "$tmp/$mode.in"
  "$server" "$sock" "$mode" <"$tmp/$mode.in" >"$out" 2>&1 &
  pids+=($!)
  eval "exec $fd>\"\$tmp/\$mode.in\""
  for _ in $(seq 1 100); do
    grep -q '^ready$' "$out" 2>/dev/null && return 0
    sleep 0.1
  done
  cat "$out"
  fail "health server ($mode) did not start"
  return 1
}

expect() { # WANT-STATUS WHAT ARGS...
  local want="$1" what="$2"
  shift 2
  bash "$check" "$@" >"$tmp/check.out" 2>&1
  local got=$?
  if [ "$got" -ne "$want" ]; then
    cat "$tmp/check.out"
    fail "$what: exit status $got, want $want"
  fi
}

start_server 3 "$tmp/serving.sock" serving &&
  expect 0 "serving server" "$tmp/serving.sock"
start_server 4 "$tmp/not-serving.sock" not-serving &&
  expect 1 "not serving server" "$tmp/not-serving.sock"
expect 1 "no socket" "$tmp/absent.sock"
# A socket nobody listens on (left behind by a dead agent).
python3 -c 'import socket, sys; s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1])' "$tmp/stale.sock"
[ -S "$tmp/stale.sock" ] || fail "could not make a stale socket"
expect 1 "stale socket" "$tmp/stale.sock"
# Not a gRPC server at all: a regular file.
: >"$tmp/file"
expect 1 "regular file" "$tmp/file"
expect 2 "usage error" a b

# The serving server still answers after the others (the check does not depend on order).
expect 0 "serving server again" "$tmp/serving.sock"

if [ $failures -ne 0 ]; then exit 1; fi
echo "ok: health-check.sh"
