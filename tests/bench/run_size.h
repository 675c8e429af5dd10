#pragma once

// How many samples each figure takes: the full run the README's table comes from, a quicker
// look, and the CI-sized run that only keeps the programs working.

#include <algorithm>
#include <cstdint>
#include <string>

namespace llima::bench {

struct RunSize {
  std::string name;       // its command-line flag without "--": "full", "quick", "ci"
  int creates;            // CreateEnvironment samples
  int execs;              // Exec `true` samples
  int commands;           // samples of each whole command (shell, nsenter, sandbox.sh)
  int baseline_creates;   // create-namespace.sh samples (2 s each)
  int streams;            // samples of each stream
  uint64_t stream_bytes;  // bytes of each stream
  int environments;       // N of the scale run
  int edge;               // how many of the first and of the last creates are compared
  int lists;              // ListEnvironments samples at N

  // `edge`, or half of N when that is less.
  int ComparedCreates() const { return std::min(edge, environments / 2); }
};

inline RunSize FullRun() { return {"full", 100, 200, 100, 10, 3, 1ull << 30, 1000, 50, 20}; }
inline RunSize QuickRun() { return {"quick", 30, 50, 30, 3, 3, 256ull << 20, 200, 50, 10}; }
inline RunSize CiRun() { return {"ci", 5, 5, 3, 2, 2, 1ull << 20, 30, 10, 3}; }

}  // namespace llima::bench
