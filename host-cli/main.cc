// llima-box: isolated environments for projects, each its own view of one shared VM.

#include <limits.h>
#include <stdlib.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <iostream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "agent_client.h"
#include "terminal_session.h"
#include "google/protobuf/util/json_util.h"
#include "google/protobuf/util/time_util.h"

namespace llima {
namespace {

constexpr char kDefaultSocket[] = "/run/llima-box/agent.sock";

int Fail(const absl::Status& status) {
  std::fprintf(stderr, "llima-box: %s\n", std::string(status.message()).c_str());
  return 1;
}

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

int Run(int argc, char** argv) {
  // Everything after the first "--" is the command to run, passed on untouched.
  std::vector<std::string> command;
  for (int i = 1; i < argc; ++i) {
    if (std::string(argv[i]) == "--") {
      command.assign(argv + i + 1, argv + argc);
      argc = i;
      break;
    }
  }

  CLI::App app{"llima-box: an isolated environment for each project, in one shared VM."};
  app.require_subcommand(1);
  std::string socket;
  app.add_option("--socket", socket,
                 "llima-agent socket (default: $LLIMA_BOX_SOCKET, else /run/llima-box/agent.sock)");

  CLI::App* create = app.add_subcommand("create", "Create the environment of a project directory");
  std::string create_path;
  std::string create_name;
  create->add_option("PATH", create_path, "Project directory")->required();
  create->add_option("--name", create_name, "Environment name (default: derived from the path)");

  CLI::App* list = app.add_subcommand("list", "List environments");
  bool list_json = false;
  list->add_flag("--json", list_json, "Print JSON (one object with an environments array)");

  CLI::App* del = app.add_subcommand("delete", "Delete an environment (the project is kept)");
  std::string delete_name;
  del->add_option("NAME", delete_name, "Environment name")->required();

  CLI::App* shell = app.add_subcommand(
      "shell",
      "Open a shell (or run CMD after --) in the environment of a project, creating it if "
      "needed. Interactive on a terminal; plain streams otherwise");
  std::string shell_path = ".";
  shell->add_option("PATH", shell_path, "Project directory (default: the current directory)");
  shell->footer("Usage: llima-box shell [PATH] [-- CMD ...]");

  CLI::App* exec = app.add_subcommand(
      "exec", "Run CMD (after --) in an environment, with separate stdout and stderr");
  std::string exec_name;
  std::string exec_workdir;
  std::vector<std::string> exec_env;
  exec->add_option("NAME", exec_name, "Environment name")->required();
  exec->add_option("--workdir,-w", exec_workdir, "Working directory (default: the project)");
  exec->add_option("--env,-e", exec_env, "Set a variable (KEY=VALUE), repeatable");
  exec->footer("Usage: llima-box exec NAME [-w DIR] [-e KEY=VALUE ...] -- CMD [ARG ...]");

  CLI11_PARSE(app, argc, argv);

  if (socket.empty()) {
    const char* from_env = getenv("LLIMA_BOX_SOCKET");
    socket = from_env != nullptr && *from_env != '\0' ? from_env : kDefaultSocket;
  }
  AgentClient client(socket);

  if (*create) {
    absl::StatusOr<std::string> path = ResolvePath(create_path);
    if (!path.ok()) return Fail(path.status());
    absl::StatusOr<v1::Environment> env = client.Create(*path, create_name);
    if (!env.ok()) return Fail(env.status());
    std::printf("%s\n", env->name().c_str());
    return 0;
  }
  if (*list) {
    absl::StatusOr<std::vector<v1::Environment>> envs = client.List();
    if (!envs.ok()) return Fail(envs.status());
    if (list_json) {
      v1::ListEnvironmentsResponse response;
      for (const auto& env : *envs) *response.add_environments() = env;
      std::string json;
      google::protobuf::util::JsonPrintOptions options;
      options.always_print_primitive_fields = true;
      (void)google::protobuf::util::MessageToJsonString(response, &json, options);
      std::printf("%s\n", json.c_str());
      return 0;
    }
    std::printf("%-32s  %-8s  %9s  %5s  %s\n", "NAME", "STATE", "PROCESSES", "AGE", "PROJECT");
    for (const auto& env : *envs) {
      std::printf("%-32s  %-8s  %9d  %5s  %s\n", env.name().c_str(),
                  StateName(env.state()).c_str(), env.process_count(),
                  Age(env.created_at()).c_str(), env.project_path().c_str());
    }
    return 0;
  }
  if (*del) {
    if (absl::Status s = client.Delete(delete_name); !s.ok()) return Fail(s);
    std::printf("deleted %s\n", delete_name.c_str());
    return 0;
  }
  if (*shell) {
    absl::StatusOr<std::string> path = ResolvePath(shell_path);
    if (!path.ok()) return Fail(path.status());
    absl::StatusOr<v1::Environment> env = client.Create(*path);
    if (!env.ok()) return Fail(env.status());
    v1::ExecStart start;
    start.set_environment(env->name());
    if (command.empty()) {
      start.add_argv(env->shell());
      start.add_argv("-l");
    }
    for (const std::string& arg : command) start.add_argv(arg);
    absl::StatusOr<int> status = RunAttached(client, start);
    if (!status.ok()) return Fail(status.status());
    return *status;
  }
  if (*exec) {
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

int main(int argc, char** argv) { return llima::Run(argc, argv); }
