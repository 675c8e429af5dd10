#include "request_validation.h"

#include <signal.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "naming.h"
#include "project_path.h"

namespace llima {
namespace {

constexpr char kDefaultPath[] = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

bool IsNoLimit(absl::string_view text) { return text == "max" || text == "-1"; }

// A limit as the agent takes it from a request or a default: 0 and kNoLimit always pass.
bool LimitInRange(int64_t value, int64_t min, int64_t max) {
  return value == 0 || value == kNoLimit || (value >= min && value <= max);
}

int64_t Resolve(int64_t requested, int64_t fallback) {
  if (requested != 0) return requested;
  return fallback != 0 ? fallback : kNoLimit;
}

absl::Status OutOfRange(absl::string_view what, absl::string_view text, absl::string_view range) {
  return absl::InvalidArgumentError(absl::StrCat(what, " \"", text, "\" is not valid: ", range));
}

}  // namespace

absl::StatusOr<EnvironmentToCreate> ValidateCreateEnvironment(
    const v1::CreateEnvironmentRequest& request) {
  absl::StatusOr<std::string> path = CheckProjectPathSyntax(request.project_path());
  if (!path.ok()) return path.status();

  std::string name = request.name();
  if (name.empty()) {
    absl::StatusOr<std::string> derived = DeriveEnvironmentName(*path);
    if (!derived.ok()) return derived.status();
    name = *std::move(derived);
  } else if (!IsValidEnvironmentName(name)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "environment name \"", name,
        "\" is not valid: use 1-32 characters of a-z, 0-9, '-' and '_', starting with a letter"));
  }
  if (auto s = ValidateResourceLimits(request.limits()); !s.ok()) return s;
  return EnvironmentToCreate{*std::move(path), std::move(name), request.limits()};
}

absl::StatusOr<EnvironmentLookup> ValidateGetEnvironment(const v1::GetEnvironmentRequest& request) {
  switch (request.selector_case()) {
    case v1::GetEnvironmentRequest::kName: {
      EnvironmentLookup lookup;
      lookup.by_name = true;
      lookup.name = request.name();
      return lookup;
    }
    case v1::GetEnvironmentRequest::kProjectPath: {
      absl::StatusOr<std::string> path = CheckProjectPathSyntax(request.project_path());
      if (!path.ok()) return path.status();
      EnvironmentLookup lookup;
      lookup.project_path = *std::move(path);
      return lookup;
    }
    default:
      return absl::InvalidArgumentError("give an environment name or a project path");
  }
}

absl::Status ValidateDeleteEnvironment(absl::string_view name) {
  if (!IsValidEnvironmentName(name)) {
    return absl::InvalidArgumentError(absl::StrCat("\"", name, "\" is not an environment name"));
  }
  return absl::OkStatus();
}

absl::Status ValidateResourceLimits(const v1::ResourceLimits& limits) {
  constexpr char kChoice[] = "use 0 (the agent's default), -1 (no limit) or ";
  if (!LimitInRange(limits.memory_max_bytes(), kMinMemoryMaxBytes, INT64_MAX)) {
    return absl::InvalidArgumentError(absl::StrCat("limits.memory_max_bytes is ",
                                                   limits.memory_max_bytes(), ": ", kChoice,
                                                   "at least ", kMinMemoryMaxBytes, " (16 MiB)"));
  }
  if (!LimitInRange(limits.pids_max(), kMinPidsMax, kMaxPidsMax)) {
    return absl::InvalidArgumentError(absl::StrCat("limits.pids_max is ", limits.pids_max(), ": ",
                                                   kChoice, kMinPidsMax, " to ", kMaxPidsMax));
  }
  if (!LimitInRange(limits.cpu_millicores(), kMinCpuMillicores, kMaxCpuMillicores)) {
    return absl::InvalidArgumentError(
        absl::StrCat("limits.cpu_millicores is ", limits.cpu_millicores(), ": ", kChoice,
                     kMinCpuMillicores, " to ", kMaxCpuMillicores, " (thousandths of a CPU)"));
  }
  return absl::OkStatus();
}

ResourceDefaults RecommendedResourceDefaults(int64_t physical_memory_bytes) {
  ResourceDefaults defaults;
  if (physical_memory_bytes > 0) {
    int64_t share = physical_memory_bytes / 100 * kDefaultMemoryPercent +
                    physical_memory_bytes % 100 * kDefaultMemoryPercent / 100;
    defaults.memory_max_bytes = std::max(share, kMinMemoryMaxBytes);
  }
  return defaults;
}

v1::ResourceLimits MakeResourceLimits(int64_t memory_max_bytes, int64_t pids_max,
                                      int64_t cpu_millicores) {
  v1::ResourceLimits limits;
  limits.set_memory_max_bytes(memory_max_bytes);
  limits.set_pids_max(pids_max);
  limits.set_cpu_millicores(cpu_millicores);
  return limits;
}

v1::ResourceLimits ResolveResourceLimits(const v1::ResourceLimits& requested,
                                         const ResourceDefaults& defaults) {
  return MakeResourceLimits(Resolve(requested.memory_max_bytes(), defaults.memory_max_bytes),
                            Resolve(requested.pids_max(), defaults.pids_max),
                            Resolve(requested.cpu_millicores(), defaults.cpu_millicores));
}

std::string DescribeLimitsMismatch(const v1::ResourceLimits& requested,
                                   const v1::ResourceLimits& existing) {
  std::vector<std::string> differences;
  auto compare = [&](absl::string_view field, int64_t wanted, int64_t has) {
    if (wanted != 0 && wanted != has) {
      differences.push_back(absl::StrCat(field, " ", wanted, " (it has ", has, ")"));
    }
  };
  compare("memory_max_bytes", requested.memory_max_bytes(), existing.memory_max_bytes());
  compare("pids_max", requested.pids_max(), existing.pids_max());
  compare("cpu_millicores", requested.cpu_millicores(), existing.cpu_millicores());
  return absl::StrJoin(differences, ", ");
}

absl::StatusOr<int64_t> ParseMemoryLimit(absl::string_view text, int64_t physical_memory_bytes) {
  constexpr char kRange[] =
      "give bytes with an optional K, M, G or T suffix (at least 16M), a percentage of the "
      "machine's memory (\"75%\"), or \"max\"";
  if (IsNoLimit(text)) return kNoLimit;
  int64_t bytes = 0;
  if (absl::ConsumeSuffix(&text, "%")) {
    int percent;
    if (!absl::SimpleAtoi(text, &percent) || percent < 1 || percent > 100) {
      return OutOfRange("memory limit", absl::StrCat(text, "%"), "a percentage is 1% to 100%");
    }
    if (physical_memory_bytes <= 0) {
      return absl::FailedPreconditionError(
          "memory limit: the machine's memory is unknown; give bytes instead of a percentage");
    }
    bytes = physical_memory_bytes / 100 * percent + physical_memory_bytes % 100 * percent / 100;
  } else {
    absl::string_view number = text;
    int shift = 0;
    std::string suffix = absl::AsciiStrToUpper(
        number.substr(std::min(number.size(), number.find_first_not_of("0123456789."))));
    number.remove_suffix(suffix.size());
    static constexpr std::pair<const char*, int> kSuffixes[] = {
        {"", 0},     {"K", 10},   {"M", 20},   {"G", 30},  {"T", 40},
        {"KIB", 10}, {"MIB", 20}, {"GIB", 30}, {"TIB", 40}};
    for (auto [name, bits] : kSuffixes) {
      if (suffix == name) {
        shift = bits;
        suffix.clear();
        break;
      }
    }
    double value;
    if (!suffix.empty() || number.empty() || !absl::SimpleAtod(number, &value) ||
        !std::isfinite(value) || value < 0 || std::ldexp(value, shift) >= 9.2e18) {
      return OutOfRange("memory limit", text, kRange);
    }
    int64_t whole;
    bytes = shift == 0 && absl::SimpleAtoi(number, &whole)
                ? whole
                : static_cast<int64_t>(std::ldexp(value, shift));
  }
  if (bytes < kMinMemoryMaxBytes) return OutOfRange("memory limit", text, kRange);
  return bytes;
}

absl::StatusOr<int64_t> ParsePidsLimit(absl::string_view text) {
  if (IsNoLimit(text)) return kNoLimit;
  int64_t pids;
  if (!absl::SimpleAtoi(text, &pids) || pids < kMinPidsMax || pids > kMaxPidsMax) {
    return OutOfRange("pids limit", text,
                      absl::StrCat("give ", kMinPidsMax, " to ", kMaxPidsMax, " or \"max\""));
  }
  return pids;
}

absl::StatusOr<int64_t> ParseCpuLimit(absl::string_view text) {
  constexpr char kRange[] =
      "give CPUs (\"2\", \"1.5\") or millicores (\"500m\"), 0.01 to 1000 CPUs, or \"max\"";
  if (IsNoLimit(text)) return kNoLimit;
  int64_t millicores;
  if (absl::string_view m = text; absl::ConsumeSuffix(&m, "m")) {
    if (!absl::SimpleAtoi(m, &millicores)) return OutOfRange("cpu limit", text, kRange);
  } else {
    double cpus;
    if (text.empty() || text.find_first_not_of("0123456789.") != absl::string_view::npos ||
        !absl::SimpleAtod(text, &cpus) || !std::isfinite(cpus) || cpus > 1e9) {
      return OutOfRange("cpu limit", text, kRange);
    }
    millicores = std::llround(cpus * 1000);
  }
  if (millicores < kMinCpuMillicores || millicores > kMaxCpuMillicores) {
    return OutOfRange("cpu limit", text, kRange);
  }
  return millicores;
}

absl::Status ValidateTerminalSize(const v1::TerminalSize& size) {
  if (size.rows() < 1 || size.cols() < 1 || size.rows() > kMaxTerminalSide ||
      size.cols() > kMaxTerminalSide) {
    return absl::InvalidArgumentError(
        absl::StrCat("terminal size ", size.rows(), "x", size.cols(),
                     " is not valid: rows and columns must be between 1 and ", kMaxTerminalSide));
  }
  return absl::OkStatus();
}

absl::Status ValidateExecStart(const v1::ExecStart& start) {
  if (start.environment().empty() == start.project_path().empty()) {
    return absl::InvalidArgumentError(
        start.environment().empty()
            ? "start.environment is empty (name an environment, or set start.project_path)"
            : "start sets both environment and project_path: set one of them");
  }
  if (start.argv().empty() || start.argv(0).empty()) {
    return absl::InvalidArgumentError("start.argv is empty: name a program to run");
  }
  for (const std::string& arg : start.argv()) {
    if (arg.find('\0') != std::string::npos) {
      return absl::InvalidArgumentError("an argument contains a NUL byte");
    }
  }
  for (const auto& [key, value] : start.env()) {
    if (key.empty() || key.find('=') != std::string::npos || key.find('\0') != std::string::npos ||
        value.find('\0') != std::string::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("environment variable \"", key, "\" is not valid"));
    }
  }
  // An unset size means the default one.
  if (start.tty() && (start.size().rows() != 0 || start.size().cols() != 0)) {
    if (auto s = ValidateTerminalSize(start.size()); !s.ok()) return s;
  }
  if (!start.working_dir().empty() &&
      (start.working_dir()[0] != '/' || start.working_dir().find('\0') != std::string::npos)) {
    return absl::InvalidArgumentError(
        absl::StrCat("working directory \"", start.working_dir(), "\" is not an absolute path"));
  }
  return absl::OkStatus();
}

absl::Status ValidateFirstExecRequest(const v1::ExecRequest& request) {
  if (!request.has_start()) {
    return absl::InvalidArgumentError("the first message of an Exec call must be start");
  }
  return ValidateExecStart(request.start());
}

absl::Status ValidateLaterExecRequest(const v1::ExecRequest& request) {
  switch (request.request_case()) {
    case v1::ExecRequest::kStdin:
    case v1::ExecRequest::kCloseStdin:
    case v1::ExecRequest::kResize:
      return absl::OkStatus();
    case v1::ExecRequest::kSignal:
      if (request.signal() <= 0 || request.signal() >= NSIG) {
        return absl::InvalidArgumentError(
            absl::StrCat("signal ", request.signal(), " does not exist"));
      }
      return absl::OkStatus();
    case v1::ExecRequest::kStart:
      return absl::InvalidArgumentError("start may only be sent once");
    default:
      return absl::InvalidArgumentError("empty Exec request");
  }
}

std::vector<std::string> BuildExecEnvironment(const internal::EnvironmentRecord& record,
                                              absl::string_view home, const v1::ExecStart& start,
                                              std::string* search_path) {
  std::map<std::string, std::string> vars = {
      {"HOME", std::string(home)}, {"USER", record.name()}, {"LOGNAME", record.name()},
      {"SHELL", record.shell()},   {"PATH", kDefaultPath},
  };
  for (const auto& [key, value] : start.env()) vars[key] = value;
  *search_path = vars["PATH"];
  std::vector<std::string> out;
  out.reserve(vars.size());
  for (const auto& [key, value] : vars) out.push_back(absl::StrCat(key, "=", value));
  return out;
}

}  // namespace llima
