#pragma once

// Each environment's processes live in their own cgroup v2 directory, <v2 mount>/llima-box/<env>,
// outside the agent's own cgroup so they survive agent restarts and can be counted and killed
// as a group.

#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "unique_fd.h"

namespace llima {

// The cgroup v2 mount point from a /proc/self/mountinfo text, if any.
std::optional<std::string> FindCgroup2Mount(const std::string& mountinfo);

class CgroupTree {
 public:
  // Uses the cgroup v2 hierarchy mounted on this machine; when there is none, available() is
  // false and environments run without a cgroup (their state says so).
  static CgroupTree Discover(const std::string& subtree = "llima-box");

  bool available() const { return !root_.empty(); }
  // Why cgroups are unavailable, for status reporting.
  const std::string& unavailable_reason() const { return unavailable_reason_; }
  std::string PathFor(const std::string& name) const { return root_ + "/" + name; }

  // Creates the environment's cgroup (if missing) and opens it for CLONE_INTO_CGROUP.
  absl::StatusOr<UniqueFd> Create(const std::string& name) const;
  absl::StatusOr<UniqueFd> Open(const std::string& name) const;
  // Number of processes in the environment's cgroup, init included; -1 when unknown.
  int CountProcesses(const std::string& name) const;
  // SIGKILLs every process of the cgroup.
  absl::Status KillAll(const std::string& name) const;
  // Removes the (empty) cgroup; waits briefly for dying processes to leave it.
  absl::Status Remove(const std::string& name) const;

 private:
  std::string root_;
  std::string unavailable_reason_;
};

}  // namespace llima
