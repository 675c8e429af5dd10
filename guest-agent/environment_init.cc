#include "environment_init.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>

#include "absl/strings/str_cat.h"
#include "mount_apply.h"
#include "mount_plan.h"
#include "process_title.h"
#include "reap_forever.h"
#include "syscalls.h"

namespace llima {
namespace {

[[noreturn]] void FailSetup(int ready_fd, const absl::Status& status) {
  std::string message(status.message());
  WriteAll(ready_fd, message.data(), message.size());
  _exit(1);
}

// Init needs no privilege once the root is built: it only reaps.
bool DropAllCapabilities() {
  for (int cap = 0; cap <= 63; ++cap) {
    if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 && errno != EINVAL) return false;
  }
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[2]{};
  return syscall(SYS_capset, &header, data) == 0 && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0;
}

}  // namespace

void RunEnvironmentInit(const internal::SpawnInit& spec, int project_tree, int home_tree,
                        int ready_fd, int init_program) {
  // Signals from the agent's terminal or session must not reach the environment.
  setsid();
  SetProcessTitle(absl::StrCat("llima-init ", spec.record().name()));
  // Its memory holds nothing secret, but no one inside should ptrace or read it.
  prctl(PR_SET_DUMPABLE, 0);

  const internal::EnvironmentRecord& record = spec.record();
  RootSpec root_spec{
      .name = record.name(),
      .project_path = record.project_path(),
      .home_path = absl::StrCat("/home/", record.name()),
      .passwd = spec.passwd(),
      .group = spec.group(),
      .host = ReadHostLayout(),
  };
  const int trees[] = {project_tree, home_tree};
  if (auto s = ApplyMountPlan(PlanEnvironmentRoot(root_spec), spec.staging_root(), trees);
      !s.ok()) {
    FailSetup(ready_fd, s);
  }
  if (auto s = PivotToRoot(spec.staging_root()); !s.ok()) FailSetup(ready_fd, s);
  if (sethostname(record.name().data(), record.name().size()) != 0) {
    FailSetup(ready_fd, absl::InternalError(absl::StrCat("sethostname: ", strerror(errno))));
  }
  if (!DropAllCapabilities()) {
    FailSetup(ready_fd, absl::InternalError(absl::StrCat("drop capabilities: ", strerror(errno))));
  }

  sigset_t all;
  sigfillset(&all);
  sigprocmask(SIG_BLOCK, &all, nullptr);
  WriteAll(ready_fd, "ok", 2);

  // Become llima-init, which holds nothing of the fork server's memory. The signal mask, the
  // session, the namespaces and the root stay; so do the pid and its start time, which the
  // agent has recorded. llima-init says "up" on descriptor 3, the agent's pipe; if the exec
  // fails, this process says why and reaps in llima-init's place.
  std::string name = record.name();
  char* argv[] = {const_cast<char*>("llima-init"), name.data(), nullptr};
  char* envp[] = {nullptr};
  if (init_program == kInitReportFd) init_program = fcntl(init_program, F_DUPFD_CLOEXEC, 4);
  if (ready_fd == kInitReportFd) {
    fcntl(ready_fd, F_SETFD, 0);
  } else if (dup2(ready_fd, kInitReportFd) == kInitReportFd) {
    close(ready_fd);
    ready_fd = kInitReportFd;
  }
  syscall(SYS_execveat, init_program, "", argv, envp, AT_EMPTY_PATH);
  std::string why = absl::StrCat("exec llima-init: ", strerror(errno));
  WriteAll(ready_fd, why.data(), why.size());
  ReapForever();
}

}  // namespace llima
