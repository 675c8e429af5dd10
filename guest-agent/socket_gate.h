#pragma once

// The agent's Unix socket, accepted by the agent itself so that each peer is checked before
// gRPC sees it: a peer whose mount namespace is an environment's (it found a way to the
// socket from inside) is handed to a server that answers every call with PERMISSION_DENIED.
//
// The gate also bounds the connections open at once: past the limit a new connection is
// closed as soon as it is accepted (the client sees UNAVAILABLE), and the reason is logged,
// at most once a second under a flood; the connections already open keep being served.

#include <grpcpp/grpcpp.h>
#include <sys/types.h>

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "unique_fd.h"

namespace llima {

class SocketGate {
 public:
  // Binds `path` (mode 0600 from the start, then owned by `owner`) and listens.
  static absl::StatusOr<std::unique_ptr<SocketGate>> Listen(const std::string& path, uid_t owner);
  ~SocketGate();

  // Accepts connections until Stop(): to `allowed`, or to the refusing server when
  // `is_environment_mount_ns(dev, ino)` says the peer lives in an environment. At most
  // `max_connections` are open at once, both kinds counted.
  void Serve(grpc::Server* allowed, std::function<bool(dev_t, ino_t)> is_environment_mount_ns,
             int max_connections);
  // Stops accepting: closes the listening socket and removes its path, unless another agent
  // has bound a socket there meanwhile. Clients that connect later find no agent.
  void Stop();
  // Ends the connections handed over that are still open, as if their clients had hung up, so
  // that idle clients cannot hold up the server's shutdown. Only after Stop().
  void DisconnectAll();

 private:
  // A connection handed to gRPC, which owns and closes the descriptor. The socket's inode tells
  // whether the number still names that connection or has been reused.
  struct Connection {
    int fd;
    ino_t ino;
  };

  SocketGate(UniqueFd listener, std::string path, dev_t path_dev, ino_t path_ino)
      : listener_(std::move(listener)),
        path_(std::move(path)),
        path_dev_(path_dev),
        path_ino_(path_ino) {}
  void AcceptLoop();
  void Admit(UniqueFd connection);
  bool PeerIsInsideAnEnvironment(int connection) const;
  // Drops the connections gRPC has closed.
  void ForgetClosedConnections();
  // Counts a connection refused at the limit; logs at most once a second.
  void NoteRefusal();
  void LogRefusals();

  UniqueFd listener_;
  const std::string path_;
  const dev_t path_dev_;
  const ino_t path_ino_;
  UniqueFd stop_;
  grpc::Server* allowed_ = nullptr;
  std::unique_ptr<grpc::CallbackGenericService> refusal_;
  std::unique_ptr<grpc::Server> refused_;
  std::function<bool(dev_t, ino_t)> is_environment_mount_ns_;
  int max_connections_ = 0;
  std::thread acceptor_;

  // Owned by the acceptor thread while it runs.
  std::vector<Connection> connections_;
  int refusals_unlogged_ = 0;
  absl::Time last_refusal_log_ = absl::InfinitePast();
  bool out_of_descriptors_ = false;
};

}  // namespace llima
