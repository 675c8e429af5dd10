#include "fork_server.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <climits>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "environment_init.h"
#include "exec_child.h"
#include "log.h"
#include "posix_error.h"
#include "process_title.h"
#include "seccomp_policy.h"
#include "syscalls.h"

namespace llima {
namespace {

constexpr size_t kMaxFds = 16;

bool SendMessage(int sock, const google::protobuf::MessageLite& message,
                 absl::Span<const int> fds, int* error) {
  std::string data = message.SerializeAsString();
  iovec iov{data.data(), data.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFds)];
  if (!fds.empty()) {
    msg.msg_control = control;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
    cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    memcpy(CMSG_DATA(cmsg), fds.data(), sizeof(int) * fds.size());
  }
  for (;;) {
    if (sendmsg(sock, &msg, MSG_NOSIGNAL) >= 0) return true;
    if (errno != EINTR) break;
  }
  *error = errno;
  return false;
}

// Receives one message and its descriptors into `buffer`, grown to fit. Returns the message
// size, 0 at end of stream, -1 on error (errno set). Descriptors arrive close-on-exec.
ssize_t ReceiveMessage(int sock, std::vector<char>& buffer, std::vector<UniqueFd>* fds) {
  ssize_t size;
  do {
    size = recv(sock, nullptr, 0, MSG_PEEK | MSG_TRUNC);
  } while (size < 0 && errno == EINTR);
  if (size <= 0) return size;
  if (static_cast<size_t>(size) > kMaxForkServerMessage) {
    errno = EMSGSIZE;
    return -1;
  }
  if (buffer.size() < static_cast<size_t>(size)) buffer.resize(static_cast<size_t>(size));
  iovec iov{buffer.data(), buffer.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFds)];
  msg.msg_control = control;
  msg.msg_controllen = sizeof(control);
  ssize_t n;
  do {
    n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
  } while (n < 0 && errno == EINTR);
  if (n < 0) return -1;
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < count; ++i) {
      int fd;
      memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
      if (fds) fds->emplace_back(fd);
      else close(fd);
    }
  }
  if (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) {
    errno = EMSGSIZE;
    return -1;
  }
  return n;
}

// ---------------------------------------------------------------------------------------------
// The server process.

class Server {
 public:
  Server(int sock, int init_program)
      : sock_(sock), init_program_(init_program), buffer_(64 * 1024) {}

  [[noreturn]] void Run() {
    // Children inherit signal dispositions across execve; give them defaults once, here
    // (a service manager may have started the agent with SIGPIPE ignored).
    for (int sig = 1; sig < NSIG; ++sig) {
      if (sig != SIGKILL && sig != SIGSTOP) signal(sig, SIG_DFL);
    }
    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    sigprocmask(SIG_BLOCK, &chld, nullptr);
    UniqueFd sigfd(signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK));
    own_pid_ns_.reset(open("/proc/self/ns/pid", O_RDONLY | O_CLOEXEC));
    if (!sigfd || !own_pid_ns_) _exit(1);
    // No process started here may gain a capability at execve: inits become llima-init with
    // none left, and exec'd programs run without any. The bounding set is emptied once, here, and
    // every child inherits it, instead of 41 credential changes in each exec'd child (0.1 ms). This
    // process keeps the capabilities it holds; the bounding set only limits what execve grants.
    // Each child still checks the set and drops what is left.
    for (int cap = 0; cap <= 63; ++cap) {
      if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0) break;  // EINVAL: past the last one
    }
    // Built once: every exec'd child loads this same program.
    absl::StatusOr<std::vector<sock_filter>> filter = BuildSeccompFilter();
    if (filter.ok()) {
      seccomp_ = std::move(*filter);
    } else {
      seccomp_error_ = std::string(filter.status().message());
    }

    for (;;) {
      pollfd pfds[2] = {{sock_, POLLIN, 0}, {sigfd.get(), POLLIN, 0}};
      if (poll(pfds, 2, -1) < 0) {
        if (errno == EINTR) continue;
        _exit(1);
      }
      if (pfds[1].revents & POLLIN) {
        signalfd_siginfo info;
        while (read(sigfd.get(), &info, sizeof(info)) == sizeof(info)) {
        }
        ReapChildren();
      }
      if (pfds[0].revents & (POLLIN | POLLHUP | POLLERR)) {
        std::vector<UniqueFd> fds;
        ssize_t n = ReceiveMessage(sock_, buffer_, &fds);
        if (n == 0) _exit(0);  // the agent is gone
        if (n < 0) {
          if (errno != EMSGSIZE) _exit(1);
          // The agent checks sizes first; drop an oversized request rather than die.
          recv(sock_, nullptr, 0, MSG_TRUNC);
          continue;
        }
        internal::ForkServerRequest request;
        if (!request.ParseFromArray(buffer_.data(), static_cast<int>(n))) continue;
        Handle(request, fds);
      }
    }
  }

 private:
  void Reply(const internal::ForkServerReply& reply, int pidfd = -1) {
    internal::ForkServerMessage message;
    *message.mutable_reply() = reply;
    int error;
    std::vector<int> fds;
    if (pidfd >= 0) fds.push_back(pidfd);
    if (!SendMessage(sock_, message, fds, &error)) _exit(1);
  }

  void ReplyError(uint64_t id, int err, std::string what) {
    internal::ForkServerReply reply;
    reply.set_id(id);
    reply.set_error_errno(err);
    reply.set_error(std::string(PosixError(err, what).message()));
    Reply(reply);
  }

  void Handle(const internal::ForkServerRequest& request, std::vector<UniqueFd>& fds) {
    std::vector<int> raw;
    for (const UniqueFd& fd : fds) raw.push_back(fd.get());
    switch (request.request_case()) {
      case internal::ForkServerRequest::kInit:
        return StartInit(request.id(), request.init(), raw);
      case internal::ForkServerRequest::kExec:
        return StartExec(request.id(), request.exec(), raw);
      default:
        return ReplyError(request.id(), EINVAL, "unknown fork server request");
    }
  }

  void StartInit(uint64_t id, const internal::SpawnInit& spec, const std::vector<int>& fds) {
    if (fds.size() < 3) return ReplyError(id, EINVAL, "init request without descriptors");
    int pidfd = -1;
    clone_args args{};
    args.flags = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_PIDFD;
    args.pidfd = reinterpret_cast<uint64_t>(&pidfd);
    if (fds.size() > 3) {
      args.flags |= CLONE_INTO_CGROUP;
      args.cgroup = static_cast<uint64_t>(fds[3]);
    }
    args.exit_signal = SIGCHLD;
    long pid = Clone3(&args);
    if (pid < 0) return ReplyError(id, errno, "clone the environment's init");
    if (pid == 0) RunEnvironmentInit(spec, fds[0], fds[1], fds[2], init_program_);
    UniqueFd owned_pidfd(pidfd);
    internal::ForkServerReply reply;
    reply.set_id(id);
    reply.set_pid(static_cast<int32_t>(pid));
    Reply(reply, owned_pidfd.get());
  }

  void StartExec(uint64_t id, const internal::SpawnExec& spec, const std::vector<int>& fds) {
    if (seccomp_.empty()) {
      return ReplyError(id, ENOSYS, "no seccomp filter, so no exec: " + seccomp_error_);
    }
    absl::StatusOr<ExecChildPlan> plan = PrepareExecChild(spec, fds);
    if (!plan.ok()) return ReplyError(id, EINVAL, std::string(plan.status().message()));
    plan->seccomp = &seccomp_;
    // Children forked from now on are born in the environment's pid namespace; the fork server
    // itself stays where it is.
    if (setns(fds[kExecPidNs], CLONE_NEWPID) != 0) {
      return ReplyError(id, errno, "enter the environment's pid namespace");
    }
    // A plain fork, not vfork: the child becomes the environment's user before execve, and
    // another process of that user could stop it there and with it a suspended fork server.
    int pidfd = -1;
    clone_args args{};
    args.flags = CLONE_PIDFD;
    args.pidfd = reinterpret_cast<uint64_t>(&pidfd);
    if (fds.size() > kExecCgroup) {
      args.flags |= CLONE_INTO_CGROUP;
      args.cgroup = static_cast<uint64_t>(fds[kExecCgroup]);
    }
    args.exit_signal = SIGCHLD;
    long pid = Clone3(&args);
    int clone_errno = errno;
    if (pid == 0) ExecChildMain(&*plan);
    // Back to our own namespace for children: a new environment's pid namespace must not be
    // nested in this one's.
    if (setns(own_pid_ns_.get(), CLONE_NEWPID) != 0) _exit(1);
    if (pid < 0) return ReplyError(id, clone_errno, "fork into the environment");
    UniqueFd owned_pidfd(pidfd);
    internal::ForkServerReply reply;
    reply.set_id(id);
    reply.set_pid(static_cast<int32_t>(pid));
    Reply(reply, owned_pidfd.get());
  }

  void ReapChildren() {
    for (;;) {
      int status;
      pid_t pid = waitpid(-1, &status, WNOHANG);
      if (pid <= 0) return;
      internal::ForkServerMessage message;
      message.mutable_exited()->set_pid(pid);
      message.mutable_exited()->set_wait_status(status);
      int error;
      if (!SendMessage(sock_, message, {}, &error)) _exit(1);
    }
  }

  int sock_;
  int init_program_;
  std::vector<char> buffer_;
  UniqueFd own_pid_ns_;
  std::vector<sock_filter> seccomp_;
  std::string seccomp_error_;
};

}  // namespace

// ---------------------------------------------------------------------------------------------

ExitWatch::ExitWatch() : event_fd_(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {}

std::optional<int> ExitWatch::status() const {
  std::lock_guard lock(mu_);
  return status_;
}

int ExitWatch::Wait() const {
  std::unique_lock lock(mu_);
  cv_.wait(lock, [&] { return status_.has_value(); });
  return *status_;
}

void ExitWatch::Set(int wait_status) {
  {
    std::lock_guard lock(mu_);
    if (status_) return;
    status_ = wait_status;
  }
  cv_.notify_all();
  uint64_t one = 1;
  (void)!write(event_fd_.get(), &one, sizeof(one));
}

namespace {

// Refuses `path` (resolved, absolute) unless root owns it and no one else can write it.
// Directories others can write are accepted with the sticky bit (/tmp): there only an entry's
// owner can remove or rename it.
absl::Status CheckOnlyRootCanChange(const std::string& path, const struct stat& st,
                                    const std::string& what) {
  bool writable = (st.st_mode & 022) != 0 && !(S_ISDIR(st.st_mode) && (st.st_mode & S_ISVTX));
  if (st.st_uid == 0 && !writable) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat(
      what, " may be changed by others than root (", path, ": owner uid ", st.st_uid, ", mode ",
      absl::StrFormat("%04o", st.st_mode & 07777),
      "); llima-init runs as PID 1 of every environment: chown root and chmod go-w it"));
}

}  // namespace

absl::StatusOr<UniqueFd> OpenInitProgram() {
  char self[PATH_MAX];
  ssize_t length = readlink("/proc/self/exe", self, sizeof(self));
  if (length <= 0 || length >= static_cast<ssize_t>(sizeof(self)) || self[0] != '/') {
    return absl::InternalError("cannot tell where llima-agent is (/proc/self/exe)");
  }
  std::string agent_program(self, static_cast<size_t>(length));
  std::string dir = agent_program.substr(0, agent_program.rfind('/') + 1);
  const std::string candidates[] = {dir + "llima-init", dir + "../libexec/llima-box/llima-init"};
  for (const std::string& candidate : candidates) {
    char resolved[PATH_MAX];
    if (realpath(candidate.c_str(), resolved) == nullptr) {
      if (errno == ENOENT) continue;
      return PosixError(errno, absl::StrCat("resolve ", candidate));
    }
    std::string path = resolved;
    UniqueFd fd(open(path.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC));
    if (!fd) return PosixError(errno, absl::StrCat("open ", path));
    struct stat st;
    if (fstat(fd.get(), &st) != 0) return PosixError(errno, absl::StrCat("stat ", path));
    if (!S_ISREG(st.st_mode) || (st.st_mode & S_IXUSR) == 0) {
      return absl::FailedPreconditionError(absl::StrCat(path, " is not an executable file"));
    }
    if ((st.st_mode & (S_ISUID | S_ISGID)) != 0) {
      return absl::FailedPreconditionError(
          absl::StrCat(path, " is set-user-ID or set-group-ID; llima-init must not be"));
    }
    if (auto s = CheckOnlyRootCanChange(path, st, candidate); !s.ok()) return s;
    // So must the directories above it, where whoever can rename an entry can swap it: beside
    // the agent, its own directory (above that, the agent could be swapped as well); elsewhere,
    // every one up to /.
    bool beside = &candidate == &candidates[0];
    std::string up = path;
    for (;;) {
      size_t slash = up.rfind('/');
      up.resize(slash == 0 ? 1 : slash);
      struct stat dst;
      if (stat(up.c_str(), &dst) != 0) return PosixError(errno, absl::StrCat("stat ", up));
      if (auto s = CheckOnlyRootCanChange(up, dst, candidate); !s.ok()) return s;
      if (beside || up == "/") break;
    }
    return fd;
  }
  return absl::NotFoundError(absl::StrCat("llima-init, installed with llima-agent, is neither at ",
                                          candidates[0], " nor at ", candidates[1]));
}

absl::StatusOr<std::unique_ptr<ForkServer>> ForkServer::Start(UniqueFd init_program) {
  int pair[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) != 0) {
    return PosixError(errno, "create the fork server socket");
  }
  UniqueFd agent_end(pair[0]);
  UniqueFd server_end(pair[1]);
  int size = static_cast<int>(kMaxForkServerMessage + 65536);
  setsockopt(agent_end.get(), SOL_SOCKET, SO_SNDBUFFORCE, &size, sizeof(size));
  setsockopt(server_end.get(), SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof(size));

  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid < 0) return PosixError(errno, "fork the fork server");
  if (pid == 0) {
    // Die with the agent; children already started are not affected.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(0);
    SetProcessTitle("llima-agent (fork server)");
    // It holds the agent's descriptors, and its children inherit the flag until they execve:
    // no process of an environment's user may attach to one of them or open its /proc files.
    prctl(PR_SET_DUMPABLE, 0);
    // A mount namespace of its own, a slave of the agent's, without the pins the agent binds on
    // its private state directory (one per environment). Every new environment's namespace is
    // a copy of this one, and the copy walks every mount: with the pins, create time grew with
    // the number of environments. Mounts made in the VM later still arrive where / is shared,
    // as under systemd. If the kernel refuses, the copies are only slower.
    if (unshare(CLONE_NEWNS) == 0) mount(nullptr, "/", nullptr, MS_SLAVE | MS_REC, nullptr);
    int keep = server_end.release();
    agent_end.reset();
    Server(keep, init_program.release()).Run();
  }
  server_end.reset();
  init_program.reset();
  return std::unique_ptr<ForkServer>(new ForkServer(pid, std::move(agent_end)));
}

ForkServer::ForkServer(pid_t pid, UniqueFd socket) : pid_(pid), socket_(std::move(socket)) {
  reader_ = std::thread([this] { ReadLoop(); });
}

ForkServer::~ForkServer() {
  shutdown(socket_.get(), SHUT_RDWR);
  if (reader_.joinable()) reader_.join();
  Stop(absl::InfiniteDuration());
}

bool ForkServer::Exited() {
  if (reaped_) return true;
  pid_t found = waitpid(pid_, nullptr, WNOHANG);
  reaped_ = found == pid_ || (found < 0 && errno == ECHILD);
  return reaped_;
}

void ForkServer::Stop(absl::Duration wait) {
  if (reaped_) return;
  kill(pid_, SIGKILL);
  absl::Time deadline = absl::Now() + wait;
  while (!Exited() && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(5));
}

absl::StatusOr<SpawnedChild> ForkServer::SpawnInit(const internal::SpawnInit& request,
                                                   absl::Span<const int> fds) {
  internal::ForkServerRequest message;
  *message.mutable_init() = request;
  return Call(message, fds);
}

absl::StatusOr<SpawnedChild> ForkServer::SpawnExec(const internal::SpawnExec& request,
                                                   absl::Span<const int> fds) {
  internal::ForkServerRequest message;
  *message.mutable_exec() = request;
  return Call(message, fds);
}

absl::StatusOr<SpawnedChild> ForkServer::Call(internal::ForkServerRequest& request,
                                              absl::Span<const int> fds) {
  auto pending = std::make_shared<Pending>();
  {
    std::lock_guard lock(mu_);
    if (dead_) return absl::UnavailableError("the agent's fork server has exited");
    request.set_id(next_id_++);
    pending_[request.id()] = pending;
  }
  if (request.ByteSizeLong() > kMaxForkServerMessage) {
    std::lock_guard lock(mu_);
    pending_.erase(request.id());
    return absl::InvalidArgumentError("request too large (argv and environment exceed 4 MiB)");
  }
  {
    std::lock_guard lock(send_mu_);
    int error;
    if (!SendMessage(socket_.get(), request, fds, &error)) {
      std::lock_guard lock2(mu_);
      pending_.erase(request.id());
      return PosixError(error, "send a request to the fork server");
    }
  }
  std::unique_lock lock(mu_);
  cv_.wait(lock, [&] { return pending->done; });
  const internal::ForkServerReply& reply = pending->reply;
  if (!reply.error().empty()) {
    if (reply.error_errno() != 0) {
      absl::Status s = PosixError(reply.error_errno(), "");
      return absl::Status(s.code(), reply.error());
    }
    return absl::InternalError(reply.error());
  }
  return SpawnedChild{reply.pid(), std::move(pending->pidfd), pending->exit};
}

void ForkServer::ReadLoop() {
  std::vector<char> buffer(65536);
  for (;;) {
    std::vector<UniqueFd> fds;
    ssize_t n = ReceiveMessage(socket_.get(), buffer, &fds);
    if (n <= 0) break;
    internal::ForkServerMessage message;
    if (!message.ParseFromArray(buffer.data(), static_cast<int>(n))) continue;
    std::lock_guard lock(mu_);
    if (message.has_reply()) {
      auto it = pending_.find(message.reply().id());
      if (it == pending_.end()) continue;
      std::shared_ptr<Pending> pending = it->second;
      pending_.erase(it);
      pending->reply = message.reply();
      if (!fds.empty()) pending->pidfd = std::move(fds[0]);
      if (message.reply().pid() > 0) {
        // Registered before the caller wakes: the exit message may follow right away.
        pending->exit = std::make_shared<ExitWatch>();
        children_[message.reply().pid()] = pending->exit;
      }
      pending->done = true;
      cv_.notify_all();
    } else if (message.has_exited()) {
      auto it = children_.find(message.exited().pid());
      if (it == children_.end()) continue;
      it->second->Set(message.exited().wait_status());
      children_.erase(it);
    }
  }
  std::lock_guard lock(mu_);
  dead_ = true;
  for (auto& [id, pending] : pending_) {
    pending->reply.set_error("the agent's fork server has exited");
    pending->done = true;
  }
  pending_.clear();
  // The children's fate is unknown now; -1 tells waiters so.
  for (auto& [pid, watch] : children_) watch->Set(-1);
  children_.clear();
  cv_.notify_all();
  LogEvent("fork server connection closed");
}

}  // namespace llima
