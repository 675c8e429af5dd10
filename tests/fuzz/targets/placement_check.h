#pragma once

// CheckProjectPlacement's verdict on a project, checked against the mount plan it protects: an
// accepted project lies outside what the kernel, the agent and the environment's home own, and
// no directory the plan mounts lies at or below it (the project is mounted last, so such a mount
// would be made inside the user's tree); a refused one has one of these conflicts, or a file,
// symlink or directory of the plan at or below it.

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "fuzz_check.h"
#include "mount_plan.h"

namespace llima::fuzz {

// Every system directory the plan knows, laid out as on a merged-/usr Debian (some are
// symlinks), and a resolver directory under /run.
inline const HostLayout& FullHostLayout() {
  static const HostLayout* layout = [] {
    auto* host = new HostLayout;
    for (const std::string& name : SystemDirectoryNames()) {
      bool merged = name == "bin" || name == "sbin" || name.rfind("lib", 0) == 0;
      host->system_entries.push_back({name, merged, merged ? "usr/" + name : ""});
    }
    host->resolver_dir = "/run/systemd/resolve";
    return host;
  }();
  return *layout;
}

// `project` is a clean absolute path, `name` a valid environment name, `protected_paths` clean
// absolute paths.
inline void CheckPlacementAgainstPlan(const std::string& project,
                                      const std::vector<std::string>& protected_paths,
                                      const std::string& name) {
  const std::string home = "/home/" + name;
  absl::Status placed = CheckProjectPlacement(project, protected_paths, home);
  FUZZ_CHECK(placed.ok() || placed.code() == absl::StatusCode::kFailedPrecondition);
  FUZZ_CHECK(placed.ok() || !placed.message().empty());

  MountPlan plan = PlanEnvironmentRoot(
      {.name = name, .project_path = project, .home_path = home, .host = FullHostLayout()});
  FUZZ_CHECK(!plan.steps.empty());
  const MountStep& last = plan.steps.back();
  FUZZ_CHECK(last.kind == MountStep::Kind::kBindFd && last.fd_index == kProjectFdIndex &&
             last.target == project);

  bool directory_mount_inside = false;  // a mount of a directory at or below the project
  bool anything_inside = false;         // any target of the plan at or below the project
  for (size_t i = 0; i + 1 < plan.steps.size(); ++i) {
    const MountStep& step = plan.steps[i];
    FUZZ_CHECK(IsCleanAbsolute(step.target));
    bool inside = IsAtOrBelow(step.target, project);
    bool mounts_directory =
        step.kind == MountStep::Kind::kTmpfs || step.kind == MountStep::Kind::kDevpts ||
        step.kind == MountStep::Kind::kProc || step.kind == MountStep::Kind::kBindFd ||
        (step.kind == MountStep::Kind::kBindHost && !step.source_is_file);
    anything_inside = anything_inside || inside;
    directory_mount_inside = directory_mount_inside || (inside && mounts_directory);
  }
  bool kernel_owned = false;
  for (const char* root : {"/proc", "/sys", "/dev", "/run"}) {
    kernel_owned = kernel_owned || IsAtOrBelow(project, root);
  }
  bool in_home = IsAtOrBelow(project, home);
  bool overlaps_agent = false;
  for (const std::string& path : protected_paths) {
    if (path.empty()) continue;
    overlaps_agent = overlaps_agent || IsAtOrBelow(project, path) || IsAtOrBelow(path, project);
  }

  if (placed.ok()) {
    FUZZ_CHECK(!directory_mount_inside);
    FUZZ_CHECK(!kernel_owned);
    FUZZ_CHECK(!in_home);
    FUZZ_CHECK(!overlaps_agent);
  } else {
    FUZZ_CHECK(anything_inside || kernel_owned || in_home || overlaps_agent);
  }
}

}  // namespace llima::fuzz
