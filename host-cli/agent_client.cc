#include "agent_client.h"

#include <errno.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <memory>
#include <optional>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace llima {
namespace {

constexpr size_t kStdinChunk = 128 * 1024;
// Methods are called by their HTTP/2 path: the service's, then the method's name.
constexpr char kServicePath[] = "/llima.v1.AgentService/";

bool WriteFully(int fd, const std::string& data) {
  const char* p = data.data();
  size_t left = data.size();
  while (left > 0) {
    ssize_t n = write(fd, p, left);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {  // an output left non-blocking by another
        pollfd writable{fd, POLLOUT, 0};
        if (poll(&writable, 1, -1) >= 0 || errno == EINTR) continue;
      }
      return false;
    }
    p += n;
    left -= static_cast<size_t>(n);
  }
  return true;
}

// Whether `fd` is at an end that reading would only confirm: /dev/null, a file read to its
// end, a pipe with nothing in it whose writers are gone. Its end can then go out with the start
// of a call, before the process runs, without taking anything from the input.
bool InputIsOver(int fd) {
  struct stat st;
  if (fstat(fd, &st) != 0) return false;
  if (S_ISCHR(st.st_mode)) {
    struct stat null_device;
    return stat("/dev/null", &null_device) == 0 && S_ISCHR(null_device.st_mode) &&
           st.st_rdev == null_device.st_rdev;
  }
  if (S_ISREG(st.st_mode)) {
    // Not the size: files under /proc say 0, and a network file system's may be stale. A read
    // at the offset that does not move it says.
    off_t position = lseek(fd, 0, SEEK_CUR);
    char byte;
    return position >= 0 && pread(fd, &byte, 1, position) == 0;
  }
  if (S_ISFIFO(st.st_mode)) {
    pollfd p{fd, POLLIN, 0};
    int pending = 0;
    return poll(&p, 1, 0) == 1 && (p.revents & POLLHUP) && ioctl(fd, FIONREAD, &pending) == 0 &&
           pending == 0;
  }
  return false;
}

}  // namespace

AgentClient::AgentClient(const std::string& socket_path) : socket_path_(socket_path) {}

absl::StatusOr<GrpcConnection*> AgentClient::Connection() {
  if (connection_ != nullptr && connection_->Usable()) return connection_.get();
  connection_.reset();
  absl::StatusOr<std::unique_ptr<GrpcConnection>> made = GrpcConnection::Connect(socket_path_);
  if (!made.ok()) return made.status();
  connection_ = std::move(*made);
  return connection_.get();
}

absl::Status AgentClient::Call(absl::string_view method,
                               const google::protobuf::MessageLite& request,
                               google::protobuf::MessageLite& response, absl::Time deadline) {
  absl::StatusOr<GrpcConnection*> connection = Connection();
  if (!connection.ok()) return connection.status();
  return (*connection)->Call(absl::StrCat(kServicePath, method), request, response, deadline);
}

absl::StatusOr<v1::Environment> AgentClient::Create(const std::string& project_path,
                                                    const std::string& name) {
  v1::CreateEnvironmentRequest request;
  request.set_project_path(project_path);
  request.set_name(name);
  v1::Environment env;
  if (auto s = Call("CreateEnvironment", request, env); !s.ok()) return s;
  return env;
}

absl::StatusOr<v1::Environment> AgentClient::Get(const v1::GetEnvironmentRequest& request) {
  v1::Environment env;
  if (auto s = Call("GetEnvironment", request, env); !s.ok()) return s;
  return env;
}

absl::StatusOr<std::vector<v1::Environment>> AgentClient::List() {
  v1::ListEnvironmentsResponse response;
  if (auto s = Call("ListEnvironments", v1::ListEnvironmentsRequest(), response); !s.ok()) {
    return s;
  }
  return std::vector<v1::Environment>(response.environments().begin(),
                                      response.environments().end());
}

absl::StatusOr<v1::AgentInfo> AgentClient::Info() {
  v1::AgentInfo info;
  if (auto s = Call("GetAgentInfo", v1::GetAgentInfoRequest(), info); !s.ok()) return s;
  return info;
}

absl::Status AgentClient::Ping(absl::Duration timeout) {
  v1::ListEnvironmentsResponse response;
  return Call("ListEnvironments", v1::ListEnvironmentsRequest(), response, absl::Now() + timeout);
}

absl::Status AgentClient::Delete(const std::string& name) {
  v1::DeleteEnvironmentRequest request;
  request.set_name(name);
  v1::DeleteEnvironmentResponse response;
  return Call("DeleteEnvironment", request, response);
}

absl::StatusOr<v1::ExecExited> AgentClient::Exec(const v1::ExecStart& start, const ExecIo& io) {
  bool started = false;
  return Exec(start, io, started);
}

absl::StatusOr<v1::ExecExited> AgentClient::ExecInProject(const std::string& project_path,
                                                          v1::ExecStart start, const ExecIo& io) {
  start.clear_environment();
  start.set_project_path(project_path);
  bool started = false;
  absl::StatusOr<v1::ExecExited> exited = Exec(start, io, started);
  // What an agent older than project_path answers, before running anything and before any
  // input was read: it saw no environment. The two calls it understands do the same.
  if (exited.ok() || started || exited.status().code() != absl::StatusCode::kInvalidArgument ||
      !absl::StartsWith(exited.status().message(), "start.environment is empty")) {
    return exited;
  }
  absl::StatusOr<v1::Environment> env = Create(project_path);
  if (!env.ok()) return env.status();
  start.clear_project_path();
  start.set_environment(env->name());
  return Exec(start, io);
}

absl::StatusOr<v1::ExecExited> AgentClient::Exec(const v1::ExecStart& start, const ExecIo& io,
                                                 bool& started) {
  absl::StatusOr<GrpcConnection*> connection = Connection();
  if (!connection.ok()) return connection.status();
  GrpcConnection& call = **connection;
  if (auto s = call.StartStream(absl::StrCat(kServicePath, "Exec")); !s.ok()) return s;
  v1::ExecRequest first;
  *first.mutable_start() = start;
  call.Write(first);

  // Input (stdin and terminal resizes) goes out between the output, all on this thread. Once
  // stdin is over and no resizes can come, the stream is closed from this side.
  // Not zero-filled: pages are touched only as input arrives.
  std::unique_ptr<char[]> buffer;
  bool stdin_open = io.stdin_fd >= 0;
  auto end_input = [&] {
    stdin_open = false;
    v1::ExecRequest close;
    close.set_close_stdin(true);
    call.Write(close);
    if (io.resize_fd < 0) call.WritesDone();
  };
  if (!stdin_open || InputIsOver(io.stdin_fd)) end_input();

  std::optional<v1::ExecExited> exited;
  bool output_closed = false;
  v1::ExecResponse response;
  for (;;) {
    pollfd watch[2] = {
        // Input is read only once the process runs (a call refused before leaves it all to
        // whoever reads next), and only as fast as it goes out (Wait says kSendRoom when it
        // may again).
        {started && stdin_open && !call.send_backlogged() ? io.stdin_fd : -1, POLLIN, 0},
        {io.resize_fd, POLLIN, 0}};
    GrpcConnection::Event event = call.Wait(watch);
    if (event == GrpcConnection::Event::kEnded) break;
    if (event == GrpcConnection::Event::kSendRoom) continue;
    if (event == GrpcConnection::Event::kMessage) {
      while (call.Read(response)) {
        bool written = true;
        switch (response.response_case()) {
          case v1::ExecResponse::kStdout:
            written = WriteFully(io.stdout_fd, response.stdout());
            break;
          case v1::ExecResponse::kStderr:
            written = WriteFully(io.stderr_fd, response.stderr());
            break;
          case v1::ExecResponse::kStarted:
            started = true;
            break;
          case v1::ExecResponse::kExited:
            exited = response.exited();
            break;
          default:
            break;
        }
        if (!written && !output_closed) {
          // Whoever reads our output is gone (a closed pipe with SIGPIPE ignored): end the
          // call, which ends the process, as a broken pipe would have ended it.
          output_closed = true;
          call.Cancel();
        }
      }
      continue;
    }
    if (watch[1].revents & POLLIN) {
      char drain[64];
      (void)!read(io.resize_fd, drain, sizeof(drain));
      v1::ExecRequest resize;
      *resize.mutable_resize() = io.terminal_size();
      call.Write(resize);
    }
    if (watch[0].revents & (POLLIN | POLLHUP | POLLERR | POLLNVAL)) {
      if (buffer == nullptr) buffer.reset(new char[kStdinChunk]);
      ssize_t n = read(io.stdin_fd, buffer.get(), kStdinChunk);
      if (n < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)) continue;
      if (n <= 0) {
        end_input();
        continue;
      }
      v1::ExecRequest request;
      request.set_stdin(buffer.get(), static_cast<size_t>(n));
      call.Write(request);
    }
  }
  absl::Status status = call.Finish();
  if (exited) return *exited;
  if (output_closed) return absl::AbortedError("the output was closed; the command was ended");
  if (status.ok()) return absl::InternalError("the agent ended the call without an exit status");
  return status;
}

void ExitAfterCommand(int status) {
  std::fflush(nullptr);
  _exit(status);
}

}  // namespace llima
