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
  v1::ResourceLimits limits;  // as requested: 0 for the agent's default (ValidateResourceLimits)
};

// The project path's syntax, the name and the limits. Where the project may lie
// (CheckProjectPlacement) and what the path is on disk are checked after this.
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

// --- Resource limits --------------------------------------------------------------------------

// A limit of v1::ResourceLimits: 0 is "the agent's default" in a request, -1 is no limit.
inline constexpr int64_t kNoLimit = -1;
// Below these an environment cannot run a shell and a pipeline; a request for less is a mistake.
inline constexpr int64_t kMinMemoryMaxBytes = int64_t{16} << 20;
inline constexpr int64_t kMinPidsMax = 8;
// The kernel's own bounds: PID_MAX_LIMIT, and cpu.max's minimum quota (1 ms per 100 ms period).
inline constexpr int64_t kMaxPidsMax = 4194304;
inline constexpr int64_t kMinCpuMillicores = 10;
inline constexpr int64_t kMaxCpuMillicores = 1000000;
inline constexpr int64_t kDefaultPidsMax = 4096;
inline constexpr int kDefaultMemoryPercent = 75;

// Each field 0, kNoLimit, or within its bounds.
absl::Status ValidateResourceLimits(const v1::ResourceLimits& limits);

// The agent's limits for what a request leaves at 0. Each field is kNoLimit or within its
// bounds, never 0.
struct ResourceDefaults {
  int64_t memory_max_bytes = kNoLimit;
  int64_t pids_max = kDefaultPidsMax;
  int64_t cpu_millicores = kNoLimit;
};

// The defaults for a machine with `physical_memory_bytes` of memory: kDefaultMemoryPercent of
// it (a runaway environment is OOM-killed inside itself while the agent and the other
// environments keep the rest), kDefaultPidsMax processes (a fork bomb takes an eighth of the
// 32768 pids of a 4-CPU VM; builds, language servers and their threads stay far below), and no
// CPU quota (an idle machine's CPUs are all one build's; busy environments share them equally).
ResourceDefaults RecommendedResourceDefaults(int64_t physical_memory_bytes);

// A ResourceLimits message with these fields.
v1::ResourceLimits MakeResourceLimits(int64_t memory_max_bytes, int64_t pids_max,
                                      int64_t cpu_millicores);

// The limits an environment gets: the request's, with `defaults` in place of its zeros. Every
// field of the result is kNoLimit or within its bounds.
v1::ResourceLimits ResolveResourceLimits(const v1::ResourceLimits& requested,
                                         const ResourceDefaults& defaults);

// Why the limits of an existing environment do not satisfy a create request for it (a limit the
// request sets, other than the environment's), or empty when they do.
std::string DescribeLimitsMismatch(const v1::ResourceLimits& requested,
                                   const v1::ResourceLimits& existing);

// The agent's --default-* option values. "max" (or "-1") is no limit.
//   memory: bytes, with an optional binary suffix K, M, G, T (KiB ... TiB also), or a
//           percentage of `physical_memory_bytes` ("75%").
//   pids:   a count.
//   cpu:    CPUs ("2", "1.5") or millicores ("500m").
absl::StatusOr<int64_t> ParseMemoryLimit(absl::string_view text, int64_t physical_memory_bytes);
absl::StatusOr<int64_t> ParsePidsLimit(absl::string_view text);
absl::StatusOr<int64_t> ParseCpuLimit(absl::string_view text);

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
