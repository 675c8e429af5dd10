// Environment names must be exactly the ones the original Go tool derived, so existing users keep
// their environments. The expected names below were computed by an independent implementation of
// the Go rule (strings.ToLower, regexp [^a-z0-9_-] -> "-", '_' -> '-', collapse, trim, "env-"
// prefix, cut to 27, "-" + hex(sha256(filepath.Clean(path))[:2])), not by this code.

#include "naming.h"

#include <string>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace llima {
namespace {

using ::testing::MatchesRegex;
using ::testing::StartsWith;

struct NamingCase {
  const char* raw_path;    // as a user might type it
  const char* clean_path;  // what Go's filepath.Abs/Clean makes of it (and what is hashed)
  const char* name;        // what the Go tool names the environment
};

// clang-format off
constexpr NamingCase kReferenceTable[] = {
    // The example of the documentation.
    {"/Users/alice/My Projects/cool-app", "/Users/alice/My Projects/cool-app", "cool-app-5c6c"},
    // Spaces and non-ASCII letters become '-', which then collapses.
    {"/Users/alice/Café Project", "/Users/alice/Café Project", "caf-project-11d4"},
    {"/Users/bob/日本語", "/Users/bob/日本語", "env-256a"},
    {"/x/Ωmega", "/x/Ωmega", "mega-c013"},
    {"/x/ÉCOLE", "/x/ÉCOLE", "cole-aa78"},
    {"/x/emoji🚀rocket", "/x/emoji🚀rocket", "emoji-rocket-ce55"},
    // U+212A KELVIN SIGN lower-cases to ASCII 'k' in Go.
    {"/x/\xe2\x84\xaa" "elvin", "/x/\xe2\x84\xaa" "elvin", "kelvin-0dae"},
    // Names must start with a letter.
    {"/x/123app", "/x/123app", "env-123app-d4d0"},
    {"/x/9", "/x/9", "env-9-e643"},
    // Punctuation, underscores, upper case.
    {"/x/my.app.v2", "/x/my.app.v2", "my-app-v2-1e39"},
    {"/x/v1.2.3", "/x/v1.2.3", "v1-2-3-0018"},
    {"/x/My_Cool_App", "/x/My_Cool_App", "my-cool-app-6560"},
    {"/x/UPPER CASE", "/x/UPPER CASE", "upper-case-5c88"},
    {"/x/a___b---c", "/x/a___b---c", "a-b-c-f5eb"},
    {"/x/_private", "/x/_private", "private-3c4a"},
    {"/x/.hidden", "/x/.hidden", "hidden-ec1d"},
    {"/x/--leading-and-trailing--", "/x/--leading-and-trailing--", "leading-and-trailing-0f3d"},
    {"/x/tab\there", "/x/tab\there", "tab-here-ac8c"},
    // Nothing usable left: "env".
    {"/x/@@@", "/x/@@@", "env-ec15"},
    {"/x/-", "/x/-", "env-4310"},
    // Unclean spellings of one directory give one name (the hash covers the clean path).
    {"/home/alice/proj/", "/home/alice/proj", "proj-2af6"},
    {"/home//alice//proj", "/home/alice/proj", "proj-2af6"},
    {"/home/./alice/./proj", "/home/alice/proj", "proj-2af6"},
    // Long basenames are cut to 27 characters; a '-' left at the cut is dropped.
    {"/x/this-is-a-very-long-project-name-indeed", "/x/this-is-a-very-long-project-name-indeed",
     "this-is-a-very-long-project-5d3b"},
    {"/x/abcdefghijklmnopqrstuvwxyz-tail", "/x/abcdefghijklmnopqrstuvwxyz-tail",
     "abcdefghijklmnopqrstuvwxyz-9dde"},
    {"/x/1-abcdefghijklmnopqrst-tail", "/x/1-abcdefghijklmnopqrst-tail",
     "env-1-abcdefghijklmnopqrst-4954"},
    {"/x/1234567890123456789012345678901234", "/x/1234567890123456789012345678901234",
     "env-12345678901234567890123-aa6e"},
    {"/x/abcdefghijklmnopqrstuvwxyza", "/x/abcdefghijklmnopqrstuvwxyza",
     "abcdefghijklmnopqrstuvwxyza-3994"},  // exactly 27: kept whole, 32 in all
    {"/x/abcdefghijklmnopqrstuvwxyzab", "/x/abcdefghijklmnopqrstuvwxyzab",
     "abcdefghijklmnopqrstuvwxyza-1133"},  // 28: cut
    // Plain ones.
    {"/srv/code", "/srv/code", "code-ab2f"},
    {"/x/a", "/x/a", "a-2437"},
    {"/Users/me/p", "/Users/me/p", "p-0d12"},
};
// clang-format on

TEST(DeriveEnvironmentName, MatchesTheGoToolOnTheReferenceTable) {
  for (const NamingCase& c : kReferenceTable) {
    SCOPED_TRACE(c.raw_path);
    std::string clean = CleanAbsolutePath(c.raw_path);
    EXPECT_EQ(clean, c.clean_path);
    absl::StatusOr<std::string> name = DeriveEnvironmentName(clean);
    ASSERT_TRUE(name.ok()) << name.status();
    EXPECT_EQ(*name, c.name);
    EXPECT_TRUE(IsValidEnvironmentName(*name)) << *name;
  }
}

// Go's strings.ToLower maps rune by rune with the simple case mapping: U+0130 (LATIN CAPITAL
// LETTER I WITH DOT ABOVE) becomes plain 'i' (unicode.ToLower(0x130) == 0x69), so the Go tool
// names "/x/İstanbul" "istanbul-c984". The full Unicode mapping ("i" + U+0307 COMBINING DOT
// ABOVE, what Python's str.lower() gives) would yield "i-stanbul-c984" instead.
// Go's unicode.ToLower maps U+0130 to a plain 'i' (simple case mapping), not to "i" plus a
// combining dot as full Unicode lower-casing does.
TEST(DeriveEnvironmentName, DottedCapitalILowerCasesToPlainIAsInGo) {
  absl::StatusOr<std::string> name = DeriveEnvironmentName("/x/İstanbul");
  ASSERT_TRUE(name.ok()) << name.status();
  EXPECT_EQ(*name, "istanbul-c984");
}

TEST(DeriveEnvironmentName, EndsWithFourLowercaseHexDigitsOfTheHash) {
  absl::StatusOr<std::string> name = DeriveEnvironmentName("/Users/alice/My Projects/cool-app");
  ASSERT_TRUE(name.ok()) << name.status();
  EXPECT_THAT(*name, StartsWith("cool-app-"));
  EXPECT_THAT(*name, MatchesRegex("cool-app-[0-9a-f]{4}"));
}

TEST(DeriveEnvironmentName, SameBasenameInDifferentDirectoriesGetsDifferentHashes) {
  absl::StatusOr<std::string> a = DeriveEnvironmentName("/Users/alice/proj");
  absl::StatusOr<std::string> b = DeriveEnvironmentName("/Users/bob/proj");
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_THAT(*a, StartsWith("proj-"));
  EXPECT_THAT(*b, StartsWith("proj-"));
  EXPECT_NE(*a, *b);
}

TEST(DeriveEnvironmentName, IsStableAcrossCalls) {
  EXPECT_EQ(DeriveEnvironmentName("/srv/code").value(), DeriveEnvironmentName("/srv/code").value());
}

TEST(DeriveEnvironmentName, RejectsPathsWithoutAFinalComponent) {
  for (const char* path : {"/", "", "/x/", "/x/.", "/x/.."}) {
    SCOPED_TRACE(path);
    EXPECT_EQ(DeriveEnvironmentName(path).status().code(), absl::StatusCode::kInvalidArgument);
  }
}

TEST(SanitizeBasename, FollowsTheRuleStepByStep) {
  EXPECT_EQ(SanitizeBasename("My App"), "my-app");  // lower-case, ' ' -> '-'
  EXPECT_EQ(SanitizeBasename("my_app"), "my-app");  // '_' -> '-'
  EXPECT_EQ(SanitizeBasename("a--__--b"), "a-b");   // runs collapse
  EXPECT_EQ(SanitizeBasename("-a-"), "a");          // trimmed
  EXPECT_EQ(SanitizeBasename("42"), "env-42");      // must start with a letter
  EXPECT_EQ(SanitizeBasename("_"), "env");          // nothing left
  EXPECT_EQ(SanitizeBasename(""), "env");
  EXPECT_EQ(SanitizeBasename("abcdefghijklmnopqrstuvwxyz-x"), "abcdefghijklmnopqrstuvwxyz");
}

TEST(SanitizeBasename, ResultIsAtMost27Characters) {
  EXPECT_EQ(SanitizeBasename(std::string(100, 'a')), std::string(27, 'a'));
  EXPECT_EQ(SanitizeBasename(std::string(100, '7')), "env-" + std::string(23, '7'));
}

TEST(CleanAbsolutePath, RemovesDuplicateSlashesDotsAndTrailingSlash) {
  EXPECT_EQ(CleanAbsolutePath("/a//b/./c/"), "/a/b/c");
  EXPECT_EQ(CleanAbsolutePath("/a/b/c"), "/a/b/c");
  EXPECT_EQ(CleanAbsolutePath("/a/."), "/a");
  EXPECT_EQ(CleanAbsolutePath("/./a"), "/a");
  EXPECT_EQ(CleanAbsolutePath("///a///"), "/a");
}

TEST(CleanAbsolutePath, LeadingDoubleSlashBecomesOneAsInGo) {
  // POSIX allows "//" to mean something else; Go's filepath.Clean does not keep it.
  EXPECT_EQ(CleanAbsolutePath("//a/b"), "/a/b");
}

TEST(CleanAbsolutePath, RootStaysRoot) {
  EXPECT_EQ(CleanAbsolutePath("/"), "/");
  EXPECT_EQ(CleanAbsolutePath("//"), "/");
  EXPECT_EQ(CleanAbsolutePath("/./"), "/");
}

TEST(CleanAbsolutePath, KeepsDotDotForTheCallerToReject) {
  EXPECT_EQ(CleanAbsolutePath("/a/../b/"), "/a/../b");
}

TEST(IsValidEnvironmentName, AcceptsUpTo32Characters) {
  EXPECT_TRUE(IsValidEnvironmentName("a"));
  EXPECT_TRUE(IsValidEnvironmentName(std::string(32, 'a')));
  EXPECT_FALSE(IsValidEnvironmentName(std::string(33, 'a')));
  EXPECT_FALSE(IsValidEnvironmentName(""));
}

TEST(IsValidEnvironmentName, AcceptsLowercaseDigitsDashAndUnderscore) {
  EXPECT_TRUE(IsValidEnvironmentName("cool-app-5c6c"));
  EXPECT_TRUE(IsValidEnvironmentName("my_env-2"));
  EXPECT_TRUE(IsValidEnvironmentName("_svc"));
}

TEST(IsValidEnvironmentName, RejectsUppercaseLeadingDigitOrDashAndOtherCharacters) {
  EXPECT_FALSE(IsValidEnvironmentName("Cool-app"));
  EXPECT_FALSE(IsValidEnvironmentName("coolApp"));
  EXPECT_FALSE(IsValidEnvironmentName("1app"));
  EXPECT_FALSE(IsValidEnvironmentName("-app"));
  EXPECT_FALSE(IsValidEnvironmentName("my.app"));
  EXPECT_FALSE(IsValidEnvironmentName("my app"));
  EXPECT_FALSE(IsValidEnvironmentName("a/b"));
  EXPECT_FALSE(IsValidEnvironmentName("café"));
}

}  // namespace
}  // namespace llima
