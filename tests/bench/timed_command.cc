#include "timed_command.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "posix_error.h"
#include "unique_fd.h"

extern char** environ;

namespace llima::bench {
namespace {

// Spawned with posix_spawn, which does not copy this process's page tables the way fork does:
// what is timed is the command, not the size of the benchmark program.
class Child {
 public:
  Child() = default;
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;
  // A child left behind by an error is killed and reaped.
  ~Child() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
  }

  // stdin comes from `stdin_fd`, or /dev/null when it is -1; stdout goes to `stdout_fd`, or
  // /dev/null when it is -1; stderr is kept for the error unless `own_stderr` leaves it to this
  // process's.
  absl::Status Spawn(const std::vector<std::string>& argv, int stdout_fd, bool own_stderr = false,
                     int stdin_fd = -1) {
    command_ = absl::StrJoin(argv, " ");
    if (!own_stderr) {
      stderr_.reset(memfd_create("stderr", MFD_CLOEXEC));
      if (!stderr_) return PosixError(errno, "memfd_create");
    }
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    if (stdin_fd >= 0) {
      posix_spawn_file_actions_adddup2(&actions, stdin_fd, 0);
    } else {
      posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
    }
    if (stdout_fd >= 0) {
      posix_spawn_file_actions_adddup2(&actions, stdout_fd, 1);
    } else {
      posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
    }
    if (stderr_) posix_spawn_file_actions_adddup2(&actions, stderr_.get(), 2);
    std::vector<char*> args;
    for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    int error = posix_spawnp(&pid_, args[0], &actions, nullptr, args.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    if (error != 0) return PosixError(error, absl::StrCat("spawn ", command_));
    return absl::OkStatus();
  }

  absl::Status Wait() {
    int status;
    while (waitpid(pid_, &status, 0) < 0) {
      if (errno != EINTR) return PosixError(errno, absl::StrCat("wait for ", command_));
    }
    pid_ = -1;
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return absl::OkStatus();
    std::string err(stderr_ ? 4096 : 0, '\0');
    ssize_t n = stderr_ ? pread(stderr_.get(), err.data(), err.size(), 0) : 0;
    err.resize(n > 0 ? static_cast<size_t>(n) : 0);
    return absl::InternalError(absl::StrCat(command_, ": ",
                                            WIFEXITED(status)
                                                ? absl::StrCat("exit ", WEXITSTATUS(status))
                                                : absl::StrCat("signal ", WTERMSIG(status)),
                                            err.empty() ? "" : ": ", err));
  }

 private:
  std::string command_;
  UniqueFd stderr_;
  pid_t pid_ = -1;
};

}  // namespace

absl::StatusOr<double> TimeCommand(const std::vector<std::string>& argv) {
  Child child;
  auto start = std::chrono::steady_clock::now();
  if (absl::Status s = child.Spawn(argv, -1); !s.ok()) return s;
  if (absl::Status s = child.Wait(); !s.ok()) return s;
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
      .count();
}

namespace {

// Reads `fd` to its end and hands each chunk to `consume`.
template <typename Consume>
absl::Status ReadToEnd(int fd, const char* what, Consume consume) {
  // The buffer cat uses (128 KiB).
  static char buffer[128 << 10];
  for (;;) {
    ssize_t n = read(fd, buffer, sizeof(buffer));
    if (n == 0) return absl::OkStatus();
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return PosixError(errno, what);
    consume(buffer, static_cast<size_t>(n));
  }
}

// Spawns argv with stdout on a pipe and hands each chunk read from it to `consume`.
template <typename Consume>
absl::Status ReadCommandOutput(const std::vector<std::string>& argv, bool own_stderr,
                               Consume consume) {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) return PosixError(errno, "pipe2");
  UniqueFd read_end(fds[0]);
  UniqueFd write_end(fds[1]);
  Child child;
  if (absl::Status s = child.Spawn(argv, write_end.get(), own_stderr); !s.ok()) return s;
  write_end.reset();
  if (absl::Status s = ReadToEnd(read_end.get(), "read the pipe", consume); !s.ok()) return s;
  return child.Wait();
}

}  // namespace

absl::StatusOr<uint64_t> DrainCommandOutput(const std::vector<std::string>& argv) {
  uint64_t total = 0;
  absl::Status s =
      ReadCommandOutput(argv, /*own_stderr=*/false, [&](const char*, size_t n) { total += n; });
  if (!s.ok()) return s;
  return total;
}

absl::StatusOr<uint64_t> RelayCommandOutput(const std::vector<std::string>& argv, int pipe_size) {
  int pipe_fds[2];
  if (pipe2(pipe_fds, O_CLOEXEC) != 0) return PosixError(errno, "pipe2");
  UniqueFd pipe_read(pipe_fds[0]);
  UniqueFd pipe_write(pipe_fds[1]);
  if (fcntl(pipe_write.get(), F_SETPIPE_SZ, pipe_size) < 0) {
    return PosixError(errno, "set the pipe's size");
  }
  int socket_fds[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, socket_fds) != 0) {
    return PosixError(errno, "socketpair");
  }
  UniqueFd socket_read(socket_fds[0]);
  UniqueFd socket_write(socket_fds[1]);
  Child command;
  Child relay;
  if (absl::Status s = command.Spawn(argv, pipe_write.get()); !s.ok()) return s;
  pipe_write.reset();
  if (absl::Status s = relay.Spawn({"dd", "bs=1M", "status=none"}, socket_write.get(),
                                   /*own_stderr=*/false, pipe_read.get());
      !s.ok()) {
    return s;
  }
  pipe_read.reset();
  socket_write.reset();
  uint64_t total = 0;
  if (absl::Status s = ReadToEnd(socket_read.get(), "read the socket",
                                 [&](const char*, size_t n) { total += n; });
      !s.ok()) {
    return s;
  }
  if (absl::Status s = relay.Wait(); !s.ok()) return s;
  if (absl::Status s = command.Wait(); !s.ok()) return s;
  return total;
}

absl::Status RunCapturingOutput(const std::vector<std::string>& argv, std::string* out) {
  out->clear();
  return ReadCommandOutput(argv, /*own_stderr=*/true,
                           [&](const char* data, size_t n) { out->append(data, n); });
}

}  // namespace llima::bench
