#include "exec_drain.h"

#include <grpcpp/grpcpp.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace llima::bench {

absl::StatusOr<DrainedOutput> ExecAndDrain(llima::v1::AgentService::Stub& stub,
                                           const std::string& environment,
                                           const std::vector<std::string>& argv) {
  grpc::ClientContext context;
  auto stream = stub.Exec(&context);
  llima::v1::ExecRequest start;
  start.mutable_start()->set_environment(environment);
  for (const std::string& arg : argv) start.mutable_start()->add_argv(arg);
  llima::v1::ExecRequest close;
  close.set_close_stdin(true);
  stream->Write(start);
  stream->Write(close);
  stream->WritesDone();

  DrainedOutput drained;
  int exit_code = -1;
  std::string stderr_text;
  llima::v1::ExecResponse response;
  while (stream->Read(&response)) {
    switch (response.response_case()) {
      case llima::v1::ExecResponse::kStdout:
        drained.stdout_bytes += response.stdout().size();
        ++drained.stdout_messages;
        break;
      case llima::v1::ExecResponse::kStderr:
        stderr_text += response.stderr();
        break;
      case llima::v1::ExecResponse::kExited:
        exit_code = response.exited().exit_code();
        break;
      default:
        break;
    }
  }
  grpc::Status status = stream->Finish();
  std::string command = absl::StrJoin(argv, " ");
  if (!status.ok()) {
    return absl::InternalError(
        absl::StrCat("Exec ", command, " in ", environment, ": ", status.error_message()));
  }
  if (exit_code != 0) {
    return absl::InternalError(absl::StrCat("Exec ", command, " in ", environment, ": exit ",
                                            exit_code, stderr_text.empty() ? "" : ": ",
                                            stderr_text.substr(0, 2000)));
  }
  return drained;
}

}  // namespace llima::bench
