// Latency of the environment core, measured against a real agent: CreateEnvironment (agent
// side, through an already connected client) and Exec of `true`. Prints median and p99.
//
//   core_latency [runs]      (default 100; needs root)
//
// Exits non-zero if any call fails, so a CI-sized run keeps it honest.

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "agent_harness.h"

namespace llima::testing {
namespace {

using Clock = std::chrono::steady_clock;

struct Summary {
  double median_ms;
  double p99_ms;
  double min_ms;
};

Summary Summarize(std::vector<double> ms) {
  std::sort(ms.begin(), ms.end());
  auto at = [&](double q) { return ms[std::min(ms.size() - 1, static_cast<size_t>(q * ms.size()))]; };
  return {at(0.5), at(0.99), ms.front()};
}

int Main(int argc, char** argv) {
  int runs = 100;
  if (argc > 1 && (!absl::SimpleAtoi(argv[1], &runs) || runs <= 0)) {
    fprintf(stderr, "usage: %s [runs]\n", argv[0]);
    return 2;
  }
  if (geteuid() != 0) {
    fprintf(stderr, "core_latency: needs root\n");
    return 2;
  }
  ScratchDir scratch;
  AgentProcess agent(scratch.path());
  agent.Start();

  std::vector<double> create_ms;
  std::vector<std::string> names;
  for (int i = 0; i < runs; ++i) {
    std::string project = scratch.MakeDir(absl::StrCat("projects/p", i), 4242, 4242);
    grpc::ClientContext context;
    v1::CreateEnvironmentRequest request;
    request.set_project_path(project);
    v1::Environment env;
    auto start = Clock::now();
    grpc::Status s = agent.stub().CreateEnvironment(&context, request, &env);
    create_ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - start).count());
    if (!s.ok()) {
      fprintf(stderr, "create failed: %s\n%s", s.error_message().c_str(), agent.log().c_str());
      return 1;
    }
    names.push_back(env.name());
  }

  std::vector<double> exec_ms;
  for (int i = 0; i < runs; ++i) {
    auto start = Clock::now();
    ExecResult r = Exec(agent.stub(), names[0], {"true"});
    exec_ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - start).count());
    if (!r.status.ok() || r.exit_code != 0) {
      fprintf(stderr, "exec failed: %s\n", r.status.error_message().c_str());
      return 1;
    }
  }

  Summary c = Summarize(create_ms);
  Summary e = Summarize(exec_ms);
  printf("%-34s %6s %10s %10s %10s %10s\n", "operation", "runs", "median ms", "p99 ms", "min ms",
         "target");
  printf("%-34s %6d %10.2f %10.2f %10.2f %10s\n", "CreateEnvironment", runs, c.median_ms,
         c.p99_ms, c.min_ms, "<= 30");
  printf("%-34s %6d %10.2f %10.2f %10.2f %10s\n", "Exec true (connected client)", runs,
         e.median_ms, e.p99_ms, e.min_ms, "<= 3");
  return 0;
}

}  // namespace
}  // namespace llima::testing

int main(int argc, char** argv) { return llima::testing::Main(argc, argv); }
