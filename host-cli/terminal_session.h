#pragma once

// Running a command in an environment attached to this process's standard streams, the way
// `ssh -t` does: on a terminal (raw mode, window size forwarded, terminal restored on every way
// out), or as plain separate streams when stdin or stdout is not a terminal. Shared by
// `llima-box shell` and `llima-sandbox`.

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "agent_client.h"

namespace llima {

// Opens /dev/null on any of the standard descriptors 0-2 that is closed, so that descriptors
// opened later (gRPC's among them) are never taken for stdin, stdout or stderr. Programs that
// link this file get it done before any library initializer runs.
void EnsureStandardDescriptors();

// Takes everything after the first "--" out of the command line (argc shrinks accordingly):
// the command to run, passed on untouched.
std::vector<std::string> TakeCommandAfterDoubleDash(int& argc, char** argv);

// Opens `command` in `environment` attached to this terminal (its login shell when empty) and
// returns the status for the command line.
absl::StatusOr<int> RunInEnvironment(AgentClient& client, const v1::Environment& environment,
                                     const std::vector<std::string>& command);

// Opens `command` in the environment of `project_path`, created first if there is none (its
// login shell when `command` is empty), attached to this terminal.
absl::StatusOr<int> RunInProject(AgentClient& client, const std::string& project_path,
                                 const std::vector<std::string>& command);

// Runs `start` (its tty, size and TERM are filled in here), in the environment of
// `project_path` when that is given (AgentClient::ExecInProject). Returns the status for the
// command line: the command's exit code, or 128 + the signal that ended it.
absl::StatusOr<int> RunAttached(AgentClient& client, v1::ExecStart start,
                                const std::string& project_path = "");

}  // namespace llima
