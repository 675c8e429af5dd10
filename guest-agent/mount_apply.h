#pragma once

// Turns a MountPlan into mounts. Runs in the environment's init process, single-threaded, in the
// fresh mount namespace it created.

#include <string>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "mount_plan.h"

namespace llima {

// Builds the environment's root on a new tmpfs at `staging_root`, step by step. `trees` are
// detached mount trees (open_tree(OPEN_TREE_CLONE) made in the agent's namespace) indexed by
// MountStep::fd_index.
absl::Status ApplyMountPlan(const MountPlan& plan, const std::string& staging_root,
                            absl::Span<const int> trees);

// Makes `new_root` the root of the mount namespace (pivot_root, then the old root is detached)
// and the root tmpfs read-only. The namespace's own root is then the isolated root, so every
// later setns() into it lands inside.
absl::Status PivotToRoot(const std::string& new_root);

}  // namespace llima
