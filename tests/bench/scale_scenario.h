#pragma once

// Many environments in one agent: whether creating the last costs what creating the first did,
// how long listing them takes, how much memory the agent holds for them, and deleting them all.

#include "results_table.h"
#include "run_size.h"

namespace llima::bench {

// Runs against a fresh agent of its own; figures and failures go into `results`. The agent's
// environments are deleted at the end, also when a call fails.
void RunScaleScenario(const RunSize& size, SuiteResults* results);

}  // namespace llima::bench
