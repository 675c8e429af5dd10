// Environment name derivation: DeriveEnvironmentName, SanitizeBasename and
// IsValidEnvironmentName. Input: a path of arbitrary bytes.

#include <openssl/sha.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
#include "fuzz_check.h"
#include "naming.h"
#include "project_path.h"

namespace llima::fuzz {
namespace {

bool IsLower(char c) { return c >= 'a' && c <= 'z'; }
bool IsDigit(char c) { return c >= '0' && c <= '9'; }
bool IsLowerHex(char c) { return IsDigit(c) || (c >= 'a' && c <= 'f'); }

// A Linux user name as environments use them: 1-32 of [a-z0-9_-], starting with [a-z_].
bool IsUserName(absl::string_view name) {
  if (name.empty() || name.size() > 32 || !(IsLower(name[0]) || name[0] == '_')) return false;
  for (char c : name) {
    if (!IsLower(c) && !IsDigit(c) && c != '_' && c != '-') return false;
  }
  return true;
}

// A sanitized basename: 1-27 of [a-z0-9-], starting with a letter, no "--", no trailing '-',
// sanitized again unchanged.
void CheckSanitized(absl::string_view basename) {
  std::string s = SanitizeBasename(basename);
  FUZZ_CHECK(!s.empty() && s.size() <= 27);
  FUZZ_CHECK(IsLower(s[0]));
  FUZZ_CHECK(s.back() != '-');
  FUZZ_CHECK(s.find("--") == std::string::npos);
  for (char c : s) FUZZ_CHECK(IsLower(c) || IsDigit(c) || c == '-');
  FUZZ_CHECK(SanitizeBasename(s) == s);
  FUZZ_CHECK(SanitizeBasename(basename) == s);
}

// "<SanitizeBasename(basename)>-<first two bytes of sha256(path), lowercase hex>".
void CheckDerived(absl::string_view path) {
  size_t slash = path.find_last_of('/');
  absl::string_view base = slash == absl::string_view::npos ? path : path.substr(slash + 1);
  absl::StatusOr<std::string> name = DeriveEnvironmentName(path);
  if (base.empty() || base == "." || base == "..") {
    FUZZ_CHECK(name.status().code() == absl::StatusCode::kInvalidArgument);
    return;
  }
  FUZZ_CHECK(name.ok());
  FUZZ_CHECK(IsValidEnvironmentName(*name) && IsUserName(*name));
  FUZZ_CHECK(name->size() <= 32 && name->size() >= 6);
  absl::string_view suffix = absl::string_view(*name).substr(name->size() - 5);
  FUZZ_CHECK(suffix[0] == '-');
  for (char c : suffix.substr(1)) FUZZ_CHECK(IsLowerHex(c));
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(path.data()), path.size(), digest);
  FUZZ_CHECK(suffix.substr(1) == absl::StrFormat("%02x%02x", digest[0], digest[1]));
  FUZZ_CHECK(name->substr(0, name->size() - 5) == SanitizeBasename(base));
  absl::StatusOr<std::string> again = DeriveEnvironmentName(path);
  FUZZ_CHECK(again.ok() && *again == *name);
}

}  // namespace
}  // namespace llima::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace llima;
  using namespace llima::fuzz;
  absl::string_view input(reinterpret_cast<const char*>(data), size);

  FUZZ_CHECK(IsValidEnvironmentName(input) == IsUserName(input));
  CheckSanitized(input);
  CheckDerived(input);
  // Every path a project may have has a name: a create without a name never fails on it.
  if (absl::StatusOr<std::string> clean = CheckProjectPathSyntax(input); clean.ok()) {
    FUZZ_CHECK(DeriveEnvironmentName(*clean).ok());
    CheckDerived(*clean);
  }
  return 0;
}
