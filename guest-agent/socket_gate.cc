#include "socket_gate.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <grpcpp/generic/async_generic_service.h>
#include <grpcpp/server_posix.h>

#include "absl/strings/str_cat.h"
#include "log.h"
#include "posix_error.h"
#include "syscalls.h"

#ifndef SO_PEERPIDFD
#define SO_PEERPIDFD 77  // Linux 6.5
#endif

namespace llima {
namespace {

// Ends every call at once.
class RefusingReactor : public grpc::ServerGenericBidiReactor {
 public:
  RefusingReactor() {
    Finish(grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                        "llima-agent does not serve processes inside an environment"));
  }
  void OnDone() override { delete this; }
};

class RefusingService : public grpc::CallbackGenericService {
 public:
  grpc::ServerGenericBidiReactor* CreateReactor(grpc::GenericCallbackServerContext*) override {
    return new RefusingReactor();
  }
};

}  // namespace

absl::StatusOr<std::unique_ptr<SocketGate>> SocketGate::Listen(const std::string& path,
                                                               uid_t owner) {
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  if (path.size() >= sizeof(address.sun_path)) {
    return absl::InvalidArgumentError(absl::StrCat("socket path ", path, " is too long"));
  }
  memcpy(address.sun_path, path.c_str(), path.size() + 1);
  UniqueFd listener(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!listener) return PosixError(errno, "create socket");
  // 0600 from the start: nobody but root can connect before the owner is set.
  mode_t old_umask = umask(0177);
  int bound = bind(listener.get(), reinterpret_cast<sockaddr*>(&address), sizeof(address));
  int bind_errno = errno;
  umask(old_umask);
  if (bound != 0) return PosixError(bind_errno, absl::StrCat("bind ", path));
  struct stat st;
  if (lstat(path.c_str(), &st) != 0) return PosixError(errno, absl::StrCat("stat ", path));
  if (chown(path.c_str(), owner, static_cast<gid_t>(-1)) != 0) {
    return PosixError(errno, absl::StrCat("chown ", path));
  }
  if (listen(listener.get(), 128) != 0) return PosixError(errno, absl::StrCat("listen on ", path));
  return std::unique_ptr<SocketGate>(
      new SocketGate(std::move(listener), path, st.st_dev, st.st_ino));
}

SocketGate::~SocketGate() { Stop(); }

void SocketGate::Serve(grpc::Server* allowed,
                       std::function<bool(dev_t, ino_t)> is_environment_mount_ns,
                       int max_connections) {
  allowed_ = allowed;
  is_environment_mount_ns_ = std::move(is_environment_mount_ns);
  max_connections_ = max_connections;
  refusal_ = std::make_unique<RefusingService>();
  grpc::ServerBuilder builder;
  builder.RegisterCallbackGenericService(refusal_.get());
  refused_ = builder.BuildAndStart();
  stop_.reset(eventfd(0, EFD_CLOEXEC));
  acceptor_ = std::thread([this] { AcceptLoop(); });
}

void SocketGate::Stop() {
  if (!acceptor_.joinable()) return;
  uint64_t one = 1;
  (void)!write(stop_.get(), &one, sizeof(one));
  acceptor_.join();
  LogRefusals();
  listener_.reset();
  // A new agent may already have bound its own socket at the path: leave that one alone.
  struct stat st;
  if (lstat(path_.c_str(), &st) == 0 && st.st_dev == path_dev_ && st.st_ino == path_ino_) {
    unlink(path_.c_str());
  }
  if (refused_) refused_->Shutdown(std::chrono::system_clock::now());
}

void SocketGate::DisconnectAll() {
  if (acceptor_.joinable()) return;  // still accepting: the list is the acceptor's
  ForgetClosedConnections();
  // Shut for reading only: gRPC reads the end of the stream and closes the connection itself,
  // after what it has already written.
  for (const Connection& c : connections_) shutdown(c.fd, SHUT_RD);
  connections_.clear();
}

void SocketGate::ForgetClosedConnections() {
  std::erase_if(connections_, [](const Connection& c) {
    struct stat st;
    return fstat(c.fd, &st) != 0 || !S_ISSOCK(st.st_mode) || st.st_ino != c.ino;
  });
}

bool SocketGate::PeerIsInsideAnEnvironment(int connection) const {
  ucred cred{};
  socklen_t length = sizeof(cred);
  if (getsockopt(connection, SOL_SOCKET, SO_PEERCRED, &cred, &length) != 0) return true;
  // The peer's pidfd, where the kernel has it, proves that the pid read below is still that
  // peer and not a process that reused the number.
  int pidfd = -1;
  length = sizeof(pidfd);
  UniqueFd peer_pidfd;
  if (getsockopt(connection, SOL_SOCKET, SO_PEERPIDFD, &pidfd, &length) == 0) {
    peer_pidfd.reset(pidfd);
  }
  struct stat ns;
  std::string path = absl::StrCat("/proc/", cred.pid, "/ns/mnt");
  if (stat(path.c_str(), &ns) != 0) return true;  // gone already: refuse
  if (peer_pidfd) {
    pollfd p{peer_pidfd.get(), POLLIN, 0};
    if (poll(&p, 1, 0) != 0) return true;  // exited meanwhile: the pid may be another's
  }
  return is_environment_mount_ns_(ns.st_dev, ns.st_ino);
}

void SocketGate::NoteRefusal() {
  ++refusals_unlogged_;
  if (absl::Now() - last_refusal_log_ >= absl::Seconds(1)) LogRefusals();
}

void SocketGate::LogRefusals() {
  if (refusals_unlogged_ == 0) return;
  LogEvent(absl::StrCat("refused ", refusals_unlogged_,
                        refusals_unlogged_ == 1 ? " connection" : " connections", ": ",
                        max_connections_, " are open, the limit (--max-connections)"));
  refusals_unlogged_ = 0;
  last_refusal_log_ = absl::Now();
}

void SocketGate::Admit(UniqueFd connection) {
  ForgetClosedConnections();
  if (static_cast<int>(connections_.size()) >= max_connections_) {
    NoteRefusal();
    return;  // closed here: the client sees the connection end
  }
  struct stat st;
  if (fstat(connection.get(), &st) != 0) return;
  connections_.push_back({connection.get(), st.st_ino});
  if (PeerIsInsideAnEnvironment(connection.get())) {
    LogEvent("refused a connection from inside an environment");
    grpc::AddInsecureChannelFromFd(refused_.get(), connection.release());
  } else {
    grpc::AddInsecureChannelFromFd(allowed_, connection.release());
  }
}

void SocketGate::AcceptLoop() {
  for (;;) {
    pollfd pfds[2] = {{listener_.get(), POLLIN, 0}, {stop_.get(), POLLIN, 0}};
    // Refusals not logged yet are logged once the second is over, also if no more come.
    int timeout = -1;
    if (refusals_unlogged_ > 0) {
      absl::Duration left = last_refusal_log_ + absl::Seconds(1) - absl::Now();
      timeout = static_cast<int>(
          std::max<int64_t>(0, absl::ToInt64Milliseconds(absl::Ceil(left, absl::Milliseconds(1)))));
    }
    int ready = poll(pfds, 2, timeout);
    if (ready < 0) {
      if (errno == EINTR) continue;
      return;
    }
    if (pfds[1].revents) return;
    if (ready == 0) {
      LogRefusals();
      continue;
    }
    UniqueFd connection(accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
    if (!connection) {
      if (errno == EMFILE || errno == ENFILE) {
        // Out of descriptors: the connection stays queued and poll would report it again at
        // once. Pause instead of spinning; closing connections frees descriptors.
        if (!out_of_descriptors_) LogEvent("cannot accept connections: out of file descriptors");
        out_of_descriptors_ = true;
        pollfd stop{stop_.get(), POLLIN, 0};
        poll(&stop, 1, 100);
      }
      continue;
    }
    out_of_descriptors_ = false;
    Admit(std::move(connection));
  }
}

}  // namespace llima
