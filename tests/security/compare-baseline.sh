#!/usr/bin/env bash
# Runs the escape suite twice: against llima-box, and against the original shell scripts
# (create-namespace.sh + sandbox.sh, run as root the way they were driven). Prints one table.
#
#   sudo tests/security/compare-baseline.sh DIR_WITH_THE_ORIGINAL_SCRIPTS [ESCAPE_TEST_BINARY]
#
# The original scripts bind the real /etc, /var and /dev read-write and run attempts as root, so
# they are run in a throwaway world (tests/throwaway-world.sh): whatever the attempts write or
# kill stays there and vanishes with it.
set -euo pipefail

if [ "$#" -lt 1 ] || [ "$(id -u)" -ne 0 ]; then
  echo "usage: sudo $0 DIR_WITH_create-namespace.sh_AND_sandbox.sh [ESCAPE_TEST_BINARY]" >&2
  exit 2
fi
scripts=$(realpath "$1")
test_bin=$(realpath "${2:-$(dirname "$0")/../../build/default/tests/security/escape_test}")
for f in "$scripts/create-namespace.sh" "$scripts/sandbox.sh" "$test_bin"; do
  [ -f "$f" ] || { echo "$0: $f not found" >&2; exit 2; }
done

ours=$(mktemp /tmp/llima-baseline.XXXXXX)
theirs=$(mktemp /tmp/llima-baseline.XXXXXX)
trap 'rm -f "$ours" "$theirs"' EXIT
fail() { echo "$0: $1" >&2; cat "$2" >&2; exit 1; }

"$test_bin" --gtest_filter="FromInside/*" >"$ours" 2>&1 || true
# Two projects, their environments, a process in the other one; then the suite. It runs in a
# subshell, not in pid 1: an attempt that ptraces "init" stops the world's pid 1, which the
# subshell resumes at the end so that it can reap and exit.
timeout 600 "$(dirname "$0")/../throwaway-world.sh" \
  --install "$scripts/create-namespace.sh" --install "$scripts/sandbox.sh" \
  --install "$test_bin:escape_test" -- /bin/bash -eu -c '(
    mkdir -p /srv/projects/mine /srv/projects/other /home/mine /home/other
    touch /home/mine/namespace.mnt /home/other/namespace.mnt
    echo s3cret > /srv/projects/other/secret
    # create-namespace.sh reports success after its fixed sleep even when binding the
    # namespace file failed (see throwaway-world.sh on why it could): check, and run it again.
    make_env() {
      for attempt in 1 2 3 4 5; do
        create-namespace.sh "$1" "$2" >/dev/null 2>&1
        nsenter --mount=/home/$1/namespace.mnt true 2>/dev/null && return 0
      done
      echo "create-namespace.sh $1 $2 failed 5 times" >&2
      return 1
    }
    make_env mine /srv/projects/mine
    make_env other /srv/projects/other
    sandbox.sh other /srv/projects/other sh -c "sleep 940 >/dev/null 2>&1 &"
    printf "#!/bin/sh\nexec sandbox.sh mine /srv/projects/mine \"\$@\"\n" > /usr/local/bin/run-in-mine
    chmod 0755 /usr/local/bin/run-in-mine
    LLIMA_ESCAPE_RUNNER=/usr/local/bin/run-in-mine LLIMA_ESCAPE_OTHER_PROJECT=/srv/projects/other \
      escape_test --gtest_filter="FromInside/*" || true
    kill -CONT 1)' >"$theirs" 2>&1 \
  || fail "setting up the original scripts failed:" "$theirs"

# "[       OK ] FromInside/EscapeTest.Fails/<case> (N ms)" means the attempt failed as expected.
outcome() {
  if grep -q "^\[       OK \] FromInside/EscapeTest.Fails/$2 " "$1"; then echo "stopped"
  elif grep -q "^\[  FAILED  \] FromInside/EscapeTest.Fails/$2[ ,]" "$1"; then echo "**not stopped**"
  else echo "not run"; fi
}
cases=$(grep -o '^\[ RUN      \] FromInside/EscapeTest.Fails/[a-z_]*' "$ours" | sed 's|.*/||')
[ -n "$cases" ] || { echo "$0: the escape suite did not run:" >&2; cat "$ours" >&2; exit 1; }
answer() {
  grep -m1 "^answer $2: " "$1" | sed "s/^answer $2: //; s/ *$//; s/|/\\\\|/g" | cut -c1-60
}
echo "| attempt from inside | llima-box | original scripts |"
echo "|---|---|---|"
stopped=0 total=0
for c in $cases; do
  theirs_outcome=$(outcome "$theirs" "$c")
  [ "$theirs_outcome" = "stopped" ] && stopped=$((stopped + 1))
  total=$((total + 1))
  echo "| $c | $(outcome "$ours" "$c"): \`$(answer "$ours" "$c")\` | $theirs_outcome: \`$(answer "$theirs" "$c")\` |"
done
echo
echo "original scripts stopped $stopped of $total attempts"
