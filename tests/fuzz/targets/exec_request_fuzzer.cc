// The checks of Exec requests. Input: the wire bytes of a v1::ExecRequest, as the agent receives
// them; what does not parse is refused by DecodeExecRequest (exec_wire.h) before these checks.

#include <signal.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "fuzz_check.h"
#include "google/protobuf/stubs/logging.h"
#include "llima/internal/agent_internal.pb.h"
#include "llima/v1/agent.pb.h"
#include "request_validation.h"

namespace llima::fuzz {
namespace {

bool HasNul(const std::string& s) { return s.find('\0') != std::string::npos; }

bool SizeInRange(const v1::TerminalSize& size) {
  return size.rows() >= 1 && size.rows() <= kMaxTerminalSide && size.cols() >= 1 &&
         size.cols() <= kMaxTerminalSide;
}

void CheckTerminalSize(const v1::TerminalSize& size) {
  absl::Status s = ValidateTerminalSize(size);
  FUZZ_CHECK(s.ok() == SizeInRange(size));
  FUZZ_CHECK(s.ok() || s.code() == absl::StatusCode::kInvalidArgument);
  // What the session then puts in a struct winsize.
  if (s.ok()) FUZZ_CHECK(size.rows() <= 0xffff && size.cols() <= 0xffff);
}

// A start the agent accepts can be spawned as it is: execve and chdir get C strings, so no
// NUL byte may cut one short; every variable is NAME=VALUE.
void CheckStart(const v1::ExecStart& start) {
  absl::Status s = ValidateExecStart(start);
  FUZZ_CHECK(s.ok() || s.code() == absl::StatusCode::kInvalidArgument);
  FUZZ_CHECK(s.ok() || !s.message().empty());

  // Where it runs: an environment named, or a project, never both (the project path itself is
  // checked as CreateEnvironment checks it, when the session starts).
  bool allowed = start.environment().empty() != start.project_path().empty() &&
                 !start.argv().empty() && !start.argv(0).empty() && !HasNul(start.working_dir()) &&
                 (start.working_dir().empty() || start.working_dir()[0] == '/');
  for (const std::string& arg : start.argv()) allowed = allowed && !HasNul(arg);
  for (const auto& [key, value] : start.env()) {
    allowed = allowed && !key.empty() && key.find('=') == std::string::npos && !HasNul(key) &&
              !HasNul(value);
  }
  bool default_size = start.size().rows() == 0 && start.size().cols() == 0;
  if (start.tty() && !default_size) allowed = allowed && SizeInRange(start.size());
  FUZZ_CHECK(s.ok() == allowed);
  if (!s.ok()) return;

  internal::EnvironmentRecord record;
  record.set_name("cool-app-5c6c");
  record.set_shell("/bin/bash");
  const std::string home = "/home/cool-app-5c6c";
  // The defaults, then the request's variables over them; PATH's default is checked apart.
  std::map<std::string, std::string> expected = {{"HOME", home},
                                                 {"USER", record.name()},
                                                 {"LOGNAME", record.name()},
                                                 {"SHELL", record.shell()}};
  for (const auto& [key, value] : start.env()) expected[key] = value;
  bool default_path = start.env().count("PATH") == 0;

  std::string search_path = "unset";
  std::vector<std::string> vars = BuildExecEnvironment(record, home, start, &search_path);
  FUZZ_CHECK(vars.size() == expected.size() + (default_path ? 1 : 0));
  std::string previous_key;
  bool has_path = false;
  for (const std::string& var : vars) {
    FUZZ_CHECK(!HasNul(var));
    size_t eq = var.find('=');
    FUZZ_CHECK(eq != std::string::npos && eq > 0);
    std::string key = var.substr(0, eq);
    std::string value = var.substr(eq + 1);
    FUZZ_CHECK(previous_key.empty() || key > previous_key);  // each name once
    previous_key = key;
    if (key == "PATH") {
      has_path = true;
      FUZZ_CHECK(value == search_path);
    }
    if (key == "PATH" && default_path) {
      // Absolute directories only: an empty entry would search the working directory.
      for (absl::string_view dir : absl::StrSplit(value, ':')) {
        FUZZ_CHECK(!dir.empty() && dir[0] == '/');
      }
    } else {
      FUZZ_CHECK(expected.count(key) == 1 && expected[key] == value);
    }
  }
  FUZZ_CHECK(has_path);
}

void CheckRequest(const v1::ExecRequest& request) {
  absl::Status first = ValidateFirstExecRequest(request);
  FUZZ_CHECK(first.ok() == (request.has_start() && ValidateExecStart(request.start()).ok()));
  FUZZ_CHECK(first.ok() || first.code() == absl::StatusCode::kInvalidArgument);
  if (first.ok()) {
    FUZZ_CHECK(request.start().argv_size() > 0 && !request.start().argv(0).empty());
    FUZZ_CHECK(request.start().environment().empty() != request.start().project_path().empty());
  }

  absl::Status later = ValidateLaterExecRequest(request);
  FUZZ_CHECK(later.ok() || later.code() == absl::StatusCode::kInvalidArgument);
  switch (request.request_case()) {
    case v1::ExecRequest::kStdin:
    case v1::ExecRequest::kCloseStdin:
    case v1::ExecRequest::kResize:
      FUZZ_CHECK(later.ok());
      break;
    case v1::ExecRequest::kSignal:
      FUZZ_CHECK(later.ok() == (request.signal() >= 1 && request.signal() < NSIG));
      break;
    default:  // a second start, or nothing
      FUZZ_CHECK(!later.ok());
  }

  if (request.has_start()) {
    CheckStart(request.start());
    CheckTerminalSize(request.start().size());
  }
  if (request.has_resize()) CheckTerminalSize(request.resize());
}

}  // namespace
}  // namespace llima::fuzz

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  // Inputs with invalid UTF-8 in a string field fail to parse, each with a logged error.
  google::protobuf::SetLogHandler(nullptr);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  llima::v1::ExecRequest request;
  if (!request.ParseFromArray(data, static_cast<int>(size))) return 0;
  llima::fuzz::CheckRequest(request);
  return 0;
}
