#include "naming.h"

#include <openssl/sha.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"

namespace llima {
namespace {

constexpr size_t kMaxNameLength = 32;
constexpr size_t kMaxBaseLength = kMaxNameLength - 5;  // room for "-XXXX"

bool IsAsciiLower(char c) { return c >= 'a' && c <= 'z'; }
bool IsAsciiDigit(char c) { return c >= '0' && c <= '9'; }

}  // namespace

std::string SanitizeBasename(absl::string_view basename) {
  // Map each character; non-ASCII characters become '-', which collapses below, so they can be
  // handled byte by byte. Two non-ASCII letters have an ASCII lower case under the simple
  // Unicode case mapping the original rule used (Go's unicode.ToLower): KELVIN SIGN (U+212A)
  // -> 'k' and LATIN CAPITAL LETTER I WITH DOT ABOVE (U+0130) -> 'i'.
  std::string mapped;
  mapped.reserve(basename.size());
  for (size_t i = 0; i < basename.size(); ++i) {
    char c = basename[i];
    if (basename.substr(i, 3) == "\xE2\x84\xAA") {
      mapped += 'k';
      i += 2;
      continue;
    }
    if (basename.substr(i, 2) == "\xC4\xB0") {
      mapped += 'i';
      i += 1;
      continue;
    }
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    if (IsAsciiLower(c) || IsAsciiDigit(c)) {
      mapped += c;
    } else {
      mapped += '-';  // '_', '-', spaces, punctuation, bytes of non-ASCII characters
    }
  }

  std::string collapsed;
  collapsed.reserve(mapped.size());
  for (char c : mapped) {
    if (c == '-' && !collapsed.empty() && collapsed.back() == '-') continue;
    collapsed += c;
  }
  size_t begin = collapsed.find_first_not_of('-');
  if (begin == std::string::npos) return "env";
  size_t end = collapsed.find_last_not_of('-');
  std::string s = collapsed.substr(begin, end - begin + 1);

  if (!IsAsciiLower(s[0])) s = absl::StrCat("env-", s);
  if (s.size() > kMaxBaseLength) {
    s.resize(kMaxBaseLength);
    while (!s.empty() && s.back() == '-') s.pop_back();
  }
  return s;
}

std::string CleanAbsolutePath(absl::string_view path) {
  std::string out;
  for (absl::string_view part : absl::StrSplit(path, '/', absl::SkipEmpty())) {
    if (part == ".") continue;
    absl::StrAppend(&out, "/", part);
  }
  return out.empty() ? "/" : out;
}

absl::StatusOr<std::string> DeriveEnvironmentName(absl::string_view absolute_path) {
  size_t slash = absolute_path.find_last_of('/');
  absl::string_view base =
      slash == absl::string_view::npos ? absolute_path : absolute_path.substr(slash + 1);
  if (base.empty() || base == "." || base == "..") {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot derive an environment name from \"", absolute_path,
                     "\": it has no final path component"));
  }
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(absolute_path.data()), absolute_path.size(),
         digest);
  std::string name =
      absl::StrFormat("%s-%02x%02x", SanitizeBasename(base), digest[0], digest[1]);
  if (!IsValidEnvironmentName(name)) {
    return absl::InternalError(absl::StrCat("derived name \"", name, "\" is not valid"));
  }
  return name;
}

bool IsValidEnvironmentName(absl::string_view name) {
  if (name.empty() || name.size() > kMaxNameLength) return false;
  if (!IsAsciiLower(name[0]) && name[0] != '_') return false;
  for (char c : name) {
    if (!IsAsciiLower(c) && !IsAsciiDigit(c) && c != '_' && c != '-') return false;
  }
  return true;
}

}  // namespace llima
