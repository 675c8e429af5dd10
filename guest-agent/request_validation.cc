#include "request_validation.h"

#include <signal.h>

#include <map>

#include "absl/strings/str_cat.h"
#include "naming.h"
#include "project_path.h"

namespace llima {
namespace {

constexpr char kDefaultPath[] = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

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
  return EnvironmentToCreate{*std::move(path), std::move(name)};
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
  if (start.environment().empty()) {
    return absl::InvalidArgumentError("start.environment is empty");
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
