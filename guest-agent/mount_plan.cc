#include "mount_plan.h"

#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/match.h"
#include "project_path.h"

namespace llima {
namespace {

constexpr uint64_t kNoSuidNoDev = kAttrNoSuid | kAttrNoDev;

// Device nodes environments get, bound from the host's /dev.
constexpr const char* kDeviceNodes[] = {"null", "zero", "full", "random", "urandom", "tty"};

// Mount points outside the system directories that every environment has.
constexpr const char* kPrivateMountPoints[] = {"/home", "/tmp", "/var", "/run", "/dev", "/proc",
                                               "/sys"};

// A project there would be hidden by, or would hide, what the kernel or the agent puts there.
constexpr const char* kForbiddenProjectRoots[] = {"/proc", "/sys", "/dev", "/run"};

}  // namespace

const std::vector<std::string>& SystemDirectoryNames() {
  static const auto* names = new std::vector<std::string>{
      "usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "etc", "opt"};
  return *names;
}

HostLayout ReadHostLayout() {
  HostLayout layout;
  for (const std::string& name : SystemDirectoryNames()) {
    std::string path = "/" + name;
    struct stat st;
    if (lstat(path.c_str(), &st) != 0) continue;
    HostLayout::SystemEntry entry{name, false, ""};
    if (S_ISLNK(st.st_mode)) {
      char target[PATH_MAX];
      ssize_t n = readlink(path.c_str(), target, sizeof(target) - 1);
      if (n <= 0) continue;
      entry.is_symlink = true;
      entry.link_target.assign(target, static_cast<size_t>(n));
    } else if (!S_ISDIR(st.st_mode)) {
      continue;
    }
    layout.system_entries.push_back(std::move(entry));
  }
  char resolved[PATH_MAX];
  if (realpath("/etc/resolv.conf", resolved) != nullptr) {
    std::string target = resolved;
    if (PathIsWithin(target, "/run") && target != "/run") {
      layout.resolver_dir = target.substr(0, target.find_last_of('/'));
      if (layout.resolver_dir == "/run") layout.resolver_dir.clear();
    }
  }
  return layout;
}

MountPlan PlanEnvironmentRoot(const RootSpec& spec) {
  MountPlan plan;
  auto add = [&plan](MountStep step) { plan.steps.push_back(std::move(step)); };

  // The system, read-only. Source flags are kept: mount_setattr only adds attributes.
  for (const HostLayout::SystemEntry& entry : spec.host.system_entries) {
    std::string target = "/" + entry.name;
    if (entry.is_symlink) {
      add({.kind = MountStep::Kind::kSymlink, .target = target, .source = entry.link_target});
    } else {
      add({.kind = MountStep::Kind::kBindHost,
           .target = target,
           .source = target,
           .attrs = kAttrReadOnly | kNoSuidNoDev});
    }
  }
  // The environment's identity: whoami, ~ and getpwuid agree on the environment name.
  add({.kind = MountStep::Kind::kBindContent, .target = "/etc/passwd", .data = spec.passwd});
  add({.kind = MountStep::Kind::kBindContent, .target = "/etc/group", .data = spec.group});

  // Private writable places: nothing here is shared with the VM or other environments.
  add({.kind = MountStep::Kind::kTmpfs,
       .target = "/tmp",
       .data = "mode=1777",
       .attrs = kNoSuidNoDev});
  add({.kind = MountStep::Kind::kTmpfs,
       .target = "/var",
       .data = "mode=0755",
       .attrs = kNoSuidNoDev});
  add({.kind = MountStep::Kind::kDirectory, .target = "/var/tmp", .mode = 01777});
  add({.kind = MountStep::Kind::kSymlink, .target = "/var/run", .source = "../run"});
  add({.kind = MountStep::Kind::kSymlink, .target = "/var/lock", .source = "../run/lock"});
  add({.kind = MountStep::Kind::kTmpfs,
       .target = "/run",
       .data = "mode=0755",
       .attrs = kNoSuidNoDev});
  add({.kind = MountStep::Kind::kDirectory, .target = "/run/lock", .mode = 01777});
  if (!spec.host.resolver_dir.empty()) {
    add({.kind = MountStep::Kind::kBindHost,
         .target = spec.host.resolver_dir,
         .source = spec.host.resolver_dir,
         .attrs = kAttrReadOnly | kNoSuidNoDev | kAttrNoExec});
  }

  // A minimal /dev with its own pty instance.
  add({.kind = MountStep::Kind::kTmpfs,
       .target = "/dev",
       .data = "mode=0755,size=64k",
       .attrs = kAttrNoSuid | kAttrNoExec});
  for (const char* node : kDeviceNodes) {
    std::string path = absl::StrCat("/dev/", node);
    add({.kind = MountStep::Kind::kBindHost,
         .target = path,
         .source = path,
         .attrs = kAttrNoSuid | kAttrNoExec,
         .source_is_file = true});
  }
  add({.kind = MountStep::Kind::kDevpts,
       .target = "/dev/pts",
       // max: the ptys of all instances come from one system-wide pool (kernel.pty.max);
       // one environment must not be able to take them all.
       .data = "newinstance,ptmxmode=0666,mode=0620,max=256",
       .attrs = kAttrNoSuid | kAttrNoExec});
  add({.kind = MountStep::Kind::kSymlink, .target = "/dev/ptmx", .source = "pts/ptmx"});
  add({.kind = MountStep::Kind::kTmpfs,
       .target = "/dev/shm",
       .data = "mode=1777",
       .attrs = kNoSuidNoDev});
  add({.kind = MountStep::Kind::kSymlink, .target = "/dev/fd", .source = "/proc/self/fd"});
  add({.kind = MountStep::Kind::kSymlink, .target = "/dev/stdin", .source = "/proc/self/fd/0"});
  add({.kind = MountStep::Kind::kSymlink, .target = "/dev/stdout", .source = "/proc/self/fd/1"});
  add({.kind = MountStep::Kind::kSymlink, .target = "/dev/stderr", .source = "/proc/self/fd/2"});

  add({.kind = MountStep::Kind::kProc,
       .target = "/proc",
       .attrs = kNoSuidNoDev | kAttrNoExec});
  // sysfs alone: what the VM mounts below it (cgroupfs, debugfs, tracefs, securityfs, bpffs)
  // stays out.
  add({.kind = MountStep::Kind::kBindHost,
       .target = "/sys",
       .source = "/sys",
       .attrs = kAttrReadOnly | kNoSuidNoDev | kAttrNoExec,
       .recursive = false});

  // Home and project last: they are the only user-controlled trees, and nothing is created
  // beneath them (CheckProjectPlacement guarantees no other target lies inside the project).
  add({.kind = MountStep::Kind::kBindFd,
       .target = spec.home_path,
       .attrs = kNoSuidNoDev,
       .fd_index = kHomeFdIndex});
  add({.kind = MountStep::Kind::kBindFd,
       .target = spec.project_path,
       .attrs = kNoSuidNoDev,
       .fd_index = kProjectFdIndex});
  return plan;
}

absl::Status CheckProjectPlacement(const std::string& project_path,
                                   const std::vector<std::string>& protected_paths,
                                   const std::string& home_path) {
  if (!home_path.empty() && PathIsWithin(project_path, home_path)) {
    return absl::FailedPreconditionError(
        absl::StrCat("project path ", project_path, " is inside ", home_path,
                     ", the environment's own home; choose a directory outside it"));
  }
  for (const char* root : kForbiddenProjectRoots) {
    if (PathIsWithin(project_path, root)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "project path ", project_path, " is inside ", root,
          ", which every environment replaces with its own; choose a directory elsewhere"));
    }
  }
  auto overlaps = [&](const std::string& other) {
    return PathIsWithin(other, project_path);  // project is `other` or above it
  };
  for (const char* mount_point : kPrivateMountPoints) {
    if (overlaps(mount_point)) {
      return absl::FailedPreconditionError(
          absl::StrCat("project path ", project_path, " contains ", mount_point,
                       ", which every environment replaces with its own; choose a subdirectory"));
    }
  }
  for (const std::string& name : SystemDirectoryNames()) {
    std::string dir = "/" + name;
    if (overlaps(dir)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "project path ", project_path, " contains the system directory ", dir,
          "; choose a project directory"));
    }
  }
  for (const std::string& path : protected_paths) {
    if (path.empty()) continue;
    if (overlaps(path) || PathIsWithin(project_path, path)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "project path ", project_path, " overlaps ", path,
          ", which belongs to llima-agent; choose another directory"));
    }
  }
  return absl::OkStatus();
}

}  // namespace llima
