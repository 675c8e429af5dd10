#!/bin/bash
# Checks provision/install-agent.sh against a temporary root with prebuilt binaries: the first run
# installs the agent, its init, the sandbox entry, the health check, the unit and the stamp, owned by root
# with modes 0755/0644; a second run prints "up to date" and changes nothing (same listing of
# modes, owners, sizes, times and hashes); a new socket owner or a missing file installs again;
# bad input fails without installing anything.
#
# usage: test_install_agent.sh PROVISION_DIR LLIMA_AGENT LLIMA_SANDBOX LLIMA_INIT
set -uo pipefail

provision="$1" agent="$2" sandbox="$3" init="$4"
install="$provision/install-agent.sh"
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/root" "$tmp/bin"
cp "$agent" "$sandbox" "$init" "$tmp/bin/"
root="$tmp/root"

run() { # LOG ARGS...: runs install-agent.sh, output in LOG; returns its exit status
  local log="$1"
  shift
  bash "$install" "$@" >"$log" 2>&1
}

listing() { # every file and directory under the root: type mode uid gid size mtime path [sha256]
  (cd "$root" && find . -printf '%y %m %U %G %s %T@ %p\n' | sort | while read -r y m u g s t p; do
    if [ "$y" = f ]; then echo "$y $m $u $g $s $t $p $(sha256sum "$p" | cut -d' ' -f1)"; else echo "$y $m $u $g $s $t $p"; fi
  done)
}

expect_file() { # PATH MODE [SAME-AS]
  local path="$root$1" mode="$2"
  if [ ! -f "$path" ]; then fail "$1 was not installed"; return; fi
  [ "$(stat -c %a "$path")" = "$mode" ] || fail "$1 has mode $(stat -c %a "$path"), want $mode"
  if [ "$(id -u)" -eq 0 ]; then
    [ "$(stat -c %u:%g "$path")" = 0:0 ] || fail "$1 is owned by $(stat -c %u:%g "$path"), want 0:0"
  fi
  if [ $# -ge 3 ]; then cmp -s "$path" "$3" || fail "$1 differs from $3"; fi
}

# 1. First run installs.
if ! run "$tmp/log1" --root "$root" --prebuilt "$tmp/bin" --user lima; then
  cat "$tmp/log1"; fail "first run failed"
fi
expect_file /usr/local/sbin/llima-agent 755 "$agent"
expect_file /usr/local/libexec/llima-box/llima-init 755 "$init"
expect_file /usr/local/bin/llima-sandbox 755 "$sandbox"
expect_file /usr/local/libexec/llima-box/health-check 755 "$provision/health-check.sh"
expect_file /etc/systemd/system/llima-agent.service 644
expect_file /usr/local/lib/llima-box/install.stamp 644
grep -q -- '--socket-owner lima' "$root/etc/systemd/system/llima-agent.service" ||
  fail "the unit does not pass --socket-owner lima"
grep -q 'up to date' "$tmp/log1" && fail "first run claims to be up to date"
grep -q 'installed .*/usr/local/sbin/llima-agent' "$tmp/log1" || fail "first run does not say what it installed"
unexpected="$(cd "$root" && find . -type f ! -path ./usr/local/sbin/llima-agent ! -path ./usr/local/bin/llima-sandbox \
  ! -path ./usr/local/libexec/llima-box/llima-init \
  ! -path ./usr/local/libexec/llima-box/health-check ! -path ./etc/systemd/system/llima-agent.service \
  ! -path ./usr/local/lib/llima-box/install.stamp)"
[ -z "$unexpected" ] || fail "unexpected files installed: $unexpected"
before="$(listing)"

# 2. Second run: "up to date", nothing changed.
sleep 1 # so that a rewrite would show in the times
if ! run "$tmp/log2" --root "$root" --prebuilt "$tmp/bin" --user lima; then
  cat "$tmp/log2"; fail "second run failed"
fi
grep -q 'up to date' "$tmp/log2" || { cat "$tmp/log2"; fail "second run does not say up to date"; }
after="$(listing)"
if [ "$before" != "$after" ]; then
  fail "second run changed the root:"
  diff <(echo "$before") <(echo "$after")
fi

# 3. Another socket owner: installs again, with the new owner in the unit.
if ! run "$tmp/log3" --root "$root" --prebuilt "$tmp/bin" --user 1234; then
  cat "$tmp/log3"; fail "run with a new user failed"
fi
grep -q 'up to date' "$tmp/log3" && fail "a new socket owner was taken as up to date"
grep -q -- '--socket-owner 1234' "$root/etc/systemd/system/llima-agent.service" ||
  fail "the unit does not pass the new socket owner"

# 4. A missing file (same stamp) is installed again.
rm -f "$root/usr/local/bin/llima-sandbox"
if ! run "$tmp/log4" --root "$root" --prebuilt "$tmp/bin" --user 1234; then
  cat "$tmp/log4"; fail "run after removing a file failed"
fi
expect_file /usr/local/bin/llima-sandbox 755 "$sandbox"
rm -f "$root/usr/local/libexec/llima-box/llima-init"
if ! run "$tmp/log4b" --root "$root" --prebuilt "$tmp/bin" --user 1234; then
  cat "$tmp/log4b"; fail "run after removing llima-init failed"
fi
expect_file /usr/local/libexec/llima-box/llima-init 755 "$init"

# 5. Bad input fails and installs nothing.
mkdir -p "$tmp/empty-root" "$tmp/no-bin" "$tmp/no-init"
run "$tmp/log5" --root "$tmp/empty-root" --prebuilt "$tmp/no-bin" --user lima &&
  fail "missing prebuilt binaries were accepted"
cp "$agent" "$sandbox" "$tmp/no-init/"
run "$tmp/log5b" --root "$tmp/empty-root" --prebuilt "$tmp/no-init" --user lima &&
  fail "prebuilt binaries without llima-init were accepted"
grep -q "no executable $tmp/no-init/llima-init" "$tmp/log5b" || { cat "$tmp/log5b"; fail "the missing llima-init is not named"; }
run "$tmp/log6" --root "$tmp/empty-root" --prebuilt "$tmp/bin" --user 'bad/user' &&
  fail "an invalid user name was accepted"
env -u LIMA_CIDATA_USER bash "$install" --root "$tmp/empty-root" --prebuilt "$tmp/bin" >"$tmp/log7" 2>&1 &&
  fail "a run without a user was accepted"
[ -z "$(find "$tmp/empty-root" -mindepth 1)" ] || fail "failed runs left files behind"

if [ $failures -ne 0 ]; then exit 1; fi
echo "ok: install-agent.sh"
