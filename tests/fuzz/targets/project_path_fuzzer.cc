// Project path validation: CheckProjectPathSyntax, CleanAbsolutePath, PathIsWithin and
// CheckProjectPlacement, on paths of arbitrary bytes.
//
// Input: up to three lines: a project path; a second path (the other side of PathIsWithin, and
// a path of the agent's no project may overlap); an environment name (the one derived from the
// project when it is not valid).

#include <limits.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "fuzz_check.h"
#include "naming.h"
#include "placement_check.h"
#include "project_path.h"

namespace llima::fuzz {
namespace {

// What CleanAbsolutePath promises for any input: a clean absolute path with the input's
// components, "." ones left out (".." ones are kept: callers reject them), that it leaves as it is.
void CheckClean(absl::string_view raw) {
  std::string clean = CleanAbsolutePath(raw);
  FUZZ_CHECK(IsCleanAbsolute(clean));
  FUZZ_CHECK(CleanAbsolutePath(clean) == clean);
  std::vector<absl::string_view> expected;
  for (absl::string_view part : Components(raw)) {
    if (part != ".") expected.push_back(part);
  }
  FUZZ_CHECK(Components(clean) == expected);
}

// CheckProjectPathSyntax accepts exactly the paths its contract allows, and returns them clean.
absl::StatusOr<std::string> CheckSyntax(absl::string_view raw) {
  absl::StatusOr<std::string> path = CheckProjectPathSyntax(raw);
  bool allowed = !raw.empty() && raw[0] == '/' && raw.find('\0') == absl::string_view::npos &&
                 raw.size() < PATH_MAX && !HasComponent(raw, "..") && CleanAbsolutePath(raw) != "/";
  FUZZ_CHECK(path.ok() == allowed);
  if (!path.ok()) {
    FUZZ_CHECK(path.status().code() == absl::StatusCode::kInvalidArgument);
    FUZZ_CHECK(!path.status().message().empty());
    return path;
  }
  const std::string& p = *path;
  FUZZ_CHECK(IsCleanAbsolute(p));
  FUZZ_CHECK(p != "/");
  FUZZ_CHECK(p.find('\0') == std::string::npos);
  FUZZ_CHECK(p.size() < PATH_MAX && p.size() <= raw.size());
  FUZZ_CHECK(!HasComponent(p, ".."));
  FUZZ_CHECK(p == CleanAbsolutePath(raw));
  FUZZ_CHECK(CleanAbsolutePath(p) == p);
  absl::StatusOr<std::string> again = CheckProjectPathSyntax(p);
  FUZZ_CHECK(again.ok() && *again == p);
  return path;
}

// PathIsWithin on clean absolute paths is "the components of the ancestor begin the path's".
void CheckWithin(const std::string& a, const std::string& b) {
  FUZZ_CHECK(PathIsWithin(a, a));
  FUZZ_CHECK(PathIsWithin(a, "/"));
  FUZZ_CHECK(PathIsWithin(a, b) == IsAtOrBelow(a, b));
  FUZZ_CHECK(PathIsWithin(b, a) == IsAtOrBelow(b, a));
  if (PathIsWithin(a, b) && PathIsWithin(b, a)) FUZZ_CHECK(a == b);
  std::string child = a == "/" ? "/x" : a + "/x";
  FUZZ_CHECK(PathIsWithin(child, a));
  FUZZ_CHECK(!PathIsWithin(a, child));
  if (a != "/") FUZZ_CHECK(!PathIsWithin(a + "x", a));  // a sibling sharing a prefix
}

}  // namespace
}  // namespace llima::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace llima;
  using namespace llima::fuzz;
  absl::string_view input(reinterpret_cast<const char*>(data), size);
  absl::string_view raw_project = NextLine(&input);
  absl::string_view raw_other = NextLine(&input);
  absl::string_view raw_name = NextLine(&input);

  CheckClean(raw_project);
  CheckClean(raw_other);
  CheckWithin(CleanAbsolutePath(raw_project), CleanAbsolutePath(raw_other));

  absl::StatusOr<std::string> project = CheckSyntax(raw_project);
  absl::StatusOr<std::string> other = CheckSyntax(raw_other);
  if (!project.ok()) return 0;

  std::string name(raw_name);
  if (!IsValidEnvironmentName(name)) {
    absl::StatusOr<std::string> derived = DeriveEnvironmentName(*project);
    FUZZ_CHECK(derived.ok());  // every acceptable project path has a name
    name = *derived;
  }
  std::vector<std::string> protected_paths;
  if (other.ok()) protected_paths.push_back(*other);
  CheckPlacementAgainstPlan(*project, protected_paths, name);
  return 0;
}
