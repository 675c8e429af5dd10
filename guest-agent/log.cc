#include "log.h"

#include <unistd.h>

#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "syscalls.h"

namespace llima {
namespace {

void WriteLine(std::string line) {
  std::string stamp = absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::Now(), absl::UTCTimeZone());
  line = absl::StrCat(stamp, " llima-agent ", line, "\n");
  // One write per line keeps concurrent lines whole.
  WriteAll(STDERR_FILENO, line.data(), line.size());
}

}  // namespace

void LogOperation(absl::string_view operation, absl::string_view environment, absl::Duration took,
                  const absl::Status& outcome, absl::string_view detail) {
  std::string line = absl::StrCat(operation);
  if (!environment.empty()) absl::StrAppend(&line, " env=", environment);
  if (!detail.empty()) absl::StrAppend(&line, " ", detail);
  absl::StrAppend(&line, absl::StrFormat(" %.2fms ", absl::ToDoubleMilliseconds(took)));
  if (outcome.ok()) {
    absl::StrAppend(&line, "OK");
  } else {
    absl::StrAppend(&line, absl::StatusCodeToString(outcome.code()), ": ", outcome.message());
  }
  WriteLine(std::move(line));
}

void LogEvent(absl::string_view message) { WriteLine(std::string(message)); }

}  // namespace llima
