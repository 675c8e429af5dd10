#include "latency_benchmark.h"

#include <signal.h>

#include <atomic>
#include <iostream>
#include <memory>

#include "absl/strings/str_cat.h"
#include "benchmark/benchmark.h"
#include "latency_stats.h"

namespace llima::bench {
namespace {

std::atomic<bool> interrupted{false};

// Shared by the benchmark bodies and the reporter of one run.
LatencyFigures* current_figures = nullptr;

double P99(const std::vector<double>& v) { return Percentile(v, 0.99); }
double Min(const std::vector<double>& v) { return Minimum(v); }

// Shows the usual console report on stderr and keeps the aggregates.
class CollectingReporter : public benchmark::ConsoleReporter {
 public:
  explicit CollectingReporter(LatencyFigures* figures)
      : ConsoleReporter(OO_None), figures_(figures) {
    SetOutputStream(&std::cerr);
    SetErrorStream(&std::cerr);
  }

  void ReportRuns(const std::vector<Run>& runs) override {
    for (const Run& run : runs) {
      if (run.run_type != Run::RT_Aggregate || run.error_occurred) continue;
      double ms = run.GetAdjustedRealTime() * 1e3 / benchmark::GetTimeUnitMultiplier(run.time_unit);
      Latency& figure = figures_->by_name[run.run_name.function_name];
      if (run.aggregate_name == "median") {
        figure.median_ms = ms;
        figure.samples = static_cast<int>(run.iterations);
      } else if (run.aggregate_name == "p99") {
        figure.p99_ms = ms;
      } else if (run.aggregate_name == "min") {
        figure.min_ms = ms;
      }
    }
    ConsoleReporter::ReportRuns(runs);
  }

 private:
  LatencyFigures* figures_;
};

bool FailedBefore(const std::string& name) {
  return current_figures != nullptr && current_figures->failed.count(name) > 0;
}

// Records the first failure of a benchmark; its later repetitions are skipped.
void Fail(benchmark::State& state, const std::string& name, const std::string& why) {
  if (current_figures != nullptr && !FailedBefore(name)) {
    current_figures->failed.insert(name);
    current_figures->failures.push_back(absl::StrCat(name, ": ", why));
  }
  state.SkipWithError(why.c_str());
}

}  // namespace

void RegisterLatency(const std::string& name, int repetitions, Sample sample,
                     uint64_t bytes_per_sample) {
  benchmark::RegisterBenchmark(
      name.c_str(),
      [name, sample = std::move(sample), bytes_per_sample](benchmark::State& state) {
        for (auto _ : state) {
          if (FailedBefore(name)) {
            state.SkipWithError("failed in an earlier repetition");
            break;
          }
          if (Interrupted()) {
            Fail(state, name, "interrupted");
            break;
          }
          absl::StatusOr<double> ms = sample();
          if (!ms.ok()) {
            Fail(state, name, std::string(ms.status().message()));
            break;
          }
          state.SetIterationTime(*ms / 1e3);
        }
        if (bytes_per_sample > 0) {
          state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * bytes_per_sample));
        }
      })
      ->Iterations(1)
      ->Repetitions(std::max(2, repetitions))
      ->UseManualTime()
      ->Unit(benchmark::kMillisecond)
      ->ReportAggregatesOnly(true)
      ->ComputeStatistics("p99", &P99)
      ->ComputeStatistics("min", &Min);
}

std::optional<Latency> LatencyFigures::Get(const std::string& name) const {
  auto it = by_name.find(name);
  if (it == by_name.end() || failed.count(name) > 0 || it->second.samples == 0) {
    return std::nullopt;
  }
  return it->second;
}

LatencyFigures RunLatencyBenchmarks() {
  LatencyFigures figures;
  current_figures = &figures;
  CollectingReporter reporter(&figures);
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::ClearRegisteredBenchmarks();
  current_figures = nullptr;
  return figures;
}

void StopBetweenSamplesOnSignals() {
  struct sigaction action {};
  action.sa_handler = [](int) { interrupted = true; };
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);
}

bool Interrupted() { return interrupted; }

}  // namespace llima::bench
