#include "exec_session.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <optional>
#include <system_error>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "exec_child.h"
#include "exec_wire.h"
#include "google/protobuf/util/time_util.h"
#include "grpc_status.h"
#include "log.h"
#include "posix_error.h"
#include "process_title.h"
#include "request_validation.h"
#include "syscalls.h"

namespace llima {
namespace {

// Output is read and sent in messages of up to this size. At 256 KiB, gRPC's thread hand-offs
// per message held a stream of zeros to 0.53-0.75 GB/s on 2 cores; at 1 MiB it runs at
// 0.9-1.2 GB/s. A stream holds at most three messages: two queued and one being written.
constexpr size_t kChunkSize = 1024 * 1024;
constexpr int kPipeSize = 1 << 20;
// After the process has exited, output still trickling in from processes it left running is
// read for this long before the call ends (their pipe may never close).
constexpr int kDrainAfterExitMs = 100;
// Grace between SIGHUP and SIGKILL when the client goes away.
constexpr int kHangupGraceMs = 2000;
constexpr gid_t kTtyGroup = 5;  // "tty" on Debian and Ubuntu

constexpr char kStoppingMessage[] = "llima-agent is stopping";

// Every session of the process: counted against the limit, and told when the agent stops.
class SessionRegistry {
 public:
  static SessionRegistry& Get() {
    static SessionRegistry* registry = new SessionRegistry();  // never destroyed: threads use it
    return *registry;
  }

  void Configure(const ExecLimits& limits) {
    std::lock_guard lock(mu_);
    limits_ = limits;
  }
  ExecLimits limits() const {
    std::lock_guard lock(mu_);
    return limits_;
  }

  // Takes a place for a new session, or says why there is none.
  absl::Status Admit() {
    std::lock_guard lock(mu_);
    if (stopping_) return absl::UnavailableError(kStoppingMessage);
    if (live_ >= limits_.max_sessions) {
      return absl::ResourceExhaustedError(
          absl::StrCat("llima-agent runs its limit of ", limits_.max_sessions,
                       " Exec sessions at once (--max-exec-calls); retry once some have ended"));
    }
    ++live_;
    return absl::OkStatus();
  }
  void Release() {
    std::lock_guard lock(mu_);
    --live_;
    idle_.notify_all();
  }

  void Stop() {
    stopping_ = true;
    uint64_t one = 1;
    (void)!write(stop_.get(), &one, sizeof(one));
  }
  bool stopping() const { return stopping_; }
  // Readable once the agent stops, and from then on (it is never drained).
  int stop_fd() const { return stop_.get(); }

  bool WaitUntilNone(absl::Time deadline) {
    std::unique_lock lock(mu_);
    return idle_.wait_until(lock, absl::ToChronoTime(deadline), [&] { return live_ <= 0; });
  }
  int live() const {
    std::lock_guard lock(mu_);
    return live_;
  }

  // Outputs of detached processes still running when their session ended with the stop.
  void Bequeath(UniqueFd fd) {
    std::lock_guard lock(mu_);
    bequeathed_.push_back(std::move(fd));
  }
  std::vector<UniqueFd> TakeBequeathed() {
    std::lock_guard lock(mu_);
    return std::move(bequeathed_);
  }

 private:
  SessionRegistry() : stop_(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {}

  mutable std::mutex mu_;
  std::condition_variable idle_;
  ExecLimits limits_;
  int live_ = 0;
  std::atomic<bool> stopping_{false};
  UniqueFd stop_;
  std::vector<UniqueFd> bequeathed_;
};

SessionRegistry& Sessions() { return SessionRegistry::Get(); }

// Ends a call refused before a session was made for it.
class RefusedExecReactor : public grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
 public:
  explicit RefusedExecReactor(const absl::Status& why) { Finish(ToGrpcStatus(why)); }
  void OnDone() override { delete this; }
};

class ExecSession;

// The gRPC side: forwards every event to the session. The messages are raw (exec_wire.h).
class ExecReactor : public grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
 public:
  explicit ExecReactor(std::shared_ptr<ExecSession> session) : session_(std::move(session)) {}
  void Begin();
  void OnReadDone(bool ok) override;
  void OnWriteDone(bool ok) override;
  void OnCancel() override;
  void OnDone() override { delete this; }

  grpc::ByteBuffer incoming;
  grpc::ByteBuffer outgoing;

 private:
  std::shared_ptr<ExecSession> session_;
};

class ExecSession : public std::enable_shared_from_this<ExecSession> {
 public:
  // Holds a place admitted by the registry, given back when the session ends.
  ExecSession(EnvironmentManager& environments, ForkServer& fork_server)
      : environments_(environments),
        fork_server_(fork_server),
        limits_(Sessions().limits()),
        wake_(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {}
  ~ExecSession() { Sessions().Release(); }

  void Attach(ExecReactor* reactor) { reactor_ = reactor; }

  // gRPC callbacks.
  void Received(absl::StatusOr<v1::ExecRequest> request) {
    std::lock_guard lock(mu_);
    inbox_.push_back(std::move(request));
    read_in_flight_ = false;
    Wake();
  }
  void ReadClosed() {
    std::lock_guard lock(mu_);
    read_closed_ = true;
    read_in_flight_ = false;
    Wake();
  }
  void WriteDone(bool ok) {
    std::unique_lock lock(mu_);
    write_in_flight_ = false;
    if (!ok) client_gone_ = true;
    // A message already queued goes out from here, at once: handing it to the session's thread
    // first held the connection idle until that thread woke (24-32 µs median, 130-190 µs p90,
    // for each of the 2300-3000 messages of a GiB). The session's thread still wakes, to read
    // more.
    if (TakeNextWriteLocked()) {
      ++callback_writes_;
      lock.unlock();
      reactor_->StartWrite(&reactor_->outgoing);
      lock.lock();
      if (--callback_writes_ == 0) no_callback_writes_.notify_all();
    }
    Wake();
  }
  void Cancelled() {
    std::lock_guard lock(mu_);
    client_gone_ = true;
    Wake();
  }

  void Run();

 private:
  void Wake() {
    uint64_t one = 1;
    (void)!write(wake_.get(), &one, sizeof(one));
  }
  absl::Status Start(const v1::ExecStart& start);
  // Moves queued requests to the process. Returns an error for a request that ends the call.
  absl::Status ProcessInbox();
  void ReadOutput(UniqueFd& fd, bool is_stdout);
  void FlushStdin();
  void SendNext();
  // Under mu_: moves the next queued message into the reactor's buffer and marks it in flight,
  // if one may be written now (none in flight, the call neither finishing nor gone).
  bool TakeNextWriteLocked();
  // Issues the next read unless one is pending, the stream is closed or stdin is backed up.
  void RequestNextRead();
  // The processes of the exec's session (besides its leader), found in the cgroup.
  std::vector<pid_t> SessionMembers() const;
  void SignalSession(int sig) const;
  // Ends the exec's session: SIGHUP, then SIGKILL after the grace period.
  void EndSession();
  // After a detached exec's client went away: keeps its output flowing nowhere until it exits.
  void KeepDetachedRunning();
  // At the agent's stop: leaves the output of a detached process that still runs to
  // HandOverDetachedOutput.
  void BequeathOutput();
  // Opens a pseudo-terminal in the environment's own devpts, keeps the master and returns the
  // terminal the process gets.
  absl::StatusOr<UniqueFd> OpenTerminal(const LiveEnvironment& env, const v1::TerminalSize& size);
  absl::Status Resize(const v1::TerminalSize& size);
  // Ends the call with `status`, after `last` if given (written together with the status).
  // Only on the session's thread, never from a gRPC reaction: it waits for WriteDone.
  void Finish(const absl::Status& status, std::optional<grpc::ByteBuffer> last = std::nullopt);
  // The first request, or why there is none: the stream ended, the start timeout passed or the
  // agent is stopping.
  absl::Status WaitForStart(v1::ExecRequest* first);
  // Waits for a wake-up, the agent's stop, or `timeout_ms` (-1: no timeout).
  void Sleep(int timeout_ms);

  EnvironmentManager& environments_;
  ForkServer& fork_server_;
  const ExecLimits limits_;
  ExecReactor* reactor_ = nullptr;  // valid until Finish()
  UniqueFd wake_;

  std::mutex mu_;
  std::deque<absl::StatusOr<v1::ExecRequest>> inbox_;
  bool read_closed_ = false;
  bool read_in_flight_ = false;
  bool write_in_flight_ = false;
  bool client_gone_ = false;
  // Messages waiting for the one in flight (only the session's thread adds to it).
  std::deque<grpc::ByteBuffer> outbox_;
  // Set before the call is finished: WriteDone starts no more writes.
  bool finishing_ = false;
  // WriteDone calls in StartWrite; the call is finished only when there are none.
  int callback_writes_ = 0;
  std::condition_variable no_callback_writes_;

  // Owned by the session thread.
  std::string env_name_;
  bool detached_ = false;
  SpawnedChild child_;
  pid_t ns_pid_ = 0;  // the child's pid in the environment, as it reported it
  UniqueFd pidfd_;
  UniqueFd terminal_;  // pty master when the process runs on a terminal
  UniqueFd cgroup_;    // the environment's cgroup directory
  UniqueFd stdin_;
  UniqueFd stdout_;
  UniqueFd stderr_;
  std::string stdin_pending_;
  bool close_stdin_after_flush_ = false;
  absl::Time started_at_;
};

void ExecReactor::Begin() {
  StartRead(&incoming);
}

void ExecReactor::OnReadDone(bool ok) {
  if (!ok) return session_->ReadClosed();
  session_->Received(DecodeExecRequest(&incoming));
}

void ExecReactor::OnWriteDone(bool ok) { session_->WriteDone(ok); }

void ExecReactor::OnCancel() { session_->Cancelled(); }

void ExecSession::Sleep(int timeout_ms) {
  pollfd pfds[2] = {{wake_.get(), POLLIN, 0}, {Sessions().stop_fd(), POLLIN, 0}};
  poll(pfds, 2, timeout_ms);
  uint64_t drained;
  (void)!read(wake_.get(), &drained, sizeof(drained));
}

absl::Status ExecSession::WaitForStart(v1::ExecRequest* first) {
  absl::Time deadline = started_at_ + limits_.start_timeout;
  for (;;) {
    {
      std::lock_guard lock(mu_);
      if (!inbox_.empty()) {
        absl::StatusOr<v1::ExecRequest> request = std::move(inbox_.front());
        inbox_.pop_front();
        if (!request.ok()) return request.status();
        *first = *std::move(request);
        return absl::OkStatus();
      }
      if (read_closed_ || client_gone_) {
        return absl::InvalidArgumentError("the stream ended before a start message");
      }
    }
    if (Sessions().stopping()) return absl::UnavailableError(kStoppingMessage);
    absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) {
      // A stream that never starts would otherwise hold its place and thread for good.
      return absl::DeadlineExceededError(
          absl::StrCat("no start message within ", absl::FormatDuration(limits_.start_timeout),
                       ": the first request of an Exec call must carry start"));
    }
    Sleep(static_cast<int>(absl::ToInt64Milliseconds(absl::Ceil(left, absl::Milliseconds(1)))));
  }
}

void ExecSession::Run() {
  pthread_setname_np(pthread_self(), "exec-session");
  started_at_ = absl::Now();
  v1::ExecRequest first;
  if (absl::Status s = WaitForStart(&first); !s.ok()) return Finish(s);
  if (absl::Status s = ValidateFirstExecRequest(first); !s.ok()) return Finish(s);
  if (absl::Status s = Start(first.start()); !s.ok()) return Finish(s);

  {
    std::lock_guard lock(mu_);
    v1::ExecResponse started;
    started.mutable_started()->set_pid(ns_pid_);
    outbox_.push_back(EncodeExecResponse(started));
  }
  SendNext();
  RequestNextRead();

  std::optional<int> wait_status;
  absl::Time exited_at;
  for (;;) {
    absl::Status request_error = ProcessInbox();
    bool gone;
    bool writing;
    size_t queued;
    {
      std::lock_guard lock(mu_);
      gone = client_gone_;
      writing = write_in_flight_;
      queued = outbox_.size();
    }
    bool stopping = request_error.ok() && !gone && Sessions().stopping();
    if (!request_error.ok() || gone || stopping) {
      if (gone) {
        Finish(absl::CancelledError("the client went away"));
      } else if (stopping) {
        Finish(absl::UnavailableError(
            absl::StrCat(kStoppingMessage, detached_ ? "; the detached process keeps running"
                                                     : "; the process is ended as when its "
                                                       "client goes away")));
      } else {
        Finish(request_error);
      }
      if (detached_ && gone) return KeepDetachedRunning();
      if (detached_ && stopping) return BequeathOutput();
      if (!wait_status) EndSession();
      return;
    }
    if (!writing) SendNext();

    if (!wait_status) wait_status = child_.exit->status();
    if (wait_status && exited_at == absl::Time()) exited_at = absl::Now();
    bool outputs_open = stdout_ || stderr_;
    if (wait_status && !outputs_open && queued == 0 && !writing) break;

    // Do not read more output than the client has taken: one chunk per stream in flight.
    std::vector<pollfd> pfds;
    pfds.push_back({wake_.get(), POLLIN, 0});
    pfds.push_back({Sessions().stop_fd(), POLLIN, 0});
    // Once the exit is known its eventfd stays readable: polling it would spin.
    if (!wait_status) pfds.push_back({child_.exit->fd(), POLLIN, 0});
    bool out_blocked = queued >= 2;
    if (stdout_ && !out_blocked) pfds.push_back({stdout_.get(), POLLIN, 0});
    if (stderr_ && !out_blocked) pfds.push_back({stderr_.get(), POLLIN, 0});
    if (stdin_ && !stdin_pending_.empty()) pfds.push_back({stdin_.get(), POLLOUT, 0});
    int timeout = -1;
    if (wait_status && outputs_open && !out_blocked) {
      int64_t left = kDrainAfterExitMs - absl::ToInt64Milliseconds(absl::Now() - exited_at);
      timeout = static_cast<int>(std::max<int64_t>(left, 0));
    }
    int n = poll(pfds.data(), pfds.size(), timeout);
    if (n < 0 && errno != EINTR) return Finish(PosixError(errno, "poll"));
    if (n == 0 && wait_status) {
      // Processes left behind keep the pipes open; the call is over all the same.
      stdout_.reset();
      stderr_.reset();
      continue;
    }
    for (const pollfd& p : pfds) {
      if (p.revents == 0) continue;
      if (p.fd == wake_.get()) {
        uint64_t drained;
        (void)!read(wake_.get(), &drained, sizeof(drained));
      } else if (stdout_ && p.fd == stdout_.get()) {
        ReadOutput(stdout_, true);
      } else if (stderr_ && p.fd == stderr_.get()) {
        ReadOutput(stderr_, false);
      } else if (stdin_ && p.fd == stdin_.get()) {
        FlushStdin();
      }
    }
  }

  int status = *wait_status;
  if (status < 0) {
    return Finish(absl::InternalError("lost track of the process: the fork server exited"));
  }
  v1::ExecResponse exited;
  if (WIFSIGNALED(status)) {
    exited.mutable_exited()->set_signal(WTERMSIG(status));
    exited.mutable_exited()->set_exit_code(128 + WTERMSIG(status));
  } else {
    exited.mutable_exited()->set_exit_code(WEXITSTATUS(status));
  }
  // The output still queued goes first; the exit status then goes out with the call's status,
  // in one write: the client learns both at once.
  for (;;) {
    bool done;
    {
      std::lock_guard lock(mu_);
      if (client_gone_) return Finish(absl::CancelledError("the client went away"));
      done = outbox_.empty() && !write_in_flight_;
    }
    if (done) break;
    // A client that does not take the last messages would hold the stop up.
    if (Sessions().stopping()) return Finish(absl::UnavailableError(kStoppingMessage));
    SendNext();
    Sleep(-1);
  }
  Finish(absl::OkStatus(), EncodeExecResponse(exited));
}

absl::Status ExecSession::Start(const v1::ExecStart& start) {
  env_name_ = start.environment();
  detached_ = start.detached();
  absl::StatusOr<std::shared_ptr<const LiveEnvironment>> env =
      start.project_path().empty() ? environments_.FindRunning(env_name_)
                                   : environments_.FindRunningFor(start.project_path());
  if (!env.ok()) return env.status();
  env_name_ = (*env)->record.name();

  internal::SpawnExec spec;
  for (const std::string& arg : start.argv()) spec.add_argv(arg);
  std::string search_path;
  for (std::string& var :
       BuildExecEnvironment((*env)->record, (*env)->home(), start, &search_path)) {
    spec.add_envp(std::move(var));
  }
  spec.set_search_path(search_path);
  spec.set_working_dir(start.working_dir().empty() ? (*env)->record.project_path()
                                                   : start.working_dir());
  spec.set_uid((*env)->record.uid());
  spec.set_gid((*env)->record.gid());

  // The child's ends of its standard streams.
  UniqueFd in_r, out_w, err_w;
  if (start.tty()) {
    spec.set_tty(true);
    absl::StatusOr<UniqueFd> terminal = OpenTerminal(**env, start.size());
    if (!terminal.ok()) return terminal.status();
    in_r = std::move(*terminal);
    out_w.reset(dup(in_r.get()));
    err_w.reset(dup(in_r.get()));
  } else {
    int in[2], out[2], err[2];
    if (pipe2(in, O_CLOEXEC) != 0) return PosixError(errno, "create stdin pipe");
    in_r.reset(in[0]);
    stdin_.reset(in[1]);
    if (pipe2(out, O_CLOEXEC) != 0) return PosixError(errno, "create stdout pipe");
    stdout_.reset(out[0]);
    out_w.reset(out[1]);
    if (pipe2(err, O_CLOEXEC) != 0) return PosixError(errno, "create stderr pipe");
    stderr_.reset(err[0]);
    err_w.reset(err[1]);
    fcntl(stdout_.get(), F_SETPIPE_SZ, kPipeSize);
  }
  for (const UniqueFd* fd : {&stdin_, &stdout_, &stderr_}) {
    if (*fd) fcntl(fd->get(), F_SETFL, fcntl(fd->get(), F_GETFL) | O_NONBLOCK);
  }
  int error_pipe[2];
  if (pipe2(error_pipe, O_CLOEXEC) != 0) return PosixError(errno, "create error pipe");
  UniqueFd error_r(error_pipe[0]);
  UniqueFd error_w(error_pipe[1]);

  std::vector<int> fds = {(*env)->mnt_ns.get(), (*env)->pid_ns.get(), (*env)->ipc_ns.get(),
                          (*env)->uts_ns.get(), in_r.get(),           out_w.get(),
                          err_w.get(),          error_w.get()};
  if ((*env)->cgroup) {
    fds.push_back((*env)->cgroup.get());
    cgroup_.reset(fcntl((*env)->cgroup.get(), F_DUPFD_CLOEXEC, 0));
  }
  absl::StatusOr<SpawnedChild> child = fork_server_.SpawnExec(spec, fds);
  if (!child.ok()) return child.status();
  child_ = std::move(*child);
  pidfd_ = std::move(child_.pidfd);
  in_r.reset();
  out_w.reset();
  err_w.reset();
  error_w.reset();

  // The child's pid in the environment, then an ExecSetupError if entering it failed; the pipe
  // closes when execve succeeds (close-on-exec) or the child exits (exec_child.h).
  struct {
    int32_t pid;
    ExecSetupError setup;
  } report{};
  static_assert(sizeof(report) == sizeof(int32_t) + sizeof(ExecSetupError), "as the child writes");
  auto* into = reinterpret_cast<char*>(&report);
  size_t got = 0;
  while (got < sizeof(report)) {
    ssize_t n = read(error_r.get(), into + got, sizeof(report) - got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    got += static_cast<size_t>(n);
  }
  if (got >= sizeof(report.pid)) ns_pid_ = report.pid;
  if (got == sizeof(report)) {
    ExecSetupError& setup = report.setup;
    child_.exit->Wait();
    setup.step[sizeof(setup.step) - 1] = '\0';
    absl::Status failure = PosixError(
        setup.error_number, absl::StrCat("start ", start.argv(0), " in ", env_name_, ": ",
                                         setup.step));
    if (absl::string_view(setup.step) == "change to the working directory") {
      return absl::FailedPreconditionError(
          absl::StrCat("working directory ", spec.working_dir(), " in ", env_name_, ": ",
                       strerror(setup.error_number)));
    }
    return failure;
  }
  if (detached_) {
    v1::DetachedProcess process;
    process.set_pid(ns_pid_);
    *process.mutable_argv() = start.argv();
    *process.mutable_started_at() =
        google::protobuf::util::TimeUtil::NanosecondsToTimestamp(absl::ToUnixNanos(absl::Now()));
    environments_.AddDetached(env_name_, std::move(process), UniqueFd(dup(pidfd_.get())));
  }
  LogOperation("exec", env_name_, absl::Now() - started_at_, absl::OkStatus(),
               absl::StrCat("pid=", ns_pid_, " argv0=", start.argv(0),
                            detached_ ? " detached" : ""));
  return absl::OkStatus();
}

absl::Status ExecSession::ProcessInbox() {
  std::deque<absl::StatusOr<v1::ExecRequest>> requests;
  bool read_closed;
  {
    std::lock_guard lock(mu_);
    requests.swap(inbox_);
    read_closed = read_closed_;
  }
  for (absl::StatusOr<v1::ExecRequest>& parsed : requests) {
    if (!parsed.ok()) return parsed.status();
    v1::ExecRequest& request = *parsed;
    if (auto s = ValidateLaterExecRequest(request); !s.ok()) return s;
    switch (request.request_case()) {
      case v1::ExecRequest::kStdin:
        if (close_stdin_after_flush_) {
          return absl::FailedPreconditionError("stdin data after close_stdin");
        }
        // The process may have closed its stdin already; its data is then discarded.
        if (stdin_) stdin_pending_ += request.stdin();
        break;
      case v1::ExecRequest::kCloseStdin:
        // A terminal stays open for the session; the end of input is its EOF character, as
        // when ^D is typed (the stream ends a program reading the terminal in canonical mode).
        if (terminal_) {
          stdin_pending_ += '\x04';
        } else {
          close_stdin_after_flush_ = true;
        }
        break;
      case v1::ExecRequest::kResize:
        // A bad size is ignored (and logged) rather than ending the user's session.
        if (terminal_) {
          if (auto s = Resize(request.resize()); !s.ok()) {
            LogOperation("resize", env_name_, absl::ZeroDuration(), s);
          }
        }
        break;
      case v1::ExecRequest::kSignal: {
        int sig = request.signal();
        // With a terminal the signal goes where ^C would send it: the terminal's foreground
        // process group, named by the kernel (TIOCSIG), not by a number that may be stale.
        if (!(terminal_ && ioctl(terminal_.get(), TIOCSIG, sig) == 0) && pidfd_) {
          PidfdSendSignal(pidfd_.get(), sig);
        }
        break;
      }
      default:  // start again, or nothing: refused above
        break;
    }
  }
  // The client finished writing: end of input for the process once pending data is written.
  if (read_closed && !terminal_) close_stdin_after_flush_ = true;
  FlushStdin();
  return absl::OkStatus();
}

void ExecSession::RequestNextRead() {
  // Ask for the next message only once this one's data is on its way to the process: a process
  // that does not read its stdin holds the client back instead of filling the agent's memory.
  if (!stdin_pending_.empty()) return;
  {
    std::lock_guard lock(mu_);
    if (read_in_flight_ || read_closed_ || client_gone_ || !inbox_.empty()) return;
    read_in_flight_ = true;
  }
  // Reactor calls are never made under mu_: gRPC may run the completion callback, which takes
  // mu_, before StartRead returns. (This thread makes them all but Begin and the writes
  // WriteDone starts.)
  reactor_->StartRead(&reactor_->incoming);
}

void ExecSession::FlushStdin() {
  while (stdin_ && !stdin_pending_.empty()) {
    ssize_t n = write(stdin_.get(), stdin_pending_.data(), stdin_pending_.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) return;
      // EPIPE: the process closed its stdin; what it did not read is discarded.
      stdin_pending_.clear();
      stdin_.reset();
      break;
    }
    stdin_pending_.erase(0, static_cast<size_t>(n));
  }
  if (stdin_pending_.empty() && close_stdin_after_flush_) stdin_.reset();
  RequestNextRead();
}

void ExecSession::ReadOutput(UniqueFd& fd, bool is_stdout) {
  // The message is made the size of what is there to read, so that a keystroke's echo queues a
  // few bytes, not a chunk. Nothing there (the end of the stream): a small read finds out.
  int available = 0;
  if (ioctl(fd.get(), FIONREAD, &available) != 0 || available <= 0) available = 4096;
  grpc::ByteBuffer message;
  ssize_t n = ReadOutputMessage(fd.get(), std::min(static_cast<size_t>(available), kChunkSize),
                                is_stdout, &message);
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
  // A terminal's master reads EIO once no process holds the terminal any more: its end.
  if (n <= 0) {
    fd.reset();
    return;
  }
  {
    std::lock_guard lock(mu_);
    outbox_.push_back(std::move(message));
  }
  SendNext();
}

bool ExecSession::TakeNextWriteLocked() {
  if (write_in_flight_ || finishing_ || client_gone_ || outbox_.empty()) return false;
  reactor_->outgoing.Swap(&outbox_.front());
  outbox_.pop_front();
  write_in_flight_ = true;
  return true;
}

void ExecSession::SendNext() {
  {
    std::lock_guard lock(mu_);
    if (!TakeNextWriteLocked()) return;
  }
  reactor_->StartWrite(&reactor_->outgoing);
}

absl::StatusOr<UniqueFd> ExecSession::OpenTerminal(const LiveEnvironment& env,
                                                   const v1::TerminalSize& size) {
  // Through the environment's root: the pty belongs to its devpts instance, so inside it is
  // /dev/pts/N and nothing of the VM's terminals is involved.
  open_how how{};
  how.flags = O_RDWR | O_NOCTTY | O_CLOEXEC;
  how.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
  terminal_.reset(Openat2(env.root_dir.get(), "dev/pts/ptmx", &how));
  if (!terminal_) return PosixError(errno, "open the environment's /dev/pts/ptmx");
  int unlock = 0;
  if (ioctl(terminal_.get(), TIOCSPTLCK, &unlock) != 0) return PosixError(errno, "unlock pty");
  UniqueFd peer(ioctl(terminal_.get(), TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC));
  if (!peer) return PosixError(errno, "open the pty's terminal");
  // What grantpt would do: the terminal belongs to its user, writable by the tty group.
  if (fchown(peer.get(), env.record.uid(), kTtyGroup) != 0 || fchmod(peer.get(), 0620) != 0) {
    return PosixError(errno, "give the terminal to the environment's user");
  }
  v1::TerminalSize initial = size;
  if (initial.rows() == 0 && initial.cols() == 0) {
    initial.set_rows(24);
    initial.set_cols(80);
  }
  if (auto s = Resize(initial); !s.ok()) return s;
  stdout_.reset(dup(terminal_.get()));
  stdin_.reset(dup(terminal_.get()));
  if (!stdout_ || !stdin_) return PosixError(errno, "duplicate the pty master");
  return peer;
}

absl::Status ExecSession::Resize(const v1::TerminalSize& size) {
  if (auto s = ValidateTerminalSize(size); !s.ok()) return s;
  winsize ws{};
  ws.ws_row = static_cast<unsigned short>(size.rows());
  ws.ws_col = static_cast<unsigned short>(size.cols());
  // The kernel sends SIGWINCH to the terminal's foreground process group.
  if (ioctl(terminal_.get(), TIOCSWINSZ, &ws) != 0) return PosixError(errno, "resize terminal");
  return absl::OkStatus();
}

std::vector<pid_t> ExecSession::SessionMembers() const {
  // The process leads its own session (setsid in the child); its members, job-control groups
  // included, are the processes of the environment's cgroup with that session id.
  std::vector<pid_t> members;
  if (cgroup_) {
    std::string procs;
    UniqueFd fd(openat(cgroup_.get(), "cgroup.procs", O_RDONLY | O_CLOEXEC));
    char buf[8192];
    ssize_t n;
    while (fd && (n = read(fd.get(), buf, sizeof(buf))) > 0) procs.append(buf, n);
    for (absl::string_view line : absl::StrSplit(procs, '\n', absl::SkipEmpty())) {
      pid_t pid;
      if (absl::SimpleAtoi(line, &pid) && getsid(pid) == child_.pid) members.push_back(pid);
    }
  }
  return members;
}

void ExecSession::SignalSession(int sig) const {
  kill(-child_.pid, sig);
  if (pidfd_) PidfdSendSignal(pidfd_.get(), sig);
  for (pid_t pid : SessionMembers()) kill(pid, sig);
}

void ExecSession::EndSession() {
  // SIGHUP as a hung-up terminal would send, then SIGKILL for whatever remains of the session
  // after the grace period, whether or not its leader is still there.
  SignalSession(SIGHUP);
  absl::Time deadline = absl::Now() + absl::Milliseconds(kHangupGraceMs);
  while (absl::Now() < deadline) {
    if (child_.exit->status() && SessionMembers().empty()) return;
    absl::SleepFor(absl::Milliseconds(20));
  }
  SignalSession(SIGKILL);
}

void ExecSession::KeepDetachedRunning() {
  // Nobody reads any more, but closing the pipes or the terminal would end the process with
  // SIGPIPE or SIGHUP at its next write: drain and discard its output until it exits.
  stdin_.reset();
  std::string discard(kChunkSize, '\0');
  while (!child_.exit->status() && (stdout_ || stderr_) && !Sessions().stopping()) {
    std::vector<pollfd> pfds = {{child_.exit->fd(), POLLIN, 0}, {Sessions().stop_fd(), POLLIN, 0}};
    if (stdout_) pfds.push_back({stdout_.get(), POLLIN, 0});
    if (stderr_) pfds.push_back({stderr_.get(), POLLIN, 0});
    if (poll(pfds.data(), pfds.size(), -1) < 0 && errno != EINTR) return;
    for (UniqueFd* fd : {&stdout_, &stderr_}) {
      if (!*fd) continue;
      ssize_t n = read(fd->get(), discard.data(), discard.size());
      if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) fd->reset();
    }
  }
  if (Sessions().stopping()) BequeathOutput();
}

void ExecSession::BequeathOutput() {
  if (child_.exit->status()) return;
  // On a terminal stdout_ is a duplicate of the master: keeping it keeps the terminal.
  for (UniqueFd* fd : {&stdout_, &stderr_}) {
    if (*fd) Sessions().Bequeath(std::move(*fd));
  }
}

void ExecSession::Finish(const absl::Status& status, std::optional<grpc::ByteBuffer> last) {
  if (!status.ok() || child_.pid == 0) {
    LogOperation("exec", env_name_, absl::Now() - started_at_, status);
  } else {
    std::optional<int> wait_status = child_.exit ? child_.exit->status() : std::nullopt;
    LogOperation("exit", env_name_, absl::Now() - started_at_, status,
                 absl::StrCat("pid=", ns_pid_, " status=", wait_status.value_or(-1)));
  }
  ExecReactor* reactor;
  {
    // No write may start once the call is finished.
    std::unique_lock lock(mu_);
    finishing_ = true;
    no_callback_writes_.wait(lock, [&] { return callback_writes_ == 0; });
    reactor = std::exchange(reactor_, nullptr);
  }
  if (last) {
    reactor->outgoing.Swap(&*last);
    reactor->StartWriteAndFinish(&reactor->outgoing, grpc::WriteOptions(), ToGrpcStatus(status));
  } else {
    reactor->Finish(ToGrpcStatus(status));
  }
}

// Runs every session on a thread of its own, and keeps a few threads that have finished one for
// the next: starting a thread was 0.1-0.25 ms of each Exec. A kept thread leaves after
// kThreadLinger without work.
class SessionThreads {
 public:
  static SessionThreads& Get() {
    static auto* threads = new SessionThreads();  // never destroyed: its threads may wait on it
    return *threads;
  }

  // Throws std::system_error, as std::thread does, when no thread can be started.
  void Run(std::shared_ptr<ExecSession> session) {
    {
      std::lock_guard lock(mu_);
      if (waiting_ > static_cast<int>(queue_.size())) {
        queue_.push_back(std::move(session));
        work_.notify_one();
        return;
      }
    }
    std::thread([this, session = std::move(session)]() mutable { Work(std::move(session)); })
        .detach();
  }

 private:
  static constexpr int kKeptThreads = 2;
  static constexpr auto kThreadLinger = std::chrono::seconds(5);

  void Work(std::shared_ptr<ExecSession> session) {
    for (;;) {
      session->Run();
      session.reset();
      std::unique_lock lock(mu_);
      if (waiting_ >= kKeptThreads) return;
      ++waiting_;
      bool got = work_.wait_for(lock, kThreadLinger, [&] { return !queue_.empty(); });
      --waiting_;
      if (!got) return;
      session = std::move(queue_.front());
      queue_.pop_front();
    }
  }

  std::mutex mu_;
  std::condition_variable work_;
  int waiting_ = 0;  // threads waiting for work
  std::deque<std::shared_ptr<ExecSession>> queue_;
};

}  // namespace

void ConfigureExecSessions(const ExecLimits& limits) { Sessions().Configure(limits); }

grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* NewExecReactor(
    EnvironmentManager& environments, ForkServer& fork_server) {
  if (absl::Status admitted = Sessions().Admit(); !admitted.ok()) {
    LogOperation("exec", "", absl::ZeroDuration(), admitted);
    return new RefusedExecReactor(admitted);
  }
  auto session = std::make_shared<ExecSession>(environments, fork_server);
  auto* reactor = new ExecReactor(session);
  session->Attach(reactor);
  reactor->Begin();
  try {
    SessionThreads::Get().Run(session);
  } catch (const std::system_error& e) {
    absl::Status refused = absl::ResourceExhaustedError(
        absl::StrCat("llima-agent cannot start a thread for the call: ", e.what()));
    LogOperation("exec", "", absl::ZeroDuration(), refused);
    reactor->Finish(ToGrpcStatus(refused));
  }
  return reactor;
}

void StopExecSessions() { Sessions().Stop(); }

bool WaitForExecSessions(absl::Time deadline) { return Sessions().WaitUntilNone(deadline); }

int LiveExecSessions() { return Sessions().live(); }

void HandOverDetachedOutput() {
  std::vector<UniqueFd> outputs = Sessions().TakeBequeathed();
  if (outputs.empty()) return;
  std::vector<pollfd> pfds;
  for (const UniqueFd& fd : outputs) pfds.push_back({fd.get(), POLLIN, 0});
  std::sort(pfds.begin(), pfds.end(), [](const pollfd& a, const pollfd& b) { return a.fd < b.fd; });
  std::vector<char> discard(kChunkSize);
  sigset_t no_signals;
  sigemptyset(&no_signals);
  pid_t pid = fork();
  if (pid < 0) {
    LogEvent(absl::StrCat("cannot keep the output of detached processes flowing: fork: ",
                          strerror(errno)));
    return;
  }
  if (pid == 0) {
    // The agent's other threads may hold locks at the fork: only system calls from here (the
    // title fits in place, without allocating).
    sigprocmask(SIG_SETMASK, &no_signals, nullptr);
    SetProcessTitle("llima-drain");
    unsigned next = 0;
    for (const pollfd& p : pfds) {
      if (static_cast<unsigned>(p.fd) > next) close_range(next, p.fd - 1, 0);
      next = p.fd + 1;
    }
    close_range(next, ~0U, 0);
    size_t open = pfds.size();
    while (open > 0) {
      if (poll(pfds.data(), pfds.size(), -1) < 0 && errno != EINTR) break;
      for (pollfd& p : pfds) {
        if (p.fd < 0 || p.revents == 0) continue;
        ssize_t n = read(p.fd, discard.data(), discard.size());
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
          close(p.fd);
          p.fd = -1;
          --open;
        }
      }
    }
    _exit(0);
  }
  LogEvent(absl::StrCat("the output of detached processes still running goes to process ", pid,
                        " (llima-drain), which discards it until they end"));
}

}  // namespace llima
