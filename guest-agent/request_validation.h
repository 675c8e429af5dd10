#pragma once

// The checks of the agent's requests that need neither the filesystem nor the agent's state: a
// malformed request is refused here, before anything is opened, created or spawned. Pure
// functions of the request message, unit-tested (tests/unit/request_validation_test.cc) and
// fuzzed from the wire bytes (tests/fuzz/).

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "llima/internal/agent_internal.pb.h"
#include "llima/v1/agent.pb.h"

namespace llima {

// --- CreateEnvironment, GetEnvironment, DeleteEnvironment -------------------------------------

// What a well-formed CreateEnvironment request asks for.
struct EnvironmentToCreate {
  std::string project_path;  // clean absolute path (CheckProjectPathSyntax)
  std::string name;          // the request's, or derived from the path when it names none
};

// The project path's syntax and the name. Where the project may lie (CheckProjectPlacement) and
// what the path is on disk are checked after this.
absl::StatusOr<EnvironmentToCreate> ValidateCreateEnvironment(
    const v1::CreateEnvironmentRequest& request);

// What a GetEnvironment request looks up.
struct EnvironmentLookup {
  bool by_name = false;
  std::string name;          // when by_name, as given: an unknown name is simply not found
  std::string project_path;  // otherwise, cleaned
};

absl::StatusOr<EnvironmentLookup> ValidateGetEnvironment(const v1::GetEnvironmentRequest& request);

// The name a DeleteEnvironment request gives.
absl::Status ValidateDeleteEnvironment(absl::string_view name);

// --- Exec -------------------------------------------------------------------------------------

// The start message: an environment, a program, variables and a working directory that can be
// passed to execve and chdir unchanged (no NUL byte a C string would silently cut at).
absl::Status ValidateExecStart(const v1::ExecStart& start);

// Terminal sizes are 1..kMaxTerminalSide rows and columns.
inline constexpr uint32_t kMaxTerminalSide = 10000;
absl::Status ValidateTerminalSize(const v1::TerminalSize& size);

// The first request of an Exec call: a valid start.
absl::Status ValidateFirstExecRequest(const v1::ExecRequest& request);

// A request after the start: stdin, close_stdin, resize or a signal that exists. A resize to a
// bad size passes: it is ignored rather than ending the user's session.
absl::Status ValidateLaterExecRequest(const v1::ExecRequest& request);

// The environment variables of a process: HOME, USER, LOGNAME, SHELL and PATH for the
// environment's user, then the request's, which add to or replace them. `search_path` receives
// the PATH argv[0] is looked up in. Nothing of the agent's own environment is passed on.
std::vector<std::string> BuildExecEnvironment(const internal::EnvironmentRecord& record,
                                              absl::string_view home, const v1::ExecStart& start,
                                              std::string* search_path);

}  // namespace llima
