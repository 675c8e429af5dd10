// llima-agent: creates, enters and deletes isolated environments, served over gRPC on a Unix
// socket. Runs as root inside the VM.

#include <errno.h>
#include <pwd.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "agent_service.h"
#include "cgroup.h"
#include "environment_manager.h"
#include "environment_store.h"
#include "fault_injection.h"
#include "fork_server.h"
#include "log.h"
#include "posix_error.h"
#include "process_title.h"
#include "socket_gate.h"
#include "project_path.h"

namespace llima {
namespace {


absl::StatusOr<uid_t> ResolveUser(const std::string& user) {
  uid_t uid;
  if (absl::SimpleAtoi(user, &uid)) return uid;
  passwd* pw = getpwnam(user.c_str());
  if (pw == nullptr) return absl::NotFoundError(absl::StrCat("no user named ", user));
  return pw->pw_uid;
}

// The socket's directory must be root's and closed to others, or someone could swap the
// socket for their own.
absl::Status PrepareSocketDirectory(const std::string& socket_path) {
  std::string dir = socket_path.substr(0, socket_path.find_last_of('/'));
  if (dir.empty()) dir = "/";
  if (mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) {
    return PosixError(errno, absl::StrCat("create socket directory ", dir));
  }
  struct stat st;
  if (lstat(dir.c_str(), &st) != 0) return PosixError(errno, absl::StrCat("stat ", dir));
  if (!S_ISDIR(st.st_mode) || st.st_uid != 0 || (st.st_mode & 022) != 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "socket directory ", dir,
        " must be a directory owned by root and writable only by root"));
  }
  if (lstat(socket_path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      return absl::FailedPreconditionError(
          absl::StrCat(socket_path, " exists and is not a socket; refusing to replace it"));
    }
    unlink(socket_path.c_str());  // left by a previous run
  }
  return absl::OkStatus();
}

void RaiseFileLimit() {
  // Each environment holds a few namespace descriptors open.
  rlimit limit;
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
    setrlimit(RLIMIT_NOFILE, &limit);
  }
}

int Run(int argc, char** argv) {
  CLI::App app{
      "llima-agent: isolated environments for projects, served over gRPC on a Unix socket.\n"
      "Runs as root. Environments survive restarts of the agent."};
  std::string socket_path = "/run/llima-box/agent.sock";
  std::string state_dir = "/var/lib/llima-box";
  std::string socket_owner = "root";
  std::string cgroup_name = "llima-box";
  app.add_option("--socket", socket_path, "Unix socket to serve on")->capture_default_str();
  app.add_option("--state-dir", state_dir, "Directory for environment records and homes")
      ->capture_default_str();
  app.add_option("--socket-owner", socket_owner,
                 "User (name or uid) that owns the socket; only it (and root) can connect")
      ->capture_default_str();
  app.add_option("--cgroup-name", cgroup_name,
                 "Directory under the cgroup v2 root that holds the environments' cgroups")
      ->capture_default_str();
  app.set_version_flag("--version", kAgentVersion);
  CLI11_PARSE(app, argc, argv);

  if (geteuid() != 0) {
    fprintf(stderr, "llima-agent: must run as root (it creates namespaces and mounts)\n");
    return 1;
  }
  if (socket_path.empty() || socket_path[0] != '/' || state_dir.empty() || state_dir[0] != '/') {
    fprintf(stderr, "llima-agent: --socket and --state-dir must be absolute paths\n");
    return 2;
  }
  absl::StatusOr<uid_t> owner = ResolveUser(socket_owner);
  if (!owner.ok()) {
    fprintf(stderr, "llima-agent: --socket-owner: %s\n", std::string(owner.status().message()).c_str());
    return 2;
  }

  if (cgroup_name.empty() || cgroup_name.find('/') != std::string::npos || cgroup_name[0] == '.') {
    fprintf(stderr, "llima-agent: --cgroup-name must be a single directory name\n");
    return 2;
  }

  ConfigureFaultInjection();

  // Before any thread exists: the fork server must be a copy of a single-threaded process.
  absl::StatusOr<std::unique_ptr<ForkServer>> fork_server = ForkServer::Start();
  if (!fork_server.ok()) {
    fprintf(stderr, "llima-agent: %s\n", fork_server.status().ToString().c_str());
    return 1;
  }
  signal(SIGPIPE, SIG_IGN);
  RaiseFileLimit();

  EnvironmentStore store(state_dir);
  if (absl::Status s = store.Initialize(); !s.ok()) {
    fprintf(stderr, "llima-agent: state directory: %s\n", std::string(s.message()).c_str());
    return 1;
  }
  CgroupTree cgroups = CgroupTree::Discover(cgroup_name);
  if (!cgroups.available()) {
    LogEvent(absl::StrCat("warning: environments run without a cgroup: ",
                          cgroups.unavailable_reason()));
  }
  std::string socket_dir = socket_path.substr(0, socket_path.find_last_of('/'));
  EnvironmentManager environments(store, std::move(cgroups), **fork_server,
                                  {store.state_dir(), socket_dir});
  environments.Recover();

  if (absl::Status s = PrepareSocketDirectory(socket_path); !s.ok()) {
    fprintf(stderr, "llima-agent: %s\n", std::string(s.message()).c_str());
    return 1;
  }

  // Signals are taken synchronously by the main thread; every thread started from here on
  // inherits the mask.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGCHLD);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  absl::StatusOr<std::unique_ptr<SocketGate>> gate = SocketGate::Listen(socket_path, *owner);
  if (!gate.ok()) {
    fprintf(stderr, "llima-agent: %s\n", std::string(gate.status().message()).c_str());
    return 1;
  }
  AgentServiceImpl service(environments, **fork_server);
  grpc::EnableDefaultHealthCheckService(true);
  grpc::ServerBuilder builder;
  builder.RegisterService(&service);
  // No listening port: the gate accepts connections and hands over those it lets in.
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server) {
    fprintf(stderr, "llima-agent: cannot start the gRPC server\n");
    return 1;
  }
  (*gate)->Serve(server.get(), [&environments](dev_t dev, ino_t ino) {
    return environments.IsEnvironmentMountNamespace(dev, ino);
  });
  LogEvent(absl::StrCat("serving on ", socket_path, " (owner uid ", *owner, "), state in ",
                        state_dir, ", version ", kAgentVersion));

  int exit_code = 0;
  for (;;) {
    siginfo_t info;
    int sig = sigwaitinfo(&stop_signals, &info);
    if (sig == SIGCHLD) {
      if (waitpid((*fork_server)->pid(), nullptr, WNOHANG) != (*fork_server)->pid()) continue;
      LogEvent("the fork server exited; stopping so that the agent can be restarted");
      exit_code = 1;
      break;
    }
    if (sig == SIGTERM || sig == SIGINT) {
      LogEvent(absl::StrCat("received ", sig == SIGTERM ? "SIGTERM" : "SIGINT",
                            "; stopping (environments keep running)"));
      break;
    }
  }
  (*gate)->Stop();
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  unlink(socket_path.c_str());
  return exit_code;
}

}  // namespace
}  // namespace llima

int main(int argc, char** argv) {
  llima::RememberArgumentArea(argc, argv);
  return llima::Run(argc, argv);
}
