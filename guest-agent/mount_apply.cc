#include "mount_apply.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "posix_error.h"
#include "syscalls.h"
#include "unique_fd.h"

namespace llima {
namespace {

int OpenTree(int dirfd, const char* path, unsigned flags) { return open_tree(dirfd, path, flags); }
int MoveMount(int from_dirfd, const char* from_path, int to_dirfd, const char* to_path,
              unsigned flags) {
  return move_mount(from_dirfd, from_path, to_dirfd, to_path, flags);
}
int MountSetattr(int dirfd, const char* path, unsigned flags, mount_attr* attr) {
  return mount_setattr(dirfd, path, flags, attr, sizeof(*attr));
}

unsigned long MsFlags(uint64_t attrs) {
  unsigned long flags = 0;
  if (attrs & kAttrReadOnly) flags |= MS_RDONLY;
  if (attrs & kAttrNoSuid) flags |= MS_NOSUID;
  if (attrs & kAttrNoDev) flags |= MS_NODEV;
  if (attrs & kAttrNoExec) flags |= MS_NOEXEC;
  return flags;
}

// Creates `path` and its missing parents (mode 0755). Only used on trees the agent made itself.
absl::Status MakeDirectories(const std::string& path, mode_t mode) {
  std::string partial;
  std::vector<absl::string_view> parts = absl::StrSplit(path, '/', absl::SkipEmpty());
  for (size_t i = 0; i < parts.size(); ++i) {
    absl::StrAppend(&partial, "/", parts[i]);
    mode_t m = i + 1 == parts.size() ? mode : 0755;
    if (mkdir(partial.c_str(), m) != 0 && errno != EEXIST) {
      return PosixError(errno, absl::StrCat("create directory ", partial));
    }
  }
  // mkdir's mode is filtered by the umask; sticky and world-writable bits must be exact.
  if (chmod(path.c_str(), mode) != 0 && errno != EROFS) {
    return PosixError(errno, absl::StrCat("chmod ", path));
  }
  return absl::OkStatus();
}

absl::Status MakeParent(const std::string& path) {
  return MakeDirectories(path.substr(0, path.find_last_of('/')), 0755);
}

absl::Status MakeEmptyFile(const std::string& path) {
  UniqueFd fd(open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644));
  if (!fd && errno != EROFS && errno != EEXIST) {
    return PosixError(errno, absl::StrCat("create mount point ", path));
  }
  return absl::OkStatus();
}

// Attaches the detached mount tree `tree` at `target`, adding `attrs` to every mount in it.
// The copy is made private: a clone keeps its source's peer group, and mounts made later under
// the project in the VM would otherwise appear inside the environment.
absl::Status AttachTree(int tree, uint64_t attrs, const std::string& target,
                        const std::string& what) {
  mount_attr attr{};
  attr.attr_set = attrs;
  attr.propagation = MS_PRIVATE;
  if (MountSetattr(tree, "", AT_EMPTY_PATH | AT_RECURSIVE, &attr) != 0) {
    return PosixError(errno, absl::StrCat("set attributes of ", what));
  }
  if (MoveMount(tree, "", AT_FDCWD, target.c_str(), MOVE_MOUNT_F_EMPTY_PATH) != 0) {
    return PosixError(errno, absl::StrCat("bind-mount ", what, " onto ", target));
  }
  return absl::OkStatus();
}

absl::Status BindHost(const MountStep& step, const std::string& target) {
  if (step.source_is_file) {
    if (auto s = MakeParent(target); !s.ok()) return s;
    if (auto s = MakeEmptyFile(target); !s.ok()) return s;
  } else {
    if (auto s = MakeDirectories(target, 0755); !s.ok()) return s;
  }
  unsigned flags = OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC |
                   (step.source_is_file || !step.recursive ? 0 : AT_RECURSIVE);
  UniqueFd tree(OpenTree(AT_FDCWD, step.source.c_str(), flags));
  if (!tree) return PosixError(errno, absl::StrCat("clone mount of ", step.source));
  return AttachTree(tree.get(), step.attrs, target, step.source);
}

absl::Status BindContent(const MountStep& step, const std::string& root, const std::string& target,
                         int serial) {
  // Written into the root tmpfs, bound over the target, then unlinked: the mount keeps the file.
  std::string source = absl::StrCat(root, "/.content-", serial);
  {
    UniqueFd fd(open(source.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
    if (!fd) return PosixError(errno, absl::StrCat("create ", source));
    if (!WriteAll(fd.get(), step.data.data(), step.data.size())) {
      return PosixError(errno, absl::StrCat("write ", source));
    }
  }
  if (auto s = MakeParent(target); !s.ok()) return s;
  if (auto s = MakeEmptyFile(target); !s.ok()) return s;
  UniqueFd tree(OpenTree(AT_FDCWD, source.c_str(), OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC));
  if (!tree) return PosixError(errno, absl::StrCat("clone mount of ", source));
  absl::Status s = AttachTree(tree.get(), kAttrReadOnly | kAttrNoSuid | kAttrNoDev, target,
                              step.target + " content");
  unlink(source.c_str());
  return s;
}

absl::Status ApplyStep(const MountStep& step, const std::string& root, absl::Span<const int> trees,
                       int serial) {
  const std::string target = root + step.target;
  switch (step.kind) {
    case MountStep::Kind::kTmpfs:
    case MountStep::Kind::kDevpts:
    case MountStep::Kind::kProc: {
      if (auto s = MakeDirectories(target, 0755); !s.ok()) return s;
      const char* type = step.kind == MountStep::Kind::kTmpfs   ? "tmpfs"
                         : step.kind == MountStep::Kind::kDevpts ? "devpts"
                                                                 : "proc";
      if (mount(type, target.c_str(), type, MsFlags(step.attrs),
                step.data.empty() ? nullptr : step.data.c_str()) != 0) {
        return PosixError(errno, absl::StrCat("mount ", type, " on ", step.target));
      }
      return absl::OkStatus();
    }
    case MountStep::Kind::kBindHost:
      return BindHost(step, target);
    case MountStep::Kind::kBindFd: {
      if (step.fd_index < 0 || static_cast<size_t>(step.fd_index) >= trees.size()) {
        return absl::InternalError(absl::StrCat("no mount tree for ", step.target));
      }
      if (auto s = MakeDirectories(target, 0755); !s.ok()) return s;
      return AttachTree(trees[step.fd_index], step.attrs, target, step.target);
    }
    case MountStep::Kind::kBindContent:
      return BindContent(step, root, target, serial);
    case MountStep::Kind::kSymlink:
      if (auto s = MakeParent(target); !s.ok()) return s;
      if (symlink(step.source.c_str(), target.c_str()) != 0) {
        return PosixError(errno, absl::StrCat("symlink ", step.target, " -> ", step.source));
      }
      return absl::OkStatus();
    case MountStep::Kind::kDirectory:
      return MakeDirectories(target, step.mode);
  }
  return absl::InternalError("unknown mount step");
}

}  // namespace

absl::Status ApplyMountPlan(const MountPlan& plan, const std::string& staging_root,
                            absl::Span<const int> trees) {
  // Nothing done here may propagate back to the VM: the copied namespace starts with the host's
  // propagation (shared under systemd).
  if (mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) {
    return PosixError(errno, "make all mounts private");
  }
  if (mount("llima-root", staging_root.c_str(), "tmpfs", MS_NOSUID | MS_NODEV,
            "mode=0755,size=1m") != 0) {
    return PosixError(errno, absl::StrCat("mount root tmpfs on ", staging_root));
  }
  int serial = 0;
  for (const MountStep& step : plan.steps) {
    if (auto s = ApplyStep(step, staging_root, trees, serial++); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status PivotToRoot(const std::string& new_root) {
  if (chdir(new_root.c_str()) != 0) return PosixError(errno, absl::StrCat("chdir ", new_root));
  // pivot_root(".", ".") stacks the old root on top of the new one; detaching "." then removes
  // it without needing a directory for it inside the new root.
  if (syscall(SYS_pivot_root, ".", ".") != 0) {
    return PosixError(errno, absl::StrCat("pivot_root into ", new_root));
  }
  if (umount2(".", MNT_DETACH) != 0) return PosixError(errno, "detach the old root");
  if (chdir("/") != 0) return PosixError(errno, "chdir /");
  mount_attr attr{};
  attr.attr_set = MOUNT_ATTR_RDONLY;
  if (MountSetattr(AT_FDCWD, "/", 0, &attr) != 0) {
    return PosixError(errno, "make the root read-only");
  }
  return absl::OkStatus();
}

}  // namespace llima
