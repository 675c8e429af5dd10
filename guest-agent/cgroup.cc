#include "cgroup.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "posix_error.h"
#include "read_file.h"

namespace llima {
namespace {

// mountinfo escapes space, tab, newline and backslash as \ooo.
std::string UnescapeMountPath(absl::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size()) {
      int v = 0;
      bool ok = true;
      for (size_t j = 1; j <= 3; ++j) {
        char c = s[i + j];
        if (c < '0' || c > '7') ok = false;
        v = v * 8 + (c - '0');
      }
      if (ok) {
        out += static_cast<char>(v);
        i += 3;
        continue;
      }
    }
    out += s[i];
  }
  return out;
}

std::vector<pid_t> ReadProcs(const std::string& dir) {
  std::vector<pid_t> pids;
  for (absl::string_view line :
       absl::StrSplit(ReadFileOrEmpty(dir + "/cgroup.procs"), '\n', absl::SkipEmpty())) {
    pid_t pid;
    if (absl::SimpleAtoi(line, &pid)) pids.push_back(pid);
  }
  return pids;
}

}  // namespace

std::optional<std::string> FindCgroup2Mount(const std::string& mountinfo) {
  for (absl::string_view line : absl::StrSplit(mountinfo, '\n', absl::SkipEmpty())) {
    std::vector<absl::string_view> fields = absl::StrSplit(line, ' ');
    // id parent dev root mountpoint options [optional...] - fstype source superoptions
    for (size_t i = 6; i + 1 < fields.size(); ++i) {
      if (fields[i] == "-") {
        if (fields[i + 1] == "cgroup2") return UnescapeMountPath(fields[4]);
        break;
      }
    }
  }
  return std::nullopt;
}

CgroupTree CgroupTree::Discover(const std::string& subtree) {
  CgroupTree tree;
  std::optional<std::string> mount = FindCgroup2Mount(ReadFileOrEmpty("/proc/self/mountinfo"));
  if (!mount) {
    tree.unavailable_reason_ = "no cgroup v2 hierarchy is mounted";
    return tree;
  }
  std::string root = absl::StrCat(*mount, "/", subtree);
  if (mkdir(root.c_str(), 0755) != 0 && errno != EEXIST) {
    tree.unavailable_reason_ = std::string(PosixError(errno, absl::StrCat("create ", root)).message());
    return tree;
  }
  tree.root_ = root;
  return tree;
}

absl::StatusOr<UniqueFd> CgroupTree::Create(const std::string& name) const {
  std::string path = PathFor(name);
  if (mkdir(path.c_str(), 0755) != 0 && errno != EEXIST) {
    return PosixError(errno, absl::StrCat("create cgroup ", path));
  }
  return Open(name);
}

absl::StatusOr<UniqueFd> CgroupTree::Open(const std::string& name) const {
  std::string path = PathFor(name);
  UniqueFd fd(open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd) return PosixError(errno, absl::StrCat("open cgroup ", path));
  return fd;
}

int CgroupTree::CountProcesses(const std::string& name) const {
  if (!available()) return -1;
  std::string path = PathFor(name) + "/cgroup.procs";
  UniqueFd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return -1;
  char buf[16384];
  int lines = 0;
  for (;;) {
    ssize_t n = read(fd.get(), buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    for (ssize_t i = 0; i < n; ++i) lines += buf[i] == '\n';
  }
  return lines;
}

absl::Status CgroupTree::KillAll(const std::string& name) const {
  if (!available()) return absl::OkStatus();
  std::string dir = PathFor(name);
  if (access(dir.c_str(), F_OK) != 0) return absl::OkStatus();
  // cgroup.kill (Linux 5.14) kills atomically, including processes forking meanwhile.
  UniqueFd kill_fd(open((dir + "/cgroup.kill").c_str(), O_WRONLY | O_CLOEXEC));
  if (kill_fd && write(kill_fd.get(), "1", 1) == 1) return absl::OkStatus();
  for (int round = 0; round < 100; ++round) {
    std::vector<pid_t> pids = ReadProcs(dir);
    if (pids.empty()) return absl::OkStatus();
    for (pid_t pid : pids) kill(pid, SIGKILL);
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return absl::DeadlineExceededError(absl::StrCat("processes of cgroup ", dir, " survive SIGKILL"));
}

absl::Status CgroupTree::Remove(const std::string& name) const {
  if (!available()) return absl::OkStatus();
  std::string dir = PathFor(name);
  // A killed process leaves its cgroup only once it is fully gone; allow it a moment.
  for (int attempt = 0; attempt < 500; ++attempt) {
    if (rmdir(dir.c_str()) == 0 || errno == ENOENT) return absl::OkStatus();
    if (errno != EBUSY) return PosixError(errno, absl::StrCat("remove cgroup ", dir));
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return PosixError(EBUSY, absl::StrCat("remove cgroup ", dir));
}

}  // namespace llima
