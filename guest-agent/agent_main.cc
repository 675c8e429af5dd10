// llima-agent: creates, enters and deletes isolated environments, served over gRPC on a Unix
// socket. Runs as root inside the VM.

#include <errno.h>
#include <malloc.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/resource_quota.h>
#include <grpcpp/support/server_interceptor.h>
#include <pwd.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <climits>
#include <condition_variable>
#include <cstdio>
#include <future>
#include <mutex>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "agent_service.h"
#include "cgroup.h"
#include "environment_manager.h"
#include "environment_store.h"
#include "exec_session.h"
#include "fault_injection.h"
#include "fork_server.h"
#include "log.h"
#include "mutex_checks.h"
#include "posix_error.h"
#include "process_title.h"
#include "project_path.h"
#include "request_validation.h"
#include "socket_gate.h"

namespace llima {
namespace {

// Limits on what clients can make the agent hold (besides --max-connections, --max-exec-calls
// and --exec-start-timeout). A request larger than this is refused with RESOURCE_EXHAUSTED
// before it is parsed; stdin arrives in chunks of 64 KiB from llima-box.
constexpr int kMaxRequestBytes = 1 << 20;
// Threads for unary calls (create, get, list, delete, info, health check); past them a call is
// refused with RESOURCE_EXHAUSTED ("Server Threadpool Exhausted").
constexpr int kMaxUnaryThreads = 128;
// HTTP/2 streams one connection may have open beyond --max-exec-calls, so that a single client
// meets the Exec limit as RESOURCE_EXHAUSTED before HTTP/2 makes its calls wait.
constexpr int kStreamsBeyondExecCalls = 128;
// On SIGTERM: how long calls in flight may take to finish before they are cancelled; the agent
// exits at most a second later.
constexpr absl::Duration kStopGrace = absl::Seconds(5);
// How long attached processes get to end (SIGHUP, SIGKILL after 2 s) before the agent exits.
constexpr absl::Duration kStopSessionsGrace = absl::Seconds(3);

// Counts the calls in flight that a stop waits for, so that it can then close idle connections
// instead of waiting for their clients: every call but the health service's Watch, which lasts
// until the server shuts down.
class CallTracker : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override {
    if (absl::string_view(info->method()) == "/grpc.health.v1.Health/Watch") return nullptr;
    return new Counted(*this);
  }

  // True once no such call is in flight; false if `deadline` came first.
  bool WaitUntilNone(absl::Time deadline) {
    std::unique_lock lock(mu_);
    return none_.wait_until(lock, absl::ToChronoTime(deadline), [&] { return in_flight_ <= 0; });
  }

 private:
  // Lives as long as its call.
  class Counted : public grpc::experimental::Interceptor {
   public:
    explicit Counted(CallTracker& tracker) : tracker_(tracker) {
      std::lock_guard lock(tracker_.mu_);
      ++tracker_.in_flight_;
    }
    ~Counted() override {
      std::lock_guard lock(tracker_.mu_);
      if (--tracker_.in_flight_ == 0) tracker_.none_.notify_all();
    }
    void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
      methods->Proceed();
    }

   private:
    CallTracker& tracker_;
  };

  std::mutex mu_;
  std::condition_variable none_;
  int in_flight_ = 0;
};

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
  std::string default_memory_max = absl::StrCat(kDefaultMemoryPercent, "%");
  std::string default_pids_max = absl::StrCat(kDefaultPidsMax);
  std::string default_cpu = "max";
  app.add_option("--default-memory-max", default_memory_max,
                 "Memory limit of an environment whose create request sets none: bytes with an "
                 "optional K, M, G or T suffix, a percentage of the machine's memory, or max")
      ->capture_default_str();
  app.add_option("--default-pids-max", default_pids_max,
                 "Processes and threads an environment may have at once when its create request "
                 "sets no limit, or max")
      ->capture_default_str();
  app.add_option("--default-cpu", default_cpu,
                 "CPU limit of an environment whose create request sets none: CPUs (1.5), "
                 "millicores (1500m), or max")
      ->capture_default_str();
  int max_connections = 256;
  int max_exec_calls = 1024;
  double exec_start_timeout = 30;
  double max_connection_idle = 300;
  app.add_option("--max-connections", max_connections,
                 "Client connections open at once; more are closed when accepted")
      ->capture_default_str()
      ->check(CLI::Range(1, 1 << 20));
  app.add_option("--max-exec-calls", max_exec_calls,
                 "Exec calls at once (detached processes whose client has gone included); more "
                 "are refused with RESOURCE_EXHAUSTED")
      ->capture_default_str()
      ->check(CLI::Range(1, 1 << 20));
  app.add_option("--exec-start-timeout", exec_start_timeout,
                 "Seconds an Exec call may take to send its start message")
      ->capture_default_str()
      ->check(CLI::Range(0.001, 86400.0));
  // A connection without a call for this long is closed (GOAWAY; gRPC clients reconnect by
  // themselves), so that clients that connect and do nothing give their place back.
  app.add_option("--max-connection-idle", max_connection_idle,
                 "Seconds a connection may go without a call before the agent closes it")
      ->capture_default_str()
      ->check(CLI::Range(0.001, 86400.0));
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

  absl::StatusOr<int64_t> default_memory =
      ParseMemoryLimit(default_memory_max, PhysicalMemoryBytes());
  absl::StatusOr<int64_t> default_pids = ParsePidsLimit(default_pids_max);
  absl::StatusOr<int64_t> default_cpu_millicores = ParseCpuLimit(default_cpu);
  for (const absl::Status& s :
       {default_memory.status(), default_pids.status(), default_cpu_millicores.status()}) {
    if (!s.ok()) {
      fprintf(stderr, "llima-agent: %s\n", std::string(s.message()).c_str());
      return 2;
    }
  }
  ResourceDefaults limit_defaults{*default_memory, *default_pids, *default_cpu_millicores};

  ConfigureFaultInjection();

  absl::StatusOr<UniqueFd> init_program = OpenInitProgram();
  if (!init_program.ok()) {
    fprintf(stderr, "llima-agent: %s\n", std::string(init_program.status().message()).c_str());
    return 1;
  }

  // Before any thread exists: the fork server must be a copy of a single-threaded process.
  absl::StatusOr<std::unique_ptr<ForkServer>> fork_server =
      ForkServer::Start(std::move(*init_program));
  if (!fork_server.ok()) {
    fprintf(stderr, "llima-agent: %s\n", fork_server.status().ToString().c_str());
    return 1;
  }
  signal(SIGPIPE, SIG_IGN);
  RaiseFileLimit();
  // Exec output moves in chunks of a few hundred KiB. With the allocator's defaults each one
  // would be mapped and unmapped, or trimmed from the top of its thread's arena, and its pages
  // faulted in again: keep such chunks on the heap and the freed memory for the next one.
  mallopt(M_MMAP_THRESHOLD, 4 << 20);
  mallopt(M_TRIM_THRESHOLD, 32 << 20);

  EnvironmentStore store(state_dir);
  if (absl::Status s = store.Initialize(); !s.ok()) {
    fprintf(stderr, "llima-agent: state directory: %s\n", std::string(s.message()).c_str());
    return 1;
  }
  CgroupTree cgroups = CgroupTree::Discover(cgroup_name);
  if (!cgroups.available()) {
    LogEvent(absl::StrCat("warning: environments run without a cgroup: ",
                          cgroups.unavailable_reason()));
  } else if (!cgroups.enforcement().detail().empty()) {
    LogEvent(absl::StrCat("warning: ", cgroups.enforcement().detail()));
  }
  std::string socket_dir = socket_path.substr(0, socket_path.find_last_of('/'));
  EnvironmentManager environments(store, std::move(cgroups), **fork_server,
                                  {store.state_dir(), socket_dir}, limit_defaults);
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
  ConfigureExecSessions({.max_sessions = max_exec_calls,
                         .start_timeout = absl::Milliseconds(exec_start_timeout * 1000)});
  AgentServiceImpl service(environments, **fork_server);
  grpc::EnableDefaultHealthCheckService(true);
  grpc::ServerBuilder builder;
  builder.RegisterService(&service);
  builder.SetMaxReceiveMessageSize(kMaxRequestBytes);
  grpc::ResourceQuota quota("llima-agent");
  quota.SetMaxThreads(kMaxUnaryThreads);
  builder.SetResourceQuota(quota);
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS,
                             max_exec_calls + kStreamsBeyondExecCalls);
  builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_IDLE_MS,
                             static_cast<int>(max_connection_idle * 1000));
  // No keepalive pings from the agent (gRPC's default: one every 2 h, 20 s to answer). Its
  // peers are local processes or Lima's forward, whose end closes the connection; and the CLI
  // reads its connection only between writes of output, so one blocked on a paused pager must
  // not lose its command for a ping it could not answer.
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, INT_MAX);
  auto* calls = new CallTracker();
  {
    std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> creators;
    creators.emplace_back(calls);
    builder.experimental().SetInterceptorCreators(std::move(creators));
  }
  // No listening port: the gate accepts connections and hands over those it lets in.
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server) {
    fprintf(stderr, "llima-agent: cannot start the gRPC server\n");
    return 1;
  }
  (*gate)->Serve(
      server.get(),
      [&environments](dev_t dev, ino_t ino) {
        return environments.IsEnvironmentMountNamespace(dev, ino);
      },
      max_connections);
  LogEvent(absl::StrCat("serving on ", socket_path, " (owner uid ", *owner, "), state in ",
                        state_dir, ", version ", kAgentVersion, "; at most ", max_connections,
                        " connections and ", max_exec_calls, " Exec calls"));

  int exit_code = 0;
  for (;;) {
    siginfo_t info;
    int sig = sigwaitinfo(&stop_signals, &info);
    if (sig == SIGCHLD) {
      if (!(*fork_server)->Exited()) continue;
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

  // The stop: no new connections, no new calls; unary calls in flight finish; Exec calls end
  // with UNAVAILABLE, their attached processes treated as after a client disconnect, detached
  // ones left running. Environments are not touched: the next start re-adopts them.
  absl::Time stop_started = absl::Now();
  (*gate)->Stop();
  StopExecSessions();
  // Shutdown refuses new calls at once and waits for those in flight until its deadline, then
  // cancels them; it returns once every connection has closed and every handler has returned.
  std::promise<void> shut_down;
  std::thread shutdown([&server, &shut_down] {
    server->Shutdown(std::chrono::system_clock::now() + absl::ToChronoMilliseconds(kStopGrace));
    shut_down.set_value();
  });
  // Exec calls finish at once (their status is sent), unless a client does not read.
  bool calls_finished = calls->WaitUntilNone(stop_started + kStopGrace);
  // Idle clients would otherwise keep their connections, and the shutdown, until the deadline.
  (*gate)->DisconnectAll();
  // A handler stuck in the kernel would hold the shutdown for good.
  bool server_stopped = shut_down.get_future().wait_until(
                            absl::ToChronoTime(stop_started + kStopGrace + absl::Seconds(1))) ==
                        std::future_status::ready;
  bool sessions_ended =
      server_stopped && WaitForExecSessions(std::max(stop_started + kStopSessionsGrace,
                                                     absl::Now() + absl::Milliseconds(200)));
  LogEvent(absl::StrCat(
      "stopped in ", absl::ToInt64Milliseconds(absl::Now() - stop_started), " ms",
      calls_finished ? "" : "; calls still running at the deadline were cancelled",
      server_stopped ? "" : "; a call handler did not return",
      sessions_ended ? "" : absl::StrCat("; ", LiveExecSessions(), " Exec sessions left")));
  if (sessions_ended) HandOverDetachedOutput();
  // Leave without destructors: threads may still use the server, the environments and the fork
  // server, and destroying the server would wait again for a client that does not read. Nothing
  // needs tearing down: records are on disk, environments keep running, and the fork server
  // would die with the agent anyway (PR_SET_PDEATHSIG), but as an orphan: it is ended and
  // reaped here.
  if (server_stopped) shutdown.join();
  (*fork_server)->Stop(absl::Seconds(1));
  fflush(stdout);
  fflush(stderr);
  _exit(exit_code);
}

}  // namespace
}  // namespace llima

int main(int argc, char** argv) {
  llima::SkipMutexDeadlockDetection();
  llima::RememberArgumentArea(argc, argv);
  return llima::Run(argc, argv);
}
