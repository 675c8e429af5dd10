#pragma once

// The whole life of an environment's PID 1 once its root stands: shared by llima-init
// (init_main.cc) and by the init the fork server cloned, should it fail to become llima-init.
// Header-only and libc-only, as llima-init links nothing else.

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

namespace llima {

// Where llima-init finds the agent's pipe, to report "up" on once it runs.
inline constexpr int kInitReportFd = 3;

// Closes every descriptor (stdin, stdout and stderr become /dev/null) and reaps children until
// killed. SIGCHLD must be blocked: it is waited for, not handled.
[[noreturn]] inline void ReapForever() {
  close_range(0, ~0U, 0);
  if (open("/dev/null", O_RDWR) == 0) {
    dup2(0, 1);
    dup2(0, 2);
  }
  sigset_t chld;
  sigemptyset(&chld);
  sigaddset(&chld, SIGCHLD);
  for (;;) {
    // Children that ended before the first wait are reaped on the first round.
    while (waitpid(-1, nullptr, WNOHANG) > 0) {
    }
    siginfo_t info;
    sigwaitinfo(&chld, &info);
  }
}

}  // namespace llima
