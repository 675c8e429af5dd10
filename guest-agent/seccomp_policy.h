#pragma once

// The system-call policy of every process that enters an environment: what a process inside
// must never do fails with EPERM (not a kill, so tools degrade gracefully). Built once, when
// the fork server starts, and loaded by each exec'd child after no_new_privs, before execve.

#include <linux/filter.h>

#include <vector>

#include "absl/status/statusor.h"

namespace llima {

// The policy compiled to BPF for this machine's architectures (on x86_64 also the i386 and
// x32 ABIs, through which a process could otherwise reach the same calls by other numbers).
absl::StatusOr<std::vector<sock_filter>> BuildSeccompFilter();

}  // namespace llima
