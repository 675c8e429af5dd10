#pragma once

// Environments: creation, lookup, deletion, and recovery after an agent restart. The gRPC layer
// only translates to and from this class.

#include <sys/types.h>

#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "cgroup.h"
#include "environment_store.h"
#include "fork_server.h"
#include "llima/internal/agent_internal.pb.h"
#include "llima/v1/agent.pb.h"
#include "request_validation.h"
#include "unique_fd.h"

namespace llima {

// An environment known to the agent, with handles on its namespaces.
struct LiveEnvironment {
  internal::EnvironmentRecord record;
  // Empty when the environment is broken (its namespaces are gone and could not be rebuilt).
  std::string broken_reason;
  UniqueFd mnt_ns;
  UniqueFd pid_ns;
  UniqueFd ipc_ns;
  UniqueFd uts_ns;
  UniqueFd cgroup;        // invalid when the machine has no cgroup v2; set by AttachCgroup
  UniqueFd cgroup_procs;  // its cgroup.procs, kept open for counting
  UniqueFd init_pidfd;  // pidfd of the environment's init
  UniqueFd root_dir;    // the environment's root directory, as init sees it
  // Which of record.limits the kernel enforces, as found when its cgroup was set up.
  v1::LimitsEnforcement limits_enforcement;
  // mnt_ns's device and inode: what a process's /proc/PID/ns/mnt shows when it is inside.
  std::pair<dev_t, ino_t> mnt_ns_id{0, 0};

  void AttachCgroup(UniqueFd dir) {
    cgroup = std::move(dir);
    cgroup_procs = cgroup ? CgroupTree::OpenProcs(cgroup.get()) : UniqueFd();
  }
  bool running() const { return broken_reason.empty(); }
  std::string home() const { return "/home/" + record.name(); }
};

class EnvironmentManager {
 public:
  // `protected_paths` are paths no project may overlap (state directory, socket directory).
  // `limit_defaults` fill in the limits a create request leaves at 0.
  EnvironmentManager(EnvironmentStore& store, CgroupTree cgroups, ForkServer& fork_server,
                     std::vector<std::string> protected_paths, ResourceDefaults limit_defaults);
  // With RecommendedResourceDefaults for this machine's memory.
  EnvironmentManager(EnvironmentStore& store, CgroupTree cgroups, ForkServer& fork_server,
                     std::vector<std::string> protected_paths);

  // Called once at start: re-adopts environments whose init still runs, rebuilds those whose
  // namespaces are gone, and removes what interrupted creates and deletes left behind.
  void Recover();

  absl::StatusOr<v1::Environment> Create(const v1::CreateEnvironmentRequest& request);
  // Create, and the agent log's line for it.
  absl::StatusOr<v1::Environment> CreateAndLog(const v1::CreateEnvironmentRequest& request);
  absl::StatusOr<v1::Environment> Get(const v1::GetEnvironmentRequest& request) const;
  std::vector<v1::Environment> List() const;
  absl::Status Delete(const std::string& name);

  // The running environment `name`, for starting processes in it.
  absl::StatusOr<std::shared_ptr<const LiveEnvironment>> FindRunning(
      const std::string& name) const;
  // The running environment of `project_path`, created first (CreateAndLog) when there is none.
  absl::StatusOr<std::shared_ptr<const LiveEnvironment>> FindRunningFor(
      const std::string& project_path);

  const CgroupTree& cgroups() const { return cgroups_; }
  // The defaults as a request would give them: what an environment created now gets.
  v1::ResourceLimits default_limits() const { return ResolveResourceLimits({}, limit_defaults_); }

  // Whether the mount namespace (dev, ino) is an environment's.
  bool IsEnvironmentMountNamespace(dev_t dev, ino_t ino) const;

  // Remembers a detached process of `environment` so that Get and List report it while it
  // runs. `pidfd` tells when it has ended.
  void AddDetached(const std::string& environment, v1::DetachedProcess process, UniqueFd pidfd);

 private:
  // Builds the environment's namespaces around a new init and stages its record (with the
  // init's pid); the caller commits the record with store_.CommitStagedRecord.
  absl::StatusOr<std::unique_ptr<LiveEnvironment>> StartNamespaces(
      internal::EnvironmentRecord record, int project_fd);
  absl::StatusOr<std::unique_ptr<LiveEnvironment>> Adopt(const internal::EnvironmentRecord& record);
  absl::StatusOr<std::unique_ptr<LiveEnvironment>> Rebuild(internal::EnvironmentRecord record);
  // Kills the environment's processes, unpins its namespace, removes its cgroup. Idempotent.
  absl::Status StopNamespaces(const std::string& name, int init_pidfd);
  // StopNamespaces, then removes cgroup and directory. Idempotent.
  absl::Status DestroyResources(const std::string& name, int init_pidfd);
  v1::Environment ToProto(const LiveEnvironment& env) const;
  std::shared_ptr<LiveEnvironment> FindLocked(const std::string& name) const;
  // `env` if it runs; otherwise why it cannot start processes.
  static absl::StatusOr<std::shared_ptr<const LiveEnvironment>> CheckRunning(
      std::shared_ptr<LiveEnvironment> env);

  EnvironmentStore& store_;
  const CgroupTree cgroups_;
  ForkServer& fork_server_;
  const std::vector<std::string> protected_paths_;
  const ResourceDefaults limit_defaults_;

  std::mutex operations_mu_;  // serializes create, delete and recovery
  // Under mu_: adds or replaces envs_[name], and indexes its project and mount namespace.
  void InsertLocked(const std::string& name, std::shared_ptr<LiveEnvironment> env);
  void EraseLocked(const std::string& name);

  mutable std::mutex mu_;  // guards envs_, projects_ and mount_namespaces_
  absl::flat_hash_map<std::string, std::shared_ptr<LiveEnvironment>> envs_;
  // The names of the environments of every project path in envs_ (one, unless records on disk
  // were edited by hand): a create must not cost a scan of all environments to find that its
  // project has one.
  absl::flat_hash_map<std::string, std::vector<std::string>> projects_;
  // The mnt_ns_id of every environment in envs_ that has namespaces: the socket gate asks on
  // every connection whether the peer is inside one, which must not cost a scan of all.
  absl::flat_hash_set<std::pair<dev_t, ino_t>> mount_namespaces_;
  struct Detached {
    v1::DetachedProcess process;
    std::shared_ptr<UniqueFd> pidfd;
  };
  mutable std::mutex detached_mu_;  // guards detached_; taken after mu_ if both are
  mutable absl::flat_hash_map<std::string, std::vector<Detached>> detached_;
};

// Physical memory of this machine in bytes, 0 if unknown.
int64_t PhysicalMemoryBytes();

// Opens a project directory for a request: no symlink anywhere in the path, must be a
// directory owned by someone other than root. Returns an O_PATH descriptor; everything later is
// done through it, never through the path again.
absl::StatusOr<UniqueFd> OpenProjectDirectory(const std::string& clean_path, uid_t* owner,
                                              gid_t* group);

}  // namespace llima
