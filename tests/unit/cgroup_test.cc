// Where the cgroup v2 hierarchy is mounted, read from /proc/self/mountinfo, whose lines are
//   id parent major:minor root mount-point options [optional fields...] - fstype source
//   super-options

#include "cgroup.h"

#include <optional>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace llima {
namespace {

using ::testing::Eq;
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

}  // namespace
}  // namespace llima
