#pragma once

// A real llima-agent on a temporary socket and state directory, and helpers to drive it. Used by
// the integration tests and the benchmarks; needs root.

#include <sys/types.h>
#include <termios.h>

#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "llima/v1/agent.grpc.pb.h"

namespace llima::testing {

// A scratch directory under /tmp (mode 0755) removed with everything in it on destruction.
class ScratchDir {
 public:
  ScratchDir();
  ~ScratchDir();
  const std::string& path() const { return path_; }
  // Creates a directory (and parents) owned by uid:gid, mode 0755.
  std::string MakeDir(const std::string& relative, uid_t uid = 0, gid_t gid = 0) const;

 private:
  std::string path_;
};

// An agent process. Stop() (also run by the destructor) deletes every environment through the
// API, stops the agent, kills whatever is left in its cgroup subtree and unmounts its state
// directory, so a failing test leaves nothing behind.
class AgentProcess {
 public:
  // State, log and (unless `socket_path` is given) socket go below `root_dir`.
  explicit AgentProcess(const std::string& root_dir, const std::string& socket_path = "");
  ~AgentProcess();

  // Starts the agent and waits until it answers. `extra_args` are appended to its command
  // line, `extra_env` ("NAME=value") added to its environment.
  void Start(const std::vector<std::string>& extra_args = {},
             const std::vector<std::string>& extra_env = {});
  // SIGKILL, no cleanup: what a crash looks like.
  void Kill9();
  // SIGTERM and wait.
  void Terminate();
  void Stop();

  // Runs this copy of llima-agent instead of the build's (before Start).
  void set_binary(const std::string& path) { binary_ = path; }

  const std::string& socket_path() const { return socket_path_; }
  const std::string& state_dir() const { return state_dir_; }
  const std::string& cgroup_name() const { return cgroup_name_; }
  std::string cgroup_root() const;  // empty without cgroup v2
  std::string log() const;
  pid_t pid() const { return pid_; }
  // The agent's fork server (a child of its main thread), or 0 when it has none.
  pid_t ForkServerPid() const;
  llima::v1::AgentService::Stub& stub();

 private:
  std::string root_dir_;
  std::string socket_path_;
  std::string state_dir_;
  std::string log_path_;
  std::string cgroup_name_;
  std::string binary_;
  pid_t pid_ = -1;
  std::unique_ptr<llima::v1::AgentService::Stub> stub_;
};

struct ExecOptions {
  std::string stdin_data;
  // Sent as start.project_path (with the environment argument left empty, the project alone
  // names where the program runs).
  std::string project_path;
  std::string working_dir;
  std::vector<std::pair<std::string, std::string>> env;
  bool close_stdin = true;
  bool tty = false;
  uint32_t rows = 0;
  uint32_t cols = 0;
};

struct ExecResult {
  grpc::Status status;
  int exit_code = -1;
  int signal = 0;
  int pid = 0;
  std::string out;
  std::string err;
};

// One Exec call driven step by step: send input, resizes and signals, wait for output.
class ExecStream {
 public:
  ExecStream(llima::v1::AgentService::Stub& stub, const llima::v1::ExecStart& start);
  ~ExecStream();

  bool Send(const llima::v1::ExecRequest& request);
  bool SendStdin(const std::string& bytes);
  bool Resize(uint32_t rows, uint32_t cols);
  bool Signal(int sig);
  // Waits until stdout contains `text` (after what earlier waits consumed); false on timeout
  // or end of the call.
  bool WaitFor(const std::string& text, int timeout_ms = 10000);
  // Cancels the call as a vanished client would.
  void Cancel();
  // Waits for the end of the call.
  ExecResult Finish();
  std::string output();

 private:
  void ReadLoop();

  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientReaderWriter<llima::v1::ExecRequest, llima::v1::ExecResponse>>
      stream_;
  std::mutex mu_;
  std::condition_variable cv_;
  ExecResult result_;
  size_t consumed_ = 0;
  bool done_ = false;
  std::thread reader_;
};

// Runs argv in `environment` through the Exec RPC and collects everything.
ExecResult Exec(llima::v1::AgentService::Stub& stub, const std::string& environment,
                const std::vector<std::string>& argv, const ExecOptions& options = {});

// `sh -c script` in the environment.
ExecResult Shell(llima::v1::AgentService::Stub& stub, const std::string& environment,
                 const std::string& script);

// A program run on a pseudo-terminal of its own, as a person at a terminal would run it.
class PtyProcess {
 public:
  PtyProcess(const std::vector<std::string>& argv, const std::vector<std::string>& env,
             unsigned short rows = 24, unsigned short cols = 80);
  ~PtyProcess();
  void Write(const std::string& bytes);
  // Waits until the output contains `text` (after what earlier waits consumed).
  bool WaitFor(const std::string& text, int timeout_ms = 10000);
  // Changes the terminal's size; the kernel sends SIGWINCH to its foreground process group.
  void Resize(unsigned short rows, unsigned short cols);
  // Waits for the program to exit; its exit status (128+N for signal N), -1 on timeout.
  int Wait(int timeout_ms = 10000);
  pid_t pid() const { return pid_; }
  int master() const { return master_; }
  // The terminal's current settings, as the program sees them.
  bool TerminalSettings(struct termios* settings) const;
  std::string output();

 private:
  void Pump(int timeout_ms);
  pid_t pid_ = -1;
  int master_ = -1;
  std::string out_;
  size_t consumed_ = 0;
  int status_ = -1;
};

// The environment calls with a 30 s deadline, returning the call's status.
grpc::Status CallCreate(llima::v1::AgentService::Stub& stub,
                        const llima::v1::CreateEnvironmentRequest& request,
                        llima::v1::Environment* env);
grpc::Status CallCreate(llima::v1::AgentService::Stub& stub, const std::string& project_path,
                        llima::v1::Environment* env);
grpc::Status CallDelete(llima::v1::AgentService::Stub& stub, const std::string& name);
grpc::Status CallList(llima::v1::AgentService::Stub& stub,
                      llima::v1::ListEnvironmentsResponse* response);

// For fixtures that set up one agent for the whole suite in SetUpTestSuite. gtest reports every
// test of a suite whose SetUpTestSuite failed fatally (an ASSERT, an exception) as skipped, and
// ctest then counts them as skipped, not failed. So the set-up runs through RunSuiteSetUp, which
// returns what went wrong (empty when nothing did) instead, and each test's SetUp asserts that
// it is empty. Inside it, RequireRoot and the harness throw rather than ASSERT.
std::string RunSuiteSetUp(const std::function<void()>& body);
void RequireRoot(const std::string& why);

// Creates the environment of `project_path`; a failed call is an empty name and a test failure.
llima::v1::Environment CreateEnvironmentOrFail(llima::v1::AgentService::Stub& stub,
                                               const std::string& project_path);

// What a reboot of the VM takes from environment `name` of an agent that is not running: its
// processes, the pin of its namespaces and its cgroup. Its record and home stay.
::testing::AssertionResult TakeAwayWhatARebootWould(const AgentProcess& agent,
                                                    const std::string& name);

// Whether some process on the host has `needle` in its command line.
bool HostSees(const std::string& needle);
// Waits up to `ms` for `needle` to disappear from the host's process list.
bool GoneWithin(const std::string& needle, int ms);

// Where mounts are attached at or below `dir` in this process's namespace, in mount order, one
// entry per mount (a path mounted twice comes twice).
std::vector<std::string> MountPointsBelow(const std::string& dir);

// Output of a command run on the host (through /bin/sh).
std::string HostOutput(const std::string& command);

// Path of the llima-agent binary under test.
std::string AgentBinary();

// What an agent owns on the machine, to compare before and after a scenario: mounts below its
// state directory, environment inits running, directories in its cgroup subtree and in its
// state directory (with their records).
struct ResourceSnapshot {
  std::vector<std::string> mounts;
  std::vector<std::string> inits;    // "pid args" of llima-init processes
  std::vector<std::string> cgroups;  // relative to the agent's cgroup subtree
  std::vector<std::string> state;    // entries of <state>/envs and their records
};
ResourceSnapshot TakeResourceSnapshot(const AgentProcess& agent);
// Empty when `after` holds nothing `before` did not; otherwise what was left, one per line.
std::string DescribeLeaks(const ResourceSnapshot& before, const ResourceSnapshot& after);

}  // namespace llima::testing
