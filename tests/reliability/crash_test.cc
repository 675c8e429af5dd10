// The agent killed with SIGKILL at every step of create and delete (LLIMA_AGENT_CRASH_AT), and a
// VM reboot simulated by killing the inits and unmounting the pins: after the next start, each
// environment is either complete and working or entirely gone, and nothing else is left.

#include <signal.h>
#include <unistd.h>

#include <fstream>

#include "absl/strings/str_cat.h"
#include "agent_harness.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace llima::testing {
namespace {

constexpr uid_t kOwner = 4242;

std::vector<v1::Environment> ListCall(v1::AgentService::Stub& stub) {
  v1::ListEnvironmentsResponse response;
  EXPECT_TRUE(CallList(stub, &response).ok());
  return {response.environments().begin(), response.environments().end()};
}

class CrashTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(geteuid(), 0u) << "reliability tests need root";
    project_ = scratch_.MakeDir("projects/crash", kOwner, kOwner);
    std::ofstream(project_ + "/marker") << "in the project\n";
    agent_ = std::make_unique<AgentProcess>(scratch_.path());
  }

  // Restarts the agent (without any crash point) after it killed itself.
  void Restart() {
    agent_->Kill9();  // reaps the agent that killed itself
    agent_->Start();
  }

  // The environment works: its project and home are there, a command runs in it.
  void ExpectWorking(const std::string& name, const std::string& home_file = "") {
    ExecResult r = Shell(agent_->stub(), name,
                         "cat " + project_ + "/marker; id -u" +
                             (home_file.empty() ? "" : "; cat ~/" + home_file));
    std::string expected = absl::StrCat("in the project\n", kOwner, "\n");
    if (!home_file.empty()) expected += "kept\n";
    EXPECT_EQ(r.out, expected) << r.err << r.status.error_message();
  }

  ScratchDir scratch_;
  std::string project_;
  std::unique_ptr<AgentProcess> agent_;
};

struct CreatePoint {
  const char* point;
  bool complete;  // whether the environment exists after the restart
};

void PrintTo(const CreatePoint& p, std::ostream* os) { *os << p.point; }

class CrashDuringCreate : public CrashTest, public ::testing::WithParamInterface<CreatePoint> {};

TEST_P(CrashDuringCreate, LeavesAllOrNothing) {
  const CreatePoint& p = GetParam();
  agent_->Start({}, {std::string("LLIMA_AGENT_CRASH_AT=") + p.point});
  ResourceSnapshot before = TakeResourceSnapshot(*agent_);
  v1::Environment created;
  grpc::Status status = CallCreate(agent_->stub(), project_, &created);
  ASSERT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE)
      << "the agent did not crash at " << p.point << ": " << status.error_message();
  ASSERT_THAT(agent_->log(), ::testing::HasSubstr(absl::StrCat("crashes at \"", p.point)));

  Restart();
  std::vector<v1::Environment> envs = ListCall(agent_->stub());
  if (p.complete) {
    ASSERT_EQ(envs.size(), 1u) << "the create was committed at " << p.point;
    EXPECT_EQ(envs[0].state(), v1::Environment::STATE_RUNNING);
    ExpectWorking(envs[0].name());
    ASSERT_TRUE(CallDelete(agent_->stub(), envs[0].name()).ok());
  } else {
    EXPECT_TRUE(envs.empty()) << "an uncommitted create left " << envs[0].name();
    // The restart itself removed what the interrupted create had made.
    EXPECT_EQ(DescribeLeaks(before, TakeResourceSnapshot(*agent_)), "") << "after " << p.point;
    // The create can be made again, and works.
    ASSERT_TRUE(CallCreate(agent_->stub(), project_, &created).ok());
    ExpectWorking(created.name());
    ASSERT_TRUE(CallDelete(agent_->stub(), created.name()).ok());
  }
  EXPECT_EQ(DescribeLeaks(before, TakeResourceSnapshot(*agent_)), "") << "after " << p.point;
}

// Every step of create, in order. The record's rename commits it.
INSTANTIATE_TEST_SUITE_P(
    EveryStep, CrashDuringCreate,
    ::testing::Values(CreatePoint{"create:directory", false}, CreatePoint{"create:cgroup", false},
                      CreatePoint{"create:init", false}, CreatePoint{"create:ready", false},
                      CreatePoint{"create:pin", false}, CreatePoint{"create:record", false},
                      CreatePoint{"create:committed", true}),
    [](const auto& info) {
      std::string name = info.param.point;
      return name.substr(name.find(':') + 1);
    });

class CrashDuringDelete : public CrashTest, public ::testing::WithParamInterface<const char*> {};

TEST_P(CrashDuringDelete, FinishesTheDelete) {
  const char* point = GetParam();
  agent_->Start({}, {std::string("LLIMA_AGENT_CRASH_AT=") + point});
  ResourceSnapshot before = TakeResourceSnapshot(*agent_);
  v1::Environment env = CreateEnvironmentOrFail(agent_->stub(), project_);
  ASSERT_FALSE(env.name().empty());
  ASSERT_EQ(Shell(agent_->stub(), env.name(), "echo kept > ~/file; sleep 973 >/dev/null 2>&1 &")
                .exit_code,
            0);
  grpc::Status status = CallDelete(agent_->stub(), env.name());
  ASSERT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE)
      << "the agent did not crash at " << point << ": " << status.error_message();

  Restart();
  EXPECT_TRUE(ListCall(agent_->stub()).empty()) << "the delete was committed at " << point;
  EXPECT_TRUE(GoneWithin("sleep 973", 5000));
  EXPECT_EQ(DescribeLeaks(before, TakeResourceSnapshot(*agent_)), "") << "after " << point;
  // The project itself is never touched by a delete.
  EXPECT_EQ(HostOutput("cat " + project_ + "/marker"), "in the project\n");
}

INSTANTIATE_TEST_SUITE_P(EveryStep, CrashDuringDelete,
                         ::testing::Values("delete:record", "delete:stopped"),
                         [](const auto& info) {
                           std::string name = info.param;
                           return name.substr(name.find(':') + 1);
                         });

// After a VM reboot the records are there, but no init, no pin and no cgroup.
TEST_F(CrashTest, EnvironmentsAreRebuiltAfterAReboot) {
  agent_->Start();
  ResourceSnapshot before = TakeResourceSnapshot(*agent_);
  v1::Environment env = CreateEnvironmentOrFail(agent_->stub(), project_);
  ASSERT_FALSE(env.name().empty());
  const std::string name = env.name();
  ASSERT_EQ(Shell(agent_->stub(), name, "echo kept > ~/file").exit_code, 0);
  ResourceSnapshot running = TakeResourceSnapshot(*agent_);

  agent_->Kill9();
  ASSERT_TRUE(TakeAwayWhatARebootWould(*agent_, name));

  agent_->Start();
  std::vector<v1::Environment> envs = ListCall(agent_->stub());
  ASSERT_EQ(envs.size(), 1u);
  EXPECT_EQ(envs[0].name(), name);
  EXPECT_EQ(envs[0].state(), v1::Environment::STATE_RUNNING);
  EXPECT_THAT(agent_->log(), ::testing::HasSubstr("rebuild env=" + name));
  ExpectWorking(name, "file");
  // The same resources as before the reboot: one init, one pin, one cgroup.
  ResourceSnapshot rebuilt = TakeResourceSnapshot(*agent_);
  EXPECT_EQ(rebuilt.mounts, running.mounts);
  EXPECT_EQ(rebuilt.cgroups, running.cgroups);
  EXPECT_EQ(rebuilt.inits.size(), running.inits.size());
  ASSERT_TRUE(CallDelete(agent_->stub(), name).ok());
  EXPECT_EQ(DescribeLeaks(before, TakeResourceSnapshot(*agent_)), "");
}

}  // namespace
}  // namespace llima::testing
