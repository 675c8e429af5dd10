// Where the cgroup v2 hierarchy is mounted, read from /proc/self/mountinfo, whose lines are
//   id parent major:minor root mount-point options [optional fields...] - fstype source
//   super-options
// and how the controllers are enabled and the limits written, against a directory tree that
// stands in for cgroupfs (the kernel makes the files of a cgroup; here the test does), so that
// the path a machine with controllers takes is exercised on one without.

#include "cgroup.h"

#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <optional>
#include <sstream>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "request_validation.h"

namespace llima {
namespace {

using ::testing::Eq;
using ::testing::HasSubstr;
using ::testing::Optional;

// Ubuntu 20.04: cgroup v1 controllers, and v2 at /sys/fs/cgroup/unified.
constexpr char kHybrid[] =
    "25 30 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw\n"
    "30 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n"
    "33 25 0:28 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755\n"
    "34 33 0:29 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 "
    "cgroup2 rw,nsdelegate\n"
    "35 33 0:30 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:11 - cgroup "
    "cgroup rw,xattr,name=systemd\n"
    "38 33 0:33 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:15 - cgroup "
    "cgroup rw,memory\n";

// Ubuntu 22.04 and later: the unified hierarchy only.
constexpr char kPureV2[] =
    "24 29 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw\n"
    "29 1 252:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw,discard,errors=remount-ro\n"
    "35 24 0:30 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 "
    "rw,nsdelegate,memory_recursiveprot\n"
    "36 24 0:31 / /sys/fs/pstore rw,nosuid,nodev,noexec,relatime shared:10 - pstore pstore rw\n";

// cgroup v1 only (old kernels, some containers).
constexpr char kV1Only[] =
    "30 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n"
    "33 25 0:28 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755\n"
    "38 33 0:33 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:15 - cgroup "
    "cgroup rw,memory\n";

TEST(FindCgroup2Mount, FindsTheUnifiedHierarchyOfAHybridLayout) {
  EXPECT_THAT(FindCgroup2Mount(kHybrid), Optional(Eq("/sys/fs/cgroup/unified")));
}

TEST(FindCgroup2Mount, FindsAPureV2Hierarchy) {
  EXPECT_THAT(FindCgroup2Mount(kPureV2), Optional(Eq("/sys/fs/cgroup")));
}

TEST(FindCgroup2Mount, ReturnsNothingWithoutCgroup2) {
  EXPECT_EQ(FindCgroup2Mount(kV1Only), std::nullopt);
  EXPECT_EQ(FindCgroup2Mount(""), std::nullopt);
}

TEST(FindCgroup2Mount, HandlesLinesWithoutOptionalFields) {
  EXPECT_THAT(FindCgroup2Mount("22 1 0:21 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw\n"),
              Optional(Eq("/sys/fs/cgroup")));
}

TEST(FindCgroup2Mount, HandlesSeveralOptionalFields) {
  EXPECT_THAT(FindCgroup2Mount("40 22 0:21 / /mnt/cg rw shared:5 master:1 propagate_from:2 - "
                               "cgroup2 cgroup2 rw\n"),
              Optional(Eq("/mnt/cg")));
}

TEST(FindCgroup2Mount, UnescapesOctalEscapesInTheMountPoint) {
  EXPECT_THAT(
      FindCgroup2Mount("40 22 0:21 / /mnt/my\\040cgroup rw shared:5 - cgroup2 cgroup2 rw\n"),
      Optional(Eq("/mnt/my cgroup")));
  EXPECT_THAT(FindCgroup2Mount("40 22 0:21 / /mnt/a\\134b\\011c rw - cgroup2 none rw\n"),
              Optional(Eq("/mnt/a\\b\tc")));
}

TEST(FindCgroup2Mount, LooksAtTheFilesystemTypeOnly) {
  // "cgroup2" as mount point, source or option of other filesystems is not a cgroup2 mount.
  constexpr char kDecoys[] =
      "50 1 8:1 / /mnt/cgroup2 rw - ext4 /dev/sdb1 rw\n"
      "51 1 0:40 / /mnt/x rw - tmpfs cgroup2 rw\n"
      "52 1 0:41 / /mnt/y rw - tmpfs tmpfs rw,cgroup2\n";
  EXPECT_EQ(FindCgroup2Mount(kDecoys), std::nullopt);
}

TEST(FindCgroup2Mount, IgnoresMalformedLines) {
  EXPECT_EQ(FindCgroup2Mount("garbage\n- cgroup2\n1 2 3\n\n"), std::nullopt);
  EXPECT_THAT(FindCgroup2Mount(std::string("garbage\n") + kPureV2), Optional(Eq("/sys/fs/cgroup")));
}

TEST(FindCgroup2Mount, AcceptsTextWithoutTrailingNewline) {
  EXPECT_THAT(FindCgroup2Mount("35 24 0:30 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw"),
              Optional(Eq("/sys/fs/cgroup")));
}

// --- controllers ------------------------------------------------------------------------------

TEST(ParseControllers, FindsMemoryPidsAndCpuAmongOthers) {
  LimitControllers all = ParseControllers("cpuset cpu io memory hugetlb pids rdma misc\n");
  EXPECT_TRUE(all.memory && all.pids && all.cpu);
  EXPECT_TRUE(ParseControllers("hugetlb\n").none());
  EXPECT_TRUE(ParseControllers("").none());
  // Names match whole: cpuset and cpuacct are not cpu.
  EXPECT_TRUE(ParseControllers("cpuset cpuacct memory_recursiveprot").none());
  LimitControllers pids = ParseControllers("pids");
  EXPECT_TRUE(pids.pids && !pids.memory && !pids.cpu);
}

TEST(Cgroup1Controllers, FindsTheControllersOfV1Hierarchies) {
  LimitControllers hybrid = Cgroup1Controllers(kHybrid);
  EXPECT_TRUE(hybrid.memory);
  EXPECT_FALSE(hybrid.pids || hybrid.cpu);
  LimitControllers more = Cgroup1Controllers(
      std::string(kHybrid) +
      "39 33 0:34 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:16 - cgroup cgroup "
      "rw,cpu,cpuacct\n"
      "40 33 0:35 / /sys/fs/cgroup/pids rw,relatime shared:17 - cgroup cgroup rw,pids\n");
  EXPECT_TRUE(more.all());
  // The v2 mount's own options (memory_recursiveprot) are not controllers.
  EXPECT_TRUE(Cgroup1Controllers(kPureV2).none());
}

TEST(ListControllers, NamesThemInAFixedOrder) {
  EXPECT_EQ(ListControllers({true, true, true}), "memory, pids, cpu");
  EXPECT_EQ(ListControllers({false, true, true}), "pids, cpu");
  EXPECT_EQ(ListControllers({}), "");
}

// --- limit values -----------------------------------------------------------------------------

TEST(CgroupLimitValuesFor, WritesNumbersAndTurnsOffSwapUnderAMemoryLimit) {
  CgroupLimitValues values = CgroupLimitValuesFor(MakeResourceLimits(256 << 20, 64, 1500));
  EXPECT_EQ(values.memory_max, "268435456");
  EXPECT_EQ(values.memory_swap_max, "0");
  EXPECT_EQ(values.pids_max, "64");
  EXPECT_EQ(values.cpu_max, "150000 100000");
  EXPECT_EQ(CgroupLimitValuesFor(MakeResourceLimits(-1, -1, 10)).cpu_max, "1000 100000");
}

TEST(CgroupLimitValuesFor, NoLimitIsMax) {
  CgroupLimitValues values = CgroupLimitValuesFor(MakeResourceLimits(-1, -1, -1));
  EXPECT_EQ(values.memory_max, "max");
  EXPECT_EQ(values.memory_swap_max, "max");
  EXPECT_EQ(values.pids_max, "max");
  EXPECT_EQ(values.cpu_max, "max 100000");
  // Zeros never reach the kernel as limits: memory.max 0 would kill everything.
  EXPECT_EQ(CgroupLimitValuesFor(MakeResourceLimits(0, 0, 0)).memory_max, "max");
}

v1::LimitsEnforcement Enforced(bool memory, bool pids, bool cpu) {
  v1::LimitsEnforcement e;
  e.set_memory(memory);
  e.set_pids(pids);
  e.set_cpu(cpu);
  return e;
}

TEST(DescribeUnenforcedLimits, SaysWhichLimitsAreNotEnforcedAndWhy) {
  EXPECT_EQ(DescribeUnenforcedLimits(Enforced(true, true, true), "why"), "");
  EXPECT_EQ(DescribeUnenforcedLimits(Enforced(false, false, false), "why"),
            "limits not enforced: why");
  EXPECT_EQ(DescribeUnenforcedLimits(Enforced(true, true, false), "why"),
            "cpu limit not enforced: why");
  EXPECT_EQ(DescribeUnenforcedLimits(Enforced(true, false, false), "why"),
            "pids and cpu limits not enforced: why");
}

// --- a cgroup tree stood in by plain files ----------------------------------------------------

constexpr char kAllControllers[] = "cpuset cpu io memory hugetlb pids rdma misc\n";

class FakeCgroupTree : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/llima-cgroup-test-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    mount_ = tmpl;
  }
  void TearDown() override { ASSERT_EQ(system(("rm -rf '" + mount_ + "'").c_str()), 0); }

  // A cgroup directory with the interface files the kernel would give it.
  void MakeCgroup(const std::string& relative, const std::string& controllers,
                  const std::string& subtree_control = "") {
    std::string dir = Path(relative);
    mkdir(dir.c_str(), 0755);
    Write(relative + "/cgroup.controllers", controllers);
    Write(relative + "/cgroup.subtree_control", subtree_control);
    Write(relative + "/cgroup.procs", "");
    LimitControllers has = ParseControllers(controllers);
    if (has.memory) {
      Write(relative + "/memory.max", "max\n");
      Write(relative + "/memory.swap.max", "max\n");
    }
    if (has.pids) Write(relative + "/pids.max", "max\n");
    if (has.cpu) Write(relative + "/cpu.max", "max 100000\n");
  }

  // Every limit controller delegated from the mount down to the environment app-1a2b.
  CgroupTree TreeWithEnvironment() {
    MakeCgroup("", kAllControllers);
    MakeCgroup("llima-box", "cpu memory pids\n");
    CgroupTree tree = CgroupTree::Prepare(mount_, "llima-box");
    MakeCgroup("llima-box/app-1a2b", "cpu memory pids\n");
    return tree;
  }

  std::string Path(const std::string& relative) const {
    return relative.empty() ? mount_ : mount_ + "/" + relative;
  }
  void Write(const std::string& relative, const std::string& content) const {
    std::ofstream(Path(relative)) << content;
  }
  std::string Read(const std::string& relative) const {
    std::ifstream in(Path(relative));
    std::stringstream content;
    content << in.rdbuf();
    return content.str();
  }
  bool Exists(const std::string& relative) const {
    struct stat st;
    return stat(Path(relative).c_str(), &st) == 0;
  }

  std::string mount_;
};

TEST_F(FakeCgroupTree, EnablesTheControllersFromTheMountDownToTheEnvironmentsDirectory) {
  MakeCgroup("", kAllControllers, "cpuset io\n");
  MakeCgroup("llima-box", "cpuset io\n");
  CgroupTree tree = CgroupTree::Prepare(mount_, "llima-box");
  ASSERT_TRUE(tree.available());
  EXPECT_EQ(Read("cgroup.subtree_control"), "+memory +pids +cpu");
  EXPECT_EQ(Read("llima-box/cgroup.subtree_control"), "+memory +pids +cpu");
  EXPECT_TRUE(tree.enforcement().memory() && tree.enforcement().pids() && tree.enforcement().cpu());
  EXPECT_EQ(tree.enforcement().detail(), "");
}

TEST_F(FakeCgroupTree, WritesOnlyWhatIsNotEnabledYet) {
  MakeCgroup("", kAllControllers, "cpu memory pids\n");
  MakeCgroup("llima-box", "cpu memory pids\n", "memory\n");
  CgroupTree tree = CgroupTree::Prepare(mount_, "llima-box");
  EXPECT_EQ(Read("cgroup.subtree_control"), "cpu memory pids\n");  // untouched
  EXPECT_EQ(Read("llima-box/cgroup.subtree_control"), "+pids +cpu");
  EXPECT_EQ(tree.enforcement().detail(), "");
}

TEST_F(FakeCgroupTree, CreatesTheEnvironmentsDirectory) {
  MakeCgroup("", kAllControllers);
  CgroupTree tree = CgroupTree::Prepare(mount_, "llima-box");
  ASSERT_TRUE(tree.available());
  EXPECT_TRUE(Exists("llima-box"));
  // A plain directory has no cgroup.subtree_control for the kernel to take the controllers in.
  EXPECT_FALSE(tree.enforcement().memory());
  EXPECT_THAT(tree.enforcement().detail(),
              HasSubstr("limits not enforced: cannot enable the memory controller: open " + mount_ +
                        "/llima-box/cgroup.subtree_control"));
}

TEST_F(FakeCgroupTree, WritesTheLimitsIntoTheEnvironmentsCgroup) {
  CgroupTree tree = TreeWithEnvironment();
  ASSERT_TRUE(tree.Create("app-1a2b").ok());
  absl::StatusOr<v1::LimitsEnforcement> enforced =
      tree.ApplyLimits("app-1a2b", MakeResourceLimits(256 << 20, 64, 1500));
  ASSERT_TRUE(enforced.ok()) << enforced.status();
  EXPECT_TRUE(enforced->memory() && enforced->pids() && enforced->cpu());
  EXPECT_EQ(enforced->detail(), "");
  EXPECT_EQ(Read("llima-box/app-1a2b/memory.max"), "268435456");
  EXPECT_EQ(Read("llima-box/app-1a2b/memory.swap.max"), "0");
  EXPECT_EQ(Read("llima-box/app-1a2b/pids.max"), "64");
  EXPECT_EQ(Read("llima-box/app-1a2b/cpu.max"), "150000 100000");

  // Applied again (an adopt after an agent restart), unlimited this time.
  ASSERT_TRUE(tree.ApplyLimits("app-1a2b", MakeResourceLimits(-1, -1, -1)).ok());
  EXPECT_EQ(Read("llima-box/app-1a2b/memory.max"), "max");
  EXPECT_EQ(Read("llima-box/app-1a2b/cpu.max"), "max 100000");
}

TEST_F(FakeCgroupTree, LeavesSwapAloneWhereTheKernelDoesNotAccountIt) {
  CgroupTree tree = TreeWithEnvironment();
  ASSERT_EQ(unlink(Path("llima-box/app-1a2b/memory.swap.max").c_str()), 0);
  ASSERT_TRUE(tree.ApplyLimits("app-1a2b", MakeResourceLimits(256 << 20, 64, 1500)).ok());
  EXPECT_EQ(Read("llima-box/app-1a2b/memory.max"), "268435456");
  EXPECT_FALSE(Exists("llima-box/app-1a2b/memory.swap.max"));
}

TEST_F(FakeCgroupTree, AHybridLayoutEnforcesNothingAndSaysWhy) {
  // This is what the unified hierarchy of a hybrid layout offers: everything else is in v1.
  MakeCgroup("", "hugetlb\n");
  MakeCgroup("llima-box", "");
  CgroupTree tree = CgroupTree::Prepare(mount_, "llima-box", Cgroup1Controllers(kHybrid));
  ASSERT_TRUE(tree.available());
  EXPECT_EQ(Read("cgroup.subtree_control"), "");  // nothing to enable, nothing written
  EXPECT_EQ(Read("llima-box/cgroup.subtree_control"), "");
  EXPECT_EQ(tree.enforcement().detail(),
            "limits not enforced: this kernel's cgroup v2 has no memory, pids, cpu controller "
            "(memory is bound to cgroup v1)");

  MakeCgroup("llima-box/app-1a2b", "");
  absl::StatusOr<v1::LimitsEnforcement> enforced =
      tree.ApplyLimits("app-1a2b", MakeResourceLimits(256 << 20, 64, 1500));
  ASSERT_TRUE(enforced.ok()) << enforced.status();
  EXPECT_FALSE(enforced->memory() || enforced->pids() || enforced->cpu());
  EXPECT_EQ(enforced->detail(), tree.enforcement().detail());
  // No file pretends to hold a limit.
  EXPECT_FALSE(Exists("llima-box/app-1a2b/memory.max"));
  EXPECT_FALSE(Exists("llima-box/app-1a2b/pids.max"));
  EXPECT_FALSE(Exists("llima-box/app-1a2b/cpu.max"));
}

TEST_F(FakeCgroupTree, AllControllersInV1AreNamedOnce) {
  MakeCgroup("", "hugetlb\n");
  MakeCgroup("llima-box", "");
  CgroupTree tree = CgroupTree::Prepare(mount_, "llima-box", {true, true, true});
  EXPECT_EQ(tree.enforcement().detail(),
            "limits not enforced: this kernel's cgroup v2 has no memory, pids, cpu controller "
            "(they are bound to cgroup v1)");
}

TEST_F(FakeCgroupTree, EnforcesWhatTheKernelHasAndNamesWhatItLacks) {
  MakeCgroup("", "memory pids\n");
  MakeCgroup("llima-box", "memory pids\n");
  CgroupTree tree = CgroupTree::Prepare(mount_, "llima-box");
  EXPECT_EQ(Read("cgroup.subtree_control"), "+memory +pids");
  EXPECT_EQ(tree.enforcement().detail(),
            "cpu limit not enforced: this kernel's cgroup v2 has no cpu controller");
  MakeCgroup("llima-box/app-1a2b", "memory pids\n");
  absl::StatusOr<v1::LimitsEnforcement> enforced =
      tree.ApplyLimits("app-1a2b", MakeResourceLimits(256 << 20, 64, 1500));
  ASSERT_TRUE(enforced.ok()) << enforced.status();
  EXPECT_TRUE(enforced->memory() && enforced->pids());
  EXPECT_FALSE(enforced->cpu());
  EXPECT_EQ(enforced->detail(),
            "cpu limit not enforced: this kernel's cgroup v2 has no cpu controller");
  EXPECT_EQ(Read("llima-box/app-1a2b/pids.max"), "64");
  EXPECT_FALSE(Exists("llima-box/app-1a2b/cpu.max"));
}

TEST_F(FakeCgroupTree, AControllerMissingFromTheEnvironmentsCgroupIsNotEnforced) {
  MakeCgroup("", kAllControllers);
  MakeCgroup("llima-box", "cpu memory pids\n");
  CgroupTree tree = CgroupTree::Prepare(mount_, "llima-box");
  MakeCgroup("llima-box/app-1a2b", "memory pids\n");  // cpu disabled since
  absl::StatusOr<v1::LimitsEnforcement> enforced =
      tree.ApplyLimits("app-1a2b", MakeResourceLimits(-1, 4096, 1500));
  ASSERT_TRUE(enforced.ok()) << enforced.status();
  EXPECT_FALSE(enforced->cpu());
  EXPECT_EQ(enforced->detail(), "cpu limit not enforced: " + mount_ +
                                    "/llima-box/app-1a2b/cgroup.controllers has no cpu controller");
}

TEST_F(FakeCgroupTree, AValueTheKernelRefusesIsAnError) {
  CgroupTree tree = TreeWithEnvironment();
  // Not writable as a file: the write fails as a refused value would.
  ASSERT_EQ(unlink(Path("llima-box/app-1a2b/pids.max").c_str()), 0);
  ASSERT_EQ(mkdir(Path("llima-box/app-1a2b/pids.max").c_str(), 0755), 0);
  absl::StatusOr<v1::LimitsEnforcement> enforced =
      tree.ApplyLimits("app-1a2b", MakeResourceLimits(256 << 20, 64, 1500));
  EXPECT_FALSE(enforced.ok());
  EXPECT_THAT(enforced.status().message(), HasSubstr("/llima-box/app-1a2b/pids.max"));
}

TEST_F(FakeCgroupTree, WithoutTheMountThereAreNoCgroupsAndNoLimits) {
  CgroupTree tree = CgroupTree::Prepare(mount_ + "/absent", "llima-box");
  EXPECT_FALSE(tree.available());
  EXPECT_THAT(tree.enforcement().detail(), HasSubstr("limits not enforced: create " + mount_));
  absl::StatusOr<v1::LimitsEnforcement> enforced = tree.ApplyLimits("app-1a2b", MakeResourceLimits(-1, 64, -1));
  ASSERT_TRUE(enforced.ok());
  EXPECT_FALSE(enforced->pids());
  EXPECT_EQ(enforced->detail(), tree.enforcement().detail());
}

}  // namespace
}  // namespace llima
