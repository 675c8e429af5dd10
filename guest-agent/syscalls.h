#pragma once

// Thin wrappers for system calls glibc 2.36 does not wrap (clone3, openat2), plus small helpers
// used on both sides of fork. Everything here is async-signal-safe.

#include <linux/openat2.h>
#include <errno.h>
#include <linux/sched.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdint>

namespace llima {

inline long Clone3(clone_args* args) { return syscall(SYS_clone3, args, sizeof(*args)); }

// <sys/pidfd.h> of glibc 2.36 lacks C linkage for C++; call the kernel directly.
inline int PidfdOpen(pid_t pid) { return static_cast<int>(syscall(SYS_pidfd_open, pid, 0)); }
inline int PidfdSendSignal(int pidfd, int sig) {
  return static_cast<int>(syscall(SYS_pidfd_send_signal, pidfd, sig, nullptr, 0));
}

inline int Openat2(int dirfd, const char* path, const open_how* how) {
  return static_cast<int>(syscall(SYS_openat2, dirfd, path, how, sizeof(*how)));
}

// write(2) until everything is written or an error other than EINTR occurs.
inline bool WriteAll(int fd, const void* data, size_t size) {
  const char* p = static_cast<const char*>(data);
  while (size > 0) {
    ssize_t n = ::write(fd, p, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    p += n;
    size -= static_cast<size_t>(n);
  }
  return true;
}

}  // namespace llima
