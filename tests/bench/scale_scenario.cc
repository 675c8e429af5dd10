#include "scale_scenario.h"

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "agent_harness.h"
#include "latency_benchmark.h"
#include "latency_stats.h"
#include "machine.h"

namespace llima::bench {
namespace {

using Clock = std::chrono::steady_clock;

double MillisecondsSince(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

Latency Summarize(const std::vector<double>& ms) {
  return {Median(ms), Percentile(ms, 0.99), Minimum(ms), static_cast<int>(ms.size())};
}

// Memory kept free for everything else on the machine while environments pile up.
constexpr int64_t kMemoryReserve = int64_t{2} << 30;

// Creates `count` environments, one project each, timing every CreateEnvironment. Stops at the
// first failure, or early when what is left of the machine's memory would not hold them all.
absl::Status CreateMany(testing::AgentProcess& agent, const testing::ScratchDir& scratch, int count,
                        std::vector<double>* create_ms) {
  int64_t available_at_start = AvailableMemoryBytes();
  for (int i = 0; i < count; ++i) {
    if (Interrupted()) return absl::CancelledError("interrupted");
    std::string project = scratch.MakeDir(absl::StrCat("projects/many-", i), 4242, 4242);
    v1::Environment env;
    auto start = Clock::now();
    grpc::Status status = testing::CallCreate(agent.stub(), project, &env);
    create_ms->push_back(MillisecondsSince(start));
    if (!status.ok()) {
      return absl::InternalError(absl::StrCat("CreateEnvironment of environment ", i + 1, " of ",
                                              count, ": ", status.error_message()));
    }
    // Each environment holds an init process, its mounts and a cgroup: after the first few
    // dozen, extrapolate what all of them will take.
    if ((i + 1) % 25 == 0) {
      int64_t available = AvailableMemoryBytes();
      int64_t each = (available_at_start - available) / (i + 1);
      int64_t needed = std::max<int64_t>(each, 0) * (count - i - 1) + kMemoryReserve;
      if (available >= 0 && needed > available) {
        return absl::ResourceExhaustedError(absl::StrFormat(
            "stopped after %d environments: each takes about %.1f MiB, the other %d would leave "
            "less than %d GiB of the %.1f GiB available",
            i + 1, static_cast<double>(each) / (1 << 20), count - i - 1, kMemoryReserve >> 30,
            static_cast<double>(available) / (1 << 30)));
      }
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<v1::ListEnvironmentsResponse> List(testing::AgentProcess& agent) {
  v1::ListEnvironmentsResponse response;
  grpc::Status status = testing::CallList(agent.stub(), &response);
  if (!status.ok()) return absl::InternalError("ListEnvironments: " + status.error_message());
  return response;
}

absl::Status DeleteAll(testing::AgentProcess& agent) {
  absl::StatusOr<v1::ListEnvironmentsResponse> listed = List(agent);
  if (!listed.ok()) return listed.status();
  for (const v1::Environment& env : listed->environments()) {
    if (grpc::Status status = testing::CallDelete(agent.stub(), env.name()); !status.ok()) {
      return absl::InternalError(
          absl::StrCat("DeleteEnvironment ", env.name(), ": ", status.error_message()));
    }
  }
  return absl::OkStatus();
}

}  // namespace

void RunScaleScenario(const RunSize& size, SuiteResults* results) {
  auto fail = [&](const absl::Status& s) {
    results->failures.push_back(absl::StrCat("scale: ", s.message()));
  };
  // Stop() (also in the destructor) deletes whatever is left, whatever failed.
  testing::ScratchDir scratch;
  testing::AgentProcess agent(scratch.path());
  agent.Start();
  results->rss_at_zero = ResidentBytes(agent.pid());

  std::vector<double> create_ms;
  absl::Status created = CreateMany(agent, scratch, size.environments, &create_ms);
  if (!created.ok()) return fail(created);
  int edge = size.ComparedCreates();
  results->create_first = Summarize({create_ms.begin(), create_ms.begin() + edge});
  results->create_last = Summarize({create_ms.end() - edge, create_ms.end()});
  results->rss_at_n = ResidentBytes(agent.pid());

  std::vector<double> list_ms;
  for (int i = 0; i < size.lists; ++i) {
    auto start = Clock::now();
    absl::StatusOr<v1::ListEnvironmentsResponse> listed = List(agent);
    list_ms.push_back(MillisecondsSince(start));
    if (!listed.ok()) return fail(listed.status());
    if (listed->environments_size() != size.environments) {
      return fail(absl::InternalError(absl::StrCat("ListEnvironments returned ",
                                                   listed->environments_size(), " of ",
                                                   size.environments, " environments")));
    }
  }
  results->list_at_n = Summarize(list_ms);

  auto start = Clock::now();
  absl::Status deleted = DeleteAll(agent);
  if (!deleted.ok()) return fail(deleted);
  results->delete_all_seconds = MillisecondsSince(start) / 1e3;
  results->rss_after_delete = ResidentBytes(agent.pid());
}

}  // namespace llima::bench
