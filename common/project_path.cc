#include "project_path.h"

#include <limits.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "naming.h"

namespace llima {

absl::StatusOr<std::string> CheckProjectPathSyntax(absl::string_view path) {
  if (path.empty()) return absl::InvalidArgumentError("project path is empty");
  if (path.find('\0') != absl::string_view::npos) {
    return absl::InvalidArgumentError("project path contains a NUL byte");
  }
  if (path.size() >= PATH_MAX) {
    return absl::InvalidArgumentError(
        absl::StrCat("project path is ", path.size(), " bytes long; the limit is ", PATH_MAX - 1));
  }
  if (path[0] != '/') {
    return absl::InvalidArgumentError(
        absl::StrCat("project path \"", path, "\" is relative; an absolute path is required"));
  }
  for (absl::string_view part : absl::StrSplit(path, '/')) {
    if (part == "..") {
      return absl::InvalidArgumentError(
          absl::StrCat("project path \"", path, "\" contains \"..\"; pass the resolved path"));
    }
  }
  std::string clean = CleanAbsolutePath(path);
  if (clean == "/") {
    return absl::InvalidArgumentError("the root directory cannot be a project");
  }
  return clean;
}

bool PathIsWithin(absl::string_view path, absl::string_view ancestor) {
  if (ancestor == "/") return true;
  if (path.size() < ancestor.size() || path.substr(0, ancestor.size()) != ancestor) return false;
  return path.size() == ancestor.size() || path[ancestor.size()] == '/';
}

}  // namespace llima
