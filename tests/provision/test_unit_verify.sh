#!/bin/bash
# Checks provision/llima-agent.service: installed by install-agent.sh into a temporary root, it
# passes `systemd-analyze verify` there (no warnings at all) and has the settings the agent needs.
# systemd-analyze is required: a missing one is a failure, not a skip.
#
# usage: test_unit_verify.sh PROVISION_DIR LLIMA_AGENT LLIMA_SANDBOX LLIMA_INIT
set -uo pipefail

provision="$1" agent="$2" sandbox="$3" init="$4"
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

if ! command -v systemd-analyze >/dev/null 2>&1; then
  echo "FAIL: systemd-analyze is not installed (Debian package: systemd)"
  exit 1
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# The temporary root: the distribution's units (verify resolves sysinit.target & co. inside
# --root), and the files install-agent.sh installs.
units=
for d in /usr/lib/systemd/system /lib/systemd/system; do
  if [ -f "$d/multi-user.target" ]; then units="$d"; break; fi
done
if [ -z "$units" ]; then
  echo "FAIL: no systemd unit directory with multi-user.target on this machine"
  exit 1
fi
mkdir -p "$tmp/root/usr/lib/systemd" "$tmp/bin"
cp -a "$units" "$tmp/root/usr/lib/systemd/system"
cp "$agent" "$sandbox" "$init" "$tmp/bin/"
if ! bash "$provision/install-agent.sh" --root "$tmp/root" --prebuilt "$tmp/bin" --user lima >"$tmp/log" 2>&1; then
  cat "$tmp/log"
  echo "FAIL: install-agent.sh failed"
  exit 1
fi
unit="$tmp/root/etc/systemd/system/llima-agent.service"

out="$(systemd-analyze verify --root="$tmp/root" llima-agent.service 2>&1)"
status=$?
[ $status -eq 0 ] || fail "systemd-analyze verify exited with $status"
[ -z "$out" ] || fail "systemd-analyze verify complained: $out"

# The check itself must be able to fail: a unit whose binary is missing is refused.
cp "$unit" "$tmp/root/etc/systemd/system/llima-broken.service"
sed -i 's|^ExecStart=/usr/local/sbin/llima-agent|ExecStart=/usr/local/sbin/llima-missing|' \
  "$tmp/root/etc/systemd/system/llima-broken.service"
if systemd-analyze verify --root="$tmp/root" llima-broken.service >/dev/null 2>&1; then
  fail "systemd-analyze verify accepts a unit with a missing binary: this check proves nothing"
fi

# What the agent needs.
has() { grep -qxE "$1" "$unit" || fail "unit lacks a line matching: $1"; }
has 'Type=simple'
has 'ExecStart=/usr/local/sbin/llima-agent .*--socket /run/llima-box/agent\.sock( .*)?'
has 'ExecStart=/usr/local/sbin/llima-agent .*--socket-owner lima( .*)?'
has 'Restart=on-failure'
has 'KillMode=process'
has 'WantedBy=multi-user\.target'
for forbidden in RuntimeDirectory PrivateTmp ProtectSystem ProtectHome PrivateMounts \
                 PrivateDevices ReadOnlyPaths ReadWritePaths InaccessiblePaths TemporaryFileSystem \
                 BindPaths User DynamicUser; do
  # Each would take away the agent's root or put it in a private mount namespace.
  if grep -qE "^$forbidden=" "$unit"; then fail "unit must not set $forbidden="; fi
done
if grep -q '@[A-Z_]*@' "$unit"; then fail "unit has an unreplaced placeholder"; fi
grep -q '@SOCKET_OWNER@' "$provision/llima-agent.service" ||
  fail "the unit template must carry @SOCKET_OWNER@ for install-agent.sh"

if [ $failures -ne 0 ]; then exit 1; fi
echo "ok: llima-agent.service"
