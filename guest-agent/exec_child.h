#pragma once

#include <linux/filter.h>
#include <sys/types.h>

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "llima/internal/agent_internal.pb.h"

namespace llima {

// Descriptor positions of a SpawnExec request.
enum ExecFd {
  kExecMountNs = 0,
  kExecPidNs = 1,
  kExecIpcNs = 2,
  kExecUtsNs = 3,
  kExecStdin = 4,
  kExecStdout = 5,
  kExecStderr = 6,
  kExecErrorPipe = 7,
  kExecCgroup = 8,  // optional
  kExecFdCount = 9,
};

// The error pipe carries, first, the child's pid in the environment's pid namespace (an int32_t,
// from the child itself: the fork server would have to read it from /proc, 57 us of each
// exec's start). If entering the environment fails before execve, an ExecSetupError follows.
// The pipe closes at execve (close-on-exec) or when the child exits.
struct ExecSetupError {
  int error_number;
  char step[240];
};

// Everything the child needs, prepared by the fork server before it forks, so that the child
// between fork and execve only makes system calls.
struct ExecChildPlan {
  int fds[kExecFdCount] = {-1, -1, -1, -1, -1, -1, -1, -1, -1};
  uid_t uid = 0;
  gid_t gid = 0;
  std::string working_dir;
  std::vector<std::string> argv_storage;
  std::vector<std::string> envp_storage;
  std::vector<char*> argv;
  std::vector<char*> envp;
  // Paths to try in order: argv[0] itself when it has a slash, else argv[0] in each PATH entry.
  std::vector<std::string> candidates;
  bool searched_path = false;
  bool tty = false;
  // The seccomp filter to load before execve (built once by the fork server).
  const std::vector<sock_filter>* seccomp = nullptr;
};

// Builds the plan from a request and its descriptors (in ExecFd order).
absl::StatusOr<ExecChildPlan> PrepareExecChild(const internal::SpawnExec& spec,
                                               const std::vector<int>& fds);

// The body of a process forked by the fork server into an environment's pid namespace and
// cgroup: enters the mount, ipc and uts namespaces, starts a session, drops to the environment
// identity without any capability, and executes the program. Never returns. A failure before execve is written to the error pipe; a
// program that cannot be executed ends with 127 (not found) or 126 (not executable) and a
// message on stderr, as a shell does.
[[noreturn]] void ExecChildMain(const ExecChildPlan* plan);

}  // namespace llima
