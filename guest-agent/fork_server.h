#pragma once

// The agent's gRPC threads cannot enter namespaces themselves (setns(CLONE_NEWNS) refuses a
// process whose threads share fs state), so every process that must start in a namespace is
// forked by the fork server: a single-threaded child of the agent forked before any thread
// exists. It receives requests (and the descriptors they need) over a SOCK_SEQPACKET socket,
// forks, and reports each child's pid and, later, its wait status.

#include <sys/types.h>

#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "llima/internal/agent_internal.pb.h"
#include "unique_fd.h"

namespace llima {

// Where a child's wait status arrives. fd() becomes readable when it has.
class ExitWatch {
 public:
  ExitWatch();
  int fd() const { return event_fd_.get(); }
  std::optional<int> status() const;
  // Blocks until the child has ended; returns its wait status.
  int Wait() const;
  void Set(int wait_status);

 private:
  UniqueFd event_fd_;
  mutable std::mutex mu_;
  mutable std::condition_variable cv_;
  std::optional<int> status_;
};

struct SpawnedChild {
  pid_t pid = 0;  // in the agent's pid namespace
  // A pidfd made by clone itself (CLONE_PIDFD): signals sent through it cannot reach another
  // process that reused the pid.
  UniqueFd pidfd;
  std::shared_ptr<ExitWatch> exit;
};

// Opens llima-init, the program every environment's init becomes once its root stands: beside
// this program (a build tree, or both in one directory), else in ../libexec/llima-box/ from it
// (the installed layout). It runs as PID 1 of every environment, so it must be a regular,
// executable file, not set-ID, that only root can change, in directories only root can change.
absl::StatusOr<UniqueFd> OpenInitProgram();

class ForkServer {
 public:
  // Forks the server process. Must be called while the calling process has a single thread.
  // `init_program` (from OpenInitProgram) is what the inits become.
  static absl::StatusOr<std::unique_ptr<ForkServer>> Start(UniqueFd init_program);
  ~ForkServer();

  absl::StatusOr<SpawnedChild> SpawnInit(const internal::SpawnInit& request,
                                         absl::Span<const int> fds);
  absl::StatusOr<SpawnedChild> SpawnExec(const internal::SpawnExec& request,
                                         absl::Span<const int> fds);

  pid_t pid() const { return pid_; }
  // For the agent's SIGCHLD: whether the server process has exited, reaping it if so.
  bool Exited();
  // Ends the server process and reaps it, waiting at most `wait`: one stuck in the kernel must
  // not hold the caller up. Left for PID 1, an orphan stays a zombie where PID 1 does not reap.
  void Stop(absl::Duration wait);

 private:
  ForkServer(pid_t pid, UniqueFd socket);
  absl::StatusOr<SpawnedChild> Call(internal::ForkServerRequest& request,
                                    absl::Span<const int> fds);
  void ReadLoop();

  struct Pending {
    bool done = false;
    internal::ForkServerReply reply;
    UniqueFd pidfd;
    std::shared_ptr<ExitWatch> exit;
  };

  const pid_t pid_;
  bool reaped_ = false;  // by Exited or Stop, on the agent's main thread
  UniqueFd socket_;
  std::mutex send_mu_;
  std::mutex mu_;
  std::condition_variable cv_;
  uint64_t next_id_ = 1;
  bool dead_ = false;
  absl::flat_hash_map<uint64_t, std::shared_ptr<Pending>> pending_;
  absl::flat_hash_map<pid_t, std::shared_ptr<ExitWatch>> children_;
  std::thread reader_;
};

// Largest request the fork server accepts (argv and environment of an exec included).
inline constexpr size_t kMaxForkServerMessage = 4 << 20;

}  // namespace llima
