// The checks of the requests that name an environment or a project. Input: wire bytes, read as a
// v1::CreateEnvironmentRequest, a v1::GetEnvironmentRequest and a v1::DeleteEnvironmentRequest
// (their fields 1 and 2 are all strings, so one input exercises the three; field 3, the limits of
// a create, is an unknown field to the others); what does not parse is refused by gRPC before the
// agent sees it.

#include <cstddef>
#include <cstdint>
#include <string>
#include <tuple>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "fuzz_check.h"
#include "google/protobuf/stubs/logging.h"
#include "llima/v1/agent.pb.h"
#include "naming.h"
#include "placement_check.h"
#include "project_path.h"
#include "request_validation.h"

namespace llima::fuzz {
namespace {

// The agent's own paths with its default options: state directory and socket directory.
const std::vector<std::string>& AgentPaths() {
  static const auto* paths = new std::vector<std::string>{"/var/lib/llima-box", "/run/llima-box"};
  return *paths;
}

// A limit as the API defines it: 0 (the default), -1 (none) or within [min, max].
bool LimitOk(int64_t value, int64_t min, int64_t max) {
  return value == 0 || value == -1 || (min <= value && value <= max);
}

bool LimitsOk(const v1::ResourceLimits& limits) {
  return LimitOk(limits.memory_max_bytes(), 16 << 20, INT64_MAX) &&
         LimitOk(limits.pids_max(), 8, 4194304) && LimitOk(limits.cpu_millicores(), 10, 1000000);
}

bool SameLimits(const v1::ResourceLimits& a, const v1::ResourceLimits& b) {
  return a.memory_max_bytes() == b.memory_max_bytes() && a.pids_max() == b.pids_max() &&
         a.cpu_millicores() == b.cpu_millicores();
}

// What an environment gets from accepted limits: a value for every field (never 0, which
// memory.max would take as "nothing"), the request's where it gave one, valid again as a request,
// and an environment made with them satisfies the request that made it.
void CheckResolvedLimits(const v1::ResourceLimits& requested, const ResourceDefaults& defaults) {
  v1::ResourceLimits resolved = ResolveResourceLimits(requested, defaults);
  for (auto [asked, got, fallback] :
       {std::tuple{requested.memory_max_bytes(), resolved.memory_max_bytes(),
                   defaults.memory_max_bytes},
        {requested.pids_max(), resolved.pids_max(), defaults.pids_max},
        {requested.cpu_millicores(), resolved.cpu_millicores(), defaults.cpu_millicores}}) {
    FUZZ_CHECK(got != 0);
    FUZZ_CHECK(got == (asked != 0 ? asked : fallback));
  }
  FUZZ_CHECK(LimitsOk(resolved) && ValidateResourceLimits(resolved).ok());
  FUZZ_CHECK(DescribeLimitsMismatch(requested, resolved).empty());
  FUZZ_CHECK(DescribeLimitsMismatch(v1::ResourceLimits(), resolved).empty());
}

void CheckCreate(const v1::CreateEnvironmentRequest& request) {
  absl::StatusOr<EnvironmentToCreate> wanted = ValidateCreateEnvironment(request);
  absl::StatusOr<std::string> path = CheckProjectPathSyntax(request.project_path());
  bool name_ok = request.name().empty() || IsValidEnvironmentName(request.name());
  bool limits_ok = LimitsOk(request.limits());
  FUZZ_CHECK(wanted.ok() == (path.ok() && name_ok && limits_ok));
  FUZZ_CHECK(ValidateResourceLimits(request.limits()).ok() == limits_ok);
  if (!wanted.ok()) {
    FUZZ_CHECK(wanted.status().code() == absl::StatusCode::kInvalidArgument);
    FUZZ_CHECK(!wanted.status().message().empty());
    return;
  }
  // The path is the clean one, the name a valid one: the request's, or derived from the path.
  FUZZ_CHECK(wanted->project_path == *path);
  FUZZ_CHECK(IsCleanAbsolute(wanted->project_path) && wanted->project_path != "/");
  FUZZ_CHECK(!HasComponent(wanted->project_path, ".."));
  FUZZ_CHECK(IsValidEnvironmentName(wanted->name));
  if (request.name().empty()) {
    absl::StatusOr<std::string> derived = DeriveEnvironmentName(*path);
    FUZZ_CHECK(derived.ok() && *derived == wanted->name);
  } else {
    FUZZ_CHECK(wanted->name == request.name());
  }
  // The limits are kept as requested, zeros included: the agent fills those in.
  FUZZ_CHECK(SameLimits(wanted->limits, request.limits()));
  // With the defaults of a 4-CPU, 8 GiB VM and of a machine whose memory is unknown.
  CheckResolvedLimits(wanted->limits, RecommendedResourceDefaults(int64_t{8} << 30));
  CheckResolvedLimits(wanted->limits, RecommendedResourceDefaults(0));
  // What Create checks next, as it checks it.
  CheckPlacementAgainstPlan(wanted->project_path, AgentPaths(), wanted->name);
}

void CheckGet(const v1::GetEnvironmentRequest& request) {
  absl::StatusOr<EnvironmentLookup> lookup = ValidateGetEnvironment(request);
  switch (request.selector_case()) {
    case v1::GetEnvironmentRequest::kName:
      FUZZ_CHECK(lookup.ok() && lookup->by_name && lookup->name == request.name());
      break;
    case v1::GetEnvironmentRequest::kProjectPath: {
      absl::StatusOr<std::string> path = CheckProjectPathSyntax(request.project_path());
      FUZZ_CHECK(lookup.ok() == path.ok());
      if (lookup.ok()) FUZZ_CHECK(!lookup->by_name && lookup->project_path == *path);
      break;
    }
    default:
      FUZZ_CHECK(lookup.status().code() == absl::StatusCode::kInvalidArgument);
  }
}

void CheckDelete(const v1::DeleteEnvironmentRequest& request) {
  absl::Status s = ValidateDeleteEnvironment(request.name());
  FUZZ_CHECK(s.ok() == IsValidEnvironmentName(request.name()));
  // An accepted name is one directory under the state directory, never a path out of it.
  if (s.ok()) {
    FUZZ_CHECK(request.name().find('/') == std::string::npos);
    FUZZ_CHECK(request.name() != "." && request.name() != "..");
  } else {
    FUZZ_CHECK(s.code() == absl::StatusCode::kInvalidArgument);
  }
}

}  // namespace
}  // namespace llima::fuzz

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  // Inputs with invalid UTF-8 in a string field fail to parse, each with a logged error.
  google::protobuf::SetLogHandler(nullptr);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace llima;
  int n = static_cast<int>(size);
  if (v1::CreateEnvironmentRequest create; create.ParseFromArray(data, n)) {
    fuzz::CheckCreate(create);
  }
  if (v1::GetEnvironmentRequest get; get.ParseFromArray(data, n)) fuzz::CheckGet(get);
  if (v1::DeleteEnvironmentRequest del; del.ParseFromArray(data, n)) fuzz::CheckDelete(del);
  return 0;
}
