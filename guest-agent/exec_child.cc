#include "exec_child.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <linux/securebits.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <linux/seccomp.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "posix_error.h"
#include "syscalls.h"

namespace llima {
namespace {

constexpr int kErrorFd = 3;
constexpr int kFirstMovedFd = 10;

// From here on nothing allocates: the plan was prepared before fork.

[[noreturn]] void Fail(const char* step) {
  ExecSetupError error{};
  error.error_number = errno;
  strncpy(error.step, step, sizeof(error.step) - 1);
  WriteAll(kErrorFd, &error, sizeof(error));
  _exit(126);
}

void WriteText(int fd, const char* text) { WriteAll(fd, text, strlen(text)); }

// The securebits set and locked before the uid change: root gains nothing by uid 0 or setuid-root
// programs (NOROOT), a uid change keeps its hands off the capability sets (NO_SETUID_FIXUP; they
// are cleared explicitly below), capabilities never survive a uid change (KEEP_CAPS off and
// locked) and the ambient set cannot be raised. Locked, so the program cannot undo any of it.
constexpr unsigned long kSecureBits =
    SECBIT_NOROOT | SECBIT_NOROOT_LOCKED | SECBIT_NO_SETUID_FIXUP |
    SECBIT_NO_SETUID_FIXUP_LOCKED | SECBIT_KEEP_CAPS_LOCKED | SECBIT_NO_CAP_AMBIENT_RAISE |
    SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED;

// Locks the securebits, drops every capability from the bounding and ambient sets, becomes
// uid/gid with no supplementary groups and clears the remaining sets; then checks with capget
// that nothing is left.
void DropPrivileges(uid_t uid, gid_t gid) {
  if (prctl(PR_SET_SECUREBITS, kSecureBits, 0, 0, 0) != 0) Fail("lock the securebits");
  for (int cap = 0; cap <= 63; ++cap) {
    int in_set = prctl(PR_CAPBSET_READ, cap, 0, 0, 0);
    if (in_set < 0) {
      if (errno == EINVAL) break;  // past the last capability this kernel knows
      Fail("read the bounding set");
    }
    // The fork server emptied the set already; each drop left to do is a credential change.
    if (in_set != 0 && prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0) Fail("drop capabilities");
  }
  if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0) Fail("clear ambient set");
  // Raw system calls: glibc's set*id wrappers synchronize threads; there is only this one.
  if (syscall(SYS_setgroups, 0, nullptr) != 0) Fail("clear supplementary groups");
  if (syscall(SYS_setresgid, gid, gid, gid) != 0) Fail("set group id");
  if (syscall(SYS_setresuid, uid, uid, uid) != 0) Fail("set user id");
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[2]{};
  if (syscall(SYS_capset, &header, data) != 0) Fail("clear capabilities");
  if (syscall(SYS_capget, &header, data) != 0) Fail("read capabilities");
  for (const auto& d : data) {
    if (d.effective != 0 || d.permitted != 0 || d.inheritable != 0) {
      errno = EPERM;
      Fail("capabilities left after dropping privileges");
    }
  }
  if (prctl(PR_GET_SECUREBITS, 0, 0, 0, 0) != static_cast<int>(kSecureBits)) {
    errno = EPERM;
    Fail("securebits not locked");
  }
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) Fail("set no_new_privs");
  // The uid change reset the dumpable flag to fs.suid_dumpable; until execve this process still
  // holds the error pipe to the fork server, so the user's other processes must not attach.
  if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) Fail("clear the dumpable flag");
}

[[noreturn]] void Execute(const ExecChildPlan& plan) {
  int error = ENOENT;
  bool saw_eacces = false;
  for (const std::string& candidate : plan.candidates) {
    execve(candidate.c_str(), plan.argv.data(), plan.envp.data());
    if (errno == EACCES) {
      saw_eacces = true;
    } else if (errno != ENOENT && errno != ENOTDIR) {
      error = errno;
      break;
    }
  }
  if (error == ENOENT && saw_eacces) error = EACCES;
  WriteText(STDERR_FILENO, plan.argv[0]);
  if (error == ENOENT && plan.searched_path) {
    WriteText(STDERR_FILENO, ": command not found\n");
  } else {
    WriteText(STDERR_FILENO, ": ");
    WriteText(STDERR_FILENO, strerror(error));
    WriteText(STDERR_FILENO, "\n");
  }
  _exit(error == ENOENT ? 127 : 126);
}

}  // namespace

absl::StatusOr<ExecChildPlan> PrepareExecChild(const internal::SpawnExec& spec,
                                               const std::vector<int>& fds) {
  if (fds.size() < kExecErrorPipe + 1 || fds.size() > kExecFdCount) {
    return absl::InvalidArgumentError("exec request with a wrong number of descriptors");
  }
  if (spec.argv().empty()) return absl::InvalidArgumentError("exec request without argv");
  ExecChildPlan plan;
  for (size_t i = 0; i < fds.size(); ++i) plan.fds[i] = fds[i];
  plan.uid = spec.uid();
  plan.gid = spec.gid();
  plan.working_dir = spec.working_dir();
  plan.tty = spec.tty();
  plan.argv_storage.assign(spec.argv().begin(), spec.argv().end());
  plan.envp_storage.assign(spec.envp().begin(), spec.envp().end());
  for (std::string& arg : plan.argv_storage) plan.argv.push_back(arg.data());
  plan.argv.push_back(nullptr);
  for (std::string& var : plan.envp_storage) plan.envp.push_back(var.data());
  plan.envp.push_back(nullptr);
  const std::string& program = spec.argv(0);
  if (program.find('/') != std::string::npos) {
    plan.candidates.push_back(program);
  } else {
    plan.searched_path = true;
    for (absl::string_view dir : absl::StrSplit(spec.search_path(), ':')) {
      plan.candidates.push_back(dir.empty() ? program : absl::StrCat(dir, "/", program));
    }
  }
  return plan;
}

void ExecChildMain(const ExecChildPlan* plan_ptr) {
  const ExecChildPlan& plan = *plan_ptr;
  // Move every received descriptor above the standard ones and the error pipe's slot, so the
  // dup2 calls below cannot clobber one that is still needed.
  int fds[kExecFdCount];
  for (int i = 0; i < kExecFdCount; ++i) {
    fds[i] = plan.fds[i] < 0 ? -1 : fcntl(plan.fds[i], F_DUPFD_CLOEXEC, kFirstMovedFd);
    if (plan.fds[i] >= 0 && fds[i] < 0) _exit(126);
  }
  // The error pipe goes to a fixed descriptor first so that Fail() can always reach it.
  if (dup3(fds[kExecErrorPipe], kErrorFd, O_CLOEXEC) < 0) _exit(126);
  // Born in the environment's pid namespace: this is the pid its processes see.
  int32_t self = static_cast<int32_t>(syscall(SYS_getpid));
  WriteAll(kErrorFd, &self, sizeof(self));

  // The signal mask is inherited across execve: undo the fork server's blocked SIGCHLD.
  // (Dispositions are already the defaults: the fork server reset them.)
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);

  if (setns(fds[kExecMountNs], CLONE_NEWNS) != 0) Fail("enter the mount namespace");
  if (setns(fds[kExecIpcNs], CLONE_NEWIPC) != 0) Fail("enter the ipc namespace");
  if (setns(fds[kExecUtsNs], CLONE_NEWUTS) != 0) Fail("enter the uts namespace");
  if (setsid() < 0) Fail("start a session");

  if (dup2(fds[kExecStdin], STDIN_FILENO) < 0 || dup2(fds[kExecStdout], STDOUT_FILENO) < 0 ||
      dup2(fds[kExecStderr], STDERR_FILENO) < 0) {
    Fail("set up standard streams");
  }
  // The new session's controlling terminal: job control, ^C and SIGWINCH reach its foreground.
  if (plan.tty && ioctl(STDIN_FILENO, TIOCSCTTY, 0) != 0) Fail("acquire the controlling terminal");
  // Nothing else of the agent's may reach the program.
  if (close_range(kErrorFd + 1, ~0U, 0) != 0) Fail("close inherited descriptors");

  DropPrivileges(plan.uid, plan.gid);
  // After no_new_privs (which lets an unprivileged process install it), before execve. Never
  // fail open: no filter, no program.
  if (plan.seccomp == nullptr || plan.seccomp->empty()) {
    errno = EINVAL;
    Fail("load the seccomp filter (none was built)");
  }
  sock_fprog program{static_cast<unsigned short>(plan.seccomp->size()),
                     const_cast<sock_filter*>(plan.seccomp->data())};
  if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &program) != 0) {
    Fail("load the seccomp filter");
  }
  // After dropping privileges, so the directory is checked with the user's permissions.
  if (chdir(plan.working_dir.c_str()) != 0) Fail("change to the working directory");
  Execute(plan);
}

}  // namespace llima
