// The benchmark suite: every figure of DESIGN.md's "Performance targets" measured in one run,
// beside what it is compared with, printed as one table.
//
//   llima_bench [--full | --quick | --ci] [--baseline DIR] [--environments N]
//               [--benchmark_...]            (needs root; tests/bench/run.sh builds and runs it)
//
// - CreateEnvironment (agent side) against the original create-namespace.sh;
// - `llima-box shell <path> -- true` against `nsenter --mount=<pin> true` and the original
//   `sandbox.sh <env> <path> true`, and with what the CLI costs before any command runs:
//   `llima-box --version` (its start) and `llima-box create <path>` of the existing
//   environment (its start, a connection and one call that finds the environment, where shell
//   makes one Exec call that finds it);
// - Exec `true` through a connected client;
// - stdout of `head -c SIZE /dev/zero` through Exec against the same through a pipe;
// - N environments: the last creates against the first, List at N, the agent's memory, delete.
//
// The original scripts (DIR) are not part of this repository; without --baseline their columns
// say "not given". The figures are never checked against their targets here: the program fails
// only when a call fails, so that a CI-sized run (--ci) keeps it working.

#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <chrono>
#include <climits>
#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "agent_harness.h"
#include "baseline_world.h"
#include "benchmark/benchmark.h"
#include "exec_drain.h"
#include "latency_benchmark.h"
#include "machine.h"
#include "results_table.h"
#include "run_size.h"
#include "scale_scenario.h"
#include "timed_command.h"

namespace llima::bench {
namespace {

using Clock = std::chrono::steady_clock;

double MillisecondsSince(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

absl::Status CheckBytes(const char* what, uint64_t got, uint64_t wanted) {
  if (got == wanted) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(what, " delivered ", got, " of ", wanted, " bytes"));
}

// Latency and throughput against one agent, interleaved with the commands they are compared with.
void MeasureAgent(const RunSize& size, SuiteResults* results) {
  testing::ScratchDir scratch;
  testing::AgentProcess agent(scratch.path());
  agent.Start();
  std::string project = scratch.MakeDir("projects/bench", 4242, 4242);
  v1::Environment env;
  if (grpc::Status s = testing::CallCreate(agent.stub(), project, &env); !s.ok()) {
    results->failures.push_back("set up: CreateEnvironment: " + s.error_message());
    return;
  }
  const std::string pin = absl::StrCat(agent.state_dir(), "/envs/", env.name(), "/mnt");
  const std::string head_bytes = absl::StrCat(size.stream_bytes);
  const double gigabytes = static_cast<double>(size.stream_bytes) / 1e9;

  int next_project = 0;
  RegisterLatency("CreateEnvironment", size.creates, [&]() -> absl::StatusOr<double> {
    std::string path =
        scratch.MakeDir(absl::StrCat("projects/create-", next_project++), 4242, 4242);
    v1::Environment created;
    auto start = Clock::now();
    grpc::Status s = testing::CallCreate(agent.stub(), path, &created);
    double ms = MillisecondsSince(start);
    if (!s.ok()) return absl::InternalError(s.error_message());
    return ms;
  });
  RegisterLatency("ExecTrue", size.execs, [&]() -> absl::StatusOr<double> {
    auto start = Clock::now();
    if (absl::Status s = ExecAndDrain(agent.stub(), env.name(), {"true"}).status(); !s.ok()) {
      return s;
    }
    return MillisecondsSince(start);
  });
  RegisterLatency("llima-box shell", size.commands, [&] {
    return TimeCommand(
        {LLIMA_BOX_BINARY, "--socket", agent.socket_path(), "shell", project, "--", "true"});
  });
  RegisterLatency("llima-box --version", size.commands, [&] {
    return TimeCommand({LLIMA_BOX_BINARY, "--version"});
  });
  RegisterLatency("llima-box create", size.commands, [&] {
    return TimeCommand({LLIMA_BOX_BINARY, "--socket", agent.socket_path(), "create", project});
  });
  RegisterLatency("nsenter", size.commands, [&] {
    return TimeCommand({"nsenter", "--mount=" + pin, "true"});
  });
  RegisterLatency(
      "ExecStdout", size.streams,
      [&]() -> absl::StatusOr<double> {
        double agent_cpu = CpuSeconds(agent.pid());
        double client_cpu = CpuSeconds(getpid());
        auto start = Clock::now();
        absl::StatusOr<DrainedOutput> got =
            ExecAndDrain(agent.stub(), env.name(), {"head", "-c", head_bytes, "/dev/zero"});
        double ms = MillisecondsSince(start);
        results->exec_agent_cpu_per_gb = (CpuSeconds(agent.pid()) - agent_cpu) / gigabytes;
        results->exec_client_cpu_per_gb = (CpuSeconds(getpid()) - client_cpu) / gigabytes;
        if (!got.ok()) return got.status();
        if (absl::Status s = CheckBytes("Exec", got->stdout_bytes, size.stream_bytes); !s.ok()) {
          return s;
        }
        results->exec_stream_message_bytes =
            static_cast<double>(got->stdout_bytes) /
            static_cast<double>(std::max<uint64_t>(got->stdout_messages, 1));
        return ms;
      },
      size.stream_bytes);
  RegisterLatency(
      "PipeStdout", size.streams,
      [&]() -> absl::StatusOr<double> {
        double reader_cpu = CpuSeconds(getpid());
        auto start = Clock::now();
        absl::StatusOr<uint64_t> got = DrainCommandOutput({"head", "-c", head_bytes, "/dev/zero"});
        double ms = MillisecondsSince(start);
        results->pipe_reader_cpu_per_gb = (CpuSeconds(getpid()) - reader_cpu) / gigabytes;
        if (!got.ok()) return got.status();
        if (absl::Status s = CheckBytes("the pipe", *got, size.stream_bytes); !s.ok()) return s;
        return ms;
      },
      size.stream_bytes);

  RegisterLatency(
      "RelayStdout", size.streams,
      [&]() -> absl::StatusOr<double> {
        auto start = Clock::now();
        // A pipe of the size the agent gives an exec's stdout.
        absl::StatusOr<uint64_t> got =
            RelayCommandOutput({"head", "-c", head_bytes, "/dev/zero"}, 1 << 20);
        double ms = MillisecondsSince(start);
        if (!got.ok()) return got.status();
        if (absl::Status s = CheckBytes("the relay", *got, size.stream_bytes); !s.ok()) return s;
        return ms;
      },
      size.stream_bytes);

  LatencyFigures figures = RunLatencyBenchmarks();
  results->create = figures.Get("CreateEnvironment");
  results->exec_true = figures.Get("ExecTrue");
  results->shell = figures.Get("llima-box shell");
  results->cli_start = figures.Get("llima-box --version");
  results->cli_one_call = figures.Get("llima-box create");
  results->nsenter = figures.Get("nsenter");
  results->exec_stream = figures.Get("ExecStdout");
  results->pipe_stream = figures.Get("PipeStdout");
  results->relay_stream = figures.Get("RelayStdout");
  results->failures.insert(results->failures.end(), figures.failures.begin(),
                           figures.failures.end());
}

int Usage(const char* program) {
  fprintf(stderr,
          "usage: %s [--full | --quick | --ci] [--baseline DIR] [--environments N] "
          "[--benchmark_...]\n(needs root)\n",
          program);
  return 2;
}

int Main(int argc, char** argv) {
  // Repetitions of all benchmarks alternate, unless the command line says otherwise.
  std::vector<char*> args(argv, argv + argc);
  char interleave[] = "--benchmark_enable_random_interleaving=true";
  args.insert(args.begin() + 1, interleave);
  int count = static_cast<int>(args.size());
  benchmark::Initialize(&count, args.data());

  RunSize size = FullRun();
  std::string baseline;
  bool inside = false;
  for (int i = 1; i < count; ++i) {
    std::string arg = args[i];
    if (arg == "--full") {
      size = FullRun();
    } else if (arg == "--quick") {
      size = QuickRun();
    } else if (arg == "--ci") {
      size = CiRun();
    } else if (arg == "--baseline" && i + 1 < count) {
      baseline = args[++i];
    } else if (arg == "--environments" && i + 1 < count) {
      if (!absl::SimpleAtoi(args[++i], &size.environments) || size.environments < 2) {
        return Usage(argv[0]);
      }
    } else if (arg == kInsideThrowawayWorldFlag) {
      inside = true;
    } else {
      return Usage(argv[0]);
    }
  }
  if (geteuid() != 0) return Usage(argv[0]);
  StopBetweenSamplesOnSignals();
  if (inside) return MeasureBaselineHere(size);

  SuiteResults results;
  results.run = absl::StrCat(size.name, " run: ", size.environments, " environments, ",
                             size.creates, " creates, ", size.commands, " runs of each command, ",
                             size.execs, " execs, ", size.streams, " streams of each kind");
  results.machine = DescribeMachine();
  results.load_at_start = LoadAverage();
  results.streamed_bytes = size.stream_bytes;
  results.environments = size.environments;
  results.edge = size.ComparedCreates();
  CpuStealMeter steal;
  try {
    if (!baseline.empty()) {
      char resolved[PATH_MAX];
      MeasureBaselineInThrowawayWorld(realpath(baseline.c_str(), resolved) ? resolved : baseline,
                                      size, &results);
    }
    if (!Interrupted()) MeasureAgent(size, &results);
    if (!Interrupted()) RunScaleScenario(size, &results);
  } catch (const std::exception& e) {
    // The harness throws when the agent does not start; what was set up is gone by now.
    results.failures.push_back(e.what());
  }
  if (Interrupted()) results.failures.push_back("interrupted");
  results.load_at_end = LoadAverage();
  results.cpu_steal_percent = steal.PercentSinceStart();
  printf("\n%s", FormatResultsTable(results).c_str());
  return results.failures.empty() ? 0 : 1;
}

}  // namespace
}  // namespace llima::bench

int main(int argc, char** argv) { return llima::bench::Main(argc, argv); }
