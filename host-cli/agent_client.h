#pragma once

// A client of llima-agent's gRPC API over its Unix socket.

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "llima/v1/agent.grpc.pb.h"

namespace llima {

class AgentClient {
 public:
  explicit AgentClient(const std::string& socket_path);

  absl::StatusOr<v1::Environment> Create(const std::string& project_path,
                                         const std::string& name = "");
  absl::StatusOr<v1::Environment> Get(const v1::GetEnvironmentRequest& request);
  absl::StatusOr<std::vector<v1::Environment>> List();
  absl::Status Delete(const std::string& name);

  // Runs a process and streams it: bytes read from `stdin_fd` (-1: none) go to its stdin, its
  // stdout and stderr to `stdout_fd` and `stderr_fd`. Returns how it ended.
  absl::StatusOr<v1::ExecExited> Exec(const v1::ExecStart& start, int stdin_fd, int stdout_fd,
                                      int stderr_fd);

  const std::string& socket_path() const { return socket_path_; }

 private:
  absl::Status FromGrpc(const grpc::Status& status) const;

  std::string socket_path_;
  std::unique_ptr<v1::AgentService::Stub> stub_;
};

}  // namespace llima
