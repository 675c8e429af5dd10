#pragma once

// The figures of one benchmark run and the one table they are printed as: each figure beside
// what it is compared with and its target from DESIGN.md ("Performance targets").

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace llima::bench {

struct Latency {
  double median_ms = 0;
  double p99_ms = 0;
  double min_ms = 0;
  int samples = 0;
};

struct SuiteResults {
  std::string run;      // "full run: 1000 environments, 1 GiB streamed"
  std::string machine;  // DescribeMachine()
  std::string load_at_start;
  std::string load_at_end;
  double cpu_steal_percent = 0;
  std::string baseline_dir;  // empty: not given

  std::optional<Latency> create;
  std::optional<Latency> create_baseline;  // create-namespace.sh
  std::optional<Latency> shell;            // llima-box shell -- true
  std::optional<Latency> cli_start;        // llima-box --version: the CLI's start alone
  std::optional<Latency> cli_one_call;     // llima-box create of the existing environment
  std::optional<Latency> nsenter;          // nsenter --mount=<pin> true
  std::optional<Latency> sandbox;          // sandbox.sh <env> <path> true
  std::optional<Latency> exec_true;

  uint64_t streamed_bytes = 0;
  std::optional<Latency> exec_stream;    // time to stream `streamed_bytes` through Exec
  double exec_stream_message_bytes = 0;  // stdout bytes an ExecResponse carried on average
  // CPU seconds per GB (10^9 bytes) streamed, in the last sample: the agent process and this one
  // (the client) for Exec, this one (the reader) for the pipe.
  double exec_agent_cpu_per_gb = 0;
  double exec_client_cpu_per_gb = 0;
  double pipe_reader_cpu_per_gb = 0;
  std::optional<Latency> pipe_stream;  // the same through a pipe into this process
  // The same through the hops of Exec without gRPC: a pipe, a relaying process, a Unix socket.
  std::optional<Latency> relay_stream;

  int environments = 0;  // N of the scale run
  int edge = 0;          // how many of the first and of the last creates are compared
  std::optional<Latency> create_first;
  std::optional<Latency> create_last;
  // The CPU time those creates took: the agent's threads, its fork server's and the processes of
  // its environments (steal is not in it, as it is in the wall time above).
  std::optional<Latency> create_cpu_first;
  std::optional<Latency> create_cpu_last;
  // pivot_root(2) alone (median, µs) with no environment and with N, and the threads on the
  // machine then: the kernel walks all of them in it.
  std::optional<double> pivot_at_zero_us;
  std::optional<double> pivot_at_n_us;
  int threads_at_zero = -1;
  int threads_at_n = -1;
  std::optional<Latency> list_at_n;
  int64_t rss_at_zero = -1;
  int64_t rss_at_n = -1;
  int64_t rss_after_delete = -1;
  // PSS and page tables of the environments' inits at N, summed, and how many were measured.
  int64_t inits_memory_at_n = -1;
  int inits_at_n = 0;
  std::optional<double> delete_all_seconds;

  // Calls that failed, "what: why".
  std::vector<std::string> failures;
};

// The table in Markdown, with the run and the machine above it and failures below.
std::string FormatResultsTable(const SuiteResults& results);

}  // namespace llima::bench
