#!/usr/bin/env bash
# The main job on a Linux machine, end to end: starts a local llima-agent, creates an
# environment for a sample project and runs commands in it that show what it can and cannot
# see. Everything it starts or creates is removed when it ends, also on failure. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

if [ "$(id -u)" -ne 0 ]; then
  echo "scripts/demo.sh: run as root (sudo scripts/demo.sh): the agent creates namespaces and mounts" >&2
  exit 1
fi
scripts/install-deps.sh
umask 022 # llima-agent refuses an llima-init others than root could change
cmake --preset default >/dev/null
cmake --build --preset default --target llima-agent llima-box

agent="$repo/build/default/guest-agent/llima-agent"
box="$repo/build/default/host-cli/llima-box"
work=$(mktemp -d /tmp/llima-demo-XXXXXX)
chmod 755 "$work"
# The project belongs to the user who ran sudo, or to nobody: never to root.
owner=${SUDO_UID:-65534}
group=${SUDO_GID:-65534}
project="$work/projects/sample-app"
other="$work/projects/other-app"
mkdir -p "$project" "$other"
echo 'print("hello from the sample project")' > "$project/main.py"
echo "secret of another project" > "$other/secret.txt"
chown -R "$owner:$group" "$work/projects"

cgroup_name="llima-box-demo-$$"
agent_pid=
cleanup() {
  set +e
  if [ -n "$agent_pid" ]; then
    for name in $("$box" list --json 2>/dev/null | grep -o '"name": *"[^"]*"' | cut -d'"' -f4); do
      "$box" delete "$name" >/dev/null
    done
    kill -TERM "$agent_pid" 2>/dev/null
    wait "$agent_pid" 2>/dev/null
  fi
  for m in $(awk -v d="$work" '$5 == d"/state" || index($5, d"/state/") == 1 {print $5}' /proc/self/mountinfo | sort -r); do
    umount -l "$m"
  done
  v2=$(awk '{for (i = 7; i <= NF; i++) if ($i == "-") { if ($(i+1) == "cgroup2") { print $5; exit } break }}' /proc/self/mountinfo)
  [ -n "$v2" ] && [ -d "$v2/$cgroup_name" ] && rmdir "$v2/$cgroup_name"
  rm -rf --one-file-system "$work"
}
trap cleanup EXIT

export LLIMA_BOX_SOCKET="$work/run/agent.sock"
"$agent" --socket "$LLIMA_BOX_SOCKET" --state-dir "$work/state" --cgroup-name "$cgroup_name" \
  2> "$work/agent.log" &
agent_pid=$!
for _ in $(seq 200); do [ -S "$LLIMA_BOX_SOCKET" ] && break; sleep 0.05; done

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }
inside() { step "llima-box exec $name -- sh -c '$1'"; "$box" exec "$name" -- sh -c "$1" < /dev/null || echo "(exit $?)"; }

step "llima-box create $project"
name=$("$box" create "$project")
echo "$name"
step "llima-box list"
"$box" list

inside 'pwd; whoami; id; hostname'
inside 'ls /; ls -a ~'
inside 'cat main.py; echo "written inside" > notes.txt'
step "ls -l $project   (on the host)"
ls -l "$project"
inside "cat $other/secret.txt"
inside 'touch /etc/owned; touch /usr/bin/owned'
inside 'ps -e'
inside 'echo kept > /tmp/state-of-the-shell'
inside 'cat /tmp/state-of-the-shell; ls /tmp'
step "llima-box shell $project -- sh -c 'echo \$0 in \$(pwd); exit 3'"
"$box" shell "$project" -- sh -c 'echo $0 in $(pwd); exit 3' < /dev/null || echo "(exit $?)"
step "llima-box delete $name"
"$box" delete "$name"
step "agent log"
cat "$work/agent.log"
