#pragma once

// Drives the Lima VM that holds every environment, through the limactl command, always
// non-interactively. The VM is the instance "llima-box"; its configuration is written from the
// embedded default only when the instance does not exist yet, so a user's edits are kept.

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "llima/internal/lima.pb.h"

namespace llima {

inline constexpr char kInstanceName[] = "llima-box";

// The embedded default lima.yaml.
const std::string& DefaultLimaConfig();

struct CommandResult {
  int exit_code = -1;
  std::string out;
  std::string err;
};

// Runs a program (no shell) and collects its output; `on_line` sees each stderr line as it
// comes (progress while a VM boots).
absl::StatusOr<CommandResult> RunProgram(const std::vector<std::string>& argv,
                                         const std::function<void(const std::string&)>& on_line =
                                             nullptr);

// Parses `limactl list --json` output (JSON Lines); unknown fields are ignored.
absl::StatusOr<std::vector<internal::LimaInstance>> ParseLimaList(const std::string& json_lines);

class LimaDriver {
 public:
  // `agent_source` is staged into the instance directory for the VM to build the agent from;
  // `limactl` is looked up in PATH.
  explicit LimaDriver(absl::string_view agent_source = "", std::string limactl = "limactl");

  // The instance, or nullopt when it does not exist.
  absl::StatusOr<std::optional<internal::LimaInstance>> Instance();
  // Creates the instance from the configuration file (written from the default if missing).
  absl::Status Create();
  absl::Status Start();
  absl::Status Stop();
  absl::Status Delete();
  // Creates and starts as needed; the instance is running afterwards. `progress` gets
  // human-readable lines.
  absl::StatusOr<internal::LimaInstance> EnsureRunning(
      const std::function<void(const std::string&)>& progress);

  // ~/.lima/llima-box/lima.yaml (under $LIMA_HOME when set).
  std::string ConfigPath() const;
  // The host end of the forwarded agent socket of a running instance.
  static std::string SocketPath(const internal::LimaInstance& instance);

 private:
  absl::StatusOr<CommandResult> Limactl(const std::vector<std::string>& args,
                                        const std::function<void(const std::string&)>& on_line =
                                            nullptr);
  // Writes the agent's sources to <instance dir>/agent-src.tar.gz when they differ from what is
  // there (atomically). Returns whether it wrote.
  absl::StatusOr<bool> StageAgentSource(const internal::LimaInstance& instance);

  std::string limactl_;
  absl::string_view agent_source_;
};

}  // namespace llima
