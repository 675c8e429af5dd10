#pragma once

#include <vector>

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
};

// What the error pipe carries when entering the environment fails before execve.
struct ExecSetupError {
  int error_number;
  char step[240];
};

// The body of a process forked by the fork server into an environment's pid namespace: enters
// the other namespaces, drops to the environment identity without any capability, and executes
// the program. Never returns. A failure before execve is written to the error pipe; a program
// that cannot be executed ends with 127 (not found) or 126 (not executable) and a message on
// stderr, as a shell does.
[[noreturn]] void RunExecChild(const internal::SpawnExec& spec, const std::vector<int>& fds);

}  // namespace llima
