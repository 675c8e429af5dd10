#pragma once

// Whole commands run the way a shell runs them, timed from spawn to exit.

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace llima::bench {

// Runs argv (argv[0] looked up in PATH) with stdin and stdout on /dev/null and returns the wall
// time in milliseconds from spawning it until it has been reaped. A command that does not exit
// with 0 is an error carrying its stderr.
absl::StatusOr<double> TimeCommand(const std::vector<std::string>& argv);

// Runs argv with its stdout on a pipe that this process reads and throws away, as
// `argv | cat >/dev/null` would, and returns how many bytes came through.
absl::StatusOr<uint64_t> DrainCommandOutput(const std::vector<std::string>& argv);

// The hops an Exec stream takes, without gRPC: argv's stdout on a pipe of `pipe_size` bytes, read
// by a separate process (`dd bs=1M`: up to 1 MiB a read, each written as it came) that writes it
// to a Unix socket, which this process reads and throws away. Returns how many bytes came through.
absl::StatusOr<uint64_t> RelayCommandOutput(const std::vector<std::string>& argv, int pipe_size);

// Runs argv to its end with stdout captured in `out` and stderr going where this process's goes.
// A command that does not exit with 0 is an error; `out` then holds what it printed all the same.
absl::Status RunCapturingOutput(const std::vector<std::string>& argv, std::string* out);

}  // namespace llima::bench
