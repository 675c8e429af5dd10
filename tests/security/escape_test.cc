// Escape attempts made from inside an environment by its (unprivileged, capability-less,
// seccomp-filtered) user. Each case makes the attempt and prints the kernel's answer; the test
// asserts the reason, so a case cannot pass by not running.
//
// The same cases can be pointed at another sandbox for comparison: with LLIMA_ESCAPE_RUNNER set
// to a program that runs its arguments inside that sandbox, and LLIMA_ESCAPE_OTHER_PROJECT to
// the project the sandbox must hide, no agent is started and every attempt goes through the
// runner instead (see tests/security/compare-baseline.sh).

#include <stdlib.h>
#include <iostream>
#include <unistd.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
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
  std::string expected; // what the answer must contain (alternatives separated by '|')
};

const char* Runner() { return getenv("LLIMA_ESCAPE_RUNNER"); }

std::string ShellQuote(const std::string& word) {
  std::string quoted = "'";
  for (char c : word) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return quoted + "'";
}

// Runs argv through the comparison runner; stdout and stderr together in `out`.
ExecResult RunThroughRunner(const std::vector<std::string>& argv) {
  std::string command = ShellQuote(Runner());
  for (const std::string& arg : argv) command += " " + ShellQuote(arg);
  ExecResult result;
  result.out = HostOutput(command + " 2>&1 </dev/null");
  return result;
}

// The pid, as the VM sees it, of the process running in the other environment.
std::string OtherProcess() {
  std::string pid = HostOutput("pgrep -n -f '^sleep 94[0]'");
  while (!pid.empty() && pid.back() == '\n') pid.pop_back();
  return pid;
}

class EscapeTest : public ::testing::TestWithParam<Case> {
 protected:
  static void SetUpTestSuite() {
    setup_error_ = RunSuiteSetUp([] {
      RequireRoot("security tests need root");
      if (Runner() != nullptr) {
        const char* other = getenv("LLIMA_ESCAPE_OTHER_PROJECT");
        if (other == nullptr) {
          throw std::runtime_error("LLIMA_ESCAPE_RUNNER needs LLIMA_ESCAPE_OTHER_PROJECT");
        }
        other_project_ = other;
        return;
      }
      scratch_ = new ScratchDir();
      agent_ = new AgentProcess(scratch_->path());
      agent_->Start();
      for (const char* p : {"projects/mine", "projects/other"}) {
        envs_.push_back(
            CreateEnvironmentOrFail(agent_->stub(), scratch_->MakeDir(p, 4242, 4242)).name());
      }
      other_project_ = scratch_->path() + "/projects/other";
      // A secret in the other project, and a process of the other environment.
      std::string secret = other_project_ + "/secret";
      FILE* f = fopen(secret.c_str(), "w");
      fputs("s3cret", f);
      fclose(f);
      Exec(agent_->stub(), envs_[1], {"sh", "-c", "sleep 940 >/dev/null 2>&1 &"});
    });
  }
  void SetUp() override { ASSERT_EQ(setup_error_, "") << "the suite's set-up failed"; }
  static void TearDownTestSuite() {
    delete agent_;
    delete scratch_;
  }
  static inline std::string setup_error_;
  static inline ScratchDir* scratch_ = nullptr;
  static inline AgentProcess* agent_ = nullptr;
  static inline std::vector<std::string> envs_;
  static inline std::string other_project_;
};

TEST_P(EscapeTest, Fails) {
  const Case& c = GetParam();
  if ((c.python + c.shell).find("@OTHER_PID@") != std::string::npos) {
    ASSERT_FALSE(OtherProcess().empty()) << "the other environment's process is gone";
  }
  auto fill = [&](std::string s) {
    for (size_t at; (at = s.find("@OTHER@")) != std::string::npos;) s.replace(at, 7, other_project_);
    for (size_t at; (at = s.find("@OTHER_PID@")) != std::string::npos;) {
      s.replace(at, 11, OtherProcess());
    }
    return s;
  };
  std::vector<std::string> argv =
      c.python.empty() ? std::vector<std::string>{"sh", "-c", fill(c.shell) + " 2>&1"}
                       : std::vector<std::string>{"python3", "-c", kAttempt, fill(c.python)};
  ExecResult r = Runner() != nullptr ? RunThroughRunner(argv) : Exec(agent_->stub(), envs_[0], argv);
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  std::string answer = r.out + r.err;
  for (char& ch : answer) ch = ch == '\n' ? ' ' : ch;
  std::cout << "answer " << c.name << ": " << answer << std::endl;
  // `expected` may list alternatives separated by '|'.
  std::vector<::testing::Matcher<std::string>> alternatives;
  for (absl::string_view want : absl::StrSplit(c.expected, '|')) {
    alternatives.push_back(HasSubstr(std::string(want)));
  }
  EXPECT_THAT(r.out + r.err, ::testing::AnyOfArray(alternatives)) << c.name;
  EXPECT_THAT(r.out, ::testing::Not(HasSubstr("succeeded"))) << c.name;
}

INSTANTIATE_TEST_SUITE_P(
    FromInside, EscapeTest,
    ::testing::Values(
        Case{"read_another_project", "", "cat @OTHER@/secret", "No such file or directory"},
        Case{"write_etc", "", "echo x > /etc/hosts", "Read-only file system"},
        Case{"write_usr", "", "touch /usr/bin/x", "Read-only file system"},
        Case{"remount_root_rw", "call(libc.mount, None, b'/', None, 0x20 | 0x1000, None)", "",
             "EPERM"},  // MS_REMOUNT|MS_BIND
        Case{"mount_tmpfs", "call(libc.mount, b'x', b'/tmp', b'tmpfs', 0, None)", "", "EPERM"},
        Case{"unshare_user_namespace", "call(libc.unshare, 0x10000000)", "", "EPERM"},
        Case{"unshare_mount_namespace", "call(libc.unshare, 0x20000)", "", "EPERM"},
        Case{"setns_into_init_mount_namespace",
             "fd = os.open('/proc/1/ns/mnt', os.O_RDONLY); call(libc.setns, fd, 0)", "",
             "EACCES"},  // init is root and not dumpable; setns itself is filtered too
        Case{"chroot_then_climb", "os.chroot('/tmp'); os.chdir('../../..')", "", "EPERM"},
        Case{"ptrace_init", "call(libc.ptrace, 16, 1, None, None)", "", "EPERM"},  // PTRACE_ATTACH
        Case{"kill_init", "os.kill(1, 9)", "", "EPERM"},
        Case{"see_other_environments_processes", "", "ps -eo args | grep -c 'sleep 94[0]'",
             "0"},
        Case{"open_vm_disk", "", "head -c 1 /dev/vda | wc -c", "No such file or directory"},
        Case{"open_mem", "", "head -c 1 /dev/mem | wc -c", "No such file or directory"},
        Case{"open_kmsg", "", "timeout 2 head -c 1 /dev/kmsg | wc -c",
             "No such file or directory"},
        Case{"mknod_device", "os.mknod('/tmp/disk', 0o600 | 0o060000, os.makedev(8, 0))", "",
             "EPERM"},
        Case{"load_kernel_module", "call(libc.init_module, None, 0, b'')", "", "EPERM"},
        Case{"read_kcore", "open('/proc/kcore', 'rb').read(1)", "", "EACCES|ENOENT"},
        Case{"see_what_the_vm_mounts_in_sys", "",
             "echo count=$(find /sys/kernel/debug /sys/kernel/tracing /sys/fs/cgroup "
             "/sys/kernel/security -mindepth 1 2>/dev/null | wc -l)",
             "count=0"},
        Case{"find_the_agent_socket", "",
             "echo sockets=$(find / '(' -path /proc -o -path /sys ')' -prune -o -type s -print "
             "2>/dev/null | wc -l)",
             "sockets=0"},
        // setuid-root programs run without gaining root (no_new_privs).
        Case{"setuid_mount", "", "mount -t tmpfs x /tmp", "must be superuser"},
        Case{"setuid_su", "", "su -c id root </dev/null; echo rc=$?", "rc=1"},
        Case{"vm_users_homes", "", "echo homes=$(ls -A /home | wc -l)", "homes=1"},
        Case{"ssh_agent_of_the_vm_user", "", "echo \"[$SSH_AUTH_SOCK]\"; ls /run/user",
             "No such file or directory"},
        Case{"unlock_securebits", "call(libc.prctl, 28, 0, 0, 0, 0)", "", "EPERM"},
        // The environment's init is root and not dumpable: its /proc entries are closed.
        Case{"enter_init_root_through_proc", "os.listdir('/proc/1/root/')", "", "EACCES"},
        Case{"read_init_environment", "open('/proc/1/environ').read()", "", "EACCES"},
        Case{"find_the_agent_in_proc", "",
             "echo found=$(grep -sl 'llima-[a]gent' /proc/[0-9]*/cmdline | wc -l)", "found=0"},
        Case{"type_into_the_terminal", "import fcntl; fcntl.ioctl(0, 0x5412, b'x')", "",
             "EPERM"},
        // Last: in a sandbox that lets these through, they stop or kill that process.
        Case{"ptrace_another_environments_process", "call(libc.ptrace, 16, @OTHER_PID@, None, None)",
             "", "EPERM"},
        Case{"kill_another_environments_process", "os.kill(@OTHER_PID@, 9)", "", "ESRCH"}),
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
  // NOROOT, NO_SETUID_FIXUP, NO_CAP_AMBIENT_RAISE set and locked, KEEP_CAPS clear and locked.
  ExecResult securebits = Exec(agent.stub(), env.name(),
                               {"python3", "-c", "import ctypes; print(hex(ctypes.CDLL(None).prctl(27, 0, 0, 0, 0)))"});
  EXPECT_EQ(securebits.out, "0xef\n") << securebits.err;
  ExecResult caps = Shell(agent.stub(), env.name(), "grep -E '^Cap(Inh|Prm|Eff|Bnd|Amb)' /proc/self/status");
  EXPECT_EQ(caps.out,
            "CapInh:\t0000000000000000\nCapPrm:\t0000000000000000\nCapEff:\t0000000000000000\n"
            "CapBnd:\t0000000000000000\nCapAmb:\t0000000000000000\n");
}

}  // namespace
}  // namespace llima::testing
