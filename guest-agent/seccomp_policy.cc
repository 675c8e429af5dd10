#include "seccomp_policy.h"

#include <errno.h>
#include <sched.h>
#include <seccomp.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <memory>

#include "absl/strings/str_cat.h"
#include "posix_error.h"
#include "unique_fd.h"

namespace llima {
namespace {

// Denied outright: they change mounts or namespaces, reach the kernel's most exposed
// interfaces, or act on other processes.
constexpr const char* kDenied[] = {
    "mount", "umount", "umount2", "pivot_root", "chroot", "setns",
    "fsopen", "fsconfig", "fsmount", "fspick", "move_mount", "open_tree", "mount_setattr",
    "ptrace", "process_vm_readv", "process_vm_writev",
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
    "bpf", "perf_event_open", "keyctl", "add_key", "request_key", "userfaultfd",
    "open_by_handle_at", "name_to_handle_at", "swapon", "swapoff", "reboot", "acct",
    "io_uring_setup", "io_uring_enter", "io_uring_register",
    "lookup_dcookie", "quotactl", "vhangup", "nfsservctl",
};

// Namespace flags clone and unshare may not carry.
constexpr uint64_t kNamespaceFlags[] = {CLONE_NEWNS,  CLONE_NEWUSER, CLONE_NEWPID,
                                        CLONE_NEWNET, CLONE_NEWUTS,  CLONE_NEWIPC,
                                        CLONE_NEWCGROUP, 0x80 /* CLONE_NEWTIME */};

struct ContextDeleter {
  void operator()(scmp_filter_ctx ctx) const { seccomp_release(ctx); }
};

absl::Status Check(int rc, absl::string_view what) {
  return rc == 0 ? absl::OkStatus() : PosixError(-rc, absl::StrCat("seccomp: ", what));
}

}  // namespace

absl::StatusOr<std::vector<sock_filter>> BuildSeccompFilter() {
  std::unique_ptr<void, ContextDeleter> ctx(seccomp_init(SCMP_ACT_ALLOW));
  if (!ctx) return absl::InternalError("seccomp_init failed");
  // A binary tree of syscall numbers instead of a list: every exec'd process loads the filter,
  // and the kernel walks it for each syscall number when it loads it (to find the calls it can
  // allow without running it) and for the calls that need their arguments checked. Loading
  // took 0.31-0.34 ms per process with the list, 0.14 ms with the tree. The same rules either
  // way; an older libseccomp without the attribute keeps the list.
  (void)seccomp_attr_set(ctx.get(), SCMP_FLTATR_CTL_OPTIMIZE, 2);
  // The CPU's native ABI only: a call through another one (on x86_64, i386's `int 0x80` or an
  // x32 number) kills the process. Those entry points reach the same calls under other numbers,
  // a way around filters that forget them; environments run no 32-bit programs (an arm64 VM
  // on Apple silicon cannot run any). One ABI is also half of what the kernel compiles and
  // checks for every exec'd process: loading the filter took 0.14 ms with the three ABIs,
  // 0.085 ms with one.
  if (auto s = Check(seccomp_attr_set(ctx.get(), SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS),
                     "kill on a foreign ABI");
      !s.ok()) {
    return s;
  }
  const uint32_t eperm = SCMP_ACT_ERRNO(EPERM);
  for (const char* name : kDenied) {
    int nr = seccomp_syscall_resolve_name(name);
    if (nr == __NR_SCMP_ERROR) continue;  // not on this architecture
    if (auto s = Check(seccomp_rule_add(ctx.get(), eperm, nr, 0), name); !s.ok()) return s;
  }
  for (uint64_t flag : kNamespaceFlags) {
    for (const char* name : {"clone", "unshare"}) {
      int nr = seccomp_syscall_resolve_name(name);
      if (auto s = Check(seccomp_rule_add(ctx.get(), eperm, nr, 1,
                                          SCMP_A0(SCMP_CMP_MASKED_EQ, flag, flag)),
                         name);
          !s.ok()) {
        return s;
      }
    }
  }
  // clone3 passes its flags in memory a filter cannot read. ENOSYS, not EPERM: the C library
  // then falls back to clone, whose flags are checked above.
  if (auto s = Check(seccomp_rule_add(ctx.get(), SCMP_ACT_ERRNO(ENOSYS),
                                      seccomp_syscall_resolve_name("clone3"), 0),
                     "clone3");
      !s.ok()) {
    return s;
  }
  // Typing into the controlling terminal (TIOCSTI) or console control (TIOCLINUX) would run
  // commands outside the environment. The kernel compares only the low 32 bits of the
  // command, so the filter must too (CVE-2019-10063).
  for (unsigned long request : {static_cast<unsigned long>(TIOCSTI),
                                static_cast<unsigned long>(TIOCLINUX)}) {
    if (auto s = Check(seccomp_rule_add(ctx.get(), eperm, seccomp_syscall_resolve_name("ioctl"),
                                        1, SCMP_A1(SCMP_CMP_MASKED_EQ, 0xffffffffUL, request)),
                       "ioctl");
        !s.ok()) {
      return s;
    }
  }

  UniqueFd memfd(memfd_create("llima-seccomp", MFD_CLOEXEC));
  if (!memfd) return PosixError(errno, "memfd_create");
  if (auto s = Check(seccomp_export_bpf(ctx.get(), memfd.get()), "export"); !s.ok()) return s;
  off_t size = lseek(memfd.get(), 0, SEEK_END);
  if (size <= 0 || size % sizeof(sock_filter) != 0) {
    return absl::InternalError("seccomp: exported filter has an odd size");
  }
  std::vector<sock_filter> program(static_cast<size_t>(size) / sizeof(sock_filter));
  if (pread(memfd.get(), program.data(), static_cast<size_t>(size), 0) != size) {
    return PosixError(errno, "read the exported seccomp filter");
  }
  return program;
}

}  // namespace llima
