#include "agent_client.h"

#include <errno.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <grpcpp/create_channel_posix.h>
#include <grpcpp/grpcpp.h>

#include <cstdio>
#include <cstring>
#include <optional>
#include <thread>

#include "absl/strings/str_cat.h"
#include "unique_fd.h"

namespace llima {
namespace {

constexpr size_t kStdinChunk = 128 * 1024;

bool WriteFully(int fd, const std::string& data) {
  const char* p = data.data();
  size_t left = data.size();
  while (left > 0) {
    ssize_t n = write(fd, p, left);
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    p += n;
    left -= static_cast<size_t>(n);
  }
  return true;
}

// A connection to the agent at `socket_path`, or an invalid fd when there is none right now.
UniqueFd ConnectNow(const std::string& socket_path) {
  sockaddr_un addr{};
  if (socket_path.size() >= sizeof(addr.sun_path)) return UniqueFd();
  addr.sun_family = AF_UNIX;
  memcpy(addr.sun_path, socket_path.data(), socket_path.size());
  UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return UniqueFd();
  while (connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) {
    if (errno != EINTR) return UniqueFd();
  }
  return fd;
}

// Without terminal resizes to forward, input that is over before the command starts (no stdin,
// /dev/null, a pipe closed already) is ended from the calling thread: starting and joining the
// pump thread is a good part of a short command's time. Sends what stdin has at once (its end,
// or a first chunk) and returns whether the input is over.
bool SendInputAlreadyThere(grpc::ClientReaderWriter<v1::ExecRequest, v1::ExecResponse>& stream,
                           int stdin_fd, std::string& buffer) {
  ssize_t n = -1;
  if (stdin_fd >= 0) {
    pollfd ready{stdin_fd, POLLIN, 0};
    if (poll(&ready, 1, 0) != 1 || !(ready.revents & (POLLIN | POLLHUP))) return false;
    n = read(stdin_fd, buffer.data(), buffer.size());
    if (n < 0) return false;  // the pump reads again, and reports
  }
  v1::ExecRequest request;
  if (n > 0) {
    request.set_stdin(buffer.data(), static_cast<size_t>(n));
    return !stream.Write(request);
  }
  request.set_close_stdin(true);
  if (stream.Write(request)) stream.WritesDone();
  return true;
}

}  // namespace

AgentClient::AgentClient(const std::string& socket_path) : socket_path_(socket_path) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(16 << 20);
  // A connection made here is handed to gRPC as it is: no resolver, no subchannel, no
  // connectivity watch. That is about a millisecond of `llima-box shell -- cmd`.
  if (UniqueFd fd = ConnectNow(socket_path)) {
    stub_ = v1::AgentService::NewStub(
        grpc::CreateCustomInsecureChannelFromFd("llima-agent", fd.release(), args));
    return;
  }
  // No agent there yet (the VM's forwarded socket comes and goes while it boots), or it refused
  // us: a channel of gRPC's own, which keeps trying quickly and reports why it cannot connect.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  // Despite its name, how long one connection attempt may take to get the server's HTTP/2
  // settings: a slow agent on a busy VM, behind Lima's forward, must not be cut off each time.
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 2000);
  stub_ = v1::AgentService::NewStub(grpc::CreateCustomChannel(
      absl::StrCat("unix:", socket_path), grpc::InsecureChannelCredentials(), args));
}

absl::Status AgentClient::FromGrpc(const grpc::Status& status) const {
  if (status.ok()) return absl::OkStatus();
  if (status.error_code() == grpc::StatusCode::UNAVAILABLE) {
    return absl::UnavailableError(absl::StrCat("cannot reach llima-agent at ", socket_path_, ": ",
                                               status.error_message()));
  }
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                      status.error_message());
}

absl::StatusOr<v1::Environment> AgentClient::Create(const std::string& project_path,
                                                    const std::string& name) {
  grpc::ClientContext context;
  v1::CreateEnvironmentRequest request;
  request.set_project_path(project_path);
  request.set_name(name);
  v1::Environment env;
  if (auto s = FromGrpc(stub_->CreateEnvironment(&context, request, &env)); !s.ok()) return s;
  return env;
}

absl::StatusOr<v1::Environment> AgentClient::Get(const v1::GetEnvironmentRequest& request) {
  grpc::ClientContext context;
  v1::Environment env;
  if (auto s = FromGrpc(stub_->GetEnvironment(&context, request, &env)); !s.ok()) return s;
  return env;
}

absl::StatusOr<std::vector<v1::Environment>> AgentClient::List() {
  grpc::ClientContext context;
  v1::ListEnvironmentsResponse response;
  if (auto s = FromGrpc(stub_->ListEnvironments(&context, {}, &response)); !s.ok()) return s;
  return std::vector<v1::Environment>(response.environments().begin(),
                                      response.environments().end());
}

absl::StatusOr<v1::AgentInfo> AgentClient::Info() {
  grpc::ClientContext context;
  v1::AgentInfo info;
  if (auto s = FromGrpc(stub_->GetAgentInfo(&context, {}, &info)); !s.ok()) return s;
  return info;
}

absl::Status AgentClient::Ping(absl::Duration timeout) {
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  v1::ListEnvironmentsResponse response;
  return FromGrpc(stub_->ListEnvironments(&context, {}, &response));
}

absl::Status AgentClient::Delete(const std::string& name) {
  grpc::ClientContext context;
  v1::DeleteEnvironmentRequest request;
  request.set_name(name);
  v1::DeleteEnvironmentResponse response;
  return FromGrpc(stub_->DeleteEnvironment(&context, request, &response));
}

absl::StatusOr<v1::ExecExited> AgentClient::Exec(const v1::ExecStart& start, const ExecIo& io) {
  grpc::ClientContext context;
  auto stream = stub_->Exec(&context);
  v1::ExecRequest first;
  *first.mutable_start() = start;
  if (!stream->Write(first)) return FromGrpc(stream->Finish());

  // Input (stdin and terminal resizes) is pumped by its own thread, the only one writing to
  // the stream; `stop` ends it once the process has exited.
  std::string buffer(kStdinChunk, '\0');
  bool stdin_open = io.stdin_fd >= 0;
  bool input_over = io.resize_fd < 0 && SendInputAlreadyThere(*stream, io.stdin_fd, buffer);
  UniqueFd stop(eventfd(0, EFD_CLOEXEC));
  auto pump_input = [&] {
    for (;;) {
      pollfd pfds[3] = {{stop.get(), POLLIN, 0},
                        {io.resize_fd, POLLIN, 0},
                        {stdin_open ? io.stdin_fd : -1, POLLIN, 0}};
      if (!stdin_open && io.resize_fd < 0) break;
      if (poll(pfds, 3, -1) < 0) {
        if (errno == EINTR) continue;
        break;
      }
      if (pfds[0].revents) return;
      if (pfds[1].revents & POLLIN) {
        char drain[64];
        (void)!read(io.resize_fd, drain, sizeof(drain));
        v1::ExecRequest resize;
        *resize.mutable_resize() = io.terminal_size();
        if (!stream->Write(resize)) return;
      }
      if (pfds[2].revents & (POLLIN | POLLHUP | POLLERR)) {
        ssize_t n = read(io.stdin_fd, buffer.data(), buffer.size());
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
          stdin_open = false;
          v1::ExecRequest close;
          close.set_close_stdin(true);
          if (!stream->Write(close)) return;
          continue;
        }
        v1::ExecRequest request;
        request.set_stdin(buffer.data(), static_cast<size_t>(n));
        if (!stream->Write(request)) return;
      }
    }
    if (io.stdin_fd < 0) {
      v1::ExecRequest close;
      close.set_close_stdin(true);
      if (!stream->Write(close)) return;
    }
    stream->WritesDone();
  };
  std::optional<std::thread> pump;
  if (!input_over) pump.emplace(pump_input);

  std::optional<v1::ExecExited> exited;
  bool output_closed = false;
  v1::ExecResponse response;
  while (stream->Read(&response)) {
    bool written = true;
    switch (response.response_case()) {
      case v1::ExecResponse::kStdout:
        written = WriteFully(io.stdout_fd, response.stdout());
        break;
      case v1::ExecResponse::kStderr:
        written = WriteFully(io.stderr_fd, response.stderr());
        break;
      case v1::ExecResponse::kExited:
        exited = response.exited();
        break;
      default:
        break;
    }
    if (!written && !output_closed) {
      // Whoever reads our output is gone (a closed pipe with SIGPIPE ignored): end the call,
      // which ends the process, as a broken pipe would have ended it.
      output_closed = true;
      context.TryCancel();
    }
  }
  uint64_t one = 1;
  (void)!write(stop.get(), &one, sizeof(one));
  // The call is over, so a Write the pump may be blocked in returns false now.
  if (pump) pump->join();
  grpc::Status status = stream->Finish();
  if (exited) return *exited;
  if (output_closed) return absl::AbortedError("the output was closed; the command was ended");
  if (status.ok()) return absl::InternalError("the agent ended the call without an exit status");
  return FromGrpc(status);
}

void ExitAfterCommand(int status) {
  std::fflush(nullptr);
  _exit(status);
}

}  // namespace llima
