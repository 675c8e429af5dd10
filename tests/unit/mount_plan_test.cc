// The mount plan is the isolation policy of an environment, as data: what the environment sees,
// what it may write, and in which order the mounts must happen.

#include "mount_plan.h"

#include <algorithm>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "project_path.h"

namespace llima {
namespace {

using ::testing::HasSubstr;
using Kind = MountStep::Kind;

constexpr char kName[] = "cool-app-5c6c";
constexpr char kProject[] = "/Users/alice/My Projects/cool-app";
constexpr char kHome[] = "/home/cool-app-5c6c";
constexpr char kResolverDir[] = "/run/systemd/resolve";
constexpr char kStateDir[] = "/var/lib/llima-box";

// A merged-/usr Ubuntu host: /bin, /sbin and /lib are symlinks into /usr.
HostLayout FakeHost() {
  HostLayout host;
  host.system_entries = {
      {"usr", false, ""},       {"bin", true, "usr/bin"}, {"sbin", true, "usr/sbin"},
      {"lib", true, "usr/lib"}, {"etc", false, ""},       {"opt", false, ""},
  };
  host.resolver_dir = kResolverDir;
  return host;
}

RootSpec FakeSpec(const std::string& project = kProject) {
  RootSpec spec;
  spec.name = kName;
  spec.project_path = project;
  spec.home_path = kHome;
  spec.passwd =
      "root:x:0:0:root:/root:/bin/bash\ncool-app-5c6c:x:501:20::/home/cool-app-5c6c:/bin/bash\n";
  spec.group = "root:x:0:\ncool-app-5c6c:x:20:\n";
  spec.host = FakeHost();
  return spec;
}

bool IsProperAncestor(const std::string& ancestor, const std::string& path) {
  return ancestor != path && PathIsWithin(path, ancestor);
}

// The index of the only step with `target`, or -1 (with a test failure) when there is not
// exactly one.
int IndexOf(const MountPlan& plan, const std::string& target) {
  int found = -1;
  for (size_t i = 0; i < plan.steps.size(); ++i) {
    if (plan.steps[i].target != target) continue;
    if (found != -1) {
      ADD_FAILURE() << "two steps target " << target;
      return -1;
    }
    found = static_cast<int>(i);
  }
  if (found == -1) ADD_FAILURE() << "no step targets " << target;
  return found;
}

// The only step with `target`, or nullptr (with a test failure).
const MountStep* Find(const MountPlan& plan, const std::string& target) {
  int index = IndexOf(plan, target);
  return index < 0 ? nullptr : &plan.steps[index];
}

bool ReadOnly(const MountStep& step) { return (step.attrs & kAttrReadOnly) != 0; }

class MountPlanTest : public ::testing::Test {
 protected:
  RootSpec spec_ = FakeSpec();
  MountPlan plan_ = PlanEnvironmentRoot(spec_);
};

TEST_F(MountPlanTest, ProjectIsWritableAndEtcIsReadOnly) {
  const MountStep* project = Find(plan_, kProject);
  ASSERT_NE(project, nullptr);
  EXPECT_EQ(project->kind, Kind::kBindFd);
  EXPECT_EQ(project->fd_index, kProjectFdIndex);
  EXPECT_FALSE(ReadOnly(*project));

  const MountStep* etc = Find(plan_, "/etc");
  ASSERT_NE(etc, nullptr);
  EXPECT_EQ(etc->kind, Kind::kBindHost);
  EXPECT_EQ(etc->source, "/etc");
  EXPECT_TRUE(ReadOnly(*etc));
}

TEST_F(MountPlanTest, SystemDirectoriesAreReadOnlyBindsOfTheHost) {
  for (const char* dir : {"/usr", "/etc", "/opt"}) {
    SCOPED_TRACE(dir);
    const MountStep* step = Find(plan_, dir);
    ASSERT_NE(step, nullptr);
    EXPECT_EQ(step->kind, Kind::kBindHost);
    EXPECT_EQ(step->source, dir);
    EXPECT_TRUE(ReadOnly(*step));
  }
}

TEST_F(MountPlanTest, MergedUsrSymlinksAreRecreatedNotBound) {
  const MountStep* bin = Find(plan_, "/bin");
  ASSERT_NE(bin, nullptr);
  EXPECT_EQ(bin->kind, Kind::kSymlink);
  EXPECT_EQ(bin->source, "usr/bin");
  const MountStep* lib = Find(plan_, "/lib");
  ASSERT_NE(lib, nullptr);
  EXPECT_EQ(lib->kind, Kind::kSymlink);
  EXPECT_EQ(lib->source, "usr/lib");
}

TEST_F(MountPlanTest, SystemDirectoriesTheHostLacksAreNotPlanned) {
  for (const MountStep& step : plan_.steps) {
    EXPECT_NE(step.target, "/lib64");
    EXPECT_NE(step.target, "/lib32");
    EXPECT_NE(step.target, "/libx32");
  }
}

TEST_F(MountPlanTest, HomeIsAWritableBindOfTheHomeDescriptor) {
  const MountStep* home = Find(plan_, kHome);
  ASSERT_NE(home, nullptr);
  EXPECT_EQ(home->kind, Kind::kBindFd);
  EXPECT_EQ(home->fd_index, kHomeFdIndex);
  EXPECT_FALSE(ReadOnly(*home));
}

TEST_F(MountPlanTest, ProjectAndHomeAreNoSuid) {
  const MountStep* project = Find(plan_, kProject);
  const MountStep* home = Find(plan_, kHome);
  ASSERT_NE(project, nullptr);
  ASSERT_NE(home, nullptr);
  EXPECT_NE(project->attrs & kAttrNoSuid, 0u);
  EXPECT_NE(home->attrs & kAttrNoSuid, 0u);
}

TEST_F(MountPlanTest, TmpDevShmVarAndRunArePrivateWritableTmpfs) {
  for (const char* dir : {"/tmp", "/dev/shm", "/var", "/run"}) {
    SCOPED_TRACE(dir);
    const MountStep* step = Find(plan_, dir);
    ASSERT_NE(step, nullptr);
    EXPECT_EQ(step->kind, Kind::kTmpfs);
    EXPECT_FALSE(ReadOnly(*step));
    EXPECT_NE(step->attrs & kAttrNoSuid, 0u);
    EXPECT_NE(step->attrs & kAttrNoDev, 0u);
  }
}

TEST_F(MountPlanTest, TmpAndDevShmAreStickyAndWorldWritable) {
  for (const char* dir : {"/tmp", "/dev/shm"}) {
    const MountStep* step = Find(plan_, dir);
    ASSERT_NE(step, nullptr) << dir;
    EXPECT_THAT(step->data, HasSubstr("mode=1777")) << dir;
  }
}

TEST_F(MountPlanTest, VarTmpIsAPrivateStickyDirectory) {
  const MountStep* var_tmp = Find(plan_, "/var/tmp");
  ASSERT_NE(var_tmp, nullptr);
  EXPECT_EQ(var_tmp->kind, Kind::kDirectory);
  EXPECT_EQ(var_tmp->mode, 01777u);
}

TEST_F(MountPlanTest, DevIsAFreshTmpfsNotTheHostsDev) {
  const MountStep* dev = Find(plan_, "/dev");
  ASSERT_NE(dev, nullptr);
  EXPECT_EQ(dev->kind, Kind::kTmpfs);
}

TEST_F(MountPlanTest, DeviceNodesAreBoundOneByOneAsFiles) {
  for (const char* node : {"/dev/null", "/dev/zero", "/dev/urandom", "/dev/tty"}) {
    SCOPED_TRACE(node);
    const MountStep* step = Find(plan_, node);
    ASSERT_NE(step, nullptr);
    EXPECT_EQ(step->kind, Kind::kBindHost);
    EXPECT_EQ(step->source, node);
    EXPECT_TRUE(step->source_is_file);
  }
}

TEST_F(MountPlanTest, ProcIsTheEnvironmentsOwnProcfs) {
  const MountStep* proc = Find(plan_, "/proc");
  ASSERT_NE(proc, nullptr);
  EXPECT_EQ(proc->kind, Kind::kProc);
}

TEST_F(MountPlanTest, SysIsReadOnly) {
  const MountStep* sys = Find(plan_, "/sys");
  ASSERT_NE(sys, nullptr);
  EXPECT_EQ(sys->kind, Kind::kBindHost);
  EXPECT_EQ(sys->source, "/sys");
  EXPECT_TRUE(ReadOnly(*sys));
}

TEST_F(MountPlanTest, DevPtsIsANewInstanceWithAnOpenPtmx) {
  const MountStep* pts = Find(plan_, "/dev/pts");
  ASSERT_NE(pts, nullptr);
  EXPECT_EQ(pts->kind, Kind::kDevpts);
  EXPECT_THAT(pts->data, HasSubstr("newinstance"));
  // One environment cannot drain the system-wide pty pool.
  EXPECT_THAT(pts->data, ::testing::ContainsRegex("max=[0-9]+"));
  EXPECT_THAT(pts->data, HasSubstr("ptmxmode=0666"));
}

TEST_F(MountPlanTest, DevPtmxPointsIntoThePrivatePts) {
  const MountStep* ptmx = Find(plan_, "/dev/ptmx");
  ASSERT_NE(ptmx, nullptr);
  EXPECT_EQ(ptmx->kind, Kind::kSymlink);
  EXPECT_EQ(ptmx->source, "pts/ptmx");
}

TEST_F(MountPlanTest, PasswdAndGroupAreTheSynthesizedContent) {
  const MountStep* passwd = Find(plan_, "/etc/passwd");
  ASSERT_NE(passwd, nullptr);
  EXPECT_EQ(passwd->kind, Kind::kBindContent);
  EXPECT_EQ(passwd->data, spec_.passwd);
  const MountStep* group = Find(plan_, "/etc/group");
  ASSERT_NE(group, nullptr);
  EXPECT_EQ(group->kind, Kind::kBindContent);
  EXPECT_EQ(group->data, spec_.group);
}

TEST_F(MountPlanTest, ResolverDirectoryIsBoundReadOnly) {
  const MountStep* resolver = Find(plan_, kResolverDir);
  ASSERT_NE(resolver, nullptr);
  EXPECT_EQ(resolver->kind, Kind::kBindHost);
  EXPECT_EQ(resolver->source, kResolverDir);
  EXPECT_TRUE(ReadOnly(*resolver));
}

TEST(MountPlan, WithoutResolverDirectoryNothingOfTheHostsRunIsBound) {
  RootSpec spec = FakeSpec();
  spec.host.resolver_dir.clear();
  MountPlan plan = PlanEnvironmentRoot(spec);
  for (const MountStep& step : plan.steps) {
    if (step.kind != Kind::kBindHost) continue;
    EXPECT_FALSE(PathIsWithin(step.source, "/run")) << step.source;
  }
}

TEST_F(MountPlanTest, OnlySystemDirectoriesResolverDevicesAndSysComeFromTheHost) {
  for (const MountStep& step : plan_.steps) {
    if (step.kind != Kind::kBindHost) continue;
    SCOPED_TRACE(step.target);
    bool allowed = step.source == "/usr" || step.source == "/etc" || step.source == "/opt" ||
                   step.source == kResolverDir || step.source == "/sys" ||
                   (step.source_is_file && IsProperAncestor("/dev", step.source));
    EXPECT_TRUE(allowed) << "the host's " << step.source << " is visible in the environment";
  }
}

TEST_F(MountPlanTest, NothingIsMountedOnRootsHomeVarLibOrTheStateDirectory) {
  for (const MountStep& step : plan_.steps) {
    EXPECT_FALSE(PathIsWithin(step.target, "/root")) << step.target;
    EXPECT_FALSE(PathIsWithin(step.target, "/var/lib")) << step.target;
    EXPECT_FALSE(PathIsWithin(step.target, kStateDir)) << step.target;
    if (step.kind == Kind::kBindHost) {
      EXPECT_FALSE(PathIsWithin(step.source, "/root")) << step.source;
      EXPECT_FALSE(PathIsWithin(step.source, "/var")) << step.source;
      EXPECT_FALSE(PathIsWithin(step.source, "/home")) << step.source;
    }
  }
}

TEST_F(MountPlanTest, EveryTargetIsAbsolute) {
  for (const MountStep& step : plan_.steps) {
    ASSERT_FALSE(step.target.empty());
    EXPECT_EQ(step.target[0], '/') << step.target;
  }
}

TEST_F(MountPlanTest, ProjectAndHomeComeAfterEveryOtherStep) {
  int project = IndexOf(plan_, kProject);
  int home = IndexOf(plan_, kHome);
  ASSERT_GE(project, 0);
  ASSERT_GE(home, 0);
  int last = static_cast<int>(plan_.steps.size()) - 1;
  EXPECT_GE(std::min(project, home), last - 1);
}

TEST_F(MountPlanTest, ParentsAreMountedBeforeTheirChildren) {
  EXPECT_LT(IndexOf(plan_, "/var"), IndexOf(plan_, "/var/tmp"));
  EXPECT_LT(IndexOf(plan_, "/run"), IndexOf(plan_, kResolverDir));
  EXPECT_LT(IndexOf(plan_, "/dev"), IndexOf(plan_, "/dev/pts"));
  EXPECT_LT(IndexOf(plan_, "/dev/pts"), IndexOf(plan_, "/dev/ptmx"));
  EXPECT_LT(IndexOf(plan_, "/dev"), IndexOf(plan_, "/dev/shm"));
  EXPECT_LT(IndexOf(plan_, "/dev"), IndexOf(plan_, "/dev/null"));
  EXPECT_LT(IndexOf(plan_, "/etc"), IndexOf(plan_, "/etc/passwd"));
  EXPECT_LT(IndexOf(plan_, "/etc"), IndexOf(plan_, "/etc/group"));
}

// A later mount on an ancestor would hide an earlier step; this holds wherever the project is.
TEST(MountPlan, NoStepIsHiddenByALaterMountOnAnAncestor) {
  for (const char* project : {kProject, "/home/alice/proj", "/tmp/x/proj", "/srv/code",
                              "/var/www/site", "/opt/work/proj"}) {
    SCOPED_TRACE(project);
    MountPlan plan = PlanEnvironmentRoot(FakeSpec(project));
    for (size_t i = 0; i < plan.steps.size(); ++i) {
      for (size_t j = i + 1; j < plan.steps.size(); ++j) {
        EXPECT_FALSE(IsProperAncestor(plan.steps[j].target, plan.steps[i].target))
            << "step " << j << " (" << plan.steps[j].target << ") comes after step " << i << " ("
            << plan.steps[i].target << ") beneath it";
      }
    }
  }
}

TEST(MountPlan, ProjectIsMountedAtItsOwnAbsolutePath) {
  MountPlan plan = PlanEnvironmentRoot(FakeSpec("/srv/code"));
  const MountStep* project = Find(plan, "/srv/code");
  ASSERT_NE(project, nullptr);
  EXPECT_EQ(project->kind, Kind::kBindFd);
  EXPECT_EQ(project->fd_index, kProjectFdIndex);
}

// --- CheckProjectPlacement -------------------------------------------------------------------

const std::vector<std::string> kAgentPaths = {kStateDir, "/run/llima-box"};

absl::StatusCode PlacementCode(const std::string& project,
                               const std::vector<std::string>& protected_paths = kAgentPaths) {
  return CheckProjectPlacement(project, protected_paths).code();
}

// The home is the environment user's: a project in it would make init (root) create mount
// points along paths that user controls.
TEST(CheckProjectPlacement, RejectsProjectsInsideTheEnvironmentsOwnHome) {
  absl::Status s = CheckProjectPlacement("/home/app-1a2b/src/p", {}, "/home/app-1a2b");
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(s.message()), ::testing::HasSubstr("own home"));
  EXPECT_EQ(CheckProjectPlacement("/home/app-1a2b", {}, "/home/app-1a2b").code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(CheckProjectPlacement("/home/alice/app", {}, "/home/app-1a2b").ok());
}

TEST(CheckProjectPlacement, RejectsProjectsInsideKernelAndRuntimeFilesystems) {
  for (const char* project : {"/proc/x", "/proc", "/sys", "/sys/fs/cgroup", "/dev/x", "/dev",
                              "/run/foo", "/run/user/501/proj"}) {
    SCOPED_TRACE(project);
    EXPECT_EQ(PlacementCode(project), absl::StatusCode::kFailedPrecondition);
  }
}

TEST(CheckProjectPlacement, RejectsProjectsThatContainAMountPointOfThePlan) {
  for (const char* project : {"/home", "/tmp", "/var", "/usr", "/etc", "/opt", "/bin", "/lib64"}) {
    SCOPED_TRACE(project);
    EXPECT_EQ(PlacementCode(project), absl::StatusCode::kFailedPrecondition);
  }
}

TEST(CheckProjectPlacement, RejectsProjectsEqualToInsideOrAboveAnAgentPath) {
  // An agent path that no other rule covers, so each case tests the protected-path rule.
  const std::vector<std::string> protected_paths = {"/srv/agent/state"};
  for (const char* project :
       {"/srv/agent/state", "/srv/agent/state/envs/x", "/srv/agent", "/srv"}) {
    SCOPED_TRACE(project);
    EXPECT_EQ(PlacementCode(project, protected_paths), absl::StatusCode::kFailedPrecondition);
  }
  EXPECT_EQ(PlacementCode("/srv/agent-other", protected_paths), absl::StatusCode::kOk);
}

TEST(CheckProjectPlacement, RejectsTheStateDirectoryAndItsParents) {
  for (const char* project : {kStateDir, "/var/lib/llima-box/envs/x", "/var/lib"}) {
    SCOPED_TRACE(project);
    EXPECT_EQ(PlacementCode(project), absl::StatusCode::kFailedPrecondition);
  }
}

TEST(CheckProjectPlacement, AcceptsOrdinaryProjectDirectories) {
  for (const char* project :
       {"/home/alice/proj", "/home/alice", "/tmp/x/proj", "/Users/me/p", "/srv/code"}) {
    SCOPED_TRACE(project);
    absl::Status status = CheckProjectPlacement(project, kAgentPaths);
    EXPECT_TRUE(status.ok()) << status;
  }
}

TEST(CheckProjectPlacement, IgnoresEmptyProtectedPaths) {
  EXPECT_TRUE(CheckProjectPlacement("/srv/code", {""}).ok());
}

TEST(CheckProjectPlacement, ErrorNamesTheProjectAndWhatItCollidesWith) {
  absl::Status status = CheckProjectPlacement("/proc/x", kAgentPaths);
  EXPECT_THAT(status.message(), HasSubstr("/proc/x"));
  EXPECT_THAT(status.message(), HasSubstr("/proc"));

  status = CheckProjectPlacement("/var/lib", kAgentPaths);
  EXPECT_THAT(status.message(), HasSubstr("/var/lib"));
  EXPECT_THAT(status.message(), HasSubstr(kStateDir));
}

}  // namespace
}  // namespace llima
