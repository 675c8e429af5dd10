#!/bin/bash
# Health check of llima-agent: calls grpc.health.v1.Health/Check (service "") over the agent's
# Unix socket with curl (gRPC is HTTP/2 with prior knowledge) and succeeds only when the answer
# is SERVING. Installed in the VM as /usr/local/libexec/llima-box/health-check and used by the
# readiness probe of lima.yaml.
#
# usage: health-check [SOCKET]      (default /run/llima-box/agent.sock)
# exit:  0 serving, 1 not serving / no answer, 2 usage or missing tool
set -uo pipefail

socket="${1:-/run/llima-box/agent.sock}"
if [ $# -gt 1 ] || [ "$socket" = "-h" ] || [ "$socket" = "--help" ]; then
  echo "usage: health-check [SOCKET]" >&2
  exit 2
fi
for tool in curl od tr; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "health-check: $tool is not installed" >&2
    exit 2
  fi
done
if [ ! -S "$socket" ]; then
  echo "health-check: $socket is not a socket (is llima-agent running?)" >&2
  exit 1
fi

# Request: one gRPC message frame (compressed flag 0, length 0) holding an empty
# HealthCheckRequest, i.e. service "" = the whole server.
# Expected response body: frame header 00 00000002, then HealthCheckResponse{status: SERVING(1)}
# encoded as 08 01. Anything else (NOT_SERVING = 08 02, an error in trailers-only form, an
# empty body) is a failure.
expected="00000000020801"
body="$(printf '\0\0\0\0\0' |
  curl --silent --show-error --fail --max-time 5 --http2-prior-knowledge \
       --unix-socket "$socket" \
       -H 'content-type: application/grpc' -H 'te: trailers' \
       --data-binary @- \
       http://localhost/grpc.health.v1.Health/Check |
  od -An -v -tx1 | tr -d ' \n')"
status=$?
if [ $status -ne 0 ]; then
  echo "health-check: no gRPC answer on $socket (curl exit status $status)" >&2
  exit 1
fi
if [ "$body" != "$expected" ]; then
  echo "health-check: llima-agent on $socket is not SERVING (response bytes: ${body:-none})" >&2
  exit 1
fi
exit 0
