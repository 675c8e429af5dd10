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
#include "absl/strings/str_join.h"
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

// Sets the controller `name` in `controllers`, if it is one of the three.
void Mark(absl::string_view name, LimitControllers* controllers) {
  if (name == "memory") controllers->memory = true;
  if (name == "pids") controllers->pids = true;
  if (name == "cpu") controllers->cpu = true;
}

LimitControllers Without(const LimitControllers& a, const LimitControllers& b) {
  return {a.memory && !b.memory, a.pids && !b.pids, a.cpu && !b.cpu};
}

LimitControllers Both(const LimitControllers& a, const LimitControllers& b) {
  return {a.memory && b.memory, a.pids && b.pids, a.cpu && b.cpu};
}

std::vector<std::string> Names(const LimitControllers& controllers) {
  std::vector<std::string> names;
  if (controllers.memory) names.push_back("memory");
  if (controllers.pids) names.push_back("pids");
  if (controllers.cpu) names.push_back("cpu");
  return names;
}

// Writes `value` into a cgroup file, which must exist: the kernel makes them, never we.
absl::Status WriteCgroupFile(const std::string& path, absl::string_view value) {
  UniqueFd fd(open(path.c_str(), O_WRONLY | O_TRUNC | O_CLOEXEC));
  if (!fd) return PosixError(errno, absl::StrCat("open ", path));
  ssize_t n;
  do {
    n = write(fd.get(), value.data(), value.size());
  } while (n < 0 && errno == EINTR);
  if (n != static_cast<ssize_t>(value.size())) {
    return PosixError(n < 0 ? errno : EIO, absl::StrCat("write \"", value, "\" to ", path));
  }
  return absl::OkStatus();
}

// Enables the `wanted` controllers (those still in it) for the children of the cgroup `dir`,
// taking out of `wanted` those the kernel refuses, with the reason in `problems`.
void EnableForChildren(const std::string& dir, LimitControllers* wanted,
                       std::vector<std::string>* problems) {
  std::string file = dir + "/cgroup.subtree_control";
  LimitControllers needed = Without(*wanted, ParseControllers(ReadFileOrEmpty(file)));
  if (needed.none()) return;
  std::vector<std::string> names = Names(needed);
  std::string all = absl::StrCat("+", absl::StrJoin(names, " +"));
  if (WriteCgroupFile(file, all).ok()) return;
  // One at a time, to find which one the kernel refuses and keep the others.
  for (const std::string& name : names) {
    absl::Status s = WriteCgroupFile(file, "+" + name);
    if (s.ok()) continue;
    if (name == "memory") wanted->memory = false;
    if (name == "pids") wanted->pids = false;
    if (name == "cpu") wanted->cpu = false;
    problems->push_back(absl::StrCat("cannot enable the ", name, " controller: ", s.message()));
  }
}

std::string Int64Or(int64_t value, absl::string_view unlimited) {
  return value > 0 ? absl::StrCat(value) : std::string(unlimited);
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

LimitControllers ParseControllers(absl::string_view text) {
  LimitControllers controllers;
  for (absl::string_view name : absl::StrSplit(text, absl::ByAnyChar(" \n"), absl::SkipEmpty())) {
    Mark(name, &controllers);
  }
  return controllers;
}

LimitControllers Cgroup1Controllers(const std::string& mountinfo) {
  LimitControllers controllers;
  for (absl::string_view line : absl::StrSplit(mountinfo, '\n', absl::SkipEmpty())) {
    std::vector<absl::string_view> fields = absl::StrSplit(line, ' ');
    // ... - fstype source super-options: a v1 hierarchy names its controllers in the last.
    for (size_t i = 6; i + 3 < fields.size(); ++i) {
      if (fields[i] != "-") continue;
      if (fields[i + 1] == "cgroup") {
        for (absl::string_view option : absl::StrSplit(fields[i + 3], ',')) {
          Mark(option, &controllers);
        }
      }
      break;
    }
  }
  return controllers;
}

std::string ListControllers(const LimitControllers& controllers) {
  return absl::StrJoin(Names(controllers), ", ");
}

CgroupLimitValues CgroupLimitValuesFor(const v1::ResourceLimits& limits) {
  CgroupLimitValues values;
  values.memory_max = Int64Or(limits.memory_max_bytes(), "max");
  values.memory_swap_max = limits.memory_max_bytes() > 0 ? "0" : "max";
  values.pids_max = Int64Or(limits.pids_max(), "max");
  values.cpu_max = absl::StrCat(
      limits.cpu_millicores() > 0 ? absl::StrCat(limits.cpu_millicores() * kCpuPeriodMicros / 1000)
                                  : "max",
      " ", kCpuPeriodMicros);
  return values;
}

std::string DescribeUnenforcedLimits(const v1::LimitsEnforcement& enforcement,
                                     absl::string_view reason) {
  std::vector<std::string> names =
      Names({!enforcement.memory(), !enforcement.pids(), !enforcement.cpu()});
  switch (names.size()) {
    case 0:
      return "";
    case 1:
      return absl::StrCat(names[0], " limit not enforced: ", reason);
    case 2:
      return absl::StrCat(names[0], " and ", names[1], " limits not enforced: ", reason);
    default:
      return absl::StrCat("limits not enforced: ", reason);
  }
}

CgroupTree CgroupTree::Discover(const std::string& subtree) {
  std::string mountinfo = ReadFileOrEmpty("/proc/self/mountinfo");
  std::optional<std::string> mount = FindCgroup2Mount(mountinfo);
  if (!mount) {
    CgroupTree tree;
    tree.unavailable_reason_ = "no cgroup v2 hierarchy is mounted";
    tree.missing_reason_ = tree.unavailable_reason_;
    tree.enforcement_.set_detail(DescribeUnenforcedLimits({}, tree.missing_reason_));
    return tree;
  }
  return Prepare(*mount, subtree, Cgroup1Controllers(mountinfo));
}

CgroupTree CgroupTree::Prepare(const std::string& mount, const std::string& subtree,
                               LimitControllers cgroup1) {
  CgroupTree tree;
  std::string root = absl::StrCat(mount, "/", subtree);
  if (mkdir(root.c_str(), 0755) != 0 && errno != EEXIST) {
    tree.unavailable_reason_ = std::string(PosixError(errno, absl::StrCat("create ", root)).message());
    tree.missing_reason_ = tree.unavailable_reason_;
    tree.enforcement_.set_detail(DescribeUnenforcedLimits({}, tree.missing_reason_));
    return tree;
  }
  tree.root_ = root;

  std::vector<std::string> problems;
  LimitControllers enabled = ParseControllers(ReadFileOrEmpty(mount + "/cgroup.controllers"));
  if (LimitControllers missing = Without({true, true, true}, enabled); !missing.none()) {
    std::string problem =
        absl::StrCat("this kernel's cgroup v2 has no ", ListControllers(missing), " controller");
    LimitControllers in_v1 = Both(missing, cgroup1);
    if (Names(in_v1) == Names(missing)) {
      absl::StrAppend(&problem, Names(in_v1).size() == 1 ? " (it is" : " (they are",
                      " bound to cgroup v1)");
    } else if (!in_v1.none()) {
      absl::StrAppend(&problem, " (", ListControllers(in_v1),
                      Names(in_v1).size() == 1 ? " is" : " are", " bound to cgroup v1)");
    }
    problems.push_back(problem);
  }
  // Each cgroup hands controllers on to its children through its cgroup.subtree_control, from
  // the mount down to the directory of the environments. The mount's root cgroup may hold
  // processes and still do so; the directories below hold none of their own.
  std::string dir = mount;
  EnableForChildren(dir, &enabled, &problems);
  for (absl::string_view part : absl::StrSplit(subtree, '/', absl::SkipEmpty())) {
    absl::StrAppend(&dir, "/", part);
    EnableForChildren(dir, &enabled, &problems);
  }
  tree.enforcement_.set_memory(enabled.memory);
  tree.enforcement_.set_pids(enabled.pids);
  tree.enforcement_.set_cpu(enabled.cpu);
  tree.missing_reason_ = absl::StrJoin(problems, "; ");
  tree.enforcement_.set_detail(DescribeUnenforcedLimits(tree.enforcement_, tree.missing_reason_));
  return tree;
}

absl::StatusOr<v1::LimitsEnforcement> CgroupTree::ApplyLimits(
    const std::string& name, const v1::ResourceLimits& limits) const {
  v1::LimitsEnforcement enforcement;
  if (!available()) {
    enforcement.set_detail(DescribeUnenforcedLimits(enforcement, missing_reason_));
    return enforcement;
  }
  std::string dir = PathFor(name);
  LimitControllers has = ParseControllers(ReadFileOrEmpty(dir + "/cgroup.controllers"));
  CgroupLimitValues values = CgroupLimitValuesFor(limits);
  if (has.memory) {
    if (auto s = WriteCgroupFile(dir + "/memory.max", values.memory_max); !s.ok()) return s;
    // Present only where the kernel accounts swap.
    if (std::string swap = dir + "/memory.swap.max"; access(swap.c_str(), F_OK) == 0) {
      if (auto s = WriteCgroupFile(swap, values.memory_swap_max); !s.ok()) return s;
    }
    enforcement.set_memory(true);
  }
  if (has.pids) {
    if (auto s = WriteCgroupFile(dir + "/pids.max", values.pids_max); !s.ok()) return s;
    enforcement.set_pids(true);
  }
  if (has.cpu) {
    if (auto s = WriteCgroupFile(dir + "/cpu.max", values.cpu_max); !s.ok()) return s;
    enforcement.set_cpu(true);
  }
  // Missing here though enabled for the tree: something changed the tree since the agent's start.
  LimitControllers lost =
      Without({enforcement_.memory(), enforcement_.pids(), enforcement_.cpu()}, has);
  std::string reason = missing_reason_;
  if (!lost.none()) {
    reason = absl::StrCat(reason, reason.empty() ? "" : "; ", dir, "/cgroup.controllers has no ",
                          ListControllers(lost), " controller");
  }
  enforcement.set_detail(DescribeUnenforcedLimits(enforcement, reason));
  return enforcement;
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
  UniqueFd dir(open(PathFor(name).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!dir) return -1;
  UniqueFd procs = OpenProcs(dir.get());
  return procs ? CountProcessesIn(procs.get()) : -1;
}

UniqueFd CgroupTree::OpenProcs(int cgroup_fd) {
  return UniqueFd(openat(cgroup_fd, "cgroup.procs", O_RDONLY | O_CLOEXEC));
}

int CgroupTree::CountProcessesIn(int procs_fd) {
  // pread from offset 0 makes the kernel list the cgroup's processes anew.
  char buf[16384];
  int lines = 0;
  off_t offset = 0;
  for (;;) {
    ssize_t n = pread(procs_fd, buf, sizeof(buf), offset);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return -1;
    if (n == 0) break;
    offset += n;
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
