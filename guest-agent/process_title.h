#pragma once

// Processes forked from the agent without exec (fork server, environment inits) would show
// the agent's command line, socket and state paths included, to everyone who can read
// /proc/<pid>/cmdline -- inside environments too, where init is PID 1. They rewrite it.

#include "absl/strings/string_view.h"

namespace llima {

// Records where the kernel placed argv; call first thing in main.
void RememberArgumentArea(int argc, char** argv);

// Replaces the command line with `title` (truncated to the original length).
void SetProcessTitle(absl::string_view title);

}  // namespace llima
