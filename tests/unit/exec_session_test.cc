// The checks and defaults applied to an Exec start message before anything is spawned.

#include "exec_session.h"

#include <stdlib.h>

#include <algorithm>
#include <iterator>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace llima {
namespace {

using ::testing::Contains;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

v1::ExecStart GoodStart() {
  v1::ExecStart start;
  start.set_environment("cool-app-5c6c");
  start.add_argv("bash");
  start.add_argv("-lc");
  start.add_argv("echo hello");
  (*start.mutable_env())["TERM"] = "xterm-256color";
  start.set_working_dir("/Users/alice/My Projects/cool-app");
  return start;
}

void ExpectInvalid(const v1::ExecStart& start, const std::string& message_part) {
  absl::Status status = ValidateExecStart(start);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_THAT(status.message(), HasSubstr(message_part));
}

TEST(ValidateExecStart, AcceptsAWellFormedStart) {
  absl::Status status = ValidateExecStart(GoodStart());
  EXPECT_TRUE(status.ok()) << status;
}

TEST(ValidateExecStart, AcceptsAnEmptyWorkingDirectoryMeaningTheProject) {
  v1::ExecStart start = GoodStart();
  start.clear_working_dir();
  EXPECT_TRUE(ValidateExecStart(start).ok());
}

TEST(ValidateExecStart, AcceptsEmptyArgumentsAfterTheProgram) {
  v1::ExecStart start = GoodStart();
  start.add_argv("");
  EXPECT_TRUE(ValidateExecStart(start).ok());
}

TEST(ValidateExecStart, RejectsAnEmptyEnvironmentName) {
  v1::ExecStart start = GoodStart();
  start.clear_environment();
  ExpectInvalid(start, "environment");
}

TEST(ValidateExecStart, RejectsAnEmptyArgv) {
  v1::ExecStart start = GoodStart();
  start.clear_argv();
  ExpectInvalid(start, "argv");
}

TEST(ValidateExecStart, RejectsAnEmptyProgramName) {
  v1::ExecStart start = GoodStart();
  start.set_argv(0, "");
  ExpectInvalid(start, "argv");
}

TEST(ValidateExecStart, RejectsAnArgumentContainingNul) {
  v1::ExecStart start = GoodStart();
  start.set_argv(2, std::string("echo\0rm -rf /", 13));
  ExpectInvalid(start, "NUL");
}

TEST(ValidateExecStart, RejectsAVariableNameContainingEquals) {
  v1::ExecStart start = GoodStart();
  (*start.mutable_env())["A=B"] = "c";
  ExpectInvalid(start, "A=B");
}

TEST(ValidateExecStart, RejectsAnEmptyVariableName) {
  v1::ExecStart start = GoodStart();
  (*start.mutable_env())[""] = "c";
  ExpectInvalid(start, "environment variable");
}

TEST(ValidateExecStart, RejectsNulInAVariable) {
  v1::ExecStart start = GoodStart();
  (*start.mutable_env())["FOO"] = std::string("a\0b", 3);
  ExpectInvalid(start, "FOO");
  v1::ExecStart start2 = GoodStart();
  (*start2.mutable_env())[std::string("F\0O", 3)] = "x";
  EXPECT_EQ(ValidateExecStart(start2).code(), absl::StatusCode::kInvalidArgument);
}

TEST(ValidateExecStart, RejectsARelativeWorkingDirectory) {
  v1::ExecStart start = GoodStart();
  start.set_working_dir("src/app");
  ExpectInvalid(start, "src/app");
}

TEST(ValidateExecStart, RejectsAWorkingDirectoryContainingNul) {
  v1::ExecStart start = GoodStart();
  start.set_working_dir(std::string("/tmp\0/x", 7));
  EXPECT_EQ(ValidateExecStart(start).code(), absl::StatusCode::kInvalidArgument);
}

// --- BuildExecEnvironment --------------------------------------------------------------------

class BuildExecEnvironmentTest : public ::testing::Test {
 protected:
  BuildExecEnvironmentTest() {
    // The namespace descriptors stay invalid: building the environment does not touch them.
    env_.record.set_name("cool-app-5c6c");
    env_.record.set_project_path("/Users/alice/My Projects/cool-app");
    env_.record.set_uid(501);
    env_.record.set_gid(20);
    env_.record.set_shell("/bin/zsh");
  }

  std::vector<std::string> Build(const v1::ExecStart& start) {
    return BuildExecEnvironment(env_, start, &search_path_);
  }

  static std::vector<std::string> WithPrefix(const std::vector<std::string>& vars,
                                             const std::string& prefix) {
    std::vector<std::string> out;
    std::copy_if(vars.begin(), vars.end(), std::back_inserter(out),
                 [&](const std::string& v) { return v.rfind(prefix, 0) == 0; });
    return out;
  }

  LiveEnvironment env_;
  std::string search_path_ = "unset";
};

TEST_F(BuildExecEnvironmentTest, DefaultsDescribeTheEnvironmentsUser) {
  v1::ExecStart start;
  std::vector<std::string> vars = Build(start);
  EXPECT_THAT(vars, Contains("HOME=/home/cool-app-5c6c"));
  EXPECT_THAT(vars, Contains("USER=cool-app-5c6c"));
  EXPECT_THAT(vars, Contains("LOGNAME=cool-app-5c6c"));
  EXPECT_THAT(vars, Contains("SHELL=/bin/zsh"));
  EXPECT_THAT(vars, Contains(StartsWith("PATH=")));
}

TEST_F(BuildExecEnvironmentTest, DefaultPathFindsSystemProgramsAndIsTheSearchPath) {
  std::vector<std::string> vars = Build(v1::ExecStart());
  std::vector<std::string> path = WithPrefix(vars, "PATH=");
  ASSERT_EQ(path.size(), 1u);
  EXPECT_EQ(path[0], "PATH=" + search_path_);
  EXPECT_THAT(search_path_, HasSubstr("/usr/bin"));
  EXPECT_THAT(search_path_, HasSubstr("/bin"));
  EXPECT_THAT(search_path_, Not(HasSubstr("::")));
  EXPECT_THAT(search_path_, Not(StartsWith(":")));  // an empty entry would search the cwd
}

TEST_F(BuildExecEnvironmentTest, NothingOfTheAgentsOwnEnvironmentLeaksIn) {
  ASSERT_EQ(setenv("LLIMA_AGENT_SECRET", "leaked", 1), 0);
  std::vector<std::string> vars = Build(v1::ExecStart());
  unsetenv("LLIMA_AGENT_SECRET");
  EXPECT_THAT(WithPrefix(vars, "LLIMA_AGENT_SECRET="), ::testing::IsEmpty());
}

TEST_F(BuildExecEnvironmentTest, RequestPathOverridesTheDefaultAndTheSearchPath) {
  v1::ExecStart start;
  (*start.mutable_env())["PATH"] = "/opt/tools/bin:/usr/bin";
  std::vector<std::string> vars = Build(start);
  EXPECT_THAT(WithPrefix(vars, "PATH="), ::testing::ElementsAre("PATH=/opt/tools/bin:/usr/bin"));
  EXPECT_EQ(search_path_, "/opt/tools/bin:/usr/bin");
}

TEST_F(BuildExecEnvironmentTest, RequestVariablesAreAddedAndOverrideDefaults) {
  v1::ExecStart start;
  (*start.mutable_env())["TERM"] = "xterm-256color";
  (*start.mutable_env())["HOME"] = "/tmp/elsewhere";
  (*start.mutable_env())["EMPTY"] = "";
  std::vector<std::string> vars = Build(start);
  EXPECT_THAT(vars, Contains("TERM=xterm-256color"));
  EXPECT_THAT(vars, Contains("EMPTY="));
  EXPECT_THAT(WithPrefix(vars, "HOME="), ::testing::ElementsAre("HOME=/tmp/elsewhere"));
  EXPECT_THAT(vars, Contains("USER=cool-app-5c6c"));
}

TEST_F(BuildExecEnvironmentTest, EachVariableAppearsOnce) {
  v1::ExecStart start;
  (*start.mutable_env())["USER"] = "someone";
  (*start.mutable_env())["X"] = "1";
  std::vector<std::string> vars = Build(start);
  std::vector<std::string> keys;
  for (const std::string& v : vars) keys.push_back(v.substr(0, v.find('=')));
  std::sort(keys.begin(), keys.end());
  EXPECT_EQ(std::adjacent_find(keys.begin(), keys.end()), keys.end());
  EXPECT_THAT(WithPrefix(vars, "USER="), ::testing::ElementsAre("USER=someone"));
}

}  // namespace
}  // namespace llima
