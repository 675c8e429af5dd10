#pragma once

#include <string>
#include "absl/strings/string_view.h"

#include "absl/status/statusor.h"

namespace llima {

// Lexical checks of a project path taken from a request: non-empty, absolute, no NUL byte, no ".."
// component, not "/", at most PATH_MAX bytes. Returns the cleaned path (no "//", "." or trailing
// '/'), the form names are derived from and records store. Filesystem checks (existence,
// symlinks, ownership) are done later on a file descriptor, never on this string.
absl::StatusOr<std::string> CheckProjectPathSyntax(absl::string_view path);

// Whether `path` is `ancestor` or lies below it (both clean absolute paths).
bool PathIsWithin(absl::string_view path, absl::string_view ancestor);

}  // namespace llima
