#!/bin/bash
# Not the original script: a stand-in with its interface (create-namespace.sh ENV PROJECT, a mount
# namespace pinned at /home/ENV/namespace.mnt) so that CI runs the suite's throwaway-world path
# without the original scripts, which are not part of this repository. Its timing means nothing.
set -e
unshare --mount="/home/$1/namespace.mnt" --propagation private true
