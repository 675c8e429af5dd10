#pragma once

// A client of llima-agent's gRPC API over its Unix socket (see grpc_connection.h).

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "grpc_connection.h"
#include "llima/v1/agent.pb.h"

namespace llima {

class AgentClient {
 public:
  // Connects at the first call, and again at the next one after the connection failed.
  explicit AgentClient(const std::string& socket_path);

  absl::StatusOr<v1::Environment> Create(const std::string& project_path,
                                         const std::string& name = "");
  absl::StatusOr<v1::Environment> Get(const v1::GetEnvironmentRequest& request);
  absl::StatusOr<std::vector<v1::Environment>> List();
  absl::Status Delete(const std::string& name);
  absl::StatusOr<v1::AgentInfo> Info();
  // Whether the agent answers within `timeout`.
  absl::Status Ping(absl::Duration timeout);

  // Where an exec's streams come from and go to.
  struct ExecIo {
    int stdin_fd = -1;  // -1: no input
    int stdout_fd = 1;
    int stderr_fd = 2;
    // Readable when the local terminal changed size; terminal_size() then gives the new size.
    int resize_fd = -1;
    std::function<v1::TerminalSize()> terminal_size;
  };

  // Runs a process and streams it. Returns how it ended. Input is read only once the process
  // has started.
  absl::StatusOr<v1::ExecExited> Exec(const v1::ExecStart& start, const ExecIo& io);
  // Exec in the environment of `project_path`, created first if there is none: one call
  // (ExecStart.project_path), or CreateEnvironment and Exec with an agent that predates it.
  // `start` names no environment.
  absl::StatusOr<v1::ExecExited> ExecInProject(const std::string& project_path, v1::ExecStart start,
                                               const ExecIo& io);

  const std::string& socket_path() const { return socket_path_; }

 private:
  absl::StatusOr<GrpcConnection*> Connection();
  // `started` turns true when the agent reports the process running.
  absl::StatusOr<v1::ExecExited> Exec(const v1::ExecStart& start, const ExecIo& io, bool& started);
  absl::Status Call(absl::string_view method, const google::protobuf::MessageLite& request,
                    google::protobuf::MessageLite& response,
                    absl::Time deadline = absl::InfiniteFuture());

  std::string socket_path_;
  std::unique_ptr<GrpcConnection> connection_;
};

// Ends the program with `status`: flushes stdio and leaves at once, without running static
// destructors. Call it only when nothing else is left to do.
[[noreturn]] void ExitAfterCommand(int status);

}  // namespace llima
