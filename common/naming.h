#pragma once

#include <string>
#include "absl/strings/string_view.h"

#include "absl/status/statusor.h"

namespace llima {

// Environment names: "<sanitized basename>-<first 4 hex digits of sha256(path)>", a valid Linux
// user name of at most 32 characters. The rule is the one the original llima-box used, so names
// stay stable for existing users:
//   - the basename is lower-cased; every character other than [a-z0-9_-] becomes '-';
//   - '_' becomes '-'; runs of '-' collapse to one; leading and trailing '-' are dropped;
//   - a result not starting with a letter gets the prefix "env-"; an empty one becomes "env";
//   - it is cut to 27 characters (trailing '-' dropped again), leaving room for "-XXXX".
// `absolute_path` must already be clean (see CleanAbsolutePath); the hash covers exactly it.
absl::StatusOr<std::string> DeriveEnvironmentName(absl::string_view absolute_path);

// The sanitizing step alone (exposed for tests).
std::string SanitizeBasename(absl::string_view basename);

// Lexically cleans an absolute path as Go's filepath.Clean does: collapses "//", removes "." and
// trailing '/'. ".." components are not resolved: callers reject them.
std::string CleanAbsolutePath(absl::string_view path);

// Whether `name` can be an environment (and user) name: 1-32 characters of [a-z0-9_-],
// starting with a letter or '_'.
bool IsValidEnvironmentName(absl::string_view name);

}  // namespace llima
