// The seccomp policy, as seen by a process inside an environment. Each case makes the call and
// prints what the kernel answered, so a case cannot pass by not running. The calls chosen here
// are ones an unprivileged process may normally make: their EPERM comes from the filter, not
// from missing capabilities.

#include <signal.h>
#include <unistd.h>

#include "absl/strings/str_cat.h"
#include "agent_harness.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace llima::testing {
namespace {

using ::testing::HasSubstr;

// Makes raw system calls by number (x86_64 and aarch64 tables) and prints "name errno" lines.
constexpr char kProbe[] = R"PY(
import ctypes, os, platform
libc = ctypes.CDLL(None, use_errno=True)
numbers = {
    "x86_64":  {"keyctl": 250, "add_key": 248, "request_key": 249, "io_uring_setup": 425,
                "clone3": 435, "bpf": 321, "userfaultfd": 323, "perf_event_open": 298},
    "aarch64": {"keyctl": 219, "add_key": 217, "request_key": 218, "io_uring_setup": 425,
                "clone3": 435, "bpf": 280, "userfaultfd": 282, "perf_event_open": 241},
}[platform.machine()]
buf = ctypes.create_string_buffer(256)
args = {
    "keyctl": (0, ctypes.c_long(-3), 0),         # KEYCTL_GET_KEYRING_ID of the session keyring
    "add_key": (b"user", b"llima-test", b"x", 1, ctypes.c_long(-3)),
    "request_key": (b"user", b"llima-test", None, 0),
    "io_uring_setup": (1, buf),
    "clone3": (buf, 88),
    "bpf": (0, buf, 0),
    "userfaultfd": (1,),                          # UFFD_USER_MODE_ONLY
    "perf_event_open": (buf, 0, -1, -1, 0),
}
for name, nr in numbers.items():
    ctypes.set_errno(0)
    rc = libc.syscall(nr, *args[name])
    print(name, 0 if rc >= 0 else ctypes.get_errno())
)PY";

class SeccompTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    setup_error_ = RunSuiteSetUp([] {
      RequireRoot("security tests need root");
      scratch_ = new ScratchDir();
      agent_ = new AgentProcess(scratch_->path());
      agent_->Start();
      std::string project = scratch_->MakeDir("projects/hostile", 4242, 4242);
      env_ = new std::string(CreateEnvironmentOrFail(agent_->stub(), project).name());
    });
  }
  void SetUp() override { ASSERT_EQ(setup_error_, "") << "the suite's set-up failed"; }
  static void TearDownTestSuite() {
    delete agent_;
    delete scratch_;
  }
  static ExecResult In(const std::vector<std::string>& argv, bool tty = false) {
    return Exec(agent_->stub(), *env_, argv, {.tty = tty});
  }
  static inline std::string setup_error_;
  static inline ScratchDir* scratch_ = nullptr;
  static inline AgentProcess* agent_ = nullptr;
  static inline std::string* env_ = nullptr;
};

TEST_F(SeccompTest, EveryProcessRunsUnderTheFilter) {
  ExecResult r = In({"grep", "-E", "^(Seccomp|NoNewPrivs):", "/proc/self/status"});
  EXPECT_THAT(r.out, HasSubstr("NoNewPrivs:\t1"));
  EXPECT_THAT(r.out, HasSubstr("Seccomp:\t2"));
}

TEST_F(SeccompTest, KernelInterfacesOpenToUnprivilegedUsersAreDenied) {
  ExecResult r = In({"python3", "-c", kProbe});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (const char* name : {"keyctl", "add_key", "request_key", "io_uring_setup", "bpf",
                           "userfaultfd", "perf_event_open"}) {
    EXPECT_THAT(r.out, HasSubstr(absl::StrCat(name, " 1\n"))) << r.out;  // EPERM
  }
  // clone3 says ENOSYS, so that the C library falls back to clone, whose flags are checked.
  EXPECT_THAT(r.out, HasSubstr("clone3 38\n")) << r.out;
}

TEST_F(SeccompTest, NewNamespacesCannotBeCreated) {
  for (const char* flag : {"--user", "--mount", "--net", "--pid", "--uts", "--ipc"}) {
    ExecResult r = In({"unshare", flag, "true"});
    EXPECT_NE(r.exit_code, 0) << flag;
    EXPECT_THAT(r.err, HasSubstr("Operation not permitted")) << flag;
  }
  // Threads and ordinary children still work (clone without namespace flags).
  ExecResult threads = In({"python3", "-c",
                           "import threading; t = threading.Thread(target=print, args=('thr',)); "
                           "t.start(); t.join(); import subprocess; "
                           "print(subprocess.run(['echo', 'child'], capture_output=True)"
                           ".stdout.decode().strip())"});
  EXPECT_EQ(threads.out, "thr\nchild\n") << threads.err;
}

TEST_F(SeccompTest, TerminalInjectionIsDeniedAlsoWithHighBitsSet) {
  // TIOCSTI, and the same command with bits above 32 set (the kernel ignores them).
  ExecResult r = In({"python3", "-c",
                     "import fcntl, errno\n"
                     "for request in (0x5412, 0x100005412):\n"
                     "    try:\n"
                     "        fcntl.ioctl(0, request, b'x')\n"
                     "        print(hex(request), 0)\n"
                     "    except OSError as e:\n"
                     "        print(hex(request), e.errno)\n"},
                    /*tty=*/true);
  EXPECT_THAT(r.out, HasSubstr("0x5412 1\r\n")) << r.out;
  EXPECT_THAT(r.out, HasSubstr("0x100005412 1\r\n")) << r.out;
}

#if defined(__x86_64__)
// The same calls under other numbers: i386's `int 0x80` from a 64-bit process, and x32's
// numbers (bit 30 set). Only the native ABI is allowed; either of the others kills the process
// with SIGSYS before the call runs, whether or not the kernel would have served it.
TEST_F(SeccompTest, CallsThroughAnotherAbiKillTheProcess) {
  constexpr char kForeignCall[] = R"PY(
import ctypes, mmap, sys
if sys.argv[1] == "i386":
    code = bytes([0xb8, 20, 0, 0, 0, 0xcd, 0x80, 0xc3])  # mov eax, 20 (getpid); int 0x80; ret
    page = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    page.write(code)
    call = ctypes.CFUNCTYPE(ctypes.c_long)(ctypes.addressof(ctypes.c_char.from_buffer(page)))
    print("returned", call(), flush=True)
else:
    libc = ctypes.CDLL(None, use_errno=True)
    print("returned", libc.syscall(0x40000000 | 39), flush=True)  # x32 getpid
)PY";
  for (const char* abi : {"i386", "x32"}) {
    ExecResult r = In({"python3", "-c", kForeignCall, abi});
    EXPECT_EQ(r.signal, SIGSYS) << abi << ": exit " << r.exit_code << ", " << r.out << r.err;
    EXPECT_EQ(r.out, "") << abi;
  }
  // The native call is untouched.
  ExecResult native = In({"python3", "-c", "import os; print(os.getpid() > 0)"});
  EXPECT_EQ(native.out, "True\n") << native.err;
}
#endif

}  // namespace
}  // namespace llima::testing
