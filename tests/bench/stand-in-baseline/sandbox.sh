#!/bin/bash
# Not the original script: a stand-in with its interface (sandbox.sh ENV PROJECT COMMAND...), see
# create-namespace.sh beside it. Its timing means nothing.
set -e
env=$1 project=$2
shift 2
nsenter --mount="/home/$env/namespace.mnt" bash -c 'cd "$0" && exec "$@"' "$project" "$@"
