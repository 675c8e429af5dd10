#!/usr/bin/env bash
# Runs a command as root in a throwaway world: new mount and pid namespaces whose root is an
# overlay of / on a tmpfs, with /dev and /sys bound in and a fresh /proc, /tmp and /run. What the
# command writes, mounts or kills stays there and vanishes with the namespaces when it exits.
# For running code that binds the real /etc, /var and /dev read-write (the original shell
# scripts llima-box replaces) without letting it touch this machine.
#
#   sudo tests/throwaway-world.sh [--install FILE[:NAME]]... -- COMMAND [ARG]...
#
# Each FILE is copied to /usr/local/bin/NAME (default: its own name) inside: the overlay holds
# the root filesystem only, not what is mounted below it. COMMAND runs as pid 1 of the new pid
# namespace, with / as its working directory; when it exits, the kernel kills whatever it left.
#
# The world and all in it run on one CPU. The kernel numbers mount namespaces from ranges it
# hands out per CPU, and binds a namespace to a file (`unshare --mount=FILE`, as the original
# create-namespace.sh does) only if its number is above that of the namespace doing the bind:
# with the world made on CPU 0 and the script run on CPU 1, that bind failed with EINVAL 12
# times in 12; on one CPU, never.
set -euo pipefail

if [ "${1:-}" = "--inside" ]; then
  work=$2
  shift 2
  mount -t tmpfs llima-throwaway "$work"
  mkdir "$work/upper" "$work/work" "$work/root"
  mount -t overlay overlay -o "lowerdir=/,upperdir=$work/upper,workdir=$work/work" "$work/root"
  root=$work/root
  mount --rbind /dev "$root/dev"
  mount --rbind /sys "$root/sys"
  mount -t proc proc "$root/proc"
  mount -t tmpfs tmpfs "$root/tmp"
  mount -t tmpfs tmpfs "$root/run"
  while [ "$1" != "--" ]; do
    install -m 0755 "${1%%:*}" "$root/usr/local/bin/${1#*:}"
    shift
  done
  shift
  # pivot_root, not chroot: namespaces created inside must have the overlay as their root, or
  # nsenter would put their processes on the real root filesystem.
  cd "$root"
  mkdir .old-root
  pivot_root . .old-root
  umount -l /.old-root
  rmdir /.old-root
  cd /
  exec "$@"
fi

usage() {
  echo "usage: sudo $0 [--install FILE[:NAME]]... -- COMMAND [ARG]..." >&2
  exit 2
}
[ "$(id -u)" -eq 0 ] || usage
installs=()
while [ "$#" -gt 0 ] && [ "$1" != "--" ]; do
  [ "$1" = "--install" ] && [ "$#" -ge 2 ] || usage
  file=${2%%:*}
  name=$(basename "$file")
  [[ "$2" == *:* ]] && name=${2#*:}
  [ -f "$file" ] || { echo "$0: $file not found" >&2; exit 2; }
  installs+=("$(realpath "$file"):$name")
  shift 2
done
[ "$#" -ge 2 ] || usage
shift

work=$(mktemp -d /tmp/llima-throwaway.XXXXXX)
trap 'rmdir "$work"' EXIT
cpu=$(taskset -pc $$ | sed 's/.*: //; s/[-,].*//')
taskset -c "$cpu" unshare --mount --pid --fork --kill-child --propagation private -- \
  bash "$0" --inside "$work" "${installs[@]}" -- "$@"
