#!/bin/bash
# Installs llima-agent into the Lima VM (Ubuntu 24.04, x86_64 or aarch64). Idempotent: run on
# every boot by the provision script of provision/lima.yaml, it does nothing when its input is
# the one installed last time.
#
#   install-agent.sh --tarball FILE  [--user USER] [--root DIR] [--no-systemctl] [--force]
#   install-agent.sh --prebuilt DIR  [--user USER] [--root DIR] [--no-systemctl] [--force]
#
# --tarball FILE  the project's source tarball (written by `llima-box` to
#                 <instance dir>/agent-src.tar.gz; paths relative to the project root, optionally
#                 under one top-level directory). Installs the build dependencies with apt (when
#                 --root is /), builds llima-agent, llima-init and llima-sandbox with CMake
#                 (Release, no tests) and installs them. The unit and health check come from the
#                 tarball's provision/.
# --prebuilt DIR  take already built llima-agent, llima-init and llima-sandbox from DIR instead
#                 (no apt, no build); the unit and health check come from this script's directory.
# --user USER     owner of the agent socket: the VM's default user (default: $LIMA_CIDATA_USER).
# --root DIR      install under DIR instead of / (for tests); implies --no-systemctl.
# --no-systemctl  do not call systemctl (daemon-reload, enable, restart).
# --force         install even when the stamp says up to date.
#
# Installs (mode, owner root):
#   /usr/local/sbin/llima-agent                     0755
#   /usr/local/libexec/llima-box/llima-init         0755  (every environment's init becomes it)
#   /usr/local/bin/llima-sandbox                    0755
#   /usr/local/libexec/llima-box/health-check       0755  (provision/health-check.sh)
#   /etc/systemd/system/llima-agent.service         0644  (@SOCKET_OWNER@ replaced by USER)
#   /usr/local/lib/llima-box/install.stamp          0644  written last, only after success
# then `systemctl daemon-reload`, `enable` and `restart llima-agent.service`, and waits for the
# agent to answer its health check. The stamp holds a hash of the input (tarball or binaries,
# unit, health check, this script) and the user; when it matches and every file is in place the
# script prints "up to date" and changes nothing.
set -euo pipefail
umask 022

prog=install-agent
say() { echo "$prog: $*"; }
die() {
  echo "$prog: error: $*" >&2
  exit 1
}

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//'
}

root=/
tarball=
prebuilt=
user="${LIMA_CIDATA_USER:-}"
use_systemctl=1
force=0
while [ $# -gt 0 ]; do
  case "$1" in
    --root) root="${2:?--root needs a directory}"; shift 2 ;;
    --root=*) root="${1#*=}"; shift ;;
    --tarball) tarball="${2:?--tarball needs a file}"; shift 2 ;;
    --tarball=*) tarball="${1#*=}"; shift ;;
    --prebuilt) prebuilt="${2:?--prebuilt needs a directory}"; shift 2 ;;
    --prebuilt=*) prebuilt="${1#*=}"; shift ;;
    --user) user="${2:?--user needs a user name}"; shift 2 ;;
    --user=*) user="${1#*=}"; shift ;;
    --no-systemctl) use_systemctl=0; shift ;;
    --force) force=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
done

if [ -n "$tarball" ] && [ -n "$prebuilt" ]; then die "give either --tarball or --prebuilt, not both"; fi
if [ -z "$tarball" ] && [ -z "$prebuilt" ]; then die "give --tarball FILE or --prebuilt DIR (see --help)"; fi
if [ -z "$user" ]; then die "no socket owner: give --user USER (or set LIMA_CIDATA_USER)"; fi
# The name ends up in the unit file: accept only user names and uids.
if ! [[ "$user" =~ ^[A-Za-z_][A-Za-z0-9_.-]*\$?$ || "$user" =~ ^[0-9]+$ ]]; then
  die "invalid user name: $user"
fi
[ -d "$root" ] || die "--root $root is not a directory"
root="$(cd "$root" && pwd -P)"
R="${root%/}" # prefix for every installed path: "" for /
if [ -n "$R" ] && [ "$use_systemctl" = 1 ]; then
  say "--root $root: not calling systemctl"
  use_systemctl=0
fi
if [ -z "$R" ]; then
  [ "$(id -u)" -eq 0 ] || die "must run as root to install into /"
  getent passwd "$user" >/dev/null || die "no user named $user in this system"
fi

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
self="$here/$(basename "${BASH_SOURCE[0]}")"

agent_dst="$R/usr/local/sbin/llima-agent"
init_dst="$R/usr/local/libexec/llima-box/llima-init"
sandbox_dst="$R/usr/local/bin/llima-sandbox"
health_dst="$R/usr/local/libexec/llima-box/health-check"
unit_dst="$R/etc/systemd/system/llima-agent.service"
stamp="$R/usr/local/lib/llima-box/install.stamp"

sha() { sha256sum "$1" | cut -d' ' -f1; }

# --- what would be installed, and is it installed already? -----------------------------------
if [ -n "$tarball" ]; then
  [ -f "$tarball" ] || die "no source tarball at $tarball"
  key="tarball $(sha "$tarball") user $user"
else
  [ -d "$prebuilt" ] || die "--prebuilt $prebuilt is not a directory"
  for f in "$prebuilt/llima-agent" "$prebuilt/llima-init" "$prebuilt/llima-sandbox"; do
    [ -f "$f" ] && [ -x "$f" ] || die "no executable $f"
  done
  for f in "$here/llima-agent.service" "$here/health-check.sh"; do
    [ -f "$f" ] || die "missing $f (the provision/ directory must be complete)"
  done
  key="prebuilt $(sha "$prebuilt/llima-agent") $(sha "$prebuilt/llima-init") $(sha "$prebuilt/llima-sandbox")"
  key+=" $(sha "$here/llima-agent.service") $(sha "$here/health-check.sh") $(sha "$self") user $user"
fi

all_installed() {
  local f
  for f in "$agent_dst" "$init_dst" "$sandbox_dst" "$health_dst" "$unit_dst"; do
    [ -f "$f" ] || return 1
  done
}

if [ "$force" = 0 ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$key" ] && all_installed; then
  say "llima-agent is up to date ($(cut -d' ' -f2 <<<"$key" | cut -c1-12)); nothing to do"
  exit 0
fi

work="$(mktemp -d "${TMPDIR:-/var/tmp}/llima-agent-install.XXXXXX")"
trap 'rm -rf "$work"' EXIT

# --- get the binaries -------------------------------------------------------------------------
if [ -n "$tarball" ]; then
  say "building llima-agent from $tarball"
  mkdir "$work/src"
  tar -xzf "$tarball" -C "$work/src" --no-same-owner
  src="$work/src"
  if [ ! -f "$src/CMakeLists.txt" ]; then
    # One top-level directory holding the project is accepted too.
    tops=("$src"/*/CMakeLists.txt)
    [ ${#tops[@]} -eq 1 ] && [ -f "${tops[0]}" ] || die "$tarball holds no CMake project"
    src="$(dirname "${tops[0]}")"
  fi
  provision_dir="$src/provision"

  if [ -z "$R" ]; then
    if [ -f "$src/scripts/install-deps.sh" ]; then
      say "installing build dependencies (scripts/install-deps.sh)"
      bash "$src/scripts/install-deps.sh"
    else
      say "installing build dependencies"
      export DEBIAN_FRONTEND=noninteractive
      apt-get update -qq
      apt-get install -y -qq --no-install-recommends cmake ninja-build g++ make pkg-config \
        libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler \
        libabsl-dev libseccomp-dev libssl-dev libcli11-dev libnghttp2-dev
    fi
  fi

  cmake -S "$src" -B "$work/build" -DCMAKE_BUILD_TYPE=Release -DLLIMA_BUILD_TESTS=OFF
  cmake --build "$work/build" -j"$(nproc)" --target llima-agent llima-init llima-sandbox
  agent_bin="$(find "$work/build" -type f -name llima-agent -perm -u+x | head -n1)"
  init_bin="$(find "$work/build" -type f -name llima-init -perm -u+x | head -n1)"
  sandbox_bin="$(find "$work/build" -type f -name llima-sandbox -perm -u+x | head -n1)"
  [ -n "$agent_bin" ] && [ -n "$init_bin" ] && [ -n "$sandbox_bin" ] ||
    die "the build did not produce llima-agent, llima-init and llima-sandbox"
else
  agent_bin="$prebuilt/llima-agent"
  init_bin="$prebuilt/llima-init"
  sandbox_bin="$prebuilt/llima-sandbox"
  provision_dir="$here"
fi
for f in "$provision_dir/llima-agent.service" "$provision_dir/health-check.sh"; do
  [ -f "$f" ] || die "missing $f"
done
sed "s/@SOCKET_OWNER@/$user/g" "$provision_dir/llima-agent.service" >"$work/llima-agent.service"
if grep -q '@[A-Z_]*@' "$work/llima-agent.service"; then die "unreplaced placeholder in the unit"; fi

# --- install: each file through a temporary name and rename, so that a running agent keeps its
# --- old binary and nothing is ever half written -----------------------------------------------
owner_args=()
if [ "$(id -u)" -eq 0 ]; then owner_args=(-o 0 -g 0); fi

put() { # MODE SOURCE DESTINATION
  local mode="$1" from="$2" to="$3"
  # Directories are created when missing (0755, root); existing ones are left as they are.
  [ -d "$(dirname "$to")" ] || mkdir -p "$(dirname "$to")" # umask 022: 0755
  install -m "$mode" "${owner_args[@]}" "$from" "$to.new.$$"
  mv -f "$to.new.$$" "$to"
  say "installed $to (mode $mode)"
}

# The init first: an agent started from the new binary looks for it at start.
put 0755 "$init_bin" "$init_dst"
put 0755 "$agent_bin" "$agent_dst"
put 0755 "$sandbox_bin" "$sandbox_dst"
put 0755 "$provision_dir/health-check.sh" "$health_dst"
put 0644 "$work/llima-agent.service" "$unit_dst"

if [ "$use_systemctl" = 1 ]; then
  say "enabling and (re)starting llima-agent.service"
  systemctl daemon-reload
  systemctl enable llima-agent.service
  systemctl restart llima-agent.service
  ok=0
  for _ in $(seq 1 30); do
    if "$health_dst" /run/llima-box/agent.sock 2>/dev/null; then ok=1; break; fi
    sleep 1
  done
  if [ "$ok" != 1 ]; then
    systemctl --no-pager status llima-agent.service >&2 || true
    die "llima-agent does not answer its health check; see: journalctl -u llima-agent.service"
  fi
  say "llima-agent is serving on /run/llima-box/agent.sock"
fi

# The stamp last: an interrupted or failed install is retried on the next boot.
printf '%s\n' "$key" >"$work/install.stamp"
put 0644 "$work/install.stamp" "$stamp"
say "done"
