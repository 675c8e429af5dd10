#include "fault_injection.h"

#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

#include "absl/strings/str_cat.h"
#include "log.h"

namespace llima {
namespace {

std::string* g_fail_at = nullptr;
std::string* g_crash_at = nullptr;

}  // namespace

void ConfigureFaultInjection() {
  if (const char* point = getenv("LLIMA_AGENT_FAIL_AT"); point != nullptr && *point != '\0') {
    g_fail_at = new std::string(point);
    LogEvent(absl::StrCat("test mode: every operation fails at \"", point, "\""));
  }
  if (const char* point = getenv("LLIMA_AGENT_CRASH_AT"); point != nullptr && *point != '\0') {
    g_crash_at = new std::string(point);
    LogEvent(absl::StrCat("test mode: the agent crashes at \"", point, "\""));
  }
}

void CrashPoint(absl::string_view point) {
  if (g_crash_at == nullptr || *g_crash_at != point) return;
  kill(getpid(), SIGKILL);
  pause();
}

absl::Status InjectedFault(absl::string_view point) {
  CrashPoint(point);
  if (g_fail_at == nullptr || *g_fail_at != point) return absl::OkStatus();
  return absl::InternalError(absl::StrCat("injected failure at ", point));
}

}  // namespace llima
