// llima-box: isolated environments for projects, each its own view of one shared VM.

#include <limits.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <iostream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "agent_client.h"
#include "agent_source.h"
#include "lima_driver.h"
#include "list_json.h"
#include "naming.h"
#include "terminal_session.h"

namespace llima {
namespace {

constexpr char kVersion[] = "0.1.0";
constexpr char kLocalSocket[] = "/run/llima-box/agent.sock";
constexpr absl::Duration kAgentWait = absl::Minutes(3);

int Fail(const absl::Status& status) {
  std::fprintf(stderr, "llima-box: %s\n", std::string(status.message()).c_str());
  return 1;
}

void Progress(const std::string& line) { std::fprintf(stderr, "llima-box: %s\n", line.c_str()); }

std::string Age(const google::protobuf::Timestamp& created) {
  int64_t seconds = absl::ToUnixSeconds(absl::Now()) - created.seconds();
  if (seconds < 0) seconds = 0;
  if (seconds < 120) return absl::StrCat(seconds, "s");
  if (seconds < 7200) return absl::StrCat(seconds / 60, "m");
  if (seconds < 172800) return absl::StrCat(seconds / 3600, "h");
  return absl::StrCat(seconds / 86400, "d");
}

std::string StateName(v1::Environment::State state) {
  switch (state) {
    case v1::Environment::STATE_RUNNING:
      return "running";
    case v1::Environment::STATE_BROKEN:
      return "broken";
    default:
      return "unknown";
  }
}

// The absolute, symlink-free form of a path given on the command line.
absl::StatusOr<std::string> ResolvePath(const std::string& path) {
  char resolved[PATH_MAX];
  if (realpath(path.c_str(), resolved) == nullptr) {
    return absl::NotFoundError(absl::StrCat(path, ": ", strerror(errno)));
  }
  return std::string(resolved);
}

// Asks on the terminal; false without one.
bool Confirm(const std::string& question) {
  if (!isatty(STDIN_FILENO)) return false;
  std::fprintf(stderr, "%s [y/N] ", question.c_str());
  std::string answer;
  if (!std::getline(std::cin, answer)) return false;
  return answer == "y" || answer == "Y" || answer == "yes";
}

// Where the agent is: an explicit socket, the local one, or the one Lima forwards from the VM.
class AgentLocation {
 public:
  AgentLocation(std::string socket_flag, bool local)
      : socket_flag_(std::move(socket_flag)), local_(local), lima_(EmbeddedAgentSource()) {}

  bool uses_vm() const { return ExplicitSocket().empty() && !local_; }

  // The socket to talk to; with the VM, creates and starts it first when `start_vm`.
  absl::StatusOr<std::string> Socket(bool start_vm) {
    if (std::string s = ExplicitSocket(); !s.empty()) return s;
    if (local_) return std::string(kLocalSocket);
    if (start_vm) {
      absl::StatusOr<internal::LimaInstance> instance = lima_.EnsureRunning(Progress);
      if (!instance.ok()) return instance.status();
      return LimaDriver::SocketPath(*instance);
    }
    absl::StatusOr<std::optional<internal::LimaInstance>> instance = lima_.Instance();
    if (!instance.ok()) return instance.status();
    if (!instance->has_value()) {
      return absl::FailedPreconditionError(
          "the llima-box VM does not exist yet; `llima-box shell` creates it");
    }
    if ((**instance).status() != "Running") {
      return absl::FailedPreconditionError(absl::StrCat(
          "the llima-box VM is ", (**instance).status(), "; `llima-box vm start` starts it"));
    }
    return LimaDriver::SocketPath(**instance);
  }

  // A client that answers: with the VM, waits (saying for what) while the forwarded socket
  // or the agent behind it comes up.
  absl::StatusOr<std::unique_ptr<AgentClient>> Connect(bool start_vm) {
    absl::StatusOr<std::string> socket = Socket(start_vm);
    if (!socket.ok()) return socket.status();
    if (!uses_vm()) return std::make_unique<AgentClient>(*socket);
    absl::Time deadline = absl::Now() + kAgentWait;
    absl::Duration pause = absl::Milliseconds(100);
    std::string said;
    for (;;) {
      struct stat st;
      bool present = stat(socket->c_str(), &st) == 0;
      // A new client each time: one whose connection the forwarder accepted and then closed
      // (no agent behind it yet) would stay broken.
      auto client = std::make_unique<AgentClient>(*socket);
      absl::Status ping = present ? client->Ping(absl::Seconds(2)) : absl::UnavailableError("");
      if (ping.ok()) return client;
      if (absl::Now() > deadline) {
        return absl::DeadlineExceededError(absl::StrCat(
            "llima-agent did not answer at ", *socket, " within ",
            absl::FormatDuration(kAgentWait),
            "; see `llima-box status` and the VM's log (limactl shell llima-box journalctl -u "
            "llima-agent)"));
      }
      std::string waiting = present ? "waiting for llima-agent in the VM to answer"
                                    : absl::StrCat("waiting for the agent socket ", *socket,
                                                   " (forwarded from the VM)");
      if (waiting != said) Progress(waiting);
      said = waiting;
      absl::SleepFor(pause);
      pause = std::min(pause * 2, absl::Seconds(2));
    }
  }

  LimaDriver& lima() { return lima_; }

 private:
  std::string ExplicitSocket() const {
    if (!socket_flag_.empty()) return socket_flag_;
    const char* from_env = getenv("LLIMA_BOX_SOCKET");
    return from_env != nullptr ? from_env : "";
  }

  std::string socket_flag_;
  bool local_;
  LimaDriver lima_;
};

// An environment named by path (anything with a '/' or an existing directory) or by name.
absl::StatusOr<v1::Environment> FindEnvironment(AgentClient& client, const std::string& which) {
  v1::GetEnvironmentRequest request;
  struct stat st;
  if (which.find('/') != std::string::npos || which == "." ||
      (stat(which.c_str(), &st) == 0 && S_ISDIR(st.st_mode))) {
    absl::StatusOr<std::string> path = ResolvePath(which);
    if (!path.ok()) return path.status();
    request.set_project_path(*path);
  } else {
    request.set_name(which);
  }
  return client.Get(request);
}

// Limits as people write them; -1, no limit, is "max".
std::string MemoryLimit(int64_t bytes) {
  constexpr int64_t kMiB = int64_t{1} << 20;
  constexpr int64_t kGiB = int64_t{1} << 30;
  if (bytes <= 0) return "max";
  if (bytes % kGiB == 0) return absl::StrCat(bytes / kGiB, "G");
  if (bytes >= kGiB) return absl::StrFormat("%.1fG", static_cast<double>(bytes) / kGiB);
  if (bytes % kMiB == 0) return absl::StrCat(bytes / kMiB, "M");
  return absl::StrFormat("%.1fM", static_cast<double>(bytes) / kMiB);
}

std::string PidsLimit(int64_t pids) { return pids <= 0 ? "max" : absl::StrCat(pids); }

// In CPUs: 1500 millicores are "1.5".
std::string CpuLimit(int64_t millicores) {
  if (millicores <= 0) return "max";
  std::string cpus = absl::StrFormat("%.3f", static_cast<double>(millicores) / 1000);
  while (cpus.back() == '0') cpus.pop_back();
  if (cpus.back() == '.') cpus.pop_back();
  return cpus;
}

std::string DescribeLimits(const v1::ResourceLimits& limits) {
  return absl::StrCat("memory ", MemoryLimit(limits.memory_max_bytes()), ", pids ",
                      PidsLimit(limits.pids_max()), ", cpu ", CpuLimit(limits.cpu_millicores()));
}

// A running environment's limit, marked with '*' when the kernel does not enforce it; "-" from
// an agent that has no limits.
std::string LimitCell(const v1::Environment& env, const std::string& value, bool enforced) {
  if (!env.has_limits()) return "-";
  return env.state() == v1::Environment::STATE_RUNNING && !enforced ? value + "*" : value;
}

void PrintEnvironments(const std::vector<v1::Environment>& envs) {
  std::printf("%-32s  %-8s  %9s  %5s  %7s  %6s  %6s  %s\n", "NAME", "STATE", "PROCESSES", "AGE",
              "MEMORY", "PIDS", "CPU", "PROJECT");
  std::vector<std::string> footnotes;
  for (const auto& env : envs) {
    const v1::ResourceLimits& limits = env.limits();
    const v1::LimitsEnforcement& enforced = env.limits_enforcement();
    std::printf("%-32s  %-8s  %9d  %5s  %7s  %6s  %6s  %s\n", env.name().c_str(),
                StateName(env.state()).c_str(), env.process_count(), Age(env.created_at()).c_str(),
                LimitCell(env, MemoryLimit(limits.memory_max_bytes()), enforced.memory()).c_str(),
                LimitCell(env, PidsLimit(limits.pids_max()), enforced.pids()).c_str(),
                LimitCell(env, CpuLimit(limits.cpu_millicores()), enforced.cpu()).c_str(),
                env.project_path().c_str());
    if (env.state() == v1::Environment::STATE_RUNNING && !enforced.detail().empty() &&
        std::find(footnotes.begin(), footnotes.end(), enforced.detail()) == footnotes.end()) {
      footnotes.push_back(enforced.detail());
    }
  }
  for (const std::string& note : footnotes) std::printf("* %s\n", note.c_str());
}

// The exit status of a command line that cannot be parsed, as other Unix tools use it.
constexpr int kUsageExit = 2;

// Explains why the command line was refused: an unknown or missing command names the commands
// that exist where it was expected; anything else keeps the parser's own words.
int UsageError(CLI::App& app, const CLI::ParseError& error) {
  // The deepest command given (get_subcommands() lists those the parser met).
  CLI::App* at = &app;
  std::string where = "llima-box";
  while (!at->get_subcommands().empty()) {
    at = at->get_subcommands().front();
    where += " " + at->get_name();
  }
  std::string message = error.what();
  if (dynamic_cast<const CLI::RequiredError*>(&error) != nullptr &&
      at->get_subcommands().empty() && at->get_require_subcommand_min() > 0) {
    std::string names;
    for (const CLI::App* sub : at->get_subcommands([](CLI::App*) { return true; })) {
      absl::StrAppend(&names, names.empty() ? "" : ", ", sub->get_name());
    }
    std::vector<std::string> rest = at->remaining();
    if (rest.empty()) {
      message = "a command is required, one of: " + names;
    } else if (rest.front().rfind('-', 0) == 0) {
      message = "unknown option " + rest.front();
    } else {
      message = "unknown command '" + rest.front() + "'; the commands are: " + names;
    }
  }
  std::fprintf(stderr, "%s: %s\nRun '%s --help' for usage.\n", where.c_str(), message.c_str(),
               where.c_str());
  return kUsageExit;
}

// The command a command line names, when nothing before it but --socket and --local: then only
// that command's options are built. Building them all (nine commands and four below vm and
// config, each with its own help flag) was 306,000 of the 600,000 instructions of
// `shell -- true`, and 0.25 ms. Empty for anything else (--help, --version, no command, an
// option the parser will refuse): help and errors are then made from the whole tree. A name
// not in kCommands builds the whole tree too, so a command added below is never missed.
std::string_view NamedCommand(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (arg == "--socket") {
      ++i;  // its value
    } else if (arg != "--local" && !arg.starts_with("--socket=")) {
      return arg.starts_with("-") ? std::string_view() : arg;
    }
  }
  return {};
}

// Whether the line chose `command` (one that may not have been built).
bool Chose(const CLI::App* command) { return command != nullptr && command->parsed(); }

int Run(int argc, char** argv) {
  std::vector<std::string> command = TakeCommandAfterDoubleDash(argc, argv);
  const std::string_view named = NamedCommand(argc, argv);
  constexpr std::string_view kCommands[] = {"shell", "create", "list",   "delete", "delete-all",
                                            "exec",  "status", "vm",     "config"};
  const bool build_all = std::find(std::begin(kCommands), std::end(kCommands), named) ==
                         std::end(kCommands);
  auto build = [&](std::string_view name) { return build_all || named == name; };

  // Static: the program leaves with _exit right after Run (ExitAfterCommand), and tearing the
  // option tree down on the way out was 0.25 ms of every command.
  static CLI::App app{
      "llima-box: an isolated environment for each project, in one shared Lima VM."};
  app.require_subcommand(1);
  app.set_version_flag("--version", kVersion);
  std::string socket;
  bool local = false;
  app.add_option("--socket", socket,
                 "Talk to the llima-agent at this socket instead of the VM's "
                 "(also: $LLIMA_BOX_SOCKET)");
  app.add_flag("--local", local,
               "Use an agent on this (Linux) machine, at /run/llima-box/agent.sock, without Lima");

  CLI::App* shell = nullptr;
  std::string shell_path = ".";
  if (build("shell")) {
    shell = app.add_subcommand(
        "shell",
        "Open a shell (or run CMD after --) in the environment of a project, creating the VM "
        "and the environment if needed. Interactive on a terminal; plain streams otherwise");
    shell->add_option("PATH", shell_path, "Project directory (default: the current directory)");
    shell->footer("Usage: llima-box shell [PATH] [-- CMD ...]");
  }

  CLI::App* create = nullptr;
  std::string create_path;
  std::string create_name;
  if (build("create")) {
    create = app.add_subcommand("create", "Create the environment of a project directory");
    create->add_option("PATH", create_path, "Project directory")->required();
    create->add_option("--name", create_name, "Environment name (default: derived from the path)");
  }

  CLI::App* list = nullptr;
  bool list_json = false;
  if (build("list")) {
    list = app.add_subcommand("list", "List environments");
    list->add_flag("--json", list_json, "Print JSON (one object with an environments array)");
  }

  CLI::App* del = nullptr;
  std::string delete_which = ".";
  bool delete_force = false;
  if (build("delete")) {
    del = app.add_subcommand(
        "delete", "Delete an environment: its processes, home and state (the project is kept)");
    del->add_option("PATH|NAME", delete_which,
                    "Project directory or environment name (default: the current directory)");
    del->add_flag("--force,-f", delete_force, "Do not ask for confirmation");
  }

  CLI::App* delete_all = nullptr;
  bool delete_all_force = false;
  if (build("delete-all")) {
    delete_all = app.add_subcommand("delete-all", "Delete every environment");
    delete_all->add_flag("--force,-f", delete_all_force,
                         "Do not ask (required without a terminal)");
  }

  CLI::App* exec = nullptr;
  std::string exec_name;
  std::string exec_workdir;
  std::vector<std::string> exec_env;
  if (build("exec")) {
    exec = app.add_subcommand(
        "exec", "Run CMD (after --) in an environment, with separate stdout and stderr");
    exec->add_option("NAME", exec_name, "Environment name")->required();
    exec->add_option("--workdir,-w", exec_workdir, "Working directory (default: the project)");
    exec->add_option("--env,-e", exec_env, "Set a variable (KEY=VALUE), repeatable");
    exec->footer("Usage: llima-box exec NAME [-w DIR] [-e KEY=VALUE ...] -- CMD [ARG ...]");
  }

  CLI::App* status = nullptr;
  if (build("status")) {
    status = app.add_subcommand("status", "Show the VM's and the agent's health");
  }

  CLI::App* vm = nullptr;
  CLI::App* vm_start = nullptr;
  CLI::App* vm_stop = nullptr;
  CLI::App* vm_delete = nullptr;
  bool vm_delete_force = false;
  if (build("vm")) {
    vm = app.add_subcommand("vm", "Manage the llima-box VM");
    vm->require_subcommand(1);
    vm_start = vm->add_subcommand("start", "Create (if needed) and start the VM");
    vm_stop = vm->add_subcommand("stop", "Stop the VM (environments come back on start)");
    vm_delete = vm->add_subcommand("delete", "Delete the VM and every environment in it");
    vm_delete->add_flag("--force,-f", vm_delete_force,
                        "Do not ask (required without a terminal)");
  }

  CLI::App* config_show = nullptr;
  if (build("config")) {
    CLI::App* config = app.add_subcommand("config", "The VM configuration");
    config->require_subcommand(1);
    config_show = config->add_subcommand("show", "Print the built-in default lima.yaml");
  }

  try {
    app.parse(argc, argv);
  } catch (const CLI::Success& done) {  // --help, --version
    return app.exit(done);
  } catch (const CLI::ParseError& error) {
    return UsageError(app, error);
  }

  AgentLocation where(socket, local);

  if (Chose(config_show)) {
    std::fputs(DefaultLimaConfig().c_str(), stdout);
    return 0;
  }
  if (Chose(vm)) {
    if (!where.uses_vm()) {
      return Fail(absl::FailedPreconditionError("vm commands manage the Lima VM; drop --local "
                                                "and --socket (and LLIMA_BOX_SOCKET)"));
    }
    if (Chose(vm_start)) {
      absl::StatusOr<internal::LimaInstance> instance = where.lima().EnsureRunning(Progress);
      if (!instance.ok()) return Fail(instance.status());
      std::printf("the llima-box VM is running\n");
      return 0;
    }
    if (Chose(vm_stop)) {
      if (absl::Status s = where.lima().Stop(); !s.ok()) return Fail(s);
      std::printf("the llima-box VM is stopped\n");
      return 0;
    }
    if (Chose(vm_delete)) {
      if (!vm_delete_force &&
          !Confirm("Delete the llima-box VM and every environment in it (project directories "
                   "are kept)?")) {
        return Fail(absl::FailedPreconditionError(
            isatty(STDIN_FILENO) ? "not deleted" : "refusing to delete without --force"));
      }
      if (absl::Status s = where.lima().Delete(); !s.ok()) return Fail(s);
      std::printf("the llima-box VM is deleted\n");
      return 0;
    }
  }
  if (Chose(status)) {
    int code = 0;
    std::printf("llima-box %s\n", kVersion);
    if (where.uses_vm()) {
      absl::StatusOr<std::optional<internal::LimaInstance>> instance = where.lima().Instance();
      if (!instance.ok()) return Fail(instance.status());
      if (!instance->has_value()) {
        std::printf("VM: not created (`llima-box shell` creates it)\n");
        return 1;
      }
      const internal::LimaInstance& i = **instance;
      std::printf("VM: %s (%s, %d CPUs, %lld MiB, %s)\n", i.status().c_str(), i.arch().c_str(),
                  i.cpus(), static_cast<long long>(i.memory() >> 20), i.dir().c_str());
      if (i.status() != "Running") return 1;
    }
    absl::StatusOr<std::string> path = where.Socket(/*start_vm=*/false);
    if (!path.ok()) return Fail(path.status());
    AgentClient client(*path);
    absl::StatusOr<std::vector<v1::Environment>> envs = client.List();
    if (!envs.ok()) {
      std::printf("agent: not answering at %s: %s\n", path->c_str(),
                  std::string(envs.status().message()).c_str());
      code = 1;
    } else {
      int broken = 0;
      for (const auto& e : *envs) broken += e.state() == v1::Environment::STATE_BROKEN;
      absl::StatusOr<v1::AgentInfo> info = client.Info();
      std::printf("agent: serving at %s, version %s, %zu environments (%d broken)\n",
                  path->c_str(), info.ok() ? info->version().c_str() : "unknown", envs->size(),
                  broken);
      if (info.ok() && !info->cgroups()) {
        std::printf("  no resource accounting: %s\n", info->cgroups_detail().c_str());
      }
      std::string limits_detail;
      if (info.ok() && info->has_default_limits()) {
        std::printf("  limits of a new environment: %s\n",
                    DescribeLimits(info->default_limits()).c_str());
        limits_detail = info->limits_enforcement().detail();
        if (!limits_detail.empty()) std::printf("  %s\n", limits_detail.c_str());
      }
      // An environment's own detail, unless it only repeats the agent's.
      for (const auto& e : *envs) {
        if (!e.detail().empty() && e.detail() != limits_detail) {
          std::printf("  %s: %s\n", e.name().c_str(), e.detail().c_str());
        }
      }
    }
    return code;
  }

  bool needs_vm_started = Chose(shell) || Chose(create) || Chose(exec);
  absl::StatusOr<std::unique_ptr<AgentClient>> connected = where.Connect(needs_vm_started);
  if (!connected.ok()) return Fail(connected.status());
  AgentClient& client = **connected;

  if (Chose(create)) {
    absl::StatusOr<std::string> path = ResolvePath(create_path);
    if (!path.ok()) return Fail(path.status());
    absl::StatusOr<v1::Environment> env = client.Create(*path, create_name);
    if (!env.ok()) return Fail(env.status());
    std::printf("%s\n", env->name().c_str());
    return 0;
  }
  if (Chose(list)) {
    absl::StatusOr<std::vector<v1::Environment>> envs = client.List();
    if (!envs.ok()) return Fail(envs.status());
    if (list_json) {
      std::printf("%s\n", EnvironmentsToJson(*envs).c_str());
      return 0;
    }
    PrintEnvironments(*envs);
    return 0;
  }
  if (Chose(del)) {
    absl::StatusOr<v1::Environment> env = FindEnvironment(client, delete_which);
    if (!env.ok()) return Fail(env.status());
    if (!delete_force && isatty(STDIN_FILENO) &&
        !Confirm(absl::StrCat("Delete environment ", env->name(), " of ", env->project_path(),
                              " (its processes, home and /tmp; the project is kept)?"))) {
      return Fail(absl::CancelledError("not deleted"));
    }
    if (absl::Status s = client.Delete(env->name()); !s.ok()) return Fail(s);
    std::printf("deleted %s\n", env->name().c_str());
    return 0;
  }
  if (Chose(delete_all)) {
    absl::StatusOr<std::vector<v1::Environment>> envs = client.List();
    if (!envs.ok()) return Fail(envs.status());
    if (envs->empty()) {
      std::printf("no environments\n");
      return 0;
    }
    PrintEnvironments(*envs);
    if (!delete_all_force) {
      if (!isatty(STDIN_FILENO)) {
        return Fail(absl::FailedPreconditionError(
            "refusing to delete every environment without a terminal to ask on; pass --force"));
      }
      if (!Confirm(absl::StrCat("Delete these ", envs->size(), " environments?"))) {
        return Fail(absl::CancelledError("nothing deleted"));
      }
    }
    int failures = 0;
    for (const auto& env : *envs) {
      if (absl::Status s = client.Delete(env.name()); !s.ok()) {
        std::fprintf(stderr, "llima-box: %s: %s\n", env.name().c_str(),
                     std::string(s.message()).c_str());
        ++failures;
      } else {
        std::printf("deleted %s\n", env.name().c_str());
      }
    }
    return failures == 0 ? 0 : 1;
  }
  if (Chose(shell)) {
    absl::StatusOr<std::string> path = ResolvePath(shell_path);
    if (!path.ok()) return Fail(path.status());
    absl::StatusOr<int> exit_status = RunInProject(client, *path, command);
    if (!exit_status.ok()) return Fail(exit_status.status());
    return *exit_status;
  }
  if (Chose(exec)) {
    if (command.empty()) {
      return Fail(absl::InvalidArgumentError("exec needs a command after --"));
    }
    v1::ExecStart start;
    start.set_environment(exec_name);
    for (const std::string& arg : command) start.add_argv(arg);
    start.set_working_dir(exec_workdir);
    for (const std::string& var : exec_env) {
      size_t eq = var.find('=');
      if (eq == std::string::npos || eq == 0) {
        return Fail(absl::InvalidArgumentError(
            absl::StrCat("--env ", var, ": expected KEY=VALUE")));
      }
      (*start.mutable_env())[var.substr(0, eq)] = var.substr(eq + 1);
    }
    AgentClient::ExecIo io;
    io.stdin_fd = STDIN_FILENO;
    absl::StatusOr<v1::ExecExited> exited = client.Exec(start, io);
    if (!exited.ok()) return Fail(exited.status());
    return exited->exit_code();
  }
  return 0;
}

}  // namespace
}  // namespace llima

int main(int argc, char** argv) {
  llima::ExitAfterCommand(llima::Run(argc, argv));
}
