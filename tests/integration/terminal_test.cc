// Exec on a terminal and the life of exec'd processes: the pty of the environment's own devpts,
// size and resize, ^C and job control, signals, disconnects, detached processes, many
// concurrent calls.

#include <signal.h>
#include <unistd.h>

#include <future>
#include <thread>

#include "absl/strings/str_cat.h"
#include "agent_harness.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace llima::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::MatchesRegex;

constexpr uid_t kOwner = 4242;

class TerminalTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    setup_error_ = RunSuiteSetUp([] {
      RequireRoot("integration tests need root");
      scratch_ = new ScratchDir();
      agent_ = new AgentProcess(scratch_->path());
      agent_->Start();
      for (int i = 0; i < 5; ++i) {
        std::string project = scratch_->MakeDir(absl::StrCat("projects/p", i), kOwner, kOwner);
        envs_.push_back(CreateEnvironmentOrFail(agent_->stub(), project).name());
      }
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

  static v1::ExecStart Start(std::vector<std::string> argv, bool tty = true, uint32_t rows = 0,
                             uint32_t cols = 0) {
    v1::ExecStart start;
    start.set_environment(envs_[0]);
    for (auto& a : argv) start.add_argv(a);
    start.set_tty(tty);
    start.mutable_size()->set_rows(rows);
    start.mutable_size()->set_cols(cols);
    (*start.mutable_env())["TERM"] = "xterm";
    return start;
  }


  static inline std::string setup_error_;
  static inline ScratchDir* scratch_ = nullptr;
  static inline AgentProcess* agent_ = nullptr;
  static inline std::vector<std::string> envs_;
};

TEST_F(TerminalTest, TtyIsAPtyOfTheEnvironmentsOwnDevpts) {
  ExecResult r = Exec(agent_->stub(), envs_[0], {"sh", "-c", "tty; test -t 0 && test -t 1 && "
                                                 "echo both-terminals; ls /dev/pts"},
                      {.tty = true});
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_THAT(r.out, MatchesRegex("/dev/pts/[0-9]+\r\nboth-terminals\r\n[0-9 \r\nptmx]*"));
  EXPECT_EQ(r.err, "") << "a terminal has only one output stream";
}

TEST_F(TerminalTest, InitialSizeIsApplied) {
  ExecResult r = Exec(agent_->stub(), envs_[0], {"stty", "size"},
                      {.tty = true, .rows = 33, .cols = 101});
  EXPECT_EQ(r.out, "33 101\r\n");
  ExecResult defaults = Exec(agent_->stub(), envs_[0], {"stty", "size"}, {.tty = true});
  EXPECT_EQ(defaults.out, "24 80\r\n");
}

TEST_F(TerminalTest, ResizeChangesTheSizeAndSendsSigwinch) {
  ExecStream s(agent_->stub(), Start({"sh", "-c",
                                      "trap 'echo winch; stty size' WINCH; echo ready; "
                                      "while :; do sleep 0.05; done"}));
  ASSERT_TRUE(s.WaitFor("ready"));
  ASSERT_TRUE(s.Resize(50, 132));
  EXPECT_TRUE(s.WaitFor("winch")) << s.output();
  EXPECT_TRUE(s.WaitFor("50 132")) << s.output();
  s.Signal(SIGKILL);
  ExecResult r = s.Finish();
  EXPECT_EQ(r.signal, SIGKILL);
}

TEST_F(TerminalTest, BadTerminalSizesAreRefused) {
  ExecResult zero_rows =
      Exec(agent_->stub(), envs_[0], {"true"}, {.tty = true, .rows = 0, .cols = 80});
  EXPECT_EQ(zero_rows.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  ExecResult huge =
      Exec(agent_->stub(), envs_[0], {"true"}, {.tty = true, .rows = 100000, .cols = 80});
  EXPECT_EQ(huge.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(huge.status.error_message(), HasSubstr("terminal size"));

  // During a session a bad size is ignored: the session goes on with the size it had.
  ExecStream s(agent_->stub(), Start({"sh", "-c", "echo ready; read x; stty size"}, true, 24, 80));
  ASSERT_TRUE(s.WaitFor("ready"));
  s.Resize(0, 0);
  s.SendStdin("\r");
  EXPECT_TRUE(s.WaitFor("24 80")) << s.output();
  ExecResult r = s.Finish();
  EXPECT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_EQ(r.exit_code, 0);
}

TEST_F(TerminalTest, CtrlCStopsTheForegroundCommandAndTheShellSurvives) {
  ExecStream s(agent_->stub(), Start({"bash", "--norc", "-i"}));
  s.SendStdin("sleep 1013\n");
  for (int i = 0; i < 40 && !HostSees("sleep 1013"); ++i) usleep(50000);
  ASSERT_TRUE(HostSees("sleep 1013"));
  s.SendStdin("\x03");
  EXPECT_TRUE(GoneWithin("sleep 1013", 3000));
  s.SendStdin("echo status-$?\n");
  EXPECT_TRUE(s.WaitFor("status-130")) << s.output();
  s.SendStdin("echo alive-$((6*7))\n");
  EXPECT_TRUE(s.WaitFor("alive-42")) << s.output();
  s.SendStdin("exit 7\n");
  ExecResult r = s.Finish();
  EXPECT_EQ(r.exit_code, 7);
  EXPECT_EQ(r.signal, 0);
}

// The terminal echoes what is typed, so every awaited marker is one the shell computes
// ($((...))) and that the typed line does not contain.
TEST_F(TerminalTest, JobControlWorks) {
  ExecStream s(agent_->stub(), Start({"bash", "--norc", "-i"}));
  s.SendStdin("sleep 101 &\n");
  s.SendStdin("jobs; echo listed-$((1+1))\n");
  EXPECT_TRUE(s.WaitFor("Running")) << s.output();
  ASSERT_TRUE(s.WaitFor("listed-2"));
  s.SendStdin("fg\n");
  // bash names the job it brings to the foreground on a line of its own.
  ASSERT_TRUE(s.WaitFor("sleep 101\r\n")) << s.output();
  for (int i = 0; i < 40 && !HostSees("sleep 101"); ++i) usleep(50000);
  usleep(200000);
  s.SendStdin("\x1a");  // ^Z
  EXPECT_TRUE(s.WaitFor("Stopped")) << s.output();
  // Until bash has seen the job die: under load its `wait` can still find it stopped, and
  // `exit` then refuses ("There are stopped jobs.").
  s.SendStdin("kill -9 %1; while jobs %1 >/dev/null 2>&1; do sleep 0.1; done; "
              "echo killed-$((2+2))\n");
  EXPECT_TRUE(s.WaitFor("killed-4")) << s.output();
  s.SendStdin("exit 0\n");
  ExecResult finished = s.Finish();
  EXPECT_EQ(finished.exit_code, 0) << s.output();
}

TEST_F(TerminalTest, KillingTheShellReports137) {
  ExecResult r = Exec(agent_->stub(), envs_[0], {"bash", "--norc", "-c", "kill -9 $$"},
                      {.tty = true});
  EXPECT_EQ(r.exit_code, 137);
  EXPECT_EQ(r.signal, 9);
}

TEST_F(TerminalTest, FullScreenProgramsDrawAndQuit) {
  ExecStream s(agent_->stub(), Start({"sh", "-c", "seq 1 500 | less"}, true, 20, 60));
  EXPECT_TRUE(s.WaitFor("19")) << s.output();  // first screen of lines
  s.SendStdin("q");
  ExecResult r = s.Finish();
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_THAT(r.out, ::testing::Not(HasSubstr("500")));

  ExecStream vi(agent_->stub(), Start({"vi", "-u", "NONE", "/tmp/edited"}, true, 24, 80));
  usleep(300000);
  vi.SendStdin("ihello from vi\x1b:wq\r");
  EXPECT_EQ(vi.Finish().exit_code, 0);
  EXPECT_EQ(Exec(agent_->stub(), envs_[0], {"cat", "/tmp/edited"}).out, "hello from vi\n");
}

TEST_F(TerminalTest, SignalMessagesReachTheProcess) {
  ExecStream s(agent_->stub(), Start({"sleep", "102"}, /*tty=*/false));
  for (int i = 0; i < 40 && !HostSees("sleep 102"); ++i) usleep(50000);
  ASSERT_TRUE(HostSees("sleep 102"));
  s.Signal(SIGTERM);
  ExecResult r = s.Finish();
  EXPECT_EQ(r.signal, SIGTERM);
  EXPECT_EQ(r.exit_code, 128 + SIGTERM);
  ExecStream bad(agent_->stub(), Start({"sleep", "5"}, false));
  bad.Signal(1000);
  EXPECT_EQ(bad.Finish().status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(TerminalTest, StdinAfterCloseIsAnError) {
  ExecStream s(agent_->stub(), Start({"sleep", "5"}, false));
  v1::ExecRequest close;
  close.set_close_stdin(true);
  s.Send(close);
  s.SendStdin("late");
  ExecResult r = s.Finish();
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(r.status.error_message(), HasSubstr("after close_stdin"));
}

TEST_F(TerminalTest, FirstMessageMustBeStart) {
  grpc::ClientContext context;
  auto stream = agent_->stub().Exec(&context);
  v1::ExecRequest stdin_first;
  stdin_first.set_stdin("x");
  stream->Write(stdin_first);
  stream->WritesDone();
  v1::ExecResponse ignored;
  while (stream->Read(&ignored)) {
  }
  grpc::Status s = stream->Finish();
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("start"));
}

TEST_F(TerminalTest, AVanishedClientsProcessesAreEndedWithinTheGracePeriod) {
  for (bool tty : {false, true}) {
    std::string marker = tty ? "sleep 968" : "sleep 969";
    auto s = std::make_unique<ExecStream>(
        agent_->stub(), Start({"sh", "-c", marker + " & " + marker + "; echo never"}, tty));
    for (int i = 0; i < 40 && !HostSees(marker); ++i) usleep(50000);
    ASSERT_TRUE(HostSees(marker));
    s->Cancel();
    s.reset();
    // SIGHUP at once, SIGKILL after a 2 s grace period: gone well within 5 s, background
    // children of the process group included.
    EXPECT_TRUE(GoneWithin(marker, 5000)) << (tty ? "with" : "without") << " a terminal";
  }
}

TEST_F(TerminalTest, SessionMembersIgnoringSighupAreKilledAfterTheGracePeriod) {
  // The leader dies of SIGHUP at once; a member that ignores it must not survive the call.
  auto s = std::make_unique<ExecStream>(
      agent_->stub(),
      Start({"sh", "-c", "(trap '' HUP; exec sleep 962) & exec sleep 961"}, true));
  for (int i = 0; i < 40 && !HostSees("sleep 962"); ++i) usleep(50000);
  ASSERT_TRUE(HostSees("sleep 962"));
  s->Cancel();
  s.reset();
  EXPECT_TRUE(GoneWithin("sleep 961", 1500)) << "SIGHUP ends the leader at once";
  EXPECT_TRUE(GoneWithin("sleep 962", 5000)) << "SIGKILL ends the rest after the grace";
}

TEST_F(TerminalTest, DetachedProcessesThatKeepWritingOutliveTheirClient) {
  for (bool tty : {false, true}) {
    std::string marker = tty ? "tick-959" : "tick-958";
    v1::ExecStart start =
        Start({"sh", "-c", "while :; do echo " + marker + "; sleep 0.05; done"}, tty);
    start.set_detached(true);
    auto s = std::make_unique<ExecStream>(agent_->stub(), start);
    ASSERT_TRUE(s->WaitFor(marker));
    s->Cancel();
    s.reset();
    usleep(2500000);  // longer than the grace period, many writes later
    EXPECT_TRUE(HostSees(marker)) << (tty ? "with" : "without") << " a terminal";
    Exec(agent_->stub(), envs_[0], {"pkill", "-f", marker});
    EXPECT_TRUE(GoneWithin(marker, 3000));
  }
}

TEST_F(TerminalTest, ADetachedProcessOutlivesItsClient) {
  v1::ExecStart start = Start({"sleep", "967"}, false);
  start.set_detached(true);
  auto s = std::make_unique<ExecStream>(agent_->stub(), start);
  for (int i = 0; i < 40 && !HostSees("sleep 967"); ++i) usleep(50000);
  s->Cancel();
  s.reset();
  usleep(2500000);  // longer than the grace period
  EXPECT_TRUE(HostSees("sleep 967"));
  // It is listed with its environment.
  auto detached_of_env = [] {
    grpc::ClientContext context;
    v1::GetEnvironmentRequest request;
    request.set_name(envs_[0]);
    v1::Environment env;
    agent_->stub().GetEnvironment(&context, request, &env);
    return env.detached();
  };
  auto listed = detached_of_env();
  ASSERT_EQ(listed.size(), 1);
  EXPECT_EQ(listed[0].argv(0), "sleep");
  EXPECT_EQ(listed[0].argv(1), "967");
  EXPECT_GT(listed[0].pid(), 1);
  Exec(agent_->stub(), envs_[0], {"pkill", "-f", "sleep 967"});
  EXPECT_TRUE(GoneWithin("sleep 967", 3000));
  EXPECT_EQ(detached_of_env().size(), 0);
  // Reaped, not left as a zombie.
  EXPECT_EQ(HostOutput("ps -eo stat,args | grep '^Z.*sleep' | grep -v grep"), "");
}

TEST_F(TerminalTest, TwentyConcurrentShellsInFiveEnvironments) {
  std::vector<std::future<ExecResult>> results;
  for (int i = 0; i < 20; ++i) {
    results.push_back(std::async(std::launch::async, [i] {
      const std::string& env = envs_[i % 5];
      return Exec(agent_->stub(), env,
                  {"sh", "-c", absl::StrCat("echo shell-", i, " $(whoami); sleep 0.2; "
                                            "head -c 300000 /dev/zero | wc -c; exit ", i)},
                  {.tty = i % 2 == 0});
    }));
  }
  for (int i = 0; i < 20; ++i) {
    ExecResult r = results[i].get();
    ASSERT_TRUE(r.status.ok()) << i << ": " << r.status.error_message();
    std::string eol = i % 2 == 0 ? "\r\n" : "\n";
    EXPECT_EQ(r.out, absl::StrCat("shell-", i, " ", envs_[i % 5], eol, "300000", eol)) << i;
    EXPECT_EQ(r.exit_code, i);
  }
}

TEST_F(TerminalTest, AClientThatNeverReadsStallsOnlyItsOwnCall) {
  // A call whose client reads nothing while its process writes without end.
  grpc::ClientContext stalled_context;
  auto stalled = agent_->stub().Exec(&stalled_context);
  v1::ExecRequest start;
  *start.mutable_start() = Start({"sh", "-c", "yes flood"}, false);
  ASSERT_TRUE(stalled->Write(start));
  for (int i = 0; i < 40 && !HostSees("yes flood"); ++i) usleep(50000);
  ASSERT_TRUE(HostSees("yes flood"));
  usleep(300000);  // let every buffer on the way fill up

  for (int i = 0; i < 10; ++i) {
    ExecResult r = Exec(agent_->stub(), envs_[i % 5], {"echo", absl::StrCat("unaffected-", i)});
    ASSERT_TRUE(r.status.ok()) << r.status.error_message();
    EXPECT_EQ(r.out, absl::StrCat("unaffected-", i, "\n"));
  }
  // The flood is held back, not buffered without bound in the agent.
  std::string rss = HostOutput("ps -o rss= -p " + std::to_string(agent_->pid()));
  EXPECT_LT(std::stol(rss), 200 * 1024) << "agent RSS " << rss << " KiB";
  stalled_context.TryCancel();
  EXPECT_TRUE(GoneWithin("yes flood", 5000));
}

TEST_F(TerminalTest, TwoShellsOfOneEnvironmentShareTmp) {
  ExecStream first(agent_->stub(), Start({"bash", "--norc", "-i"}));
  ExecStream second(agent_->stub(), Start({"bash", "--norc", "-i"}));
  first.SendStdin("echo from-first > /tmp/shared-note; echo written-$((3+3))\n");
  ASSERT_TRUE(first.WaitFor("written-6"));
  second.SendStdin("cat /tmp/shared-note\n");
  EXPECT_TRUE(second.WaitFor("from-first")) << second.output();
  first.SendStdin("exit\n");
  second.SendStdin("exit\n");
  first.Finish();
  second.Finish();
}

}  // namespace
}  // namespace llima::testing
