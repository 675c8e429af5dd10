#pragma once

// Test-only failure points. When the agent starts with LLIMA_AGENT_FAIL_AT=<point> in its
// environment, the named step of an operation fails as if the kernel had refused it, so tests
// can check that every step's failure is rolled back. With LLIMA_AGENT_CRASH_AT=<point> the agent
// kills itself with SIGKILL when it reaches the point, so tests can check that the next start
// finds either the whole operation done or nothing of it. Unset, this costs one comparison.

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace llima {

// Reads LLIMA_AGENT_FAIL_AT and LLIMA_AGENT_CRASH_AT; call once at start.
void ConfigureFaultInjection();

// An error when `point` is the configured failure point, OK otherwise; the crash when it is
// the configured crash point.
absl::Status InjectedFault(absl::string_view point);

// Only the crash, for points where an operation cannot fail any more.
void CrashPoint(absl::string_view point);

}  // namespace llima
