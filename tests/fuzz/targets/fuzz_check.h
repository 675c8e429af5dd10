#pragma once

// What the fuzz targets share: a check that ends the run when an invariant is violated (libFuzzer
// then saves the input that did it), and a view of paths as lists of components in which the
// invariants are stated independently of the code under test.

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "absl/strings/string_view.h"

// Unlike assert, active in every build type.
#define FUZZ_CHECK(condition)                                                                  \
  do {                                                                                         \
    if (!(condition)) {                                                                        \
      std::fprintf(stderr, "%s:%d: invariant violated: %s\n", __FILE__, __LINE__, #condition); \
      std::abort();                                                                            \
    }                                                                                          \
  } while (0)

namespace llima::fuzz {

// The input up to the first '\n' (all of it when there is none); `input` keeps the rest.
inline absl::string_view NextLine(absl::string_view* input) {
  size_t end = input->find('\n');
  absl::string_view line = input->substr(0, end);
  input->remove_prefix(end == absl::string_view::npos ? input->size() : end + 1);
  return line;
}

// The non-empty components of a path: "/a//b/" -> {"a", "b"}.
inline std::vector<absl::string_view> Components(absl::string_view path) {
  std::vector<absl::string_view> parts;
  while (!path.empty()) {
    size_t end = path.find('/');
    absl::string_view part = path.substr(0, end);
    if (!part.empty()) parts.push_back(part);
    path.remove_prefix(end == absl::string_view::npos ? path.size() : end + 1);
  }
  return parts;
}

inline bool HasComponent(absl::string_view path, absl::string_view component) {
  std::vector<absl::string_view> parts = Components(path);
  return std::find(parts.begin(), parts.end(), component) != parts.end();
}

// Whether the components of `ancestor` begin those of `path`: `path` is `ancestor` or lies below.
inline bool IsAtOrBelow(absl::string_view path, absl::string_view ancestor) {
  std::vector<absl::string_view> p = Components(path);
  std::vector<absl::string_view> a = Components(ancestor);
  return a.size() <= p.size() && std::equal(a.begin(), a.end(), p.begin());
}

// "/", or '/' followed by non-empty components other than "." joined by single '/', with no
// trailing '/'.
inline bool IsCleanAbsolute(absl::string_view path) {
  if (path.empty() || path[0] != '/') return false;
  if (path == "/") return true;
  if (path.back() == '/' || path.find("//") != absl::string_view::npos) return false;
  return !HasComponent(path, ".");
}

}  // namespace llima::fuzz
