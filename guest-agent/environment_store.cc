#include "environment_store.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "google/protobuf/text_format.h"
#include "naming.h"
#include "posix_error.h"
#include "syscalls.h"
#include "unique_fd.h"

namespace llima {
namespace {

constexpr char kRecordFile[] = "record.textpb";

absl::Status MakeDirectory(const std::string& path, mode_t mode) {
  if (mkdir(path.c_str(), mode) != 0 && errno != EEXIST) {
    return PosixError(errno, absl::StrCat("create directory ", path));
  }
  struct stat st;
  if (lstat(path.c_str(), &st) != 0) return PosixError(errno, absl::StrCat("stat ", path));
  if (!S_ISDIR(st.st_mode)) {
    return absl::FailedPreconditionError(absl::StrCat(path, " exists and is not a directory"));
  }
  return absl::OkStatus();
}

// Whether a mount is attached at `path`: the mount it is on differs from its parent's. (Not from
// /proc/self/mountinfo, which escapes spaces and names symlinks by where they lead.)
bool IsMountPoint(const std::string& path) {
  struct statx here {}, parent {};
  if (statx(AT_FDCWD, path.c_str(), AT_SYMLINK_NOFOLLOW, STATX_MNT_ID, &here) != 0 ||
      statx(AT_FDCWD, (path + "/..").c_str(), 0, STATX_MNT_ID, &parent) != 0) {
    return false;
  }
  return (here.stx_mask & parent.stx_mask & STATX_MNT_ID) != 0 &&
         here.stx_mnt_id != parent.stx_mnt_id;
}

}  // namespace

EnvironmentStore::EnvironmentStore(std::string state_dir)
    : state_dir_(CleanAbsolutePath(state_dir)), envs_dir_(state_dir_ + "/envs") {}

absl::Status EnvironmentStore::Initialize() {
  // Parents may be shared with others (/var/lib); the state directory itself is root's alone.
  std::string partial;
  for (absl::string_view part : absl::StrSplit(state_dir_, '/', absl::SkipEmpty())) {
    absl::StrAppend(&partial, "/", part);
    if (auto s = MakeDirectory(partial, 0755); !s.ok()) return s;
  }
  if (chmod(state_dir_.c_str(), 0700) != 0) return PosixError(errno, "chmod " + state_dir_);
  if (auto s = MakeDirectory(envs_dir_, 0700); !s.ok()) return s;
  if (auto s = MakeDirectory(StagingPath(), 0700); !s.ok()) return s;

  // A namespace pin (an nsfs bind mount) may only live on a mount that does not propagate:
  // under systemd / is shared, and binding there fails with EINVAL. Give the state directory a
  // mount of its own, private.
  if (!IsMountPoint(state_dir_) &&
      mount(state_dir_.c_str(), state_dir_.c_str(), nullptr, MS_BIND, nullptr) != 0) {
    return PosixError(errno, absl::StrCat("bind-mount ", state_dir_, " onto itself"));
  }
  if (mount(nullptr, state_dir_.c_str(), nullptr, MS_PRIVATE, nullptr) != 0) {
    return PosixError(errno, absl::StrCat("make ", state_dir_, " a private mount"));
  }
  // Not recursive: the pins mounted in the state directory stay out of the view. After a
  // restart it is still there (the same directory bound once more), and is kept.
  std::string view = ViewPath();
  if (auto s = MakeDirectory(view, 0700); !s.ok()) return s;
  if (!IsMountPoint(view) &&
      mount(state_dir_.c_str(), view.c_str(), nullptr, MS_BIND, nullptr) != 0) {
    return PosixError(errno, absl::StrCat("bind-mount ", state_dir_, " onto ", view));
  }
  return absl::OkStatus();
}

std::string EnvironmentStore::ViewPath() const { return state_dir_ + "/view"; }

std::string EnvironmentStore::HomeCloneSource(const std::string& name) const {
  return absl::StrCat(ViewPath(), "/envs/", name, "/home");
}

std::string EnvironmentStore::EnvironmentDir(const std::string& name) const {
  return absl::StrCat(envs_dir_, "/", name);
}
std::string EnvironmentStore::RecordPath(const std::string& name) const {
  return absl::StrCat(EnvironmentDir(name), "/", kRecordFile);
}
std::string EnvironmentStore::PinPath(const std::string& name) const {
  return absl::StrCat(EnvironmentDir(name), "/mnt");
}
std::string EnvironmentStore::HomePath(const std::string& name) const {
  return absl::StrCat(EnvironmentDir(name), "/home");
}
std::string EnvironmentStore::StagingPath() const { return state_dir_ + "/staging"; }

absl::StatusOr<std::vector<std::string>> EnvironmentStore::ListEnvironmentDirectories() const {
  DIR* dir = opendir(envs_dir_.c_str());
  if (dir == nullptr) return PosixError(errno, absl::StrCat("open ", envs_dir_));
  std::vector<std::string> names;
  while (dirent* entry = readdir(dir)) {
    std::string name = entry->d_name;
    if (name == "." || name == "..") continue;
    names.push_back(std::move(name));
  }
  closedir(dir);
  return names;
}

absl::Status EnvironmentStore::CreateEnvironmentDirectory(const std::string& name, uid_t uid,
                                                          gid_t gid) const {
  std::string dir = EnvironmentDir(name);
  if (mkdir(dir.c_str(), 0700) != 0) return PosixError(errno, absl::StrCat("create ", dir));
  std::string home = HomePath(name);
  if (mkdir(home.c_str(), 0700) != 0) return PosixError(errno, absl::StrCat("create ", home));
  if (chown(home.c_str(), uid, gid) != 0) return PosixError(errno, absl::StrCat("chown ", home));
  std::string pin = PinPath(name);
  UniqueFd fd(open(pin.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
  if (!fd) return PosixError(errno, absl::StrCat("create ", pin));
  return absl::OkStatus();
}

absl::StatusOr<internal::EnvironmentRecord> EnvironmentStore::ReadRecord(
    const std::string& name) const {
  std::string path = RecordPath(name);
  std::ifstream in(path);
  if (!in) return PosixError(errno ? errno : ENOENT, absl::StrCat("read ", path));
  std::stringstream ss;
  ss << in.rdbuf();
  internal::EnvironmentRecord record;
  if (!google::protobuf::TextFormat::ParseFromString(ss.str(), &record)) {
    return absl::DataLossError(absl::StrCat("record ", path, " is corrupt"));
  }
  if (record.name() != name) {
    return absl::DataLossError(
        absl::StrCat("record ", path, " names environment \"", record.name(), "\""));
  }
  return record;
}

absl::Status EnvironmentStore::WriteRecord(const internal::EnvironmentRecord& record) const {
  if (auto s = StageRecord(record); !s.ok()) return s;
  return CommitStagedRecord(record.name());
}

std::string EnvironmentStore::StagedRecordPath(const std::string& name) const {
  return RecordPath(name) + ".tmp";
}

absl::Status EnvironmentStore::StageRecord(const internal::EnvironmentRecord& record) const {
  std::string text;
  if (!google::protobuf::TextFormat::PrintToString(record, &text)) {
    return absl::InternalError("cannot serialize environment record");
  }
  std::string temp = StagedRecordPath(record.name());
  UniqueFd fd(open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  if (!fd) return PosixError(errno, absl::StrCat("create ", temp));
  absl::Status status;
  if (!WriteAll(fd.get(), text.data(), text.size())) {
    status = PosixError(errno, absl::StrCat("write ", temp));
  } else if (fsync(fd.get()) != 0) {
    status = PosixError(errno, absl::StrCat("fsync ", temp));
  }
  if (!status.ok()) unlink(temp.c_str());
  return status;
}

absl::Status EnvironmentStore::CommitStagedRecord(const std::string& name) const {
  std::string temp = StagedRecordPath(name);
  std::string path = RecordPath(name);
  if (rename(temp.c_str(), path.c_str()) != 0) {
    absl::Status status = PosixError(errno, absl::StrCat("rename ", temp, " to ", path));
    unlink(temp.c_str());
    return status;
  }
  std::string dir = EnvironmentDir(name);
  UniqueFd dir_fd(open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!dir_fd || fsync(dir_fd.get()) != 0) return PosixError(errno, absl::StrCat("fsync ", dir));
  return absl::OkStatus();
}

void EnvironmentStore::DiscardStagedRecord(const std::string& name) const {
  unlink(StagedRecordPath(name).c_str());
}

absl::Status EnvironmentStore::RemoveRecord(const std::string& name) const {
  std::string path = RecordPath(name);
  if (unlink(path.c_str()) != 0 && errno != ENOENT) {
    return PosixError(errno, absl::StrCat("remove ", path));
  }
  UniqueFd dir_fd(open(EnvironmentDir(name).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dir_fd) fsync(dir_fd.get());
  return absl::OkStatus();
}

absl::Status EnvironmentStore::RemoveEnvironmentDirectory(const std::string& name) const {
  UniqueFd envs(open(envs_dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!envs) return PosixError(errno, absl::StrCat("open ", envs_dir_));
  return RemoveTreeAt(envs.get(), name, EnvironmentDir(name));
}

namespace {

// One directory being removed: its identity and the subdirectories still to visit.
struct RemovalFrame {
  std::string name;  // entry name in the parent
  dev_t dev;
  ino_t ino;
  std::vector<std::string> subdirectories;
};

// Opens `name` in `dir_fd` as a directory of `dev` without following a symlink; records it.
absl::StatusOr<UniqueFd> OpenForRemoval(int dir_fd, const std::string& name, dev_t dev,
                                        const std::string& display, RemovalFrame* frame) {
  UniqueFd fd(openat(dir_fd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!fd) return PosixError(errno, absl::StrCat("open ", display));
  struct stat st;
  if (fstat(fd.get(), &st) != 0) return PosixError(errno, absl::StrCat("stat ", display));
  if (st.st_dev != dev) {
    return absl::FailedPreconditionError(
        absl::StrCat(display, " is a mount point; refusing to remove what is mounted there"));
  }
  frame->name = name;
  frame->dev = st.st_dev;
  frame->ino = st.st_ino;
  return fd;
}

// Unlinks every non-directory in `dir_fd` and lists its subdirectories.
absl::Status EmptyOfFiles(int dir_fd, const std::string& display, RemovalFrame* frame) {
  DIR* dir = fdopendir(dup(dir_fd));
  if (dir == nullptr) return PosixError(errno, "list " + display);
  absl::Status status;
  while (dirent* entry = readdir(dir)) {
    std::string child = entry->d_name;
    if (child == "." || child == "..") continue;
    unsigned char type = entry->d_type;
    if (type == DT_UNKNOWN) {
      struct stat st;
      if (fstatat(dir_fd, child.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
      type = S_ISDIR(st.st_mode) ? DT_DIR : DT_REG;
    }
    if (type == DT_DIR) {
      frame->subdirectories.push_back(std::move(child));
    } else if (unlinkat(dir_fd, child.c_str(), 0) != 0 && errno != ENOENT) {
      status = PosixError(errno, absl::StrCat("remove ", display, "/", child));
      break;
    }
  }
  closedir(dir);
  return status;
}

}  // namespace

absl::Status RemoveTreeAt(int parent_fd, const std::string& name, const std::string& display) {
  struct stat parent_st;
  if (fstat(parent_fd, &parent_st) != 0) return PosixError(errno, "stat parent of " + display);
  struct stat st;
  if (fstatat(parent_fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    return errno == ENOENT ? absl::OkStatus() : PosixError(errno, "stat " + display);
  }
  if (!S_ISDIR(st.st_mode)) {
    if (unlinkat(parent_fd, name.c_str(), 0) != 0 && errno != ENOENT) {
      return PosixError(errno, absl::StrCat("remove ", display));
    }
    return absl::OkStatus();
  }

  // Depth-first without recursion and with one directory open at a time: a tree made by a
  // process inside an environment may be arbitrarily deep. Going back up, ".." is checked to be
  // the directory we came from.
  std::vector<RemovalFrame> stack(1);
  std::string path = display;
  absl::StatusOr<UniqueFd> current =
      OpenForRemoval(parent_fd, name, parent_st.st_dev, display, &stack.back());
  if (!current.ok()) return current.status();
  if (auto s = EmptyOfFiles(current->get(), path, &stack.back()); !s.ok()) return s;
  for (;;) {
    RemovalFrame& top = stack.back();
    if (!top.subdirectories.empty()) {
      std::string child = std::move(top.subdirectories.back());
      top.subdirectories.pop_back();
      RemovalFrame frame;
      std::string child_path = absl::StrCat(path, "/", child);
      absl::StatusOr<UniqueFd> opened =
          OpenForRemoval(current->get(), child, top.dev, child_path, &frame);
      if (!opened.ok()) return opened.status();
      if (auto s = EmptyOfFiles(opened->get(), child_path, &frame); !s.ok()) return s;
      stack.push_back(std::move(frame));
      *current = std::move(*opened);
      path = std::move(child_path);
      continue;
    }
    // `top` is empty now: remove it from its parent.
    std::string removed = top.name;
    stack.pop_back();
    if (stack.empty()) {
      if (unlinkat(parent_fd, removed.c_str(), AT_REMOVEDIR) != 0 && errno != ENOENT) {
        return PosixError(errno, absl::StrCat("remove ", display));
      }
      return absl::OkStatus();
    }
    UniqueFd up(openat(current->get(), "..", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    struct stat up_st;
    if (!up || fstat(up.get(), &up_st) != 0 || up_st.st_dev != stack.back().dev ||
        up_st.st_ino != stack.back().ino) {
      return absl::FailedPreconditionError(
          absl::StrCat("the parent of ", path, " changed while it was being removed"));
    }
    if (unlinkat(up.get(), removed.c_str(), AT_REMOVEDIR) != 0 && errno != ENOENT) {
      return PosixError(errno, absl::StrCat("remove ", path));
    }
    *current = std::move(up);
    path = path.substr(0, path.find_last_of('/'));
  }
}

}  // namespace llima
