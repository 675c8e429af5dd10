#pragma once

// Each environment's processes live in their own cgroup v2 directory, <v2 mount>/llima-box/<env>,
// outside the agent's own cgroup so they survive agent restarts and can be counted and killed
// as a group. Its resource limits are files of that directory (memory.max, pids.max, cpu.max),
// written before any process enters it; the kernel enforces them only where the memory, pids
// and cpu controllers are enabled down to it, which the agent does as far as the kernel lets it.
// Where they are not (a hybrid layout binds them to cgroup v1), the limits are reported as not
// enforced, with the reason.

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "llima/v1/agent.pb.h"
#include "unique_fd.h"

namespace llima {

// The cgroup v2 mount point from a /proc/self/mountinfo text, if any.
std::optional<std::string> FindCgroup2Mount(const std::string& mountinfo);

// The controllers resource limits need, in the order they are named to people.
struct LimitControllers {
  bool memory = false;
  bool pids = false;
  bool cpu = false;

  bool all() const { return memory && pids && cpu; }
  bool none() const { return !memory && !pids && !cpu; }
};

// Which of memory, pids and cpu a cgroup.controllers or cgroup.subtree_control text lists.
LimitControllers ParseControllers(absl::string_view text);

// Which of them cgroup v1 hierarchies hold, from a /proc/self/mountinfo text. A controller
// belongs to one hierarchy at a time: these cannot be given to cgroup v2.
LimitControllers Cgroup1Controllers(const std::string& mountinfo);

// "memory, pids, cpu": the ones set.
std::string ListControllers(const LimitControllers& controllers);

// What an environment's cgroup files get for its limits (each kNoLimit or within its bounds).
struct CgroupLimitValues {
  std::string memory_max;       // bytes or "max"
  std::string memory_swap_max;  // "0" when memory is limited: the limit is not evaded by swapping
  std::string pids_max;         // count or "max"
  std::string cpu_max;          // "<quota µs> <period µs>" or "max <period µs>"
};
CgroupLimitValues CgroupLimitValuesFor(const v1::ResourceLimits& limits);

// The period of cpu.max, the kernel's default (100 ms): N millicores are a quota of N/1000 of it.
inline constexpr int64_t kCpuPeriodMicros = 100000;

// "limits not enforced: <reason>" when none of the three is, "cpu limit not enforced: <reason>",
// "memory and cpu limits not enforced: <reason>"; empty when all are.
std::string DescribeUnenforcedLimits(const v1::LimitsEnforcement& enforcement,
                                     absl::string_view reason);

class CgroupTree {
 public:
  // Uses the cgroup v2 hierarchy mounted on this machine; when there is none, available() is
  // false and environments run without a cgroup (their state says so).
  static CgroupTree Discover(const std::string& subtree = "llima-box");
  // Uses the cgroup v2 hierarchy mounted at `mount`: creates <mount>/<subtree> and enables the
  // memory, pids and cpu controllers in cgroup.subtree_control from the mount down to it, each
  // as far as the kernel has it and permits. `cgroup1` names the controllers cgroup v1 holds, to
  // say so when they are missing.
  static CgroupTree Prepare(const std::string& mount, const std::string& subtree,
                            LimitControllers cgroup1 = {});

  bool available() const { return !root_.empty(); }
  // Why cgroups are unavailable, for status reporting.
  const std::string& unavailable_reason() const { return unavailable_reason_; }
  // Which limits environments' cgroups can get and, unless all, why not.
  const v1::LimitsEnforcement& enforcement() const { return enforcement_; }
  std::string PathFor(const std::string& name) const { return root_ + "/" + name; }

  // Creates the environment's cgroup (if missing) and opens it for CLONE_INTO_CGROUP.
  absl::StatusOr<UniqueFd> Create(const std::string& name) const;
  absl::StatusOr<UniqueFd> Open(const std::string& name) const;
  // Writes `limits` into the environment's cgroup, for each controller it has (its
  // cgroup.controllers); the others are reported as not enforced, with the reason. An error when
  // the kernel refuses a value for a controller the cgroup has. Without cgroups nothing is
  // enforced.
  absl::StatusOr<v1::LimitsEnforcement> ApplyLimits(const std::string& name,
                                                    const v1::ResourceLimits& limits) const;
  // Number of processes in the environment's cgroup, init included; -1 when unknown.
  int CountProcesses(const std::string& name) const;
  // The cgroup.procs of the cgroup directory open at `cgroup_fd`, kept open for CountProcessesIn.
  static UniqueFd OpenProcs(int cgroup_fd);
  // The same count from a cgroup.procs opened by OpenProcs, read again from its start: no path
  // lookup and no open per count (ListEnvironments counts every environment's).
  static int CountProcessesIn(int procs_fd);
  // SIGKILLs every process of the cgroup.
  absl::Status KillAll(const std::string& name) const;
  // Removes the (empty) cgroup; waits briefly for dying processes to leave it.
  absl::Status Remove(const std::string& name) const;

 private:
  std::string root_;
  std::string unavailable_reason_;
  v1::LimitsEnforcement enforcement_;
  // Why the controllers enforcement_ lacks are missing.
  std::string missing_reason_;
};

}  // namespace llima
