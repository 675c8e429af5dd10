#include "terminal_session.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

#include <cstdlib>

#include "unique_fd.h"

namespace llima {
namespace {

// Signal handlers can only reach globals.
termios g_saved_terminal;
volatile sig_atomic_t g_raw = 0;
int g_resize_write_fd = -1;

constexpr int kFatalSignals[] = {SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGPIPE, SIGALRM};

void RestoreTerminal() {
  if (g_raw) {
    tcsetattr(STDIN_FILENO, TCSADRAIN, &g_saved_terminal);
    g_raw = 0;
  }
}

// Killed while the terminal is raw: put it back, then die of the same signal.
void OnFatalSignal(int sig) {
  RestoreTerminal();
  signal(sig, SIG_DFL);
  raise(sig);
}

void OnWindowChange(int) {
  int saved_errno = errno;
  (void)!write(g_resize_write_fd, "w", 1);
  errno = saved_errno;
}

void EnterRawMode() {
  termios raw = g_saved_terminal;
  cfmakeraw(&raw);
  if (tcsetattr(STDIN_FILENO, TCSADRAIN, &raw) == 0) g_raw = 1;
}

// Stopped (kill -STOP, a job-control shell's suspend): the terminal is the parent shell's
// meanwhile; back in the foreground, raw again.
void OnContinue(int) {
  int saved_errno = errno;
  if (g_raw) EnterRawMode();
  errno = saved_errno;
}

v1::TerminalSize CurrentSize() {
  v1::TerminalSize size;
  winsize ws{};
  if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_row > 0 && ws.ws_col > 0) {
    size.set_rows(ws.ws_row);
    size.set_cols(ws.ws_col);
  } else {
    size.set_rows(24);
    size.set_cols(80);
  }
  return size;
}

// Raw mode for the lifetime of the object, restored on every way out of it.
class RawTerminal {
 public:
  RawTerminal() {
    if (tcgetattr(STDIN_FILENO, &g_saved_terminal) != 0) return;
    for (int sig : kFatalSignals) signal(sig, OnFatalSignal);
    signal(SIGCONT, OnContinue);
    EnterRawMode();
  }
  ~RawTerminal() {
    RestoreTerminal();
    for (int sig : kFatalSignals) signal(sig, SIG_DFL);
    signal(SIGCONT, SIG_DFL);
  }
};

}  // namespace

void EnsureStandardDescriptors() {
  for (int fd = 0; fd <= 2; ++fd) {
    if (fcntl(fd, F_GETFD) != -1 || errno != EBADF) continue;
    int null_fd = open("/dev/null", O_RDWR);
    if (null_fd >= 0 && null_fd != fd) {
      dup2(null_fd, fd);
      close(null_fd);
    }
  }
}

namespace {

// Run before any library's initializers: a descriptor one of them opened would take a closed
// 0, 1 or 2, and then receive the program's input or output.
void EnsureStandardDescriptorsAtStart(int, char**, char**) { EnsureStandardDescriptors(); }
__attribute__((section(".preinit_array"), used)) void (*const kPreinit)(int, char**, char**) =
    EnsureStandardDescriptorsAtStart;

}  // namespace

std::vector<std::string> TakeCommandAfterDoubleDash(int& argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    if (std::string(argv[i]) == "--") {
      std::vector<std::string> command(argv + i + 1, argv + argc);
      argc = i;
      return command;
    }
  }
  return {};
}

absl::StatusOr<int> RunInEnvironment(AgentClient& client, const v1::Environment& environment,
                                     const std::vector<std::string>& command) {
  v1::ExecStart start;
  start.set_environment(environment.name());
  if (command.empty()) {
    start.add_argv(environment.shell());
    start.add_argv("-l");
  }
  for (const std::string& arg : command) start.add_argv(arg);
  return RunAttached(client, start);
}

absl::StatusOr<int> RunInProject(AgentClient& client, const std::string& project_path,
                                 const std::vector<std::string>& command) {
  if (command.empty()) {
    // The login shell is the environment's own: its record comes first.
    absl::StatusOr<v1::Environment> env = client.Create(project_path);
    if (!env.ok()) return env.status();
    return RunInEnvironment(client, *env, command);
  }
  v1::ExecStart start;
  for (const std::string& arg : command) start.add_argv(arg);
  return RunAttached(client, std::move(start), project_path);
}

absl::StatusOr<int> RunAttached(AgentClient& client, v1::ExecStart start,
                                const std::string& project_path) {
  auto exec = [&](const v1::ExecStart& request, const AgentClient::ExecIo& io) {
    return project_path.empty() ? client.Exec(request, io)
                                : client.ExecInProject(project_path, request, io);
  };
  AgentClient::ExecIo io;
  io.stdin_fd = STDIN_FILENO;
  bool interactive = isatty(STDIN_FILENO) && isatty(STDOUT_FILENO);
  if (!interactive) {
    absl::StatusOr<v1::ExecExited> exited = exec(start, io);
    if (!exited.ok()) return exited.status();
    return exited->exit_code();
  }

  start.set_tty(true);
  *start.mutable_size() = CurrentSize();
  const char* term = getenv("TERM");
  if (term != nullptr && !start.env().contains("TERM")) (*start.mutable_env())["TERM"] = term;

  int resize_pipe[2];
  if (pipe2(resize_pipe, O_CLOEXEC | O_NONBLOCK) != 0) {
    return absl::InternalError("cannot create a pipe");
  }
  UniqueFd resize_read(resize_pipe[0]);
  UniqueFd resize_write(resize_pipe[1]);
  g_resize_write_fd = resize_write.get();
  struct sigaction winch {};
  winch.sa_handler = OnWindowChange;
  winch.sa_flags = SA_RESTART;
  sigaction(SIGWINCH, &winch, nullptr);
  io.resize_fd = resize_read.get();
  io.terminal_size = CurrentSize;

  absl::StatusOr<v1::ExecExited> exited;
  {
    RawTerminal raw;
    exited = exec(start, io);
  }
  signal(SIGWINCH, SIG_DFL);
  g_resize_write_fd = -1;
  if (!exited.ok()) return exited.status();
  return exited->exit_code();
}

}  // namespace llima
