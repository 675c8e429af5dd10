// llima-init: PID 1 of an environment, and nothing more than that.
//
// The agent's fork server clones each environment's init into the environment's new namespaces,
// where it builds the root, pivots into it, drops every capability and reports ready (see
// environment_init.cc). It then becomes this program, started from a descriptor opened before
// the pivot: from then on the environment's PID 1 holds none of the memory it was cloned with,
// the fork server's, which is much larger (and held other environments' requests); its address
// space is this small program's alone. All it does is reap the orphans of its environment.
//
// Only the agent starts it: as PID 1 of a PID namespace, with every signal blocked.

#include <signal.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "reap_forever.h"

int main(int argc, char** argv) {
  sigset_t all;
  sigfillset(&all);
  sigprocmask(SIG_BLOCK, &all, nullptr);
  if (getpid() != 1 || argc != 2) {
    fprintf(stderr,
            "llima-init: the init of an environment, started by llima-agent only (as PID 1 of "
            "the environment, with its name as the one argument)\n");
    return 2;
  }
  // execve made it dumpable again: no one inside may read its memory or attach to it.
  prctl(PR_SET_DUMPABLE, 0);
  // What ps shows as its name (execve from a descriptor named it after the descriptor).
  char name[16];
  snprintf(name, sizeof(name), "llima-init %s", argv[1]);
  prctl(PR_SET_NAME, name);
  // The agent waits for this before it counts the environment as created.
  (void)!write(llima::kInitReportFd, "up", 2);

  llima::ReapForever();
}
