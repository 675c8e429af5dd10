// Resource limits against a real agent: what a create asks for is what Get, List and the record
// keep, through an agent restart and a simulated reboot; each limit is enforced exactly where the
// kernel's cgroup v2 has its controller (the cgroup file holds it) and reported as not enforced,
// with the reason, where it has not. And a fork bomb and a memory hog in one environment while
// the agent and another environment keep answering, until deleting the environment ends them.
//
// The bomb and the hog are bounded by rlimits of their own (prlimit) and a timeout, besides the
// environment's limits: on a machine whose cgroup v2 has no pids or memory controller nothing
// else would bound them. Each scenario prints what it observed.

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <functional>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "agent_harness.h"
#include "cgroup.h"
#include "environment_manager.h"
#include "gmock/gmock.h"
#include "google/protobuf/text_format.h"
#include "gtest/gtest.h"
#include "llima/internal/agent_internal.pb.h"
#include "read_file.h"
#include "request_validation.h"

namespace llima::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;
using Clock = std::chrono::steady_clock;

// The environments' user; no other test uses it, so the bomb's process rlimit counts only the
// processes of this test (both environments run as it: the calm one shares the bomb's uid).
constexpr uid_t kOwner = 4601;
constexpr int64_t kMiB = int64_t{1} << 20;

// What this machine's kernel gives cgroup v2, read here independently of the agent.
LimitControllers KernelControllers() {
  std::optional<std::string> mount = FindCgroup2Mount(ReadFileOrEmpty("/proc/self/mountinfo"));
  if (!mount) return {};
  return ParseControllers(ReadFileOrEmpty(*mount + "/cgroup.controllers"));
}

std::string Trim(const std::string& s) { return std::string(absl::StripAsciiWhitespace(s)); }

double Millis(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

double Percentile(std::vector<double> values, double p) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  return values[std::min(values.size() - 1, static_cast<size_t>(p * values.size()))];
}

class LimitsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(geteuid(), 0u) << "reliability tests need root";
    agent_ = std::make_unique<AgentProcess>(scratch_.path());
    agent_->Start();
    before_ = TakeResourceSnapshot(*agent_);
  }

  void TearDown() override {
    if (HasFailure()) std::cerr << "---- agent log ----\n" << agent_->log() << "----\n";
  }

  std::string Project(const std::string& name) {
    return scratch_.MakeDir("projects/" + name, kOwner, kOwner);
  }

  grpc::Status Create(const std::string& path, const v1::ResourceLimits& limits,
                      v1::Environment* env) {
    v1::CreateEnvironmentRequest request;
    request.set_project_path(path);
    *request.mutable_limits() = limits;
    return CallCreate(agent_->stub(), request, env);
  }

  v1::Environment CreateOrFail(const std::string& path, const v1::ResourceLimits& limits) {
    v1::Environment env;
    grpc::Status s = Create(path, limits, &env);
    EXPECT_TRUE(s.ok()) << path << ": " << s.error_message();
    return env;
  }

  grpc::Status Get(const std::string& name, v1::Environment* env) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    v1::GetEnvironmentRequest request;
    request.set_name(name);
    return agent_->stub().GetEnvironment(&context, request, env);
  }

  grpc::Status List(v1::ListEnvironmentsResponse* response) {
    return CallList(agent_->stub(), response);
  }

  grpc::Status Delete(const std::string& name) { return CallDelete(agent_->stub(), name); }

  v1::AgentInfo Info() {
    grpc::ClientContext context;
    v1::AgentInfo info;
    EXPECT_TRUE(agent_->stub().GetAgentInfo(&context, {}, &info).ok());
    return info;
  }

  std::string CgroupFile(const std::string& name, const std::string& file) const {
    return agent_->cgroup_root() + "/" + name + "/" + file;
  }

  internal::EnvironmentRecord Record(const std::string& name) const {
    internal::EnvironmentRecord record;
    EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(
        ReadFileOrEmpty(agent_->state_dir() + "/envs/" + name + "/record.textpb"), &record));
    return record;
  }

  // Each limit of `env` is enforced exactly when the kernel has its controller: then the cgroup
  // file holds it; otherwise the state says which are not and why, and no file pretends.
  void ExpectEnforcedWhereTheKernelCan(const v1::Environment& env, const std::string& memory_max,
                                       const std::string& pids_max, const std::string& cpu_max) {
    LimitControllers kernel = KernelControllers();
    const v1::LimitsEnforcement& enforced = env.limits_enforcement();
    EXPECT_EQ(enforced.memory(), kernel.memory);
    EXPECT_EQ(enforced.pids(), kernel.pids);
    EXPECT_EQ(enforced.cpu(), kernel.cpu);
    struct Expectation {
      bool in_kernel;
      const char* controller;
      const char* file;
      const std::string& value;
    };
    for (const Expectation& e : {Expectation{kernel.memory, "memory", "memory.max", memory_max},
                                 Expectation{kernel.pids, "pids", "pids.max", pids_max},
                                 Expectation{kernel.cpu, "cpu", "cpu.max", cpu_max}}) {
      std::string path = CgroupFile(env.name(), e.file);
      if (e.in_kernel) {
        EXPECT_EQ(Trim(ReadFileOrEmpty(path)), e.value) << path;
      } else {
        struct stat st;
        EXPECT_NE(stat(path.c_str(), &st), 0) << path << " exists without its controller";
        EXPECT_THAT(enforced.detail(), HasSubstr(e.controller));
      }
    }
    if (kernel.none()) {
      EXPECT_THAT(enforced.detail(), StartsWith("limits not enforced: this kernel's cgroup v2 "
                                                "has no memory, pids, cpu controller"));
      if (!Cgroup1Controllers(ReadFileOrEmpty("/proc/self/mountinfo")).none()) {
        EXPECT_THAT(enforced.detail(), HasSubstr("bound to cgroup v1"));
      }
    }
    if (kernel.all()) {
      EXPECT_EQ(enforced.detail(), "");
    }
    // A running environment's state says it too.
    EXPECT_EQ(env.state(), v1::Environment::STATE_RUNNING);
    EXPECT_EQ(env.detail(), enforced.detail());
  }

  void ExpectNoLeaks() { EXPECT_EQ(DescribeLeaks(before_, TakeResourceSnapshot(*agent_)), ""); }

  ScratchDir scratch_;
  std::unique_ptr<AgentProcess> agent_;
  ResourceSnapshot before_;
};

TEST_F(LimitsTest, ReportsTheLimitsAndEnforcesEachWhereTheKernelHasItsController) {
  v1::Environment created = CreateOrFail(Project("limited"), MakeResourceLimits(256 * kMiB, 64, 500));
  ASSERT_FALSE(created.name().empty());
  EXPECT_EQ(created.limits().ShortDebugString(), MakeResourceLimits(256 * kMiB, 64, 500).ShortDebugString());
  ExpectEnforcedWhereTheKernelCan(created, "268435456", "64", "50000 100000");

  v1::Environment got;
  ASSERT_TRUE(Get(created.name(), &got).ok());
  EXPECT_EQ(got.limits().ShortDebugString(), created.limits().ShortDebugString());
  EXPECT_EQ(got.limits_enforcement().ShortDebugString(),
            created.limits_enforcement().ShortDebugString());
  v1::ListEnvironmentsResponse listed;
  ASSERT_TRUE(List(&listed).ok());
  ASSERT_EQ(listed.environments_size(), 1);
  EXPECT_EQ(listed.environments(0).limits().ShortDebugString(),
            created.limits().ShortDebugString());
  EXPECT_EQ(listed.environments(0).detail(), created.detail());
  std::printf("observed: limits %s; enforcement %s\n", created.limits().ShortDebugString().c_str(),
              created.limits_enforcement().ShortDebugString().c_str());

  ASSERT_TRUE(Delete(created.name()).ok());
  ExpectNoLeaks();
}

TEST_F(LimitsTest, AgentInfoGivesTheDefaultsAndWhatTheKernelEnforces) {
  v1::AgentInfo info = Info();
  ResourceDefaults expected = RecommendedResourceDefaults(PhysicalMemoryBytes());
  EXPECT_EQ(info.default_limits().memory_max_bytes(), expected.memory_max_bytes);
  EXPECT_EQ(info.default_limits().pids_max(), 4096);
  EXPECT_EQ(info.default_limits().cpu_millicores(), kNoLimit);
  LimitControllers kernel = KernelControllers();
  EXPECT_EQ(info.limits_enforcement().memory(), kernel.memory);
  EXPECT_EQ(info.limits_enforcement().pids(), kernel.pids);
  EXPECT_EQ(info.limits_enforcement().cpu(), kernel.cpu);
  if (kernel.none()) {
    EXPECT_THAT(info.limits_enforcement().detail(),
                StartsWith("limits not enforced: this kernel's cgroup v2 has no memory, pids, "
                           "cpu controller"));
  }
  if (kernel.all()) {
    EXPECT_EQ(info.limits_enforcement().detail(), "");
  }
  std::printf("observed: defaults %s; %s\n", info.default_limits().ShortDebugString().c_str(),
              info.limits_enforcement().detail().c_str());
}

TEST_F(LimitsTest, TheDefaultsComeFromTheAgentsFlags) {
  agent_->Terminate();
  agent_->Start({"--default-memory-max", "512M", "--default-pids-max", "300", "--default-cpu",
                 "1.5"});
  v1::AgentInfo info = Info();
  EXPECT_EQ(info.default_limits().memory_max_bytes(), 512ll << 20);
  EXPECT_EQ(info.default_limits().pids_max(), 300);
  EXPECT_EQ(info.default_limits().cpu_millicores(), 1500);
  v1::Environment env = CreateOrFail(Project("flags"), MakeResourceLimits(0, 0, 0));
  ASSERT_FALSE(env.name().empty());
  EXPECT_EQ(env.limits().ShortDebugString(), info.default_limits().ShortDebugString());
  ASSERT_TRUE(Delete(env.name()).ok());
}

TEST_F(LimitsTest, ZerosTakeTheAgentsDefaults) {
  v1::Environment env = CreateOrFail(Project("defaults"), MakeResourceLimits(0, 0, 0));
  ASSERT_FALSE(env.name().empty());
  EXPECT_EQ(env.limits().ShortDebugString(), Info().default_limits().ShortDebugString());
  v1::Environment partly = CreateOrFail(Project("partly"), MakeResourceLimits(0, 100, 0));
  EXPECT_EQ(partly.limits().pids_max(), 100);
  EXPECT_EQ(partly.limits().memory_max_bytes(), env.limits().memory_max_bytes());
  ASSERT_TRUE(Delete(env.name()).ok());
  ASSERT_TRUE(Delete(partly.name()).ok());
  ExpectNoLeaks();
}

TEST_F(LimitsTest, LimitsOutOfBoundsAreRefusedBeforeAnythingIsMade) {
  v1::Environment env;
  grpc::Status s = Create(Project("refused"), MakeResourceLimits(0, 3, 0), &env);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("limits.pids_max is 3"));
  s = Create(Project("refused"), MakeResourceLimits(kMiB, 0, 0), &env);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("limits.memory_max_bytes is 1048576"));
  v1::ListEnvironmentsResponse listed;
  ASSERT_TRUE(List(&listed).ok());
  EXPECT_EQ(listed.environments_size(), 0);
  ExpectNoLeaks();
}

TEST_F(LimitsTest, OtherLimitsForAnExistingEnvironmentAreRefused) {
  std::string project = Project("fixed");
  v1::Environment env = CreateOrFail(project, MakeResourceLimits(0, 64, 0));
  ASSERT_FALSE(env.name().empty());
  v1::Environment again;
  grpc::Status s = Create(project, MakeResourceLimits(0, 128, 0), &again);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(s.error_message(), HasSubstr("pids_max 128 (it has 64)"));
  // Unset limits (what `llima-box shell` sends) or the same ones: the environment as it is.
  ASSERT_TRUE(Create(project, MakeResourceLimits(0, 0, 0), &again).ok());
  EXPECT_EQ(again.limits().pids_max(), 64);
  ASSERT_TRUE(Create(project, MakeResourceLimits(0, 64, 0), &again).ok());
  ASSERT_TRUE(Delete(env.name()).ok());
  ExpectNoLeaks();
}

TEST_F(LimitsTest, LimitsSurviveAnAgentRestartAndAReboot) {
  v1::ResourceLimits limits = MakeResourceLimits(300 * kMiB, 77, 1500);
  v1::Environment created = CreateOrFail(Project("survivor"), limits);
  const std::string name = created.name();
  ASSERT_FALSE(name.empty());
  EXPECT_EQ(Record(name).limits().ShortDebugString(), limits.ShortDebugString());

  // Restart: the environment is adopted with its limits.
  agent_->Kill9();
  agent_->Start();
  v1::Environment adopted;
  ASSERT_TRUE(Get(name, &adopted).ok());
  EXPECT_THAT(agent_->log(), HasSubstr("adopt env=" + name));
  EXPECT_EQ(adopted.limits().ShortDebugString(), limits.ShortDebugString());
  ExpectEnforcedWhereTheKernelCan(adopted, "314572800", "77", "150000 100000");

  // Reboot: no init, no pin, no cgroup; the record alone brings the limits back.
  agent_->Kill9();
  ASSERT_TRUE(TakeAwayWhatARebootWould(*agent_, name));

  agent_->Start();
  v1::Environment rebuilt;
  ASSERT_TRUE(Get(name, &rebuilt).ok());
  EXPECT_THAT(agent_->log(), HasSubstr("rebuild env=" + name));
  EXPECT_EQ(rebuilt.limits().ShortDebugString(), limits.ShortDebugString());
  ExpectEnforcedWhereTheKernelCan(rebuilt, "314572800", "77", "150000 100000");
  EXPECT_EQ(Record(name).limits().ShortDebugString(), limits.ShortDebugString());
  EXPECT_EQ(Shell(agent_->stub(), name, "echo works").out, "works\n");

  ASSERT_TRUE(Delete(name).ok());
  ExpectNoLeaks();
}

// While something hostile runs in one environment: commands in another one and List keep
// working. Returns what was seen, for the report.
struct Responsiveness {
  int execs = 0;
  int exec_failures = 0;
  int list_failures = 0;
  std::vector<double> exec_ms;
  std::vector<double> list_ms;
};

Responsiveness Probe(
    AgentProcess& agent, const std::string& calm, Clock::duration how_long,
    const std::function<void()>& between = [] {}) {
  Responsiveness seen;
  Clock::time_point end = Clock::now() + how_long;
  while (Clock::now() < end) {
    Clock::time_point start = Clock::now();
    ExecResult r = Exec(agent.stub(), calm, {"sh", "-c", "echo calm"});
    seen.exec_ms.push_back(Millis(Clock::now() - start));
    ++seen.execs;
    if (!r.status.ok() || r.out != "calm\n") {
      ++seen.exec_failures;
      ADD_FAILURE() << "exec in " << calm << ": " << r.status.error_message() << r.out << r.err;
    }
    start = Clock::now();
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    v1::ListEnvironmentsResponse listed;
    if (!agent.stub().ListEnvironments(&context, {}, &listed).ok()) ++seen.list_failures;
    seen.list_ms.push_back(Millis(Clock::now() - start));
    between();
  }
  return seen;
}

// Processes of the environments' user on the host, wherever they are.
int ProcessesOfTheOwner() {
  return std::stoi(Trim(HostOutput(absl::StrCat("pgrep -u ", kOwner, " | wc -l"))));
}

bool OwnerHasNoProcessesWithin(int ms) {
  for (int waited = 0; waited < ms; waited += 20) {
    if (ProcessesOfTheOwner() == 0) return true;
    usleep(20000);
  }
  return ProcessesOfTheOwner() == 0;
}

TEST_F(LimitsTest, AForkBombDoesNotStopTheAgentOrAnotherEnvironment) {
  constexpr int kPidsMax = 128;     // the environment's limit, where the kernel enforces it
  constexpr int kProcessCap = 200;  // RLIMIT_NPROC of the bomb: the bound everywhere
  v1::Environment bomb = CreateOrFail(Project("bomb"), MakeResourceLimits(0, kPidsMax, 0));
  v1::Environment calm = CreateOrFail(Project("calm"), MakeResourceLimits(0, 0, 0));
  ASSERT_FALSE(bomb.name().empty());
  ASSERT_FALSE(calm.name().empty());
  bool pids_enforced = bomb.limits_enforcement().pids();

  // The classic bomb, then a loop that keeps forking sleepers, in bash: dash exits at its first
  // failed fork, so at the cap a dash bomb dies out, often between two looks at the count, and
  // the test would miss its peak. bash retries and goes on. Marked for whoever looks at ps.
  const std::string marker = "llima-limits-bomb";
  v1::ExecStart start;
  start.set_environment(bomb.name());
  for (const std::string& arg :
       {std::string("prlimit"), absl::StrCat("--nproc=", kProcessCap), std::string("--"),
        std::string("timeout"), std::string("-s"), std::string("KILL"), std::string("120"),
        std::string("bash"), std::string("-c"),
        "b() { b | b & }; b; while :; do sleep 1000 & done 2>/dev/null # " + marker}) {
    start.add_argv(arg);
  }
  ExecStream stream(agent_->stub(), start);

  // Wait until it has filled what it may.
  int peak = 0;
  Clock::time_point started = Clock::now();
  while (Clock::now() - started < std::chrono::seconds(20) && peak < kProcessCap / 2) {
    v1::Environment now;
    if (Get(bomb.name(), &now).ok()) peak = std::max(peak, now.process_count());
    usleep(50000);
  }
  ASSERT_GE(peak, kProcessCap / 2) << "the bomb did not grow";
  double fill_ms = Millis(Clock::now() - started);

  Responsiveness seen = Probe(*agent_, calm.name(), std::chrono::seconds(5), [&] {
    v1::Environment now;
    if (Get(bomb.name(), &now).ok()) peak = std::max(peak, now.process_count());
  });
  EXPECT_EQ(seen.exec_failures, 0);
  EXPECT_EQ(seen.list_failures, 0);
  EXPECT_GT(seen.execs, 0);
  EXPECT_LE(peak, kProcessCap);
  if (pids_enforced) {
    EXPECT_LE(peak, kPidsMax - 1);  // init is one of pids.max, not of the count
  }

  Clock::time_point deleting = Clock::now();
  ASSERT_TRUE(Delete(bomb.name()).ok());
  double delete_ms = Millis(Clock::now() - deleting);
  // Every process of the bomb, wherever it got to: the calm environment runs none now.
  EXPECT_TRUE(OwnerHasNoProcessesWithin(5000))
      << ProcessesOfTheOwner() << " processes survive the delete";
  ExecResult ended = stream.Finish();
  EXPECT_EQ(Exec(agent_->stub(), calm.name(), {"echo", "still"}).out, "still\n");

  std::printf(
      "observed: fork bomb (pids.max %d %s, RLIMIT_NPROC %d): %d processes in its environment "
      "at most, %.0f ms to half of the cap; meanwhile %d execs in another environment, all "
      "answered, median %.1f ms, p99 %.1f ms, max %.1f ms; List median %.1f ms, max %.1f ms; "
      "delete took %.0f ms and left %d processes; the bomb's exec ended with exit code %d\n",
      kPidsMax, pids_enforced ? "enforced" : "not enforced", kProcessCap, peak, fill_ms, seen.execs,
      Percentile(seen.exec_ms, 0.5), Percentile(seen.exec_ms, 0.99), Percentile(seen.exec_ms, 1),
      Percentile(seen.list_ms, 0.5), Percentile(seen.list_ms, 1), delete_ms, ProcessesOfTheOwner(),
      ended.exit_code);

  ASSERT_TRUE(Delete(calm.name()).ok());
  ExpectNoLeaks();
}

TEST_F(LimitsTest, AMemoryHogDoesNotStopTheAgentOrAnotherEnvironment) {
  constexpr int64_t kMemoryMax = 256 * kMiB;     // the environment's limit
  constexpr int64_t kAddressSpace = 768 * kMiB;  // RLIMIT_AS of the hog: the bound everywhere
  v1::Environment hog = CreateOrFail(Project("hog"), MakeResourceLimits(kMemoryMax, 0, 0));
  v1::Environment calm = CreateOrFail(Project("calm"), MakeResourceLimits(0, 0, 0));
  ASSERT_FALSE(hog.name().empty());
  ASSERT_FALSE(calm.name().empty());
  bool memory_enforced = hog.limits_enforcement().memory();

  // Takes 16 MiB at a time, every page touched, until refused; says how far it got, then holds
  // it all.
  const std::string marker = "llima-limits-hog";
  const std::string script =
      "import sys, time\n"
      "held = []\n"
      "try:\n"
      "    while len(held) < 64:\n"
      "        chunk = bytearray(16 << 20)\n"
      "        chunk[::4096] = b'\\x01' * (len(chunk) // 4096)\n"
      "        held.append(chunk)\n"
      "        print('MiB', 16 * len(held), flush=True)\n"
      "except MemoryError:\n"
      "    pass\n"
      "print('held', 16 * len(held), flush=True)\n"
      "time.sleep(60)\n"
      "# " +
      marker + "\n";
  v1::ExecStart start;
  start.set_environment(hog.name());
  for (const std::string& arg :
       {std::string("prlimit"), absl::StrCat("--as=", kAddressSpace), std::string("--"),
        std::string("timeout"), std::string("-s"), std::string("KILL"), std::string("120"),
        std::string("python3"), std::string("-c"), script}) {
    start.add_argv(arg);
  }
  ExecStream stream(agent_->stub(), start);
  Clock::time_point started = Clock::now();
  // Either it holds what it could get, or (memory enforced) the kernel OOM-kills it on the way.
  bool held = stream.WaitFor("held", 30000);
  double fill_ms = Millis(Clock::now() - started);
  std::string out = stream.output();
  int reached = 0;
  for (absl::string_view line : absl::StrSplit(out, '\n', absl::SkipEmpty())) {
    std::vector<std::string> words = absl::StrSplit(line, ' ');
    if (words.size() == 2) reached = std::max(reached, std::stoi(words[1]));
  }
  ExecResult ended;
  if (memory_enforced) {
    EXPECT_FALSE(held) << "the hog got " << reached << " MiB past memory.max";
    ended = stream.Finish();
    // The OOM killer ends python; timeout passes that on as 128 + SIGKILL.
    EXPECT_EQ(ended.exit_code, 128 + SIGKILL) << "the kernel's OOM killer ends it";
    EXPECT_LE(reached, kMemoryMax / kMiB);
  } else {
    ASSERT_TRUE(held) << out;
    EXPECT_GE(reached, 256);  // past the environment's limit: nothing enforces it here
    EXPECT_LT(reached, kAddressSpace / kMiB);
  }

  Responsiveness seen = Probe(*agent_, calm.name(), std::chrono::seconds(3));
  EXPECT_EQ(seen.exec_failures, 0);
  EXPECT_EQ(seen.list_failures, 0);
  // The hog's own environment is still there and works.
  v1::Environment after;
  ASSERT_TRUE(Get(hog.name(), &after).ok());
  EXPECT_EQ(after.state(), v1::Environment::STATE_RUNNING);
  EXPECT_EQ(Exec(agent_->stub(), hog.name(), {"echo", "alive"}).out, "alive\n");

  Clock::time_point deleting = Clock::now();
  ASSERT_TRUE(Delete(hog.name()).ok());
  double delete_ms = Millis(Clock::now() - deleting);
  EXPECT_TRUE(GoneWithin(marker, 5000));
  EXPECT_TRUE(OwnerHasNoProcessesWithin(5000));
  if (!memory_enforced) ended = stream.Finish();

  std::printf(
      "observed: memory hog (memory.max %lld MiB %s, RLIMIT_AS %lld MiB): reached %d MiB in "
      "%.0f ms, %s; meanwhile %d execs in another environment, all answered, median %.1f ms, "
      "max %.1f ms; List max %.1f ms; delete took %.0f ms\n",
      static_cast<long long>(kMemoryMax / kMiB), memory_enforced ? "enforced" : "not enforced",
      static_cast<long long>(kAddressSpace / kMiB), reached, fill_ms,
      held ? "held it (MemoryError past the rlimit)" : "OOM-killed in its environment", seen.execs,
      Percentile(seen.exec_ms, 0.5), Percentile(seen.exec_ms, 1), Percentile(seen.list_ms, 1),
      delete_ms);

  ASSERT_TRUE(Delete(calm.name()).ok());
  ExpectNoLeaks();
}

}  // namespace
}  // namespace llima::testing
