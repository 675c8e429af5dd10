#pragma once

#include "llima/internal/agent_internal.pb.h"

namespace llima {

// The body of an environment's init, cloned by the fork server into new mount, pid, ipc and uts
// namespaces (it is PID 1 there). Builds the isolated root from the mount plan, pivots into it,
// drops its capabilities, reports readiness ("ok" or the error) on `ready_fd`, and then becomes
// the program `init_program` (llima-init, see init_main.cc), which reaps orphans until
// the environment is deleted. Never returns.
[[noreturn]] void RunEnvironmentInit(const internal::SpawnInit& spec, int project_tree,
                                     int home_tree, int ready_fd, int init_program);

}  // namespace llima
