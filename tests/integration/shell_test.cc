// `llima-box shell` and `llima-sandbox` at a real terminal (a pty opened by the test), and with
// plain streams.

#include <signal.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include "absl/strings/str_cat.h"
#include "agent_harness.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace llima::testing {
namespace {

using ::testing::HasSubstr;

constexpr uid_t kOwner = 4242;

class ShellTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    setup_error_ = RunSuiteSetUp([] {
      RequireRoot("integration tests need root");
      scratch_ = new ScratchDir();
      agent_ = new AgentProcess(scratch_->path());
      agent_->Start();
      project_ = scratch_->MakeDir("projects/shelled", kOwner, kOwner);
    });
  }
  void SetUp() override { ASSERT_EQ(setup_error_, "") << "the suite's set-up failed"; }
  static void TearDownTestSuite() {
    delete agent_;
    delete scratch_;
  }
  void TearDown() override {
    if (HasFailure() && agent_ != nullptr) std::cerr << "---- agent log ----\n" << agent_->log();
  }

  static std::vector<std::string> Env() {
    return {"LLIMA_BOX_SOCKET=" + agent_->socket_path(), "TERM=xterm"};
  }
  static std::unique_ptr<PtyProcess> Shell(std::vector<std::string> command = {},
                                           unsigned short rows = 24, unsigned short cols = 80) {
    std::vector<std::string> argv = {LLIMA_BOX_BINARY, "shell", project_};
    if (!command.empty()) argv.push_back("--");
    argv.insert(argv.end(), command.begin(), command.end());
    return std::make_unique<PtyProcess>(argv, Env(), rows, cols);
  }

  static inline std::string setup_error_;
  static inline ScratchDir* scratch_ = nullptr;
  static inline AgentProcess* agent_ = nullptr;
  static inline std::string project_;
};

TEST_F(ShellTest, OpensALoginShellInTheProjectOnATerminal) {
  auto shell = Shell();
  termios before;
  ASSERT_TRUE(shell->TerminalSettings(&before));
  ASSERT_NE(before.c_lflag & ICANON, 0u);
  shell->Write("echo \"[$(tty)] [$(pwd)] [$(whoami)] [$TERM]\"\r");
  EXPECT_TRUE(shell->WaitFor("[/dev/pts/")) << shell->output();
  EXPECT_TRUE(shell->WaitFor(absl::StrCat("] [", project_, "] [shelled-"))) << shell->output();
  EXPECT_TRUE(shell->WaitFor("] [xterm]")) << shell->output();
  shell->Write("exit 7\r");
  EXPECT_EQ(shell->Wait(), 7);
  termios after;
  ASSERT_TRUE(shell->TerminalSettings(&after));
  EXPECT_EQ(after.c_lflag & (ICANON | ECHO | ISIG), before.c_lflag & (ICANON | ECHO | ISIG))
      << "the terminal was left in raw mode";
}

TEST_F(ShellTest, WindowSizeFollowsTheTerminal) {
  auto shell = Shell({"sh", "-c", "stty size; trap 'stty size' WINCH; echo ready; "
                                  "while :; do sleep 0.05; done"},
                     30, 90);
  EXPECT_TRUE(shell->WaitFor("30 90")) << shell->output();
  ASSERT_TRUE(shell->WaitFor("ready"));
  shell->Resize(45, 120);
  EXPECT_TRUE(shell->WaitFor("45 120")) << shell->output();
  shell->Write("\x03");
  EXPECT_EQ(shell->Wait(), 128 + SIGINT);
}

TEST_F(ShellTest, CtrlCStopsACommandAndTheShellSurvives) {
  auto shell = Shell({"bash", "--norc", "-i"});
  shell->Write("sleep 965\r");
  for (int i = 0; i < 40 && !HostSees("sleep 965"); ++i) usleep(50000);
  ASSERT_TRUE(HostSees("sleep 965"));
  shell->Write("\x03");
  EXPECT_TRUE(GoneWithin("sleep 965", 3000));
  shell->Write("echo status-$?\r");
  EXPECT_TRUE(shell->WaitFor("status-130")) << shell->output();
  shell->Write("exit\r");
  EXPECT_EQ(shell->Wait(), 0) << "the status of the last command, the echo";
}

TEST_F(ShellTest, ExitStatusIsTheCommandsOr128PlusSignal) {
  EXPECT_EQ(Shell({"bash", "-c", "kill -9 $$"})->Wait(), 137);
  EXPECT_EQ(Shell({"sh", "-c", "exit 42"})->Wait(), 42);
}

TEST_F(ShellTest, KillingTheCliEndsItsProcesses) {
  // The number is computed inside, so that only the real process, not the CLI's own command
  // line, shows "sleep 964".
  auto shell = Shell({"sh", "-c", "sleep $((960+4)) & sleep $((960+4))"});
  for (int i = 0; i < 40 && !HostSees("sleep 964"); ++i) usleep(50000);
  ASSERT_TRUE(HostSees("sleep 964"));
  kill(shell->pid(), SIGKILL);
  shell->Wait();
  EXPECT_TRUE(GoneWithin("sleep 964", 5000));
}

TEST_F(ShellTest, TerminatedCliRestoresTheTerminal) {
  auto shell = Shell({"sh", "-c", "exec sleep $((960+3))"});
  for (int i = 0; i < 40 && !HostSees("sleep 963"); ++i) usleep(50000);
  termios raw;
  ASSERT_TRUE(shell->TerminalSettings(&raw));
  EXPECT_EQ(raw.c_lflag & ICANON, 0u) << "raw mode while the shell runs";
  kill(shell->pid(), SIGTERM);
  EXPECT_EQ(shell->Wait(), 128 + SIGTERM);
  termios after;
  ASSERT_TRUE(shell->TerminalSettings(&after));
  EXPECT_NE(after.c_lflag & ICANON, 0u) << "the terminal was left in raw mode";
  EXPECT_TRUE(GoneWithin("sleep 963", 5000));
}

TEST_F(ShellTest, WithoutATerminalStreamsStaySeparate) {
  std::string cmd = absl::StrCat("LLIMA_BOX_SOCKET='", agent_->socket_path(), "' '",
                                 LLIMA_BOX_BINARY, "' shell '", project_,
                                 "' -- sh -c 'echo out; echo err >&2; test -t 0 || echo no-tty; "
                                 "exit 3' 2>", scratch_->path(), "/err.txt </dev/null");
  FILE* p = popen(cmd.c_str(), "r");
  char buf[256] = {};
  size_t n = fread(buf, 1, sizeof(buf) - 1, p);
  int status = pclose(p);
  EXPECT_EQ(std::string(buf, n), "out\nno-tty\n");
  EXPECT_EQ(WEXITSTATUS(status), 3);
  EXPECT_EQ(HostOutput("cat " + scratch_->path() + "/err.txt"), "err\n");
}

// Input that is all there before the command starts (a file larger than one stdin message, an
// empty one) and input that arrives later through a pipe both reach the command, whole.
TEST_F(ShellTest, WithoutATerminalStdinArrivesWholeWhetherReadyOrLate) {
  const std::string input = scratch_->path() + "/input.bin";
  ASSERT_EQ(system(absl::StrCat("head -c 300000 /dev/urandom > '", input, "'").c_str()), 0);
  std::string box = absl::StrCat("LLIMA_BOX_SOCKET='", agent_->socket_path(), "' '",
                                 LLIMA_BOX_BINARY, "' shell '", project_, "' -- ");
  EXPECT_EQ(HostOutput(absl::StrCat(box, "md5sum <'", input, "'")),
            HostOutput(absl::StrCat("md5sum <'", input, "'")));
  EXPECT_EQ(HostOutput(absl::StrCat(box, "wc -c </dev/null")), "0\n");
  EXPECT_EQ(HostOutput(absl::StrCat("(sleep 0.3; echo late; sleep 0.2; echo later) | ", box,
                                    "cat")),
            "late\nlater\n");
  // Input that is all there before the CLI starts: in a pipe whose writer is gone, in a file
  // read partway by someone else, in a file read to its end (nothing, then).
  EXPECT_EQ(HostOutput(absl::StrCat("printf ready | { sleep 0.3; ", box, "cat; }")), "ready");
  EXPECT_EQ(HostOutput(absl::StrCat("{ dd bs=1000 count=1 of=/dev/null 2>/dev/null; ", box,
                                    "md5sum; } <'", input, "'")),
            HostOutput(absl::StrCat("tail -c +1001 '", input, "' | md5sum")));
  EXPECT_EQ(HostOutput(absl::StrCat("{ cat >/dev/null; ", box, "wc -c; } <'", input, "'")), "0\n");
  // A file whose size says nothing: /proc's say 0.
  EXPECT_EQ(HostOutput(absl::StrCat(box, "cat </proc/version")), HostOutput("cat /proc/version"));
}

// Input much larger than what the client holds unsent (1 MiB), to a command that starts
// reading late (so that the client's backlog fills first) and says nothing until the end: the
// client must go on reading its input as the backlog goes out, with no output to wake it.
// (`timeout`: a client that stops would hang the test.)
TEST_F(ShellTest, WithoutATerminalALargeInputArrivesWholeAtACommandThatAnswersOnlyAtTheEnd) {
  std::string box = absl::StrCat("LLIMA_BOX_SOCKET='", agent_->socket_path(), "' timeout 60 '",
                                 LLIMA_BOX_BINARY, "' shell '", project_, "' -- ");
  EXPECT_EQ(HostOutput(absl::StrCat("head -c 67108864 /dev/zero | ", box,
                                    "sh -c 'sleep 1; exec wc -c'")),
            "67108864\n");
}

TEST_F(ShellTest, SandboxEntersAnEnvironmentByName) {
  auto shell = Shell({"true"});
  ASSERT_EQ(shell->Wait(), 0);
  std::string name = "shelled-" + HostOutput("ls '" + agent_->state_dir() +
                                             "/envs' | sed -n 's/^shelled-//p' | tr -d '\\n'");
  PtyProcess sandbox({LLIMA_SANDBOX_BINARY, name, "--", "sh", "-c", "tty; whoami; exit 5"},
                     Env());
  EXPECT_TRUE(sandbox.WaitFor("/dev/pts/")) << sandbox.output();
  EXPECT_TRUE(sandbox.WaitFor(name)) << sandbox.output();
  EXPECT_EQ(sandbox.Wait(), 5);
  PtyProcess missing({LLIMA_SANDBOX_BINARY, "no-such-env"}, Env());
  EXPECT_EQ(missing.Wait(), 1);
  EXPECT_THAT(missing.output(), HasSubstr("no environment named no-such-env"));
}

}  // namespace
}  // namespace llima::testing
