#include "scale_scenario.h"

#include <fcntl.h>
#include <grpcpp/grpcpp.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "agent_harness.h"
#include "latency_benchmark.h"
#include "latency_stats.h"
#include "machine.h"
#include "posix_error.h"
#include "unique_fd.h"

namespace llima::bench {
namespace {

using Clock = std::chrono::steady_clock;

double MillisecondsSince(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

Latency Summarize(const std::vector<double>& ms) {
  return {Median(ms), Percentile(ms, 0.99), Minimum(ms), static_cast<int>(ms.size())};
}

// pivot_root(2) into a tmpfs, in a new mount namespace of a child process (which takes the
// namespace with it when it exits): the median in microseconds of `samples`. Every environment
// the agent creates goes through it, and the kernel walks every thread on the machine in it
// (chroot_fs_refs), those of the environments' init processes included.
absl::StatusOr<double> PivotRootMicroseconds(int samples) {
  std::vector<double> took_us;
  for (int i = 0; i < samples; ++i) {
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) return PosixError(errno, "pipe2");
    UniqueFd read_end(fds[0]);
    UniqueFd write_end(fds[1]);
    pid_t pid = fork();
    if (pid < 0) return PosixError(errno, "fork");
    if (pid == 0) {
      // Only system calls from here: the benchmark has threads.
      double us = -1;
      timespec start, end;
      if (unshare(CLONE_NEWNS) == 0 &&
          mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) == 0 &&
          mount("pivot-bench", "/tmp", "tmpfs", 0, nullptr) == 0 && chdir("/tmp") == 0) {
        clock_gettime(CLOCK_MONOTONIC, &start);
        if (syscall(SYS_pivot_root, ".", ".") == 0) {
          clock_gettime(CLOCK_MONOTONIC, &end);
          us = static_cast<double>(end.tv_sec - start.tv_sec) * 1e6 +
               static_cast<double>(end.tv_nsec - start.tv_nsec) / 1e3;
        }
      }
      (void)!write(write_end.get(), &us, sizeof(us));
      _exit(0);
    }
    write_end.reset();
    double us = -1;
    ssize_t n = read(read_end.get(), &us, sizeof(us));
    waitpid(pid, nullptr, 0);
    if (n != sizeof(us) || us < 0) {
      return absl::InternalError("pivot_root in a new mount namespace failed");
    }
    took_us.push_back(us);
  }
  return Median(took_us);
}

constexpr int kPivotSamples = 51;

// The pivot_root figure, or nothing and a failure noted: the scale run goes on without it.
std::optional<double> PivotRootOrFailure(SuiteResults* results) {
  absl::StatusOr<double> us = PivotRootMicroseconds(kPivotSamples);
  if (us.ok()) return *us;
  results->failures.push_back(absl::StrCat("scale: ", us.status().message()));
  return std::nullopt;
}

// Memory kept free for everything else on the machine while environments pile up.
constexpr int64_t kMemoryReserve = int64_t{2} << 30;

// CPU time, in milliseconds, of everything that works for the agent: its threads, its fork
// server's and the processes of its environments. -1 when it cannot be read.
double AgentCpuMilliseconds(const testing::AgentProcess& agent) {
  int64_t run_ns = FamilyRunNanoseconds(agent.pid());
  std::string cgroup = agent.cgroup_root();
  int64_t cgroup_us = cgroup.empty() ? 0 : CgroupUsageMicroseconds(cgroup);
  if (run_ns < 0 || cgroup_us < 0) return -1;
  return static_cast<double>(run_ns) / 1e6 + static_cast<double>(cgroup_us) / 1e3;
}

// Creates `count` environments, one project each, timing every CreateEnvironment and taking
// the CPU time spent on it (left empty when that cannot be read). Stops at the first failure,
// or early when what is left of the machine's memory would not hold them all.
absl::Status CreateMany(testing::AgentProcess& agent, const testing::ScratchDir& scratch, int count,
                        std::vector<double>* create_ms, std::vector<double>* create_cpu_ms) {
  int64_t available_at_start = AvailableMemoryBytes();
  bool cpu_known = true;
  for (int i = 0; i < count; ++i) {
    if (Interrupted()) return absl::CancelledError("interrupted");
    std::string project = scratch.MakeDir(absl::StrCat("projects/many-", i), 4242, 4242);
    v1::Environment env;
    double cpu_before = AgentCpuMilliseconds(agent);
    auto start = Clock::now();
    grpc::Status status = testing::CallCreate(agent.stub(), project, &env);
    create_ms->push_back(MillisecondsSince(start));
    double cpu_after = AgentCpuMilliseconds(agent);
    cpu_known = cpu_known && cpu_before >= 0 && cpu_after >= 0;
    if (cpu_known) create_cpu_ms->push_back(cpu_after - cpu_before);
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
  results->threads_at_zero = ThreadsOnMachine();
  results->pivot_at_zero_us = PivotRootOrFailure(results);

  std::vector<double> create_ms;
  std::vector<double> create_cpu_ms;
  absl::Status created = CreateMany(agent, scratch, size.environments, &create_ms, &create_cpu_ms);
  if (!created.ok()) return fail(created);
  int edge = size.ComparedCreates();
  results->create_first = Summarize({create_ms.begin(), create_ms.begin() + edge});
  results->create_last = Summarize({create_ms.end() - edge, create_ms.end()});
  if (create_cpu_ms.size() == create_ms.size()) {
    results->create_cpu_first = Summarize({create_cpu_ms.begin(), create_cpu_ms.begin() + edge});
    results->create_cpu_last = Summarize({create_cpu_ms.end() - edge, create_cpu_ms.end()});
  }
  results->rss_at_n = ResidentBytes(agent.pid());
  results->inits_memory_at_n = ChildrenMemoryBytes(agent.ForkServerPid(), &results->inits_at_n);
  results->threads_at_n = ThreadsOnMachine();
  results->pivot_at_n_us = PivotRootOrFailure(results);

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
