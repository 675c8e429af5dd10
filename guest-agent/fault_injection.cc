#include "fault_injection.h"

#include <cstdlib>
#include <string>

#include "absl/strings/str_cat.h"
#include "log.h"

namespace llima {
namespace {

std::string* g_fail_at = nullptr;

}  // namespace

void ConfigureFaultInjection() {
  const char* point = getenv("LLIMA_AGENT_FAIL_AT");
  if (point == nullptr || *point == '\0') return;
  g_fail_at = new std::string(point);
  LogEvent(absl::StrCat("test mode: every operation fails at \"", point, "\""));
}

absl::Status InjectedFault(absl::string_view point) {
  if (g_fail_at == nullptr || *g_fail_at != point) return absl::OkStatus();
  return absl::InternalError(absl::StrCat("injected failure at ", point));
}

}  // namespace llima
