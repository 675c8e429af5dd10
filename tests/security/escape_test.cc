// Escape attempts made from inside an environment by its (unprivileged, capability-less,
// seccomp-filtered) user. Each case makes the attempt and prints the kernel's answer; the test
// asserts the reason, so a case cannot pass by not running.

#include <unistd.h>

#include "absl/strings/str_cat.h"
#include "agent_harness.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace llima::testing {
namespace {

using ::testing::HasSubstr;

// python3 helper: `attempt NAME CALL...` runs a Python expression and prints "NAME errno".
constexpr char kAttempt[] = R"PY(
import ctypes, errno, os, sys
libc = ctypes.CDLL(None, use_errno=True)
def call(function, *args):
    if function(*args) < 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
def syscall(*args):
    call(libc.syscall, *args)
try:
    exec(sys.argv[1])
    print("succeeded")
except OSError as e:
    print(errno.errorcode.get(e.errno, e.errno))
)PY";

struct Case {
  const char* name;
  std::string python;   // Python statement making the attempt (or empty)
  std::string shell;    // or a shell command
  std::string expected; // what the answer must contain
};

class EscapeTest : public ::testing::TestWithParam<Case> {
 protected:
  static void SetUpTestSuite() {
    ASSERT_EQ(geteuid(), 0u) << "security tests need root";
    scratch_ = new ScratchDir();
    agent_ = new AgentProcess(scratch_->path());
    agent_->Start();
    for (const char* p : {"projects/mine", "projects/other"}) {
      envs_.push_back(
          CreateEnvironmentOrFail(agent_->stub(), scratch_->MakeDir(p, 4242, 4242)).name());
    }
    // A secret in the other project, and a process of the other environment.
    std::string secret = scratch_->path() + "/projects/other/secret";
    FILE* f = fopen(secret.c_str(), "w");
    fputs("s3cret", f);
    fclose(f);
    Exec(agent_->stub(), envs_[1], {"sh", "-c", "sleep 940 >/dev/null 2>&1 &"});
  }
  static void TearDownTestSuite() {
    delete agent_;
    delete scratch_;
  }
  static inline ScratchDir* scratch_ = nullptr;
  static inline AgentProcess* agent_ = nullptr;
  static inline std::vector<std::string> envs_;
};

TEST_P(EscapeTest, Fails) {
  const Case& c = GetParam();
  std::string other_project = scratch_->path() + "/projects/other";
  auto fill = [&](std::string s) {
    for (size_t at; (at = s.find("@OTHER@")) != std::string::npos;) s.replace(at, 7, other_project);
    return s;
  };
  ExecResult r = c.python.empty()
                     ? Exec(agent_->stub(), envs_[0], {"sh", "-c", fill(c.shell) + " 2>&1"})
                     : Exec(agent_->stub(), envs_[0], {"python3", "-c", kAttempt, fill(c.python)});
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_THAT(r.out + r.err, HasSubstr(c.expected)) << c.name;
  EXPECT_THAT(r.out, ::testing::Not(HasSubstr("succeeded"))) << c.name;
}

INSTANTIATE_TEST_SUITE_P(
    FromInside, EscapeTest,
    ::testing::Values(
        Case{"read_another_project", "", "cat @OTHER@/secret", "No such file or directory"},
        Case{"write_etc", "", "echo x > /etc/hosts", "Read-only file system"},
        Case{"write_usr", "", "touch /usr/bin/x", "Read-only file system"},
        Case{"remount_root_rw", "syscall(165, None, b'/', None, 0x20 | 0x1000, None)", "",
             "EPERM"},  // mount(MS_REMOUNT|MS_BIND)
        Case{"mount_tmpfs", "syscall(165, b'x', b'/tmp', b'tmpfs', 0, None)", "", "EPERM"},
        Case{"unshare_user_namespace", "call(libc.unshare, 0x10000000)", "", "EPERM"},
        Case{"unshare_mount_namespace", "call(libc.unshare, 0x20000)", "", "EPERM"},
        Case{"setns_into_init_mount_namespace",
             "fd = os.open('/proc/1/ns/mnt', os.O_RDONLY); os.setns(fd, 0)", "", "E"},
        Case{"chroot_then_climb", "os.chroot('/tmp'); os.chdir('../../..')", "", "EPERM"},
        Case{"ptrace_init", "syscall(101, 16, 1, 0, 0)", "", "EPERM"},  // PTRACE_ATTACH
        Case{"kill_init", "os.kill(1, 9)", "", "EPERM"},
        Case{"see_other_environments_processes", "", "ps -eo args | grep -c 'sleep 94[0]'",
             "0"},
        Case{"open_vm_disk", "", "cat /dev/vda", "No such file or directory"},
        Case{"open_mem", "", "cat /dev/mem", "No such file or directory"},
        Case{"open_kmsg", "", "cat /dev/kmsg", "No such file or directory"},
        Case{"mknod_device", "os.mknod('/tmp/disk', 0o600 | 0o060000, os.makedev(8, 0))", "",
             "EPERM"},
        Case{"load_kernel_module", "syscall(175, None, 0, b'')", "", "EPERM"},  // init_module
        Case{"read_kcore", "open('/proc/kcore', 'rb').read(1)", "", "E"},  // EACCES or ENOENT
        Case{"see_what_the_vm_mounts_in_sys", "",
             "echo count=$(find /sys/kernel/debug /sys/kernel/tracing /sys/fs/cgroup "
             "/sys/kernel/security -mindepth 1 2>/dev/null | wc -l)",
             "count=0"},
        Case{"find_the_agent_socket", "", "find / -xdev -type s 2>/dev/null; echo searched",
             "searched"},
        // setuid-root programs run without gaining root (no_new_privs).
        Case{"setuid_mount", "", "mount -t tmpfs x /tmp", "must be superuser"},
        Case{"setuid_su", "", "su -c id root </dev/null; echo rc=$?", "rc=1"},
        Case{"vm_users_homes", "", "ls -A /home | tr '\\n' ' '; echo end", " end"},
        Case{"ssh_agent_of_the_vm_user", "", "echo \"[$SSH_AUTH_SOCK]\"; ls /run/user",
             "No such file or directory"},
        Case{"type_into_the_terminal", "import fcntl; fcntl.ioctl(0, 0x5412, b'x')", "",
             "E"}),
    [](const auto& info) { return std::string(info.param.name); });

// The cases above whose expected text alone is loose get a sharper look here.
TEST(EscapeDetails, TheAgentSocketAndOtherHomesAreNowhere) {
  ASSERT_EQ(geteuid(), 0u);
  ScratchDir scratch;
  AgentProcess agent(scratch.path());
  agent.Start();
  v1::Environment env =
      CreateEnvironmentOrFail(agent.stub(), scratch.MakeDir("projects/p", 4242, 4242));
  ASSERT_FALSE(env.name().empty());
  ExecResult sockets = Shell(agent.stub(), env.name(), "find / -xdev -type s 2>/dev/null");
  EXPECT_EQ(sockets.out, "") << "sockets reachable inside: " << sockets.out;
  ExecResult homes = Shell(agent.stub(), env.name(), "ls -A /home");
  EXPECT_EQ(homes.out, env.name() + "\n");
  ExecResult setuid = Shell(agent.stub(), env.name(), "su -c 'id -u' root </dev/null 2>/dev/null; id -u");
  EXPECT_EQ(setuid.out, "4242\n");
}

}  // namespace
}  // namespace llima::testing
