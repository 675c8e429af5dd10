#include "project_path.h"

#include <limits.h>

#include <string>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace llima {
namespace {

using ::testing::HasSubstr;

// The status of CheckProjectPathSyntax(path), which must be an INVALID_ARGUMENT error.
absl::Status SyntaxError(const std::string& path) {
  absl::StatusOr<std::string> result = CheckProjectPathSyntax(path);
  EXPECT_FALSE(result.ok()) << "accepted \"" << path << "\" as " << result.value_or("");
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument) << result.status();
  return result.status();
}

TEST(CheckProjectPathSyntax, RejectsEmptyPath) {
  EXPECT_THAT(SyntaxError("").message(), HasSubstr("empty"));
}

TEST(CheckProjectPathSyntax, RejectsRelativePath) {
  EXPECT_THAT(SyntaxError("a/b").message(), HasSubstr("relative"));
  EXPECT_THAT(SyntaxError("./a").message(), HasSubstr("relative"));
}

TEST(CheckProjectPathSyntax, RejectsDotDotComponent) {
  EXPECT_THAT(SyntaxError("/a/../b").message(), HasSubstr(".."));
  EXPECT_THAT(SyntaxError("/a/..").message(), HasSubstr(".."));
  EXPECT_THAT(SyntaxError("/..").message(), HasSubstr(".."));
}

TEST(CheckProjectPathSyntax, AcceptsNamesThatOnlyContainDots) {
  EXPECT_EQ(CheckProjectPathSyntax("/a/..b/c..").value(), "/a/..b/c..");
  EXPECT_EQ(CheckProjectPathSyntax("/a/.../b").value(), "/a/.../b");
}

TEST(CheckProjectPathSyntax, RejectsNulByte) {
  std::string path("/a/b\0/c", 7);
  ASSERT_EQ(path.size(), 7u);
  EXPECT_THAT(SyntaxError(path).message(), HasSubstr("NUL"));
}

TEST(CheckProjectPathSyntax, RejectsTheRootDirectory) {
  EXPECT_THAT(SyntaxError("/").message(), HasSubstr("root"));
  EXPECT_THAT(SyntaxError("//").message(), HasSubstr("root"));
  EXPECT_THAT(SyntaxError("/./").message(), HasSubstr("root"));
}

TEST(CheckProjectPathSyntax, RejectsPathOfPathMaxBytes) {
  std::string path = "/" + std::string(PATH_MAX - 1, 'a');
  ASSERT_EQ(path.size(), static_cast<size_t>(PATH_MAX));
  EXPECT_THAT(SyntaxError(path).message(), HasSubstr("long"));
}

TEST(CheckProjectPathSyntax, AcceptsPathJustBelowPathMax) {
  std::string path = "/" + std::string(PATH_MAX - 2, 'a');
  EXPECT_TRUE(CheckProjectPathSyntax(path).ok());
}

TEST(CheckProjectPathSyntax, ReturnsTheCleanPath) {
  EXPECT_EQ(CheckProjectPathSyntax("/a//b/./c/").value(), "/a/b/c");
  EXPECT_EQ(CheckProjectPathSyntax("/Users/me/My Project").value(), "/Users/me/My Project");
}

TEST(PathIsWithin, ChildIsWithinParent) {
  EXPECT_TRUE(PathIsWithin("/a/b", "/a"));
  EXPECT_TRUE(PathIsWithin("/a/b/c", "/a"));
}

TEST(PathIsWithin, SharedPrefixIsNotEnough) {
  EXPECT_FALSE(PathIsWithin("/ab", "/a"));
  EXPECT_FALSE(PathIsWithin("/a-b/c", "/a"));
}

TEST(PathIsWithin, PathIsWithinItself) {
  EXPECT_TRUE(PathIsWithin("/a", "/a"));
  EXPECT_TRUE(PathIsWithin("/", "/"));
}

TEST(PathIsWithin, ParentIsNotWithinChild) {
  EXPECT_FALSE(PathIsWithin("/a", "/a/b"));
  EXPECT_FALSE(PathIsWithin("/", "/a"));
}

TEST(PathIsWithin, RootIsAncestorOfEverything) {
  EXPECT_TRUE(PathIsWithin("/a", "/"));
  EXPECT_TRUE(PathIsWithin("/a/b/c", "/"));
}

TEST(PathIsWithin, SiblingsAreNotWithinEachOther) {
  EXPECT_FALSE(PathIsWithin("/a/b", "/a/c"));
  EXPECT_FALSE(PathIsWithin("/b", "/a"));
}

}  // namespace
}  // namespace llima
