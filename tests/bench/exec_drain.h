#pragma once

// Exec through an already connected client, its output consumed and thrown away as it arrives.
// (The harness's Exec keeps all output in memory, which for a gigabyte would time the copying.)

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "llima/v1/agent.grpc.pb.h"

namespace llima::bench {

struct DrainedOutput {
  uint64_t stdout_bytes = 0;
  uint64_t stdout_messages = 0;  // ExecResponse messages that carried them
};

// Runs argv in `environment` with stdin closed at once and counts the stdout that comes back.
// A failed call or a non-zero exit is an error.
absl::StatusOr<DrainedOutput> ExecAndDrain(llima::v1::AgentService::Stub& stub,
                                           const std::string& environment,
                                           const std::vector<std::string>& argv);

}  // namespace llima::bench
