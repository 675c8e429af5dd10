// The environment's /etc/passwd and /etc/group: the VM's system accounts stay (so file listings
// show owners), the VM's users do not, and the environment's own user is added.

#include "identity.h"

#include <unistd.h>

#include <algorithm>
#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace llima {
namespace {

using ::testing::AnyOf;
using ::testing::Contains;
using ::testing::Eq;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kHostPasswd[] =
    "root:x:0:0:root:/root:/bin/bash\n"
    "daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n"
    "systemd-network:x:998:998:systemd Network Management:/:/usr/sbin/nologin\n"
    "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
    "lima:x:501:1000:Lima user:/home/lima.linux:/bin/sh\n"
    "alice:x:1000:1000:Alice:/home/alice:/bin/bash\n"
    "bob:x:1001:1001:Bob:/home/bob:/bin/bash\n"
    "cool-app-5c6c:x:999:999:stale entry with the environment's name:/:/bin/sh\n"
    "nologinuser:x:1002:1002::/home/n:/usr/sbin/nologin\n"
    "ghost:x:1003:1003::/home/g:/nonexistent/bin/zsh\n";

constexpr char kHostGroup[] =
    "root:x:0:\n"
    "adm:x:4:syslog,alice\n"
    "sudo:x:27:alice,bob\n"
    "staff:x:20:\n"
    "nogroup:x:65534:\n"
    "alice:x:1000:\n"
    "bob:x:1001:\n"
    "cool-app-5c6c:x:997:\n";

EnvironmentIdentity Identity() {
  EnvironmentIdentity id;
  id.name = "cool-app-5c6c";
  id.uid = 501;  // the macOS user's uid, which Lima gives the VM user
  id.gid = 20;   // macOS "staff"
  id.home = "/home/cool-app-5c6c";
  id.shell = "/bin/bash";
  return id;
}

std::vector<std::string> Lines(const std::string& text) {
  return absl::StrSplit(text, '\n', absl::SkipEmpty());
}

// The names of the entries of a passwd or group text.
std::vector<std::string> Names(const std::string& text) {
  std::vector<std::string> names;
  for (const std::string& line : Lines(text)) {
    names.push_back(line.substr(0, line.find(':')));
  }
  return names;
}

class SynthesizeIdentityFilesTest : public ::testing::Test {
 protected:
  IdentityFiles files_ = SynthesizeIdentityFiles(kHostPasswd, kHostGroup, Identity());
};

TEST_F(SynthesizeIdentityFilesTest, KeepsRootSystemAccountsAndNobody) {
  std::vector<std::string> lines = Lines(files_.passwd);
  EXPECT_THAT(lines, Contains("root:x:0:0:root:/root:/bin/bash"));
  EXPECT_THAT(lines, Contains("daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin"));
  EXPECT_THAT(lines,
              Contains("systemd-network:x:998:998:systemd Network Management:/:/usr/sbin/nologin"));
  EXPECT_THAT(lines, Contains("nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin"));
}

TEST_F(SynthesizeIdentityFilesTest, DropsTheVmsRegularUsers) {
  std::vector<std::string> names = Names(files_.passwd);
  EXPECT_THAT(names, Not(Contains("alice")));
  EXPECT_THAT(names, Not(Contains("bob")));
  EXPECT_THAT(names, Not(Contains("nologinuser")));
}

TEST_F(SynthesizeIdentityFilesTest, DropsEntriesSharingTheEnvironmentsUidOrName) {
  // "lima" has uid 501 (below 1000, so otherwise kept); a stale entry has the environment's name.
  EXPECT_THAT(Names(files_.passwd), Not(Contains("lima")));
  for (const std::string& line : Lines(files_.passwd)) {
    std::vector<std::string> f = absl::StrSplit(line, ':');
    ASSERT_EQ(f.size(), 7u) << line;
    if (f[0] == "cool-app-5c6c") {
      EXPECT_EQ(f[2], "501") << "stale entry kept: " << line;
    } else {
      EXPECT_NE(f[2], "501") << line;
    }
  }
}

TEST_F(SynthesizeIdentityFilesTest, AppendsTheEnvironmentsUserExactlyOnce) {
  std::vector<std::string> lines = Lines(files_.passwd);
  ASSERT_FALSE(lines.empty());
  EXPECT_EQ(lines.back(), "cool-app-5c6c:x:501:20:cool-app-5c6c:/home/cool-app-5c6c:/bin/bash");
  std::vector<std::string> names = Names(files_.passwd);
  EXPECT_EQ(std::count(names.begin(), names.end(), "cool-app-5c6c"), 1);
}

TEST_F(SynthesizeIdentityFilesTest, EveryLineEndsWithNewline) {
  ASSERT_FALSE(files_.passwd.empty());
  ASSERT_FALSE(files_.group.empty());
  EXPECT_EQ(files_.passwd.back(), '\n');
  EXPECT_EQ(files_.group.back(), '\n');
}

TEST_F(SynthesizeIdentityFilesTest, KeepsSystemGroupsWithoutMemberLists) {
  std::vector<std::string> lines = Lines(files_.group);
  EXPECT_THAT(lines, Contains("root:x:0:"));
  EXPECT_THAT(lines, Contains("adm:x:4:"));
  EXPECT_THAT(lines, Contains("sudo:x:27:"));
  EXPECT_THAT(lines, Contains("nogroup:x:65534:"));
  EXPECT_THAT(files_.group, Not(HasSubstr("alice")));
  EXPECT_THAT(files_.group, Not(HasSubstr("bob")));
}

TEST_F(SynthesizeIdentityFilesTest, DropsRegularGroupsAndTheEnvironmentsGid) {
  std::vector<std::string> names = Names(files_.group);
  EXPECT_THAT(names, Not(Contains("staff")));  // gid 20 is the environment's
  EXPECT_THAT(names, Not(Contains("alice")));
  EXPECT_THAT(names, Not(Contains("bob")));
}

TEST_F(SynthesizeIdentityFilesTest, AppendsTheEnvironmentsGroupExactlyOnce) {
  std::vector<std::string> lines = Lines(files_.group);
  ASSERT_FALSE(lines.empty());
  EXPECT_EQ(lines.back(), "cool-app-5c6c:x:20:");
  std::vector<std::string> names = Names(files_.group);
  EXPECT_EQ(std::count(names.begin(), names.end(), "cool-app-5c6c"), 1);
}

TEST(SynthesizeIdentityFiles, SkipsMalformedLines) {
  IdentityFiles files = SynthesizeIdentityFiles(
      "root:x:0:0:root:/root:/bin/bash\nbroken line\nshort:x:5\nbad:x:abc:1::/:/bin/sh\n",
      "root:x:0:\nbroken\nbad:x:abc:\n", Identity());
  EXPECT_THAT(Names(files.passwd), ::testing::ElementsAre("root", "cool-app-5c6c"));
  EXPECT_THAT(Names(files.group), ::testing::ElementsAre("root", "cool-app-5c6c"));
}

TEST(SynthesizeIdentityFiles, WorksWithEmptyHostDatabases) {
  IdentityFiles files = SynthesizeIdentityFiles("", "", Identity());
  EXPECT_EQ(files.passwd, "cool-app-5c6c:x:501:20:cool-app-5c6c:/home/cool-app-5c6c:/bin/bash\n");
  EXPECT_EQ(files.group, "cool-app-5c6c:x:20:\n");
}

TEST(LoginShellFor, ReturnsTheUsersShellWhenItExists) {
  ASSERT_EQ(access("/bin/sh", X_OK), 0) << "test needs /bin/sh";
  EXPECT_EQ(LoginShellFor(kHostPasswd, 501), "/bin/sh");
}

// The fallback: /bin/bash when the machine has it, else /bin/sh.
auto IsFallbackShell() { return AnyOf(Eq("/bin/bash"), Eq("/bin/sh")); }

TEST(LoginShellFor, FallsBackWhenTheUserHasNologin) {
  std::string shell = LoginShellFor(kHostPasswd, 1002);
  EXPECT_THAT(shell, IsFallbackShell());
  EXPECT_EQ(access(shell.c_str(), X_OK), 0) << shell;
}

TEST(LoginShellFor, FallsBackWhenTheShellDoesNotExist) {
  EXPECT_THAT(LoginShellFor(kHostPasswd, 1003), IsFallbackShell());
}

TEST(LoginShellFor, FallsBackWhenTheUserIsMissing) {
  EXPECT_THAT(LoginShellFor(kHostPasswd, 4242), IsFallbackShell());
  EXPECT_THAT(LoginShellFor("", 501), IsFallbackShell());
}

TEST(LoginShellFor, FallbackPrefersBash) {
  if (access("/bin/bash", X_OK) != 0) GTEST_SKIP() << "no /bin/bash here";
  EXPECT_EQ(LoginShellFor(kHostPasswd, 4242), "/bin/bash");
}

TEST(PrimaryGroupFor, ReturnsTheGidOfTheUsersEntry) {
  EXPECT_EQ(PrimaryGroupFor(kHostPasswd, 501, 7), 1000u);
  EXPECT_EQ(PrimaryGroupFor(kHostPasswd, 0, 7), 0u);
  EXPECT_EQ(PrimaryGroupFor(kHostPasswd, 1001, 7), 1001u);
}

TEST(PrimaryGroupFor, ReturnsTheFallbackForAnUnknownUser) {
  EXPECT_EQ(PrimaryGroupFor(kHostPasswd, 4242, 20), 20u);
  EXPECT_EQ(PrimaryGroupFor("", 501, 20), 20u);
}

TEST(PrimaryGroupFor, IgnoresMalformedEntries) {
  EXPECT_EQ(PrimaryGroupFor("x:x:501:notanumber::/:/bin/sh\n", 501, 20), 20u);
  EXPECT_EQ(PrimaryGroupFor("x:x:501\n", 501, 20), 20u);
}

}  // namespace
}  // namespace llima
