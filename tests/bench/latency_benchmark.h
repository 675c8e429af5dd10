#pragma once

// Google Benchmark driven one call at a time: each repetition of a benchmark is one sample (one
// CreateEnvironment, one command run to its end) timed by the benchmark's own body, so that set-up
// such as making a project directory stays outside the time. Google Benchmark then computes the
// median, p99 and minimum over the repetitions and, with random interleaving (on by default),
// alternates the repetitions of all benchmarks so that figures compared with each other were
// taken under the same load.

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "results_table.h"

namespace llima::bench {

// One sample: the time in milliseconds of the thing measured, or why it failed.
using Sample = std::function<absl::StatusOr<double>()>;

// Registers `name` to take `repetitions` samples (at least 2: aggregates need two). With
// `bytes_per_sample`, Google Benchmark also shows the throughput.
void RegisterLatency(const std::string& name, int repetitions, Sample sample,
                     uint64_t bytes_per_sample = 0);

struct LatencyFigures {
  std::map<std::string, Latency> by_name;
  std::set<std::string> failed;
  std::vector<std::string> failures;  // "name: why"

  // The figure of a benchmark none of whose samples failed.
  std::optional<Latency> Get(const std::string& name) const;
};

// Runs what is registered (filtered by --benchmark_filter), its progress on stderr.
LatencyFigures RunLatencyBenchmarks();

// Makes SIGINT and SIGTERM stop the run between samples, so that the agent under test, its
// environments and scratch directories are cleaned up the usual way.
void StopBetweenSamplesOnSignals();
bool Interrupted();

}  // namespace llima::bench
