#pragma once

// Test-only failure points. When the agent starts with LLIMA_AGENT_FAIL_AT=<point> in its
// environment, the named step of an operation fails as if the kernel had refused it, so tests
// can check that every step's failure is rolled back. Unset, this costs one comparison.

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace llima {

// Reads LLIMA_AGENT_FAIL_AT; call once at start.
void ConfigureFaultInjection();

// An error when `point` is the configured failure point, OK otherwise.
absl::Status InjectedFault(absl::string_view point);

}  // namespace llima
