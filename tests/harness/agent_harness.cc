#include "agent_harness.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <pty.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

#include <grpcpp/grpcpp.h>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/numbers.h"
#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "cgroup.h"
#include "gtest/gtest.h"
#include "read_file.h"

namespace llima::testing {
namespace {

void Check(bool ok, const std::string& what) {
  if (!ok) throw std::runtime_error(what);
}

void KillCgroupTree(const std::string& dir) {
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return;
  std::vector<std::string> children;
  while (dirent* e = readdir(d)) {
    std::string name = e->d_name;
    if (e->d_type == DT_DIR && name != "." && name != "..") children.push_back(name);
  }
  closedir(d);
  for (const std::string& child : children) KillCgroupTree(dir + "/" + child);
  std::ofstream(dir + "/cgroup.kill") << "1";
  for (int i = 0; i < 200 && rmdir(dir.c_str()) != 0 && errno == EBUSY; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

// Unmounts everything mounted at or below `dir`, deepest first.
void UnmountBelow(const std::string& dir) {
  std::vector<std::string> below = MountPointsBelow(dir);
  for (auto it = below.rbegin(); it != below.rend(); ++it) umount2(it->c_str(), MNT_DETACH);
}

// Alive and not a zombie (a killed test whose parent has not reaped it is gone all the same).
bool ProcessExists(pid_t pid) {
  std::string stat = ReadFileOrEmpty("/proc/" + std::to_string(pid) + "/stat");
  size_t end = stat.rfind(')');
  return end != std::string::npos && end + 2 < stat.size() && stat[end + 2] != 'Z';
}

// What each thread of `pid` (and of its children) is doing: state, where it sleeps in the
// kernel and its kernel stack. For an agent that does not answer.
std::string DescribeThreads(pid_t pid) {
  std::string out;
  std::vector<std::string> pids = {std::to_string(pid)};
  for (absl::string_view child :
       absl::StrSplit(ReadFileOrEmpty(absl::StrCat("/proc/", pid, "/task/", pid, "/children")), ' ',
                      absl::SkipEmpty())) {
    pids.emplace_back(child);
  }
  for (const std::string& p : pids) {
    std::string tasks = "/proc/" + p + "/task";
    DIR* dir = opendir(tasks.c_str());
    if (dir == nullptr) continue;
    while (dirent* entry = readdir(dir)) {
      if (entry->d_name[0] == '.') continue;
      std::string task = tasks + "/" + entry->d_name;
      std::string stat = ReadFileOrEmpty(task + "/stat");
      size_t open = stat.find('('), close = stat.rfind(')');
      if (open == std::string::npos || close == std::string::npos || close + 2 >= stat.size()) {
        continue;
      }
      absl::StrAppend(&out, p, "/", entry->d_name, " ", stat.substr(open, close - open + 1), " ",
                      stat.substr(close + 2, 1), " wchan ", ReadFileOrEmpty(task + "/wchan"), "\n");
      for (absl::string_view line :
           absl::StrSplit(ReadFileOrEmpty(task + "/stack"), '\n', absl::SkipEmpty())) {
        absl::StrAppend(&out, "    ", line, "\n");
      }
    }
    closedir(dir);
  }
  return out;
}

// A test process killed by a timeout cannot clean up; the next one does it for it: the
// cgroups and scratch directories of test processes that no longer exist are removed.
void SweepLeftoversOfDeadTestRuns() {
  static bool swept = false;
  if (swept) return;
  swept = true;
  constexpr char kCgroupPrefix[] = "llima-box-test-";
  auto cgroup_mount = llima::FindCgroup2Mount(ReadFileOrEmpty("/proc/self/mountinfo"));
  if (cgroup_mount) {
    if (DIR* d = opendir(cgroup_mount->c_str())) {
      while (dirent* e = readdir(d)) {
        std::string name = e->d_name;
        if (name.rfind(kCgroupPrefix, 0) != 0) continue;
        pid_t pid = atoi(name.c_str() + strlen(kCgroupPrefix));
        if (pid > 0 && !ProcessExists(pid)) KillCgroupTree(*cgroup_mount + "/" + name);
      }
      closedir(d);
    }
  }
  if (DIR* d = opendir("/tmp")) {
    while (dirent* e = readdir(d)) {
      std::string name = e->d_name;
      if (name.rfind("llima-test-", 0) != 0) continue;
      pid_t pid = atoi(name.c_str() + strlen("llima-test-"));
      if (pid <= 0 || ProcessExists(pid)) continue;
      std::string dir = "/tmp/" + name;
      UnmountBelow(dir);
      std::string cmd = "rm -rf --one-file-system '" + dir + "'";
      if (system(cmd.c_str()) != 0) fprintf(stderr, "could not remove %s\n", dir.c_str());
    }
    closedir(d);
  }
}

}  // namespace

std::string AgentBinary() { return LLIMA_AGENT_BINARY; }

ScratchDir::ScratchDir() {
  SweepLeftoversOfDeadTestRuns();
  std::string tmpl = "/tmp/llima-test-" + std::to_string(getpid()) + "-XXXXXX";
  Check(mkdtemp(tmpl.data()) != nullptr, "mkdtemp");
  path_ = tmpl;
  chmod(path_.c_str(), 0755);
}

ScratchDir::~ScratchDir() {
  // Nothing may be mounted below any more; a lazy unmount is a last resort.
  UnmountBelow(path_);
  std::string cmd = "rm -rf --one-file-system '" + path_ + "'";
  if (system(cmd.c_str()) != 0) fprintf(stderr, "could not remove %s\n", path_.c_str());
}

std::string ScratchDir::MakeDir(const std::string& relative, uid_t uid, gid_t gid) const {
  std::string path = path_;
  std::istringstream parts(relative);
  std::string part;
  while (std::getline(parts, part, '/')) {
    if (part.empty()) continue;
    path += "/" + part;
    mkdir(path.c_str(), 0755);
  }
  Check(chown(path.c_str(), uid, gid) == 0, "chown " + path);
  Check(chmod(path.c_str(), 0755) == 0, "chmod " + path);
  return path;
}

AgentProcess::AgentProcess(const std::string& root_dir, const std::string& socket_path)
    : root_dir_(root_dir),
      socket_path_(socket_path.empty() ? root_dir + "/run/agent.sock" : socket_path),
      state_dir_(root_dir + "/state"),
      log_path_(root_dir + "/agent.log"),
      cgroup_name_("llima-box-test-" + std::to_string(getpid())) {
  // Processes orphaned by a killed agent (its fork server, environment inits) become ours, so
  // that Stop() can reap them instead of leaving zombies to an init that may not reap.
  prctl(PR_SET_CHILD_SUBREAPER, 1);
}

AgentProcess::~AgentProcess() { Stop(); }

std::string AgentProcess::cgroup_root() const {
  auto mount = llima::FindCgroup2Mount(ReadFileOrEmpty("/proc/self/mountinfo"));
  return mount ? *mount + "/" + cgroup_name_ : "";
}

void AgentProcess::Start(const std::vector<std::string>& extra_args,
                         const std::vector<std::string>& extra_env) {
  Check(pid_ < 0, "agent already running");
  unlink(socket_path_.c_str());  // a killed agent leaves its socket behind
  pid_ = fork();
  Check(pid_ >= 0, "fork");
  if (pid_ == 0) {
    int log = open(log_path_.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    dup2(log, 2);
    int null = open("/dev/null", O_RDWR);
    dup2(null, 0);
    dup2(null, 1);
    std::string bin = binary_.empty() ? AgentBinary() : binary_;
    std::vector<std::string> args = {"llima-agent",      "--socket",     socket_path_,
                                     "--state-dir",      state_dir_,     "--cgroup-name",
                                     cgroup_name_};
    args.insert(args.end(), extra_args.begin(), extra_args.end());
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    for (const std::string& e : extra_env) putenv(const_cast<char*>(e.c_str()));
    // Only the standard streams: a socket this process's gRPC was opening at the fork (not yet
    // close-on-exec) must not live on in the agent.
    close_range(3, ~0U, 0);
    execv(bin.c_str(), argv.data());
    _exit(127);
  }
  // Connect only once the socket exists: a channel that fails to connect backs off for seconds.
  auto started = std::chrono::steady_clock::now();
  auto since_start = [&] {
    return absl::StrCat(std::chrono::duration_cast<std::chrono::milliseconds>(
                            std::chrono::steady_clock::now() - started)
                            .count(),
                        " ms");
  };
  std::string socket_seen = "never";
  for (int i = 0; i < 1000; ++i) {
    int status;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      throw std::runtime_error("llima-agent exited at start:\n" + log());
    }
    struct stat st;
    if (stat(socket_path_.c_str(), &st) == 0) {
      socket_seen = absl::StrCat("after ", since_start());
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  // The file appears at bind(), a moment before listen(): retry connecting quickly.
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 20);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 200);
  // Despite its name, how long one connection attempt may take to get the agent's HTTP/2
  // settings. At 20 ms a new agent starved by a loaded machine (ctest -j2 next to the fuzzers)
  // missed it attempt after attempt and the harness gave up: "did not answer within 5201 ms
  // ... connection attempt timed out before receiving SETTINGS frame".
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 2000);
  // Its own connections, not ones shared with other channels to the same socket.
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  args.SetMaxReceiveMessageSize(64 << 20);
  auto new_stub = [&] {
    stub_ = llima::v1::AgentService::NewStub(grpc::CreateCustomChannel(
        "unix:" + socket_path_, grpc::InsecureChannelCredentials(), args));
    return std::chrono::steady_clock::now();
  };
  auto stub_made = new_stub();
  grpc::Status last;
  for (int i = 0; i < 500; ++i) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(200));
    llima::v1::ListEnvironmentsResponse response;
    last = stub_->ListEnvironments(&context, {}, &response);
    if (last.ok()) return;
    // On a loaded machine gRPC's client (1.51) sometimes never reads a connection it made: the
    // agent's HTTP/2 settings sat unread in this process's socket while its poller slept and
    // the agent idled, until "did not answer within 5 s ... timed out before receiving SETTINGS
    // frame". A channel quiet for a second is replaced rather than waited on.
    if (std::chrono::steady_clock::now() - stub_made > std::chrono::seconds(1)) {
      stub_made = new_stub();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  throw std::runtime_error(absl::StrCat(
      "llima-agent did not answer within ", since_start(), " (its socket appeared ", socket_seen,
      "; the last of 500 calls: code ", last.error_code(), ", ", last.error_message(), "):\n",
      log(), "---- its threads ----\n", DescribeThreads(pid_), "---- its descriptors ----\n",
      HostOutput(absl::StrCat("ls -l /proc/", pid_, "/fd | sed 's/.* -> //' | sort | uniq -c")),
      "---- this process's threads ----\n", DescribeThreads(getpid()),
      "---- the sockets at its path ----\n",
      HostOutput(absl::StrCat("ss -xp | grep -F '", socket_path_, "'; for peer in $(ss -xp | ",
                              "grep -F '", socket_path_, "' | awk '{print $8}'); do ss -xp | ",
                              "grep -w \"$peer\"; done"))));
}

pid_t AgentProcess::ForkServerPid() const {
  std::string children =
      ReadFileOrEmpty(absl::StrCat("/proc/", pid_, "/task/", pid_, "/children"));
  for (absl::string_view child : absl::StrSplit(children, ' ', absl::SkipEmpty())) {
    pid_t pid;
    if (absl::SimpleAtoi(child, &pid) &&
        absl::StrContains(ReadFileOrEmpty(absl::StrCat("/proc/", pid, "/cmdline")),
                          "fork server")) {
      return pid;
    }
  }
  return 0;
}

void AgentProcess::Kill9() {
  if (pid_ < 0) return;
  kill(pid_, SIGKILL);
  waitpid(pid_, nullptr, 0);
  pid_ = -1;
}

void AgentProcess::Terminate() {
  if (pid_ < 0) return;
  // Dropping the client first lets the agent see its connection close at once.
  stub_.reset();
  kill(pid_, SIGTERM);
  waitpid(pid_, nullptr, 0);
  pid_ = -1;
}

void AgentProcess::Stop() {
  if (pid_ >= 0 && stub_) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    llima::v1::ListEnvironmentsResponse response;
    if (stub_->ListEnvironments(&context, {}, &response).ok()) {
      for (const auto& env : response.environments()) {
        grpc::ClientContext delete_context;
        llima::v1::DeleteEnvironmentRequest request;
        request.set_name(env.name());
        llima::v1::DeleteEnvironmentResponse deleted;
        stub_->DeleteEnvironment(&delete_context, request, &deleted);
      }
    }
  }
  Terminate();
  std::string cgroups = cgroup_root();
  if (!cgroups.empty()) KillCgroupTree(cgroups);
  // Pins first, then the state directory's own bind mount.
  UnmountBelow(state_dir_);
  while (waitpid(-1, nullptr, WNOHANG) > 0) {
  }
}

std::string AgentProcess::log() const { return ReadFileOrEmpty(log_path_); }

llima::v1::AgentService::Stub& AgentProcess::stub() { return *stub_; }

ExecResult Exec(llima::v1::AgentService::Stub& stub, const std::string& environment,
                const std::vector<std::string>& argv, const ExecOptions& options) {
  ExecResult result;
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  auto stream = stub.Exec(&context);
  llima::v1::ExecRequest start;
  start.mutable_start()->set_environment(environment);
  start.mutable_start()->set_project_path(options.project_path);
  for (const auto& arg : argv) start.mutable_start()->add_argv(arg);
  start.mutable_start()->set_working_dir(options.working_dir);
  start.mutable_start()->set_tty(options.tty);
  start.mutable_start()->mutable_size()->set_rows(options.rows);
  start.mutable_start()->mutable_size()->set_cols(options.cols);
  for (const auto& [k, v] : options.env) (*start.mutable_start()->mutable_env())[k] = v;
  stream->Write(start);
  std::thread writer([&] {
    constexpr size_t kChunk = 64 * 1024;
    for (size_t off = 0; off < options.stdin_data.size(); off += kChunk) {
      llima::v1::ExecRequest request;
      request.set_stdin(options.stdin_data.substr(off, kChunk));
      if (!stream->Write(request)) return;
    }
    if (options.close_stdin) {
      llima::v1::ExecRequest close;
      close.set_close_stdin(true);
      stream->Write(close);
      stream->WritesDone();
    }
  });
  llima::v1::ExecResponse response;
  while (stream->Read(&response)) {
    switch (response.response_case()) {
      case llima::v1::ExecResponse::kStarted:
        result.pid = response.started().pid();
        break;
      case llima::v1::ExecResponse::kStdout:
        result.out += response.stdout();
        break;
      case llima::v1::ExecResponse::kStderr:
        result.err += response.stderr();
        break;
      case llima::v1::ExecResponse::kExited:
        result.exit_code = response.exited().exit_code();
        result.signal = response.exited().signal();
        break;
      default:
        break;
    }
  }
  writer.join();
  result.status = stream->Finish();
  return result;
}

ExecStream::ExecStream(llima::v1::AgentService::Stub& stub, const llima::v1::ExecStart& start) {
  context_.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  stream_ = stub.Exec(&context_);
  llima::v1::ExecRequest first;
  *first.mutable_start() = start;
  stream_->Write(first);
  reader_ = std::thread([this] { ReadLoop(); });
}

ExecStream::~ExecStream() {
  if (reader_.joinable()) {
    context_.TryCancel();
    reader_.join();
  }
}

void ExecStream::ReadLoop() {
  llima::v1::ExecResponse response;
  while (stream_->Read(&response)) {
    std::lock_guard lock(mu_);
    switch (response.response_case()) {
      case llima::v1::ExecResponse::kStarted:
        result_.pid = response.started().pid();
        break;
      case llima::v1::ExecResponse::kStdout:
        result_.out += response.stdout();
        break;
      case llima::v1::ExecResponse::kStderr:
        result_.err += response.stderr();
        break;
      case llima::v1::ExecResponse::kExited:
        result_.exit_code = response.exited().exit_code();
        result_.signal = response.exited().signal();
        break;
      default:
        break;
    }
    cv_.notify_all();
  }
  std::lock_guard lock(mu_);
  done_ = true;
  cv_.notify_all();
}

bool ExecStream::Send(const llima::v1::ExecRequest& request) { return stream_->Write(request); }

bool ExecStream::SendStdin(const std::string& bytes) {
  llima::v1::ExecRequest request;
  request.set_stdin(bytes);
  return Send(request);
}

bool ExecStream::Resize(uint32_t rows, uint32_t cols) {
  llima::v1::ExecRequest request;
  request.mutable_resize()->set_rows(rows);
  request.mutable_resize()->set_cols(cols);
  return Send(request);
}

bool ExecStream::Signal(int sig) {
  llima::v1::ExecRequest request;
  request.set_signal(sig);
  return Send(request);
}

bool ExecStream::WaitFor(const std::string& text, int timeout_ms) {
  std::unique_lock lock(mu_);
  size_t found = std::string::npos;
  cv_.wait_for(lock, std::chrono::milliseconds(timeout_ms), [&] {
    found = result_.out.find(text, consumed_);
    return found != std::string::npos || done_;
  });
  if (found == std::string::npos) found = result_.out.find(text, consumed_);
  if (found == std::string::npos) return false;
  consumed_ = found + text.size();
  return true;
}

void ExecStream::Cancel() { context_.TryCancel(); }

ExecResult ExecStream::Finish() {
  stream_->WritesDone();
  reader_.join();
  grpc::Status status = stream_->Finish();
  std::lock_guard lock(mu_);
  result_.status = status;
  return result_;
}

std::string ExecStream::output() {
  std::lock_guard lock(mu_);
  return result_.out;
}

ExecResult Shell(llima::v1::AgentService::Stub& stub, const std::string& environment,
                 const std::string& script) {
  return Exec(stub, environment, {"sh", "-c", script});
}

PtyProcess::PtyProcess(const std::vector<std::string>& argv,
                       const std::vector<std::string>& env, unsigned short rows,
                       unsigned short cols) {
  winsize ws{};
  ws.ws_row = rows;
  ws.ws_col = cols;
  pid_ = forkpty(&master_, nullptr, nullptr, &ws);
  Check(pid_ >= 0, "forkpty");
  if (pid_ == 0) {
    for (const std::string& e : env) putenv(const_cast<char*>(e.c_str()));
    std::vector<char*> args;
    for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execv(args[0], args.data());
    _exit(127);
  }
  fcntl(master_, F_SETFL, fcntl(master_, F_GETFL) | O_NONBLOCK);
}

PtyProcess::~PtyProcess() {
  if (status_ < 0 && pid_ > 0) {
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
  if (master_ >= 0) close(master_);
}

void PtyProcess::Write(const std::string& bytes) {
  size_t off = 0;
  while (off < bytes.size()) {
    ssize_t n = write(master_, bytes.data() + off, bytes.size() - off);
    if (n < 0 && errno == EAGAIN) {
      usleep(1000);
      continue;
    }
    if (n <= 0) return;
    off += static_cast<size_t>(n);
  }
}

void PtyProcess::Pump(int timeout_ms) {
  pollfd p{master_, POLLIN, 0};
  if (poll(&p, 1, timeout_ms) <= 0) return;
  char buf[65536];
  for (;;) {
    ssize_t n = read(master_, buf, sizeof(buf));
    if (n <= 0) return;
    out_.append(buf, static_cast<size_t>(n));
  }
}

bool PtyProcess::WaitFor(const std::string& text, int timeout_ms) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (std::chrono::steady_clock::now() < deadline) {
    size_t found = out_.find(text, consumed_);
    if (found != std::string::npos) {
      consumed_ = found + text.size();
      return true;
    }
    Pump(20);
  }
  return false;
}

void PtyProcess::Resize(unsigned short rows, unsigned short cols) {
  winsize ws{};
  ws.ws_row = rows;
  ws.ws_col = cols;
  ioctl(master_, TIOCSWINSZ, &ws);
}

int PtyProcess::Wait(int timeout_ms) {
  if (status_ >= 0) return status_;
  for (int waited = 0; waited <= timeout_ms; waited += 10) {
    Pump(0);
    int status;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      Pump(0);
      status_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      return status_;
    }
    usleep(10000);
  }
  return -1;
}

bool PtyProcess::TerminalSettings(struct termios* settings) const {
  // The master's own settings are not the terminal's: ask the terminal side.
  const char* name = ptsname(master_);
  if (name == nullptr) return false;
  int fd = open(name, O_RDWR | O_NOCTTY | O_CLOEXEC);
  if (fd < 0) return false;
  bool ok = tcgetattr(fd, settings) == 0;
  close(fd);
  return ok;
}

std::string PtyProcess::output() {
  Pump(0);
  return out_;
}

namespace {

void SetDeadline(grpc::ClientContext& context) {
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
}

}  // namespace

grpc::Status CallCreate(llima::v1::AgentService::Stub& stub,
                        const llima::v1::CreateEnvironmentRequest& request,
                        llima::v1::Environment* env) {
  grpc::ClientContext context;
  SetDeadline(context);
  return stub.CreateEnvironment(&context, request, env);
}

grpc::Status CallCreate(llima::v1::AgentService::Stub& stub, const std::string& project_path,
                        llima::v1::Environment* env) {
  llima::v1::CreateEnvironmentRequest request;
  request.set_project_path(project_path);
  return CallCreate(stub, request, env);
}

grpc::Status CallDelete(llima::v1::AgentService::Stub& stub, const std::string& name) {
  grpc::ClientContext context;
  SetDeadline(context);
  llima::v1::DeleteEnvironmentRequest request;
  request.set_name(name);
  llima::v1::DeleteEnvironmentResponse response;
  return stub.DeleteEnvironment(&context, request, &response);
}

grpc::Status CallList(llima::v1::AgentService::Stub& stub,
                      llima::v1::ListEnvironmentsResponse* response) {
  grpc::ClientContext context;
  SetDeadline(context);
  return stub.ListEnvironments(&context, {}, response);
}

std::string RunSuiteSetUp(const std::function<void()>& body) {
  try {
    body();
  } catch (const std::exception& e) {
    return e.what();
  }
  if (::testing::Test::HasFailure()) return "SetUpTestSuite failed (see above)";
  return "";
}

void RequireRoot(const std::string& why) {
  if (geteuid() != 0) throw std::runtime_error(why);
}

llima::v1::Environment CreateEnvironmentOrFail(llima::v1::AgentService::Stub& stub,
                                               const std::string& project_path) {
  llima::v1::Environment env;
  grpc::Status status = CallCreate(stub, project_path, &env);
  if (!status.ok()) {
    ADD_FAILURE() << "create " << project_path << ": " << status.error_message();
    return {};
  }
  return env;
}

bool HostSees(const std::string& needle) {
  return HostOutput("ps -eo args").find(needle) != std::string::npos;
}

::testing::AssertionResult TakeAwayWhatARebootWould(const AgentProcess& agent,
                                                    const std::string& name) {
  std::string init_pid(absl::StripAsciiWhitespace(HostOutput("pgrep -f '^llima-init " + name + "'")));
  if (init_pid.empty()) return ::testing::AssertionFailure() << "no init of " << name;
  if (kill(std::stoi(init_pid), SIGKILL) != 0 || !GoneWithin("llima-init " + name, 5000)) {
    return ::testing::AssertionFailure() << "the init of " << name << " did not end";
  }
  std::string pin = agent.state_dir() + "/envs/" + name + "/mnt";
  if (umount2(pin.c_str(), MNT_DETACH) != 0) {
    return ::testing::AssertionFailure() << "unmount " << pin << ": " << strerror(errno);
  }
  if (!agent.cgroup_root().empty()) {
    std::string cgroup = agent.cgroup_root() + "/" + name;
    for (int i = 0; i < 100 && rmdir(cgroup.c_str()) != 0; ++i) usleep(20000);
    struct stat st;
    if (stat(cgroup.c_str(), &st) == 0) {
      return ::testing::AssertionFailure() << cgroup << " could not be removed";
    }
  }
  return ::testing::AssertionSuccess();
}

bool GoneWithin(const std::string& needle, int ms) {
  for (int waited = 0; waited < ms; waited += 50) {
    if (!HostSees(needle)) return true;
    usleep(50000);
  }
  return !HostSees(needle);
}

std::vector<std::string> MountPointsBelow(const std::string& dir) {
  std::istringstream lines(ReadFileOrEmpty("/proc/self/mountinfo"));
  std::string line;
  std::vector<std::string> below;
  while (std::getline(lines, line)) {
    std::istringstream fields(line);
    std::string f[5];
    for (auto& x : f) fields >> x;
    // The kernel writes space, tab, newline and backslash in octal: "\040".
    std::string point;
    for (size_t i = 0; i < f[4].size(); ++i) {
      if (f[4][i] == '\\' && i + 3 < f[4].size()) {
        point += static_cast<char>(std::stoi(f[4].substr(i + 1, 3), nullptr, 8));
        i += 3;
      } else {
        point += f[4][i];
      }
    }
    if (point == dir || point.rfind(dir + "/", 0) == 0) below.push_back(point);
  }
  return below;
}

std::string HostOutput(const std::string& command) {
  std::string out;
  FILE* p = popen(command.c_str(), "r");
  if (p == nullptr) return out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
  pclose(p);
  return out;
}

namespace {

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> lines;
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
    lines.emplace_back(line);
  }
  std::sort(lines.begin(), lines.end());
  return lines;
}

std::string Quoted(const std::string& path) { return "'" + path + "'"; }

}  // namespace

ResourceSnapshot TakeResourceSnapshot(const AgentProcess& agent) {
  ResourceSnapshot snapshot;
  snapshot.mounts = MountPointsBelow(agent.state_dir());
  std::sort(snapshot.mounts.begin(), snapshot.mounts.end());
  // Live inits of this agent: in its cgroup subtree (all of them without cgroup v2). Zombies
  // hold nothing but a pid until their parent reaps them.
  std::string cgroups = agent.cgroup_root();
  for (const std::string& line :
       Lines(HostOutput("ps -eo pid=,stat=,args= | awk '$2 !~ /^Z/ && $3 == \"llima-init\"'"))) {
    std::vector<std::string> fields = absl::StrSplit(line, ' ', absl::SkipEmpty());
    const std::string& pid = fields[0];
    if (!cgroups.empty() &&
        ReadFileOrEmpty("/proc/" + pid + "/cgroup").find("/" + agent.cgroup_name() + "/") ==
            std::string::npos) {
      continue;
    }
    snapshot.inits.push_back(line);
  }
  if (!cgroups.empty()) {
    snapshot.cgroups =
        Lines(HostOutput("cd " + Quoted(cgroups) + " 2>/dev/null && find . -mindepth 1 -type d"));
  }
  snapshot.state = Lines(HostOutput("cd " + Quoted(agent.state_dir() + "/envs") +
                                    " 2>/dev/null && find . -maxdepth 2 -mindepth 1"));
  return snapshot;
}

std::string DescribeLeaks(const ResourceSnapshot& before, const ResourceSnapshot& after) {
  std::string leaks;
  auto compare = [&](const char* what, const std::vector<std::string>& was,
                     const std::vector<std::string>& now) {
    for (const std::string& item : now) {
      if (!std::binary_search(was.begin(), was.end(), item)) {
        leaks += std::string(what) + ": " + item + "\n";
      }
    }
  };
  compare("mount", before.mounts, after.mounts);
  compare("process", before.inits, after.inits);
  compare("cgroup", before.cgroups, after.cgroups);
  compare("state", before.state, after.state);
  return leaks;
}

}  // namespace llima::testing
