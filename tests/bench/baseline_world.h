#pragma once

// The original shell scripts (create-namespace.sh, sandbox.sh) measured the way they were used:
// as root, binding the real /etc, /var and /dev read-write. So they run in a throwaway world
// (tests/throwaway-world.sh), where this same program, copied in, times them and hands its
// figures back on stdout.

#include <string>

#include "results_table.h"
#include "run_size.h"

namespace llima::bench {

// Outside: runs this program inside a throwaway world with the scripts of `scripts_dir` and adds
// their figures (or failures) to `results`.
void MeasureBaselineInThrowawayWorld(const std::string& scripts_dir, const RunSize& size,
                                     SuiteResults* results);

// Inside: times the scripts found in PATH and prints the figures for the outside to read.
int MeasureBaselineHere(const RunSize& size);

// The flag that makes this program do the latter.
inline constexpr char kInsideThrowawayWorldFlag[] = "--inside-throwaway-world";

}  // namespace llima::bench
