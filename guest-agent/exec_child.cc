#include "exec_child.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstring>
#include <string>

#include "absl/strings/str_split.h"
#include "syscalls.h"

namespace llima {
namespace {

constexpr int kErrorFd = 3;
constexpr int kFirstMovedFd = 10;

[[noreturn]] void Fail(const char* step) {
  ExecSetupError error{};
  error.error_number = errno;
  strncpy(error.step, step, sizeof(error.step) - 1);
  WriteAll(kErrorFd, &error, sizeof(error));
  _exit(126);
}

// Drops every capability from the bounding set, then becomes uid/gid with no supplementary
// groups. Changing all uids away from 0 clears the permitted, effective and ambient sets.
void DropPrivileges(uid_t uid, gid_t gid) {
  for (int cap = 0; cap <= 63; ++cap) {
    if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 && errno != EINVAL) Fail("drop capabilities");
  }
  // Raw system calls: glibc's wrappers would try to synchronize threads this process lacks.
  if (syscall(SYS_setgroups, 0, nullptr) != 0) Fail("clear supplementary groups");
  if (syscall(SYS_setresgid, gid, gid, gid) != 0) Fail("set group id");
  if (syscall(SYS_setresuid, uid, uid, uid) != 0) Fail("set user id");
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[2]{};
  if (syscall(SYS_capget, &header, data) != 0) Fail("read capabilities");
  for (const auto& d : data) {
    if (d.effective != 0 || d.permitted != 0 || d.inheritable != 0) {
      errno = EPERM;
      Fail("capabilities left after dropping privileges");
    }
  }
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) Fail("set no_new_privs");
}

[[noreturn]] void Execute(const internal::SpawnExec& spec) {
  std::vector<char*> argv;
  for (const std::string& arg : spec.argv()) argv.push_back(const_cast<char*>(arg.c_str()));
  argv.push_back(nullptr);
  std::vector<char*> envp;
  for (const std::string& var : spec.envp()) envp.push_back(const_cast<char*>(var.c_str()));
  envp.push_back(nullptr);

  const std::string& program = spec.argv(0);
  int error = ENOENT;
  if (program.find('/') != std::string::npos) {
    execve(program.c_str(), argv.data(), envp.data());
    error = errno;
  } else {
    bool saw_eacces = false;
    for (absl::string_view dir : absl::StrSplit(spec.search_path(), ':')) {
      std::string candidate = dir.empty() ? program : std::string(dir) + "/" + program;
      execve(candidate.c_str(), argv.data(), envp.data());
      if (errno == EACCES) saw_eacces = true;
      else if (errno != ENOENT && errno != ENOTDIR) {
        error = errno;
        break;
      }
    }
    if (error == ENOENT && saw_eacces) error = EACCES;
  }
  std::string message = error == ENOENT && program.find('/') == std::string::npos
                            ? program + ": command not found\n"
                            : program + ": " + strerror(error) + "\n";
  WriteAll(STDERR_FILENO, message.data(), message.size());
  _exit(error == ENOENT ? 127 : 126);
}

}  // namespace

void RunExecChild(const internal::SpawnExec& spec, const std::vector<int>& received) {
  // Move every received descriptor above the standard ones and the error pipe's slot, so the
  // dup2 calls below cannot clobber one that is still needed.
  std::vector<int> fds;
  for (int fd : received) {
    int moved = fcntl(fd, F_DUPFD_CLOEXEC, kFirstMovedFd);
    if (moved < 0) _exit(126);
    fds.push_back(moved);
  }
  // The error pipe goes to a fixed descriptor first so that Fail() can always reach it.
  if (dup3(fds[kExecErrorPipe], kErrorFd, O_CLOEXEC) < 0) _exit(126);

  // The signal mask is inherited across execve: undo the fork server's blocked SIGCHLD.
  // (Dispositions are already the defaults: the fork server reset them.)
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);

  if (setns(fds[kExecMountNs], CLONE_NEWNS) != 0) Fail("enter the mount namespace");
  if (setns(fds[kExecIpcNs], CLONE_NEWIPC) != 0) Fail("enter the ipc namespace");
  if (setns(fds[kExecUtsNs], CLONE_NEWUTS) != 0) Fail("enter the uts namespace");
  if (setsid() < 0) Fail("start a session");

  // Standard streams.
  if (dup2(fds[kExecStdin], STDIN_FILENO) < 0 || dup2(fds[kExecStdout], STDOUT_FILENO) < 0 ||
      dup2(fds[kExecStderr], STDERR_FILENO) < 0) {
    Fail("set up standard streams");
  }
  // Nothing else of the agent's may reach the program.
  if (close_range(kErrorFd + 1, ~0U, 0) != 0) Fail("close inherited descriptors");

  DropPrivileges(spec.uid(), spec.gid());
  // After dropping privileges, so the directory is checked with the user's permissions.
  if (chdir(spec.working_dir().c_str()) != 0) Fail("change to the working directory");
  Execute(spec);
}

}  // namespace llima
