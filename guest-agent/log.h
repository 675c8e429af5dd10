#pragma once

// The agent logs to stderr, one line per operation: what, which environment, how long, outcome.

#include "absl/strings/string_view.h"

#include "absl/status/status.h"
#include "absl/time/time.h"

namespace llima {

void LogOperation(absl::string_view operation, absl::string_view environment, absl::Duration took,
                  const absl::Status& outcome, absl::string_view detail = "");
void LogEvent(absl::string_view message);

}  // namespace llima
