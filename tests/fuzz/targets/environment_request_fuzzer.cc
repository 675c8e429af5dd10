// The checks of the requests that name an environment or a project. Input: wire bytes, read as a
// v1::CreateEnvironmentRequest, a v1::GetEnvironmentRequest and a v1::DeleteEnvironmentRequest
// (their fields 1 and 2 are all strings, so one input exercises the three); what does not parse
// is refused by gRPC before the agent sees it.

#include <cstddef>
#include <cstdint>
#include <string>
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

void CheckCreate(const v1::CreateEnvironmentRequest& request) {
  absl::StatusOr<EnvironmentToCreate> wanted = ValidateCreateEnvironment(request);
  absl::StatusOr<std::string> path = CheckProjectPathSyntax(request.project_path());
  bool name_ok = request.name().empty() || IsValidEnvironmentName(request.name());
  FUZZ_CHECK(wanted.ok() == (path.ok() && name_ok));
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
