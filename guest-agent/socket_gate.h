#pragma once

// The agent's Unix socket, accepted by the agent itself so that each peer is checked before
// gRPC sees it: a peer whose mount namespace is an environment's (it found a way to the
// socket from inside) is handed to a server that answers every call with PERMISSION_DENIED.

#include <sys/types.h>

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include <grpcpp/grpcpp.h>

#include "absl/status/statusor.h"
#include "unique_fd.h"

namespace llima {

class SocketGate {
 public:
  // Binds `path` (mode 0600 from the start, then owned by `owner`) and listens.
  static absl::StatusOr<std::unique_ptr<SocketGate>> Listen(const std::string& path, uid_t owner);
  ~SocketGate();

  // Accepts connections until Stop(): to `allowed`, or to the refusing server when
  // `is_environment_mount_ns(dev, ino)` says the peer lives in an environment.
  void Serve(grpc::Server* allowed,
             std::function<bool(dev_t, ino_t)> is_environment_mount_ns);
  void Stop();

 private:
  explicit SocketGate(UniqueFd listener) : listener_(std::move(listener)) {}
  void AcceptLoop();
  bool PeerIsInsideAnEnvironment(int connection) const;

  UniqueFd listener_;
  UniqueFd stop_;
  grpc::Server* allowed_ = nullptr;
  std::unique_ptr<grpc::CallbackGenericService> refusal_;
  std::unique_ptr<grpc::Server> refused_;
  std::function<bool(dev_t, ino_t)> is_environment_mount_ns_;
  std::thread acceptor_;
};

}  // namespace llima
