#pragma once

// The root filesystem of an environment, as data. PlanEnvironmentRoot computes it from the
// environment and a description of the host; mount_apply.h turns it into system calls. Keeping
// the plan pure makes the isolation policy reviewable and testable without root.

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace llima {

// What the plan needs to know of the host's root directory.
struct HostLayout {
  struct SystemEntry {
    std::string name;         // "usr", "bin", ...
    bool is_symlink = false;  // merged-/usr systems have /bin -> usr/bin
    std::string link_target;  // when is_symlink
  };
  std::vector<SystemEntry> system_entries;
  // Directory under /run holding the resolver configuration /etc/resolv.conf points to
  // (Ubuntu: /run/systemd/resolve), or empty.
  std::string resolver_dir;
};

// The top-level host directories environments see read-only, when the host has them.
const std::vector<std::string>& SystemDirectoryNames();

// Reads the host's layout (which system directories exist, where the resolver lives).
HostLayout ReadHostLayout();

struct RootSpec {
  std::string name;          // environment name
  std::string project_path;  // clean absolute path
  std::string home_path;     // /home/<name>
  std::string passwd;        // synthesized /etc/passwd content
  std::string group;         // synthesized /etc/group content
  HostLayout host;
};

// Mount attributes, as in <linux/mount.h> MOUNT_ATTR_*.
enum MountAttr : uint64_t {
  kAttrReadOnly = 0x1,
  kAttrNoSuid = 0x2,
  kAttrNoDev = 0x4,
  kAttrNoExec = 0x8,
};

struct MountStep {
  enum class Kind {
    kTmpfs,       // new tmpfs at target; `data` holds its options
    kBindHost,    // recursive bind of host path `source` (a directory or a device node)
    kBindFd,      // recursive bind of the directory passed as descriptor `fd_index`
    kBindContent, // a read-only file at target holding `data`
    kDevpts,      // a new devpts instance; `data` holds its options
    kProc,        // procfs of the environment's pid namespace
    kSymlink,     // target -> source
    kDirectory,   // a directory with `mode`
  };
  Kind kind;
  std::string target;  // absolute path inside the environment
  std::string source;
  std::string data;
  mode_t mode = 0755;
  uint64_t attrs = 0;  // MountAttr bits applied (recursively) to the new mount
  int fd_index = -1;
  bool source_is_file = false;  // kBindHost of a device node
  bool recursive = true;        // kBindHost: with the mounts below the source
};

struct MountPlan {
  std::vector<MountStep> steps;
};

// Indices of the descriptors kBindFd steps refer to.
inline constexpr int kProjectFdIndex = 0;
inline constexpr int kHomeFdIndex = 1;

MountPlan PlanEnvironmentRoot(const RootSpec& spec);

// Rejects project paths that would overlay or expose what the environment must not see or must
// keep: inside /proc, /sys, /dev or /run; equal to or above a directory the plan mounts (/home,
// /tmp, /usr, ...); overlapping the agent's own paths (`protected_paths`: state directory,
// socket directory); inside the environment's own home (`home_path`), which its user controls
// and through which init would otherwise create mount points as root.
absl::Status CheckProjectPlacement(const std::string& project_path,
                                   const std::vector<std::string>& protected_paths,
                                   const std::string& home_path = "");

}  // namespace llima
