#include "environment_manager.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "fault_injection.h"
#include "google/protobuf/util/time_util.h"
#include "identity.h"
#include "log.h"
#include "mount_plan.h"
#include "posix_error.h"
#include "read_file.h"
#include "request_validation.h"
#include "syscalls.h"

namespace llima {
namespace {

constexpr int kInitReadyTimeoutMs = 10000;
constexpr int kInitExitTimeoutMs = 5000;

// Appends what `fd` delivers to `out` until its end; false if that takes over `timeout_ms`.
bool ReadUntilEnd(int fd, int timeout_ms, std::string* out) {
  absl::Time deadline = absl::Now() + absl::Milliseconds(timeout_ms);
  char buffer[512];
  for (;;) {
    int left = static_cast<int>(absl::ToInt64Milliseconds(deadline - absl::Now()));
    pollfd p{fd, POLLIN, 0};
    int polled = poll(&p, 1, std::max(left, 0));
    if (polled < 0 && errno == EINTR) continue;
    if (polled <= 0) return false;
    ssize_t n = read(fd, buffer, sizeof(buffer));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return true;
    out->append(buffer, static_cast<size_t>(n));
  }
}

// Start time of a process in clock ticks after boot (field 22 of /proc/<pid>/stat), 0 if gone.
uint64_t ProcessStartTime(pid_t pid) {
  std::string stat = ReadFileOrEmpty(absl::StrCat("/proc/", pid, "/stat"));
  // The command name (field 2) may contain spaces and parentheses: fields follow the last ')'.
  size_t end = stat.rfind(')');
  if (end == std::string::npos) return 0;
  std::vector<absl::string_view> fields =
      absl::StrSplit(absl::string_view(stat).substr(end + 2), ' ');
  uint64_t start = 0;
  // fields[0] is field 3 (state), so field 22 is fields[19].
  if (fields.size() > 19 && absl::SimpleAtoi(fields[19], &start)) return start;
  return 0;
}

std::string DescribeWaitStatus(int status) {
  if (status < 0) return "status unknown";
  if (WIFSIGNALED(status)) return absl::StrCat("killed by signal ", WTERMSIG(status));
  return absl::StrCat("exit status ", WEXITSTATUS(status));
}

bool ProcessAlive(int pidfd) {
  if (pidfd < 0) return false;
  pollfd p{pidfd, POLLIN, 0};
  return poll(&p, 1, 0) == 0;  // readable once the process has exited
}

absl::StatusOr<UniqueFd> OpenNamespace(pid_t pid, const char* type) {
  std::string path = absl::StrCat("/proc/", pid, "/ns/", type);
  UniqueFd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return PosixError(errno, absl::StrCat("open ", path));
  return fd;
}

// The root directory of `pid` (for init: the environment's root), to open things inside it.
absl::StatusOr<UniqueFd> OpenRoot(pid_t pid) {
  std::string path = absl::StrCat("/proc/", pid, "/root");
  UniqueFd fd(open(path.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!fd) return PosixError(errno, absl::StrCat("open ", path));
  return fd;
}

bool SameFile(int fd, const std::string& path) {
  struct stat a, b;
  return fstat(fd, &a) == 0 && stat(path.c_str(), &b) == 0 && a.st_dev == b.st_dev &&
         a.st_ino == b.st_ino;
}

// Clones the mount tree at `fd` into a detached mount the init can attach in its namespace.
// Mounts can only be cloned from the caller's own namespace, so this is done here, in the
// agent's, and handed over.
absl::StatusOr<UniqueFd> CloneTree(int fd, const std::string& what) {
  UniqueFd tree(open_tree(fd, "", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH |
                                      AT_RECURSIVE));
  if (!tree) return PosixError(errno, absl::StrCat("clone the mount of ", what));
  return tree;
}

}  // namespace

int64_t PhysicalMemoryBytes() {
  long pages = sysconf(_SC_PHYS_PAGES);
  long page_size = sysconf(_SC_PAGESIZE);
  if (pages <= 0 || page_size <= 0) return 0;
  return static_cast<int64_t>(pages) * page_size;
}

absl::StatusOr<UniqueFd> OpenProjectDirectory(const std::string& clean_path, uid_t* owner,
                                              gid_t* group) {
  open_how how{};
  how.flags = O_PATH | O_DIRECTORY | O_CLOEXEC;
  how.resolve = RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
  UniqueFd fd(Openat2(AT_FDCWD, clean_path.c_str(), &how));
  if (!fd) {
    switch (errno) {
      case ENOENT:
        return absl::FailedPreconditionError(
            absl::StrCat("project directory ", clean_path, " does not exist"));
      case ENOTDIR:
        return absl::FailedPreconditionError(
            absl::StrCat("project path ", clean_path, " is not a directory"));
      case ELOOP:
      case EXDEV:
        return absl::FailedPreconditionError(
            absl::StrCat("project path ", clean_path,
                         " contains a symbolic link; pass the resolved path (realpath)"));
      default:
        return PosixError(errno, absl::StrCat("open project directory ", clean_path));
    }
  }
  struct stat st;
  if (fstat(fd.get(), &st) != 0) return PosixError(errno, "stat " + clean_path);
  if (!S_ISDIR(st.st_mode)) {
    return absl::FailedPreconditionError(
        absl::StrCat("project path ", clean_path, " is not a directory"));
  }
  if (st.st_uid == 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "project directory ", clean_path,
        " is owned by root; environments run as the owner of the project, which must not be "
        "root (chown it to your user)"));
  }
  *owner = st.st_uid;
  *group = st.st_gid;
  return fd;
}

EnvironmentManager::EnvironmentManager(EnvironmentStore& store, CgroupTree cgroups,
                                       ForkServer& fork_server,
                                       std::vector<std::string> protected_paths,
                                       ResourceDefaults limit_defaults)
    : store_(store),
      cgroups_(std::move(cgroups)),
      fork_server_(fork_server),
      protected_paths_(std::move(protected_paths)),
      limit_defaults_(limit_defaults) {}

EnvironmentManager::EnvironmentManager(EnvironmentStore& store, CgroupTree cgroups,
                                       ForkServer& fork_server,
                                       std::vector<std::string> protected_paths)
    : EnvironmentManager(store, std::move(cgroups), fork_server, std::move(protected_paths),
                         RecommendedResourceDefaults(PhysicalMemoryBytes())) {}

absl::StatusOr<v1::Environment> EnvironmentManager::CreateAndLog(
    const v1::CreateEnvironmentRequest& request) {
  absl::Time start = absl::Now();
  absl::StatusOr<v1::Environment> env = Create(request);
  LogOperation("create", env.ok() ? env->name() : request.name(), absl::Now() - start, env.status(),
               absl::StrCat("path=", request.project_path()));
  return env;
}

absl::StatusOr<std::shared_ptr<const LiveEnvironment>> EnvironmentManager::FindRunningFor(
    const std::string& project_path) {
  v1::CreateEnvironmentRequest request;
  request.set_project_path(project_path);
  absl::StatusOr<EnvironmentToCreate> wanted = ValidateCreateEnvironment(request);
  if (!wanted.ok()) return wanted.status();
  // Every later call finds the environment under the name its path derives to: no need for
  // Create's look at the directory on disk, nor for the description it returns.
  std::shared_ptr<LiveEnvironment> env = FindLocked(wanted->name);
  if (env == nullptr || env->record.project_path() != wanted->project_path) {
    // None yet, or the name is another project's (Create then says so).
    absl::StatusOr<v1::Environment> created = CreateAndLog(request);
    if (!created.ok()) return created.status();
    env = FindLocked(created->name());
    // Deleted, and perhaps made again for another project, since Create returned.
    if (env == nullptr || env->record.project_path() != wanted->project_path) {
      return absl::AbortedError(absl::StrCat("the environment of ", wanted->project_path,
                                             " was deleted as the command started; run it again"));
    }
  }
  return CheckRunning(std::move(env));
}

absl::StatusOr<v1::Environment> EnvironmentManager::Create(
    const v1::CreateEnvironmentRequest& request) {
  absl::StatusOr<EnvironmentToCreate> wanted = ValidateCreateEnvironment(request);
  if (!wanted.ok()) return wanted.status();
  const std::string& name = wanted->name;
  const std::string& path = wanted->project_path;

  if (auto s = CheckProjectPlacement(path, protected_paths_, absl::StrCat("/home/", name));
      !s.ok()) {
    return s;
  }

  uid_t uid;
  gid_t dir_gid;
  absl::StatusOr<UniqueFd> project = OpenProjectDirectory(path, &uid, &dir_gid);
  if (!project.ok()) return project.status();

  std::lock_guard operations(operations_mu_);
  {
    std::lock_guard lock(mu_);
    if (auto it = envs_.find(name); it != envs_.end()) {
      if (it->second->record.project_path() == path) {
        std::string mismatch = DescribeLimitsMismatch(wanted->limits, it->second->record.limits());
        if (!mismatch.empty()) {
          return absl::FailedPreconditionError(absl::StrCat(
              "environment ", name, " exists with other limits: ", mismatch,
              ". Limits are fixed when an environment is created: delete it and create it again"));
        }
        return ToProto(*it->second);
      }
      return absl::AlreadyExistsError(absl::StrCat(
          "environment ", name, " already exists for ", it->second->record.project_path(),
          "; its name collides with the one for ", path, ". Choose another name for this project"));
    }
    if (auto it = projects_.find(path); it != projects_.end()) {
      return absl::AlreadyExistsError(
          absl::StrCat("project ", path, " already has environment ", it->second.front()));
    }
  }

  std::string host_passwd = ReadFileOrEmpty("/etc/passwd");
  internal::EnvironmentRecord record;
  record.set_name(name);
  record.set_project_path(path);
  record.set_uid(uid);
  record.set_gid(PrimaryGroupFor(host_passwd, uid, dir_gid));
  record.set_shell(LoginShellFor(host_passwd, uid));
  *record.mutable_limits() = ResolveResourceLimits(wanted->limits, limit_defaults_);
  *record.mutable_created_at() =
      google::protobuf::util::TimeUtil::NanosecondsToTimestamp(absl::ToUnixNanos(absl::Now()));

  // A directory without a record is what an interrupted create or delete leaves.
  if (access(store_.EnvironmentDir(name).c_str(), F_OK) == 0) {
    if (auto s = DestroyResources(name, -1); !s.ok()) return s;
  }
  bool committed = false;
  absl::Cleanup rollback = [&] {
    if (!committed) (void)DestroyResources(name, -1);
  };
  if (auto s = store_.CreateEnvironmentDirectory(name, record.uid(), record.gid()); !s.ok()) {
    return s;
  }
  if (auto s = InjectedFault("create:directory"); !s.ok()) return s;
  absl::StatusOr<std::unique_ptr<LiveEnvironment>> live =
      StartNamespaces(std::move(record), project->get());
  if (!live.ok()) return live.status();
  absl::Status written = InjectedFault("create:record");
  if (written.ok()) written = store_.CommitStagedRecord(name);
  if (!written.ok()) {
    (void)StopNamespaces(name, (*live)->init_pidfd.get());
    return written;
  }
  committed = true;
  CrashPoint("create:committed");
  std::shared_ptr<LiveEnvironment> env = std::move(*live);
  std::lock_guard lock(mu_);
  InsertLocked(name, env);
  return ToProto(*env);
}

absl::StatusOr<std::unique_ptr<LiveEnvironment>> EnvironmentManager::StartNamespaces(
    internal::EnvironmentRecord record, int project_fd) {
  const std::string& name = record.name();
  auto env = std::make_unique<LiveEnvironment>();

  UniqueFd cgroup;
  if (cgroups_.available()) {
    absl::StatusOr<UniqueFd> fd = cgroups_.Create(name);
    if (!fd.ok()) return fd.status();
    cgroup = std::move(*fd);
  }
  // Before init is cloned into the cgroup: no process of the environment runs unlimited.
  absl::StatusOr<v1::LimitsEnforcement> enforcement = cgroups_.ApplyLimits(name, record.limits());
  if (!enforcement.ok()) return enforcement.status();
  env->limits_enforcement = *std::move(enforcement);
  if (auto s = InjectedFault("create:cgroup"); !s.ok()) return s;
  std::string home = store_.HomeCloneSource(name);
  UniqueFd home_fd(open(home.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!home_fd) return PosixError(errno, absl::StrCat("open ", home));
  absl::StatusOr<UniqueFd> project_tree = CloneTree(project_fd, record.project_path());
  if (!project_tree.ok()) return project_tree.status();
  absl::StatusOr<UniqueFd> home_tree = CloneTree(home_fd.get(), home);
  if (!home_tree.ok()) return home_tree.status();

  int ready[2];
  if (pipe2(ready, O_CLOEXEC) != 0) return PosixError(errno, "create a pipe");
  UniqueFd ready_read(ready[0]);
  UniqueFd ready_write(ready[1]);

  EnvironmentIdentity identity{name, record.uid(), record.gid(), env->home(), record.shell()};
  IdentityFiles files = SynthesizeIdentityFiles(ReadFileOrEmpty("/etc/passwd"),
                                                ReadFileOrEmpty("/etc/group"), identity);
  internal::SpawnInit spec;
  *spec.mutable_record() = record;
  spec.set_passwd(files.passwd);
  spec.set_group(files.group);
  spec.set_staging_root(store_.StagingPath());
  std::vector<int> fds = {project_tree->get(), home_tree->get(), ready_write.get()};
  if (cgroup) fds.push_back(cgroup.get());

  absl::StatusOr<SpawnedChild> init = fork_server_.SpawnInit(spec, fds);
  if (!init.ok()) return init.status();
  ready_write.reset();
  env->init_pidfd = std::move(init->pidfd);
  if (!env->init_pidfd) return absl::InternalError("no pidfd for the environment's init");
  absl::Cleanup kill_init = [&] { (void)StopNamespaces(name, env->init_pidfd.get()); };
  if (auto s = InjectedFault("create:init"); !s.ok()) return s;
  record.set_init_pid(init->pid);
  record.set_init_start_time(ProcessStartTime(init->pid));
  // The record's fsync (about a fifth of a create) runs while init builds the root; the caller
  // commits it once the environment stands.
  if (auto s = store_.StageRecord(record); !s.ok()) return s;
  absl::Cleanup discard_record = [&] { store_.DiscardStagedRecord(name); };

  // Init reports "ok" once the root stands (or, in one write, why it could not build it), then
  // "up" once it has become llima-init, and closes the pipe.
  char answer[512];
  pollfd p{ready_read.get(), POLLIN, 0};
  int polled = poll(&p, 1, kInitReadyTimeoutMs);
  if (polled == 0) return absl::DeadlineExceededError("the environment's init did not get ready");
  ssize_t n = read(ready_read.get(), answer, sizeof(answer));
  if (n <= 0) {
    return absl::InternalError(absl::StrCat("the environment's init exited during setup (",
                                            DescribeWaitStatus(init->exit->Wait()), ")"));
  }
  absl::string_view first(answer, static_cast<size_t>(n));
  if (!absl::ConsumePrefix(&first, "ok")) {
    return absl::InternalError(absl::StrCat("set up the environment's root: ", first));
  }
  std::string after_ready(first);
  // The steps below fail on the init's /proc files once it has ended: then that is the error.
  // (Its namespaces go before its pidfd tells of its end: give that a moment.)
  auto or_init_ended = [&](absl::Status step) {
    pollfd ended{env->init_pidfd.get(), POLLIN, 0};
    if (step.ok() || poll(&ended, 1, 100) == 0) return step;
    (void)ReadUntilEnd(ready_read.get(), kInitReadyTimeoutMs, &after_ready);
    return absl::InternalError(
        absl::StrCat("the environment's init ended ",
                     after_ready.empty() ? "as it became llima-init (" : "during setup (",
                     DescribeWaitStatus(init->exit->Wait()), ")"));
  };

  CrashPoint("create:ready");
  // Pin the mount namespace so it outlives every process in it (and the agent).
  std::string pin = store_.PinPath(name);
  std::string ns_path = absl::StrCat("/proc/", init->pid, "/ns/mnt");
  if (mount(ns_path.c_str(), pin.c_str(), nullptr, MS_BIND, nullptr) != 0) {
    return or_init_ended(PosixError(errno, absl::StrCat("pin the mount namespace at ", pin)));
  }
  if (auto s = InjectedFault("create:pin"); !s.ok()) return s;
  env->mnt_ns.reset(open(pin.c_str(), O_RDONLY | O_CLOEXEC));
  if (!env->mnt_ns) return PosixError(errno, absl::StrCat("open ", pin));
  for (auto [fd, type] : {std::pair{&env->pid_ns, "pid"}, {&env->ipc_ns, "ipc"},
                          {&env->uts_ns, "uts"}}) {
    absl::StatusOr<UniqueFd> ns = OpenNamespace(init->pid, type);
    if (!ns.ok()) return or_init_ended(ns.status());
    *fd = std::move(*ns);
  }
  absl::StatusOr<UniqueFd> root = OpenRoot(init->pid);
  if (!root.ok()) return or_init_ended(root.status());
  env->root_dir = std::move(*root);
  // Meanwhile init has become llima-init, or said why not (then it reaps in its old form).
  if (!ReadUntilEnd(ready_read.get(), kInitReadyTimeoutMs, &after_ready)) {
    return absl::DeadlineExceededError("the environment's init did not become llima-init");
  }
  if (after_ready.empty()) {
    return or_init_ended(
        absl::InternalError("the environment's init closed its pipe without saying it runs"));
  }
  if (after_ready != "up") {
    LogEvent(absl::StrCat("warning: environment ", name, ": ", after_ready,
                          "; its init stays a copy of the fork server"));
  }
  // The namespaces opened above, and the start time read before, must be the init's, not those of
  // a process that reused its pid: alive now, it has been alive since it was spawned.
  if (!ProcessAlive(env->init_pidfd.get()) || record.init_start_time() == 0) {
    return absl::InternalError("the environment's init exited during setup");
  }
  env->AttachCgroup(std::move(cgroup));
  env->record = std::move(record);
  std::move(discard_record).Cancel();
  std::move(kill_init).Cancel();
  return env;
}

absl::StatusOr<std::unique_ptr<LiveEnvironment>> EnvironmentManager::Adopt(
    const internal::EnvironmentRecord& record) {
  pid_t pid = record.init_pid();
  if (pid <= 0) return absl::NotFoundError("no init recorded");
  auto env = std::make_unique<LiveEnvironment>();
  env->init_pidfd.reset(PidfdOpen(pid));
  if (!env->init_pidfd) return absl::NotFoundError(absl::StrCat("init pid ", pid, " is gone"));
  if (ProcessStartTime(pid) != record.init_start_time()) {
    return absl::NotFoundError(absl::StrCat("pid ", pid, " is no longer the environment's init"));
  }
  std::string pin = store_.PinPath(record.name());
  absl::StatusOr<UniqueFd> mnt = OpenNamespace(pid, "mnt");
  if (!mnt.ok()) return mnt.status();
  if (!SameFile(mnt->get(), pin)) {
    return absl::NotFoundError("the pinned mount namespace is not the init's");
  }
  env->mnt_ns = std::move(*mnt);
  for (auto [fd, type] : {std::pair{&env->pid_ns, "pid"}, {&env->ipc_ns, "ipc"},
                          {&env->uts_ns, "uts"}}) {
    absl::StatusOr<UniqueFd> ns = OpenNamespace(pid, type);
    if (!ns.ok()) return ns.status();
    *fd = std::move(*ns);
  }
  absl::StatusOr<UniqueFd> root = OpenRoot(pid);
  if (!root.ok()) return root.status();
  env->root_dir = std::move(*root);
  if (cgroups_.available()) {
    absl::StatusOr<UniqueFd> cgroup = cgroups_.Create(record.name());
    if (!cgroup.ok()) return cgroup.status();
    env->AttachCgroup(std::move(*cgroup));
  }
  // The cgroup normally holds them already; writing them again also covers controllers enabled
  // since. A refusal is reported, not fatal: the environment's processes keep running.
  if (absl::StatusOr<v1::LimitsEnforcement> enforcement =
          cgroups_.ApplyLimits(record.name(), record.limits());
      enforcement.ok()) {
    env->limits_enforcement = *std::move(enforcement);
  } else {
    env->limits_enforcement.set_detail(
        absl::StrCat("limits not enforced: ", enforcement.status().message()));
  }
  if (!ProcessAlive(env->init_pidfd.get())) return absl::NotFoundError("init exited");
  env->record = record;
  return env;
}

absl::StatusOr<std::unique_ptr<LiveEnvironment>> EnvironmentManager::Rebuild(
    internal::EnvironmentRecord record) {
  if (auto s = StopNamespaces(record.name(), -1); !s.ok()) return s;
  if (auto s = CheckProjectPlacement(record.project_path(), protected_paths_,
                                     absl::StrCat("/home/", record.name()));
      !s.ok()) {
    return s;
  }
  uid_t uid;
  gid_t gid;
  absl::StatusOr<UniqueFd> project = OpenProjectDirectory(record.project_path(), &uid, &gid);
  if (!project.ok()) return project.status();
  if (uid != record.uid()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "project directory ", record.project_path(), " changed owner from uid ", record.uid(),
        " to ", uid, "; delete the environment and create it again"));
  }
  absl::StatusOr<std::unique_ptr<LiveEnvironment>> env =
      StartNamespaces(std::move(record), project->get());
  if (!env.ok()) return env.status();
  if (auto s = store_.CommitStagedRecord((*env)->record.name()); !s.ok()) {
    (void)StopNamespaces((*env)->record.name(), (*env)->init_pidfd.get());
    return s;
  }
  return env;
}

void EnvironmentManager::Recover() {
  std::lock_guard operations(operations_mu_);
  absl::StatusOr<std::vector<std::string>> names = store_.ListEnvironmentDirectories();
  if (!names.ok()) {
    LogOperation("recover", "", absl::ZeroDuration(), names.status());
    return;
  }
  for (const std::string& name : *names) {
    absl::Time start = absl::Now();
    // A record staged when the agent stopped was never committed.
    store_.DiscardStagedRecord(name);
    absl::StatusOr<internal::EnvironmentRecord> record = store_.ReadRecord(name);
    if (absl::IsNotFound(record.status())) {
      absl::Status s = DestroyResources(name, -1);
      LogOperation("cleanup", name, absl::Now() - start, s, "(left by an interrupted operation)");
      continue;
    }
    // Records written before limits existed get today's defaults, kept from now on.
    bool limits_added = false;
    if (record.ok() && !record->has_limits()) {
      *record->mutable_limits() = ResolveResourceLimits({}, limit_defaults_);
      limits_added = true;
    }
    std::shared_ptr<LiveEnvironment> env;
    if (!record.ok()) {
      env = std::make_shared<LiveEnvironment>();
      env->record.set_name(name);
      env->broken_reason = std::string(record.status().message());
      LogOperation("adopt", name, absl::Now() - start, record.status());
    } else if (absl::StatusOr<std::unique_ptr<LiveEnvironment>> adopted = Adopt(*record);
               adopted.ok()) {
      env = std::move(*adopted);
      LogOperation("adopt", name, absl::Now() - start, absl::OkStatus());
      if (limits_added) {
        if (absl::Status s = store_.WriteRecord(env->record); !s.ok()) {
          LogOperation("record", name, absl::ZeroDuration(), s, "(limits added)");
        }
      }
    } else if (absl::StatusOr<std::unique_ptr<LiveEnvironment>> rebuilt = Rebuild(*record);
               rebuilt.ok()) {
      env = std::move(*rebuilt);
      LogOperation("rebuild", name, absl::Now() - start, absl::OkStatus(),
                   absl::StrCat("(", adopted.status().message(), ")"));
    } else {
      env = std::make_shared<LiveEnvironment>();
      env->record = *record;
      env->broken_reason =
          absl::StrCat("its namespaces are gone and rebuilding failed: ", rebuilt.status().message());
      LogOperation("rebuild", name, absl::Now() - start, rebuilt.status());
    }
    std::lock_guard lock(mu_);
    InsertLocked(name, std::move(env));
  }
}

absl::Status EnvironmentManager::StopNamespaces(const std::string& name, int init_pidfd) {
  if (init_pidfd >= 0) PidfdSendSignal(init_pidfd, SIGKILL);
  absl::Status killed = cgroups_.KillAll(name);
  if (init_pidfd >= 0) {
    // Killing a pid namespace's init kills everything in it; it exits after the others.
    pollfd p{init_pidfd, POLLIN, 0};
    poll(&p, 1, kInitExitTimeoutMs);
  }
  std::string pin = store_.PinPath(name);
  while (umount2(pin.c_str(), MNT_DETACH | UMOUNT_NOFOLLOW) == 0) {
  }
  // A killed cgroup is not reused: some kernels kill processes cloned into a cgroup that was
  // killed before (CLONE_INTO_CGROUP compares kill counts of different cgroups).
  absl::Status removed = cgroups_.Remove(name);
  return killed.ok() ? removed : killed;
}

absl::Status EnvironmentManager::DestroyResources(const std::string& name, int init_pidfd) {
  absl::Status stopped = StopNamespaces(name, init_pidfd);
  absl::Status dir = store_.RemoveEnvironmentDirectory(name);
  return !dir.ok() ? dir : stopped;
}

absl::Status EnvironmentManager::Delete(const std::string& name) {
  if (auto s = ValidateDeleteEnvironment(name); !s.ok()) return s;
  std::lock_guard operations(operations_mu_);
  std::shared_ptr<LiveEnvironment> env = FindLocked(name);
  if (!env) return absl::NotFoundError(absl::StrCat("no environment named ", name));
  // Removing the record commits the delete: a crash from here on leaves a directory without a
  // record, which the next start removes.
  if (auto s = store_.RemoveRecord(name); !s.ok()) return s;
  CrashPoint("delete:record");
  {
    std::lock_guard lock(mu_);
    EraseLocked(name);
  }
  {
    std::lock_guard lock(detached_mu_);
    detached_.erase(name);
  }
  absl::Status stopped = StopNamespaces(name, env->init_pidfd.get());
  CrashPoint("delete:stopped");
  absl::Status removed = store_.RemoveEnvironmentDirectory(name);
  return !removed.ok() ? removed : stopped;
}

std::shared_ptr<LiveEnvironment> EnvironmentManager::FindLocked(const std::string& name) const {
  std::lock_guard lock(mu_);
  auto it = envs_.find(name);
  return it == envs_.end() ? nullptr : it->second;
}

absl::StatusOr<std::shared_ptr<const LiveEnvironment>> EnvironmentManager::FindRunning(
    const std::string& name) const {
  std::shared_ptr<LiveEnvironment> env = FindLocked(name);
  if (!env) return absl::NotFoundError(absl::StrCat("no environment named ", name));
  return CheckRunning(std::move(env));
}

absl::StatusOr<std::shared_ptr<const LiveEnvironment>> EnvironmentManager::CheckRunning(
    std::shared_ptr<LiveEnvironment> env) {
  const std::string& name = env->record.name();
  if (!env->running()) {
    return absl::FailedPreconditionError(
        absl::StrCat("environment ", name, " is broken: ", env->broken_reason));
  }
  if (!ProcessAlive(env->init_pidfd.get())) {
    return absl::FailedPreconditionError(absl::StrCat(
        "environment ", name, " is broken: its init process has exited; delete and recreate it"));
  }
  return std::shared_ptr<const LiveEnvironment>(std::move(env));
}

absl::StatusOr<v1::Environment> EnvironmentManager::Get(
    const v1::GetEnvironmentRequest& request) const {
  absl::StatusOr<EnvironmentLookup> lookup = ValidateGetEnvironment(request);
  if (!lookup.ok()) return lookup.status();
  if (lookup->by_name) {
    std::shared_ptr<LiveEnvironment> env = FindLocked(lookup->name);
    if (!env) return absl::NotFoundError(absl::StrCat("no environment named ", lookup->name));
    return ToProto(*env);
  }
  std::lock_guard lock(mu_);
  if (auto it = projects_.find(lookup->project_path); it != projects_.end()) {
    if (auto env = envs_.find(it->second.front()); env != envs_.end()) {
      return ToProto(*env->second);
    }
  }
  return absl::NotFoundError(absl::StrCat("no environment for project ", lookup->project_path));
}

std::vector<v1::Environment> EnvironmentManager::List() const {
  std::vector<std::shared_ptr<LiveEnvironment>> envs;
  {
    std::lock_guard lock(mu_);
    envs.reserve(envs_.size());
    for (const auto& [name, env] : envs_) envs.push_back(env);
  }
  std::sort(envs.begin(), envs.end(),
            [](const auto& a, const auto& b) { return a->record.name() < b->record.name(); });
  std::vector<v1::Environment> result;
  result.reserve(envs.size());
  for (const auto& env : envs) result.push_back(ToProto(*env));
  return result;
}

bool EnvironmentManager::IsEnvironmentMountNamespace(dev_t dev, ino_t ino) const {
  std::lock_guard lock(mu_);
  return mount_namespaces_.contains({dev, ino});
}

void EnvironmentManager::InsertLocked(const std::string& name,
                                      std::shared_ptr<LiveEnvironment> env) {
  EraseLocked(name);
  struct stat st;
  // The descriptor keeps the namespace, and so its inode number, alive while env is here.
  if (env->mnt_ns && fstat(env->mnt_ns.get(), &st) == 0) {
    env->mnt_ns_id = {st.st_dev, st.st_ino};
    mount_namespaces_.insert(env->mnt_ns_id);
  }
  projects_[env->record.project_path()].push_back(name);
  envs_[name] = std::move(env);
}

void EnvironmentManager::EraseLocked(const std::string& name) {
  auto it = envs_.find(name);
  if (it == envs_.end()) return;
  if (it->second->mnt_ns) mount_namespaces_.erase(it->second->mnt_ns_id);
  if (auto project = projects_.find(it->second->record.project_path());
      project != projects_.end()) {
    std::erase(project->second, name);
    if (project->second.empty()) projects_.erase(project);
  }
  envs_.erase(it);
}

void EnvironmentManager::AddDetached(const std::string& environment,
                                     v1::DetachedProcess process, UniqueFd pidfd) {
  std::lock_guard lock(detached_mu_);
  detached_[environment].push_back(
      {std::move(process), std::make_shared<UniqueFd>(std::move(pidfd))});
}

v1::Environment EnvironmentManager::ToProto(const LiveEnvironment& env) const {
  v1::Environment out;
  const internal::EnvironmentRecord& r = env.record;
  out.set_name(r.name());
  out.set_project_path(r.project_path());
  *out.mutable_created_at() = r.created_at();
  out.set_uid(r.uid());
  out.set_gid(r.gid());
  out.set_home(env.home());
  out.set_shell(r.shell());
  *out.mutable_limits() = r.limits();
  if (!env.running()) {
    out.set_state(v1::Environment::STATE_BROKEN);
    out.set_detail(env.broken_reason);
    out.mutable_limits_enforcement()->set_detail("limits not enforced: the environment is broken");
  } else if (!ProcessAlive(env.init_pidfd.get())) {
    out.set_state(v1::Environment::STATE_BROKEN);
    out.set_detail("its init process has exited; delete and recreate it");
    out.mutable_limits_enforcement()->set_detail("limits not enforced: the environment is broken");
  } else {
    *out.mutable_limits_enforcement() = env.limits_enforcement;
    out.set_state(v1::Environment::STATE_RUNNING);
    int count = env.cgroup_procs ? CgroupTree::CountProcessesIn(env.cgroup_procs.get())
                                 : cgroups_.CountProcesses(r.name());
    out.set_process_count(count > 0 ? count - 1 : 0);
    std::lock_guard lock(detached_mu_);
    if (auto it = detached_.find(r.name()); it != detached_.end()) {
      std::vector<Detached>& list = it->second;
      list.erase(std::remove_if(list.begin(), list.end(),
                                [](const Detached& d) { return !ProcessAlive(d.pidfd->get()); }),
                 list.end());
      for (const Detached& d : list) *out.add_detached() = d.process;
      if (list.empty()) detached_.erase(it);
    }
    if (!cgroups_.available()) {
      out.set_detail(absl::StrCat("no cgroup (processes are not counted, limits not enforced): ",
                                  cgroups_.unavailable_reason()));
    } else {
      out.set_detail(env.limits_enforcement.detail());
    }
  }
  return out;
}

}  // namespace llima
