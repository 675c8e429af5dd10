// llima-sandbox: enters an environment from inside the VM, through the agent's socket, the same
// way `llima-box shell` does from the host.
//
//   llima-sandbox ENV [-- CMD ...]

#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstdlib>

#include "agent_client.h"
#include "terminal_session.h"

namespace llima {
namespace {

int Fail(const absl::Status& status) {
  std::fprintf(stderr, "llima-sandbox: %s\n", std::string(status.message()).c_str());
  return 1;
}

int Run(int argc, char** argv) {
  std::vector<std::string> command = TakeCommandAfterDoubleDash(argc, argv);
  CLI::App app{
      "llima-sandbox: open a shell (or run CMD after --) in an llima-box environment, from "
      "inside the VM. Interactive on a terminal; plain streams otherwise."};
  std::string name;
  std::string socket;
  app.add_option("ENV", name, "Environment name (see `llima-box list`)")->required();
  app.add_option("--socket", socket,
                 "llima-agent socket (default: $LLIMA_BOX_SOCKET, else /run/llima-box/agent.sock)");
  app.footer("Usage: llima-sandbox ENV [-- CMD ...]");
  CLI11_PARSE(app, argc, argv);
  if (socket.empty()) {
    const char* from_env = getenv("LLIMA_BOX_SOCKET");
    socket = from_env != nullptr && *from_env != '\0' ? from_env : "/run/llima-box/agent.sock";
  }

  AgentClient client(socket);
  v1::GetEnvironmentRequest request;
  request.set_name(name);
  absl::StatusOr<v1::Environment> env = client.Get(request);
  if (!env.ok()) return Fail(env.status());
  absl::StatusOr<int> status = RunInEnvironment(client, *env, command);
  if (!status.ok()) return Fail(status.status());
  ExitAfterCommand(*status);
}

}  // namespace
}  // namespace llima

int main(int argc, char** argv) {
  return llima::Run(argc, argv);
}
