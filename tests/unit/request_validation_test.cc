// The checks applied to requests before anything is opened, created or spawned, and the
// defaults of an Exec start message.

#include "request_validation.h"

#include <signal.h>
#include <stdlib.h>

#include <algorithm>
#include <iterator>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
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

TEST(ValidateExecStart, AcceptsAProjectInsteadOfAnEnvironment) {
  v1::ExecStart start = GoodStart();
  start.clear_environment();
  start.set_project_path("/Users/alice/My Projects/cool-app");
  absl::Status status = ValidateExecStart(start);
  EXPECT_TRUE(status.ok()) << status;
}

TEST(ValidateExecStart, RejectsAnEnvironmentAndAProjectTogether) {
  v1::ExecStart start = GoodStart();
  start.set_project_path("/Users/alice/My Projects/cool-app");
  ExpectInvalid(start, "set one of them");
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

TEST(ValidateExecStart, AcceptsATerminalWithoutASizeMeaningTheDefault) {
  v1::ExecStart start = GoodStart();
  start.set_tty(true);
  EXPECT_TRUE(ValidateExecStart(start).ok());
  start.mutable_size()->set_rows(50);
  start.mutable_size()->set_cols(200);
  EXPECT_TRUE(ValidateExecStart(start).ok());
}

TEST(ValidateExecStart, RejectsATerminalSizeWithOneSideZero) {
  v1::ExecStart start = GoodStart();
  start.set_tty(true);
  start.mutable_size()->set_cols(80);
  ExpectInvalid(start, "terminal size 0x80");
}

TEST(ValidateTerminalSize, AcceptsOneToTheLimitOnBothSides) {
  for (auto [rows, cols] : {std::pair<uint32_t, uint32_t>{1, 1},
                            {24, 80},
                            {kMaxTerminalSide, 1},
                            {1, kMaxTerminalSide},
                            {kMaxTerminalSide, kMaxTerminalSide}}) {
    v1::TerminalSize size;
    size.set_rows(rows);
    size.set_cols(cols);
    EXPECT_TRUE(ValidateTerminalSize(size).ok()) << rows << "x" << cols;
  }
}

TEST(ValidateTerminalSize, RejectsZeroAndMoreThanTheLimit) {
  for (auto [rows, cols] : {std::pair<uint32_t, uint32_t>{0, 80},
                            {24, 0},
                            {0, 0},
                            {kMaxTerminalSide + 1, 80},
                            {24, 4294967295u}}) {
    v1::TerminalSize size;
    size.set_rows(rows);
    size.set_cols(cols);
    absl::Status status = ValidateTerminalSize(size);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << rows << "x" << cols;
    EXPECT_THAT(status.message(), HasSubstr("between 1 and 10000"));
  }
}

TEST(ValidateFirstExecRequest, AcceptsAValidStart) {
  v1::ExecRequest request;
  *request.mutable_start() = GoodStart();
  EXPECT_TRUE(ValidateFirstExecRequest(request).ok());
}

TEST(ValidateFirstExecRequest, RejectsAnythingButAStart) {
  v1::ExecRequest request;
  EXPECT_THAT(ValidateFirstExecRequest(request).message(), HasSubstr("must be start"));
  request.set_stdin("echo hello\n");
  EXPECT_THAT(ValidateFirstExecRequest(request).message(), HasSubstr("must be start"));
  request.set_signal(2);
  EXPECT_EQ(ValidateFirstExecRequest(request).code(), absl::StatusCode::kInvalidArgument);
}

TEST(ValidateFirstExecRequest, RejectsAnInvalidStart) {
  v1::ExecRequest request;
  request.mutable_start()->set_environment("cool-app-5c6c");
  EXPECT_THAT(ValidateFirstExecRequest(request).message(), HasSubstr("argv"));
}

TEST(ValidateLaterExecRequest, AcceptsInputResizeAndExistingSignals) {
  v1::ExecRequest request;
  request.set_stdin("");
  EXPECT_TRUE(ValidateLaterExecRequest(request).ok());
  request.set_close_stdin(false);  // the value is ignored
  EXPECT_TRUE(ValidateLaterExecRequest(request).ok());
  request.mutable_resize();  // a bad size is ignored by the session, not an error
  EXPECT_TRUE(ValidateLaterExecRequest(request).ok());
  for (int sig : {SIGHUP, SIGINT, SIGKILL, SIGTERM, SIGWINCH, NSIG - 1}) {
    request.set_signal(sig);
    EXPECT_TRUE(ValidateLaterExecRequest(request).ok()) << sig;
  }
}

TEST(ValidateLaterExecRequest, RejectsSignalsThatDoNotExist) {
  v1::ExecRequest request;
  for (int sig : {0, -9, NSIG, 1000}) {
    request.set_signal(sig);
    absl::Status status = ValidateLaterExecRequest(request);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << sig;
    EXPECT_THAT(status.message(), HasSubstr(absl::StrCat("signal ", sig, " does not exist")));
  }
}

TEST(ValidateLaterExecRequest, RejectsASecondStartAndAnEmptyRequest) {
  v1::ExecRequest request;
  EXPECT_THAT(ValidateLaterExecRequest(request).message(), HasSubstr("empty Exec request"));
  *request.mutable_start() = GoodStart();
  EXPECT_THAT(ValidateLaterExecRequest(request).message(), HasSubstr("only be sent once"));
}

// --- BuildExecEnvironment --------------------------------------------------------------------

class BuildExecEnvironmentTest : public ::testing::Test {
 protected:
  BuildExecEnvironmentTest() {
    record_.set_name("cool-app-5c6c");
    record_.set_project_path("/Users/alice/My Projects/cool-app");
    record_.set_uid(501);
    record_.set_gid(20);
    record_.set_shell("/bin/zsh");
  }

  std::vector<std::string> Build(const v1::ExecStart& start) {
    return BuildExecEnvironment(record_, "/home/cool-app-5c6c", start, &search_path_);
  }

  static std::vector<std::string> WithPrefix(const std::vector<std::string>& vars,
                                             const std::string& prefix) {
    std::vector<std::string> out;
    std::copy_if(vars.begin(), vars.end(), std::back_inserter(out),
                 [&](const std::string& v) { return v.rfind(prefix, 0) == 0; });
    return out;
  }

  internal::EnvironmentRecord record_;
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

// --- CreateEnvironment, GetEnvironment, DeleteEnvironment ------------------------------------

v1::CreateEnvironmentRequest CreateRequest(const std::string& path, const std::string& name = "") {
  v1::CreateEnvironmentRequest request;
  request.set_project_path(path);
  request.set_name(name);
  return request;
}

TEST(ValidateCreateEnvironment, CleansThePathAndDerivesTheName) {
  absl::StatusOr<EnvironmentToCreate> wanted =
      ValidateCreateEnvironment(CreateRequest("/home//alice/./proj/"));
  ASSERT_TRUE(wanted.ok()) << wanted.status();
  EXPECT_EQ(wanted->project_path, "/home/alice/proj");
  EXPECT_EQ(wanted->name, "proj-2af6");
}

TEST(ValidateCreateEnvironment, KeepsAGivenName) {
  absl::StatusOr<EnvironmentToCreate> wanted =
      ValidateCreateEnvironment(CreateRequest("/home/alice/proj", "_my-env_2"));
  ASSERT_TRUE(wanted.ok()) << wanted.status();
  EXPECT_EQ(wanted->name, "_my-env_2");
}

TEST(ValidateCreateEnvironment, RejectsABadPathBeforeTheName) {
  absl::StatusOr<EnvironmentToCreate> wanted =
      ValidateCreateEnvironment(CreateRequest("proj", "Bad Name"));
  EXPECT_EQ(wanted.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(wanted.status().message(), HasSubstr("relative"));
  for (const char* path : {"", "/", "/a/../b", "//./"}) {
    EXPECT_EQ(ValidateCreateEnvironment(CreateRequest(path)).status().code(),
              absl::StatusCode::kInvalidArgument)
        << path;
  }
}

TEST(ValidateCreateEnvironment, RejectsAnInvalidName) {
  for (const char* name : {"Upper", "9lives", "has space", "-dash", "x/y",
                           "a-name-that-is-much-too-long-for-a-user"}) {
    absl::StatusOr<EnvironmentToCreate> wanted =
        ValidateCreateEnvironment(CreateRequest("/home/alice/proj", name));
    EXPECT_EQ(wanted.status().code(), absl::StatusCode::kInvalidArgument) << name;
    EXPECT_THAT(wanted.status().message(), HasSubstr("is not valid: use 1-32 characters"));
  }
}

TEST(ValidateGetEnvironment, LooksUpANameAsGiven) {
  v1::GetEnvironmentRequest request;
  request.set_name("Not A Valid Name");
  absl::StatusOr<EnvironmentLookup> lookup = ValidateGetEnvironment(request);
  ASSERT_TRUE(lookup.ok()) << lookup.status();
  EXPECT_TRUE(lookup->by_name);
  EXPECT_EQ(lookup->name, "Not A Valid Name");
}

TEST(ValidateGetEnvironment, LooksUpACleanedProjectPath) {
  v1::GetEnvironmentRequest request;
  request.set_project_path("/srv//code/./app/");
  absl::StatusOr<EnvironmentLookup> lookup = ValidateGetEnvironment(request);
  ASSERT_TRUE(lookup.ok()) << lookup.status();
  EXPECT_FALSE(lookup->by_name);
  EXPECT_EQ(lookup->project_path, "/srv/code/app");
  request.set_project_path("/srv/../etc");
  EXPECT_THAT(ValidateGetEnvironment(request).status().message(), HasSubstr("\"..\""));
}

TEST(ValidateGetEnvironment, RejectsARequestWithoutNameOrPath) {
  absl::StatusOr<EnvironmentLookup> lookup = ValidateGetEnvironment(v1::GetEnvironmentRequest());
  EXPECT_EQ(lookup.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(lookup.status().message(), HasSubstr("give an environment name or a project path"));
}

TEST(ValidateDeleteEnvironment, AcceptsOnlyEnvironmentNames) {
  EXPECT_TRUE(ValidateDeleteEnvironment("proj-2af6").ok());
  for (const char* name : {"", "../proj-2af6", "proj-2af6/..", "PROJ"}) {
    absl::Status status = ValidateDeleteEnvironment(name);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << name;
    EXPECT_THAT(status.message(), HasSubstr("is not an environment name"));
  }
}

// --- Resource limits --------------------------------------------------------------------------

constexpr int64_t kMiB = int64_t{1} << 20;
constexpr int64_t kGiB = int64_t{1} << 30;

TEST(ValidateCreateEnvironment, KeepsTheRequestedLimitsAsGiven) {
  v1::CreateEnvironmentRequest request = CreateRequest("/home/alice/proj");
  *request.mutable_limits() = MakeResourceLimits(512 * kMiB, -1, 0);
  absl::StatusOr<EnvironmentToCreate> wanted = ValidateCreateEnvironment(request);
  ASSERT_TRUE(wanted.ok()) << wanted.status();
  EXPECT_EQ(wanted->limits.memory_max_bytes(), 512 * kMiB);
  EXPECT_EQ(wanted->limits.pids_max(), kNoLimit);
  EXPECT_EQ(wanted->limits.cpu_millicores(), 0);
}

TEST(ValidateCreateEnvironment, RejectsLimitsOutOfBounds) {
  v1::CreateEnvironmentRequest request = CreateRequest("/home/alice/proj");
  *request.mutable_limits() = MakeResourceLimits(0, 7, 0);
  absl::StatusOr<EnvironmentToCreate> wanted = ValidateCreateEnvironment(request);
  EXPECT_EQ(wanted.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(wanted.status().message(),
              HasSubstr("limits.pids_max is 7: use 0 (the agent's default), -1 (no limit) or 8"));
}

TEST(ValidateResourceLimits, AcceptsDefaultNoLimitAndTheBounds) {
  for (const v1::ResourceLimits& limits :
       {MakeResourceLimits(0, 0, 0), MakeResourceLimits(-1, -1, -1), MakeResourceLimits(16 * kMiB, 8, 10),
        MakeResourceLimits(INT64_MAX, 4194304, 1000000), MakeResourceLimits(6 * kGiB, 4096, 1500)}) {
    EXPECT_TRUE(ValidateResourceLimits(limits).ok()) << limits.ShortDebugString();
  }
}

TEST(ValidateResourceLimits, RejectsEachFieldJustOutsideItsBounds) {
  struct Case {
    v1::ResourceLimits limits;
    const char* message;
  };
  for (const Case& c : std::vector<Case>{
           {MakeResourceLimits(16 * kMiB - 1, 0, 0), "limits.memory_max_bytes is 16777215"},
           {MakeResourceLimits(-2, 0, 0), "limits.memory_max_bytes is -2"},
           {MakeResourceLimits(INT64_MIN, 0, 0), "limits.memory_max_bytes"},
           {MakeResourceLimits(0, 4194305, 0), "limits.pids_max is 4194305"},
           {MakeResourceLimits(0, -2, 0), "limits.pids_max is -2"},
           {MakeResourceLimits(0, 0, 9), "limits.cpu_millicores is 9"},
           {MakeResourceLimits(0, 0, 1000001), "limits.cpu_millicores is 1000001"},
           {MakeResourceLimits(0, 0, -7), "limits.cpu_millicores is -7"},
       }) {
    absl::Status status = ValidateResourceLimits(c.limits);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << c.limits.ShortDebugString();
    EXPECT_THAT(status.message(), HasSubstr(c.message));
  }
}

TEST(ResolveResourceLimits, TakesTheDefaultsForZerosAndKeepsTheRest) {
  ResourceDefaults defaults{6 * kGiB, 4096, kNoLimit};
  v1::ResourceLimits all_default = ResolveResourceLimits(MakeResourceLimits(0, 0, 0), defaults);
  EXPECT_EQ(all_default.ShortDebugString(), MakeResourceLimits(6 * kGiB, 4096, -1).ShortDebugString());
  v1::ResourceLimits own = ResolveResourceLimits(MakeResourceLimits(-1, 64, 500), defaults);
  EXPECT_EQ(own.ShortDebugString(), MakeResourceLimits(-1, 64, 500).ShortDebugString());
}

TEST(ResolveResourceLimits, NeverLeavesAZero) {
  // A default of 0 (a mistake) must not become memory.max 0, which would kill everything.
  v1::ResourceLimits resolved = ResolveResourceLimits(MakeResourceLimits(0, 0, 0), ResourceDefaults{0, 0, 0});
  EXPECT_EQ(resolved.ShortDebugString(), MakeResourceLimits(-1, -1, -1).ShortDebugString());
}

TEST(RecommendedResourceDefaults, ThreeQuartersOfMemoryFourThousandPidsAndNoCpuQuota) {
  ResourceDefaults vm = RecommendedResourceDefaults(8 * kGiB);
  EXPECT_EQ(vm.memory_max_bytes, 6 * kGiB);
  EXPECT_EQ(vm.pids_max, 4096);
  EXPECT_EQ(vm.cpu_millicores, kNoLimit);
  EXPECT_EQ(RecommendedResourceDefaults(0).memory_max_bytes, kNoLimit);
  EXPECT_EQ(RecommendedResourceDefaults(kMiB).memory_max_bytes, kMinMemoryMaxBytes);
  ResourceDefaults defaults = RecommendedResourceDefaults(8 * kGiB);
  EXPECT_TRUE(ValidateResourceLimits(ResolveResourceLimits({}, defaults)).ok());
}

TEST(DescribeLimitsMismatch, OnlyLimitsTheRequestSetsMustMatch) {
  v1::ResourceLimits existing = MakeResourceLimits(6 * kGiB, 4096, -1);
  EXPECT_EQ(DescribeLimitsMismatch(MakeResourceLimits(0, 0, 0), existing), "");
  EXPECT_EQ(DescribeLimitsMismatch(MakeResourceLimits(6 * kGiB, 4096, -1), existing), "");
  EXPECT_EQ(DescribeLimitsMismatch(MakeResourceLimits(0, 64, 1000), existing),
            "pids_max 64 (it has 4096), cpu_millicores 1000 (it has -1)");
}

TEST(ParseMemoryLimit, TakesBytesSuffixesPercentagesAndMax) {
  EXPECT_EQ(*ParseMemoryLimit("max", 0), kNoLimit);
  EXPECT_EQ(*ParseMemoryLimit("-1", 0), kNoLimit);
  EXPECT_EQ(*ParseMemoryLimit("16777216", 0), 16 * kMiB);
  EXPECT_EQ(*ParseMemoryLimit("512M", 0), 512 * kMiB);
  EXPECT_EQ(*ParseMemoryLimit("512MiB", 0), 512 * kMiB);
  EXPECT_EQ(*ParseMemoryLimit("8g", 0), 8 * kGiB);
  EXPECT_EQ(*ParseMemoryLimit("1.5G", 0), 3 * kGiB / 2);
  EXPECT_EQ(*ParseMemoryLimit("2T", 0), 2048 * kGiB);
  EXPECT_EQ(*ParseMemoryLimit("65536K", 0), 64 * kMiB);
  EXPECT_EQ(*ParseMemoryLimit("75%", 8 * kGiB), 6 * kGiB);
  EXPECT_EQ(*ParseMemoryLimit("100%", 8 * kGiB), 8 * kGiB);
}

TEST(ParseMemoryLimit, RejectsWhatIsNotAValidLimit) {
  for (const char* text : {"", "0", "1K", "16777215", "abc", "5X", "5 G", "-5G", "1e3G", "G", "0%",
                           "101%", "%", "x%", "99999999999T"}) {
    EXPECT_EQ(ParseMemoryLimit(text, 8 * kGiB).status().code(), absl::StatusCode::kInvalidArgument)
        << text;
  }
  EXPECT_EQ(ParseMemoryLimit("50%", 0).status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(ParseMemoryLimit("1%", 512 * kMiB).status().message(), HasSubstr("at least 16M"));
}

TEST(ParsePidsLimit, TakesACountWithinBoundsOrMax) {
  EXPECT_EQ(*ParsePidsLimit("4096"), 4096);
  EXPECT_EQ(*ParsePidsLimit("8"), 8);
  EXPECT_EQ(*ParsePidsLimit("max"), kNoLimit);
  for (const char* text : {"", "7", "4194305", "0", "-2", "1k", "many"}) {
    EXPECT_EQ(ParsePidsLimit(text).status().code(), absl::StatusCode::kInvalidArgument) << text;
  }
}

TEST(ParseCpuLimit, TakesCpusMillicoresOrMax) {
  EXPECT_EQ(*ParseCpuLimit("2"), 2000);
  EXPECT_EQ(*ParseCpuLimit("1.5"), 1500);
  EXPECT_EQ(*ParseCpuLimit("0.01"), 10);
  EXPECT_EQ(*ParseCpuLimit("500m"), 500);
  EXPECT_EQ(*ParseCpuLimit("1000"), 1000000);
  EXPECT_EQ(*ParseCpuLimit("max"), kNoLimit);
  for (const char* text : {"", "0", "0.001", "9m", "1001", "1.5m", "-2", "two", "1e3", "nan"}) {
    EXPECT_EQ(ParseCpuLimit(text).status().code(), absl::StatusCode::kInvalidArgument) << text;
  }
}

}  // namespace
}  // namespace llima
