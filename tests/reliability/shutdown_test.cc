// SIGTERM: the agent stops accepting, lets unary calls in flight finish, ends Exec calls (an
// attached process as if its client had gone away, a detached one left running), exits within a
// bounded time even with idle clients connected, and leaves every environment running, so
// that the next start re-adopts it.

#include <dirent.h>
#include <grpcpp/grpcpp.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <fstream>
#include <iostream>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "agent_harness.h"
#include "agent_probes.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "read_file.h"
#include "unique_fd.h"

namespace llima::testing {
namespace {

using ::testing::HasSubstr;

constexpr uid_t kOwner = 4242;

// The harness is a subreaper: processes that outlive the agent's fork server, their parent,
// become this test's children, and their environment's init, killed by a delete, waits until
// they are reaped (systemd would reap them at once). While it lives, this reaps them, but never
// `spare`, the agent, which the harness reaps itself.
class OrphanReaper {
 public:
  explicit OrphanReaper(pid_t spare) : spare_(spare), thread_([this] { Run(); }) {}
  ~OrphanReaper() {
    stop_ = true;
    thread_.join();
  }

 private:
  void Run() {
    while (!stop_) {
      std::vector<std::string> tasks;
      if (DIR* d = opendir("/proc/self/task")) {
        while (dirent* e = readdir(d)) {
          if (e->d_name[0] != '.') tasks.push_back(e->d_name);
        }
        closedir(d);
      }
      for (const std::string& tid : tasks) {
        std::string children = ReadFileOrEmpty("/proc/self/task/" + tid + "/children");
        for (absl::string_view child : absl::StrSplit(children, ' ', absl::SkipEmpty())) {
          pid_t pid;
          if (absl::SimpleAtoi(child, &pid) && pid != spare_) waitpid(pid, nullptr, WNOHANG);
        }
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }

  const pid_t spare_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

class ShutdownTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(geteuid(), 0u) << "reliability tests need root";
    project_ = scratch_.MakeDir("projects/stopped", kOwner, kOwner);
    std::ofstream(project_ + "/marker") << "in the project\n";
    agent_ = std::make_unique<AgentProcess>(scratch_.path());
  }
  void TearDown() override {
    if (HasFailure()) std::cerr << "---- agent log ----\n" << agent_->log();
    agent_.reset();
  }

  // Sends SIGTERM and waits (at most 20 s) for the agent to exit; returns how long it took.
  // The harness reaps it afterwards.
  absl::Duration StopWithSigterm() {
    UniqueFd pidfd(static_cast<int>(syscall(SYS_pidfd_open, agent_->pid(), 0)));
    EXPECT_TRUE(pidfd) << "pidfd_open: " << strerror(errno);
    absl::Time sent = absl::Now();
    kill(agent_->pid(), SIGTERM);
    pollfd p{pidfd.get(), POLLIN, 0};
    EXPECT_EQ(poll(&p, 1, 20000), 1) << "the agent did not exit within 20 s of SIGTERM";
    absl::Duration took = absl::Now() - sent;
    agent_->Terminate();  // reaps it
    return took;
  }

  ScratchDir scratch_;
  std::string project_;
  std::unique_ptr<AgentProcess> agent_;
};

TEST_F(ShutdownTest, IdleClientsDoNotHoldTheStop) {
  agent_->Start();
  // Clients that made a call and stay connected, and connections that never sent anything.
  std::vector<std::unique_ptr<v1::AgentService::Stub>> idle;
  for (int i = 0; i < 5; ++i) {
    idle.push_back(NewClient(agent_->socket_path()));
    v1::ListEnvironmentsResponse response;
    ASSERT_TRUE(CallList(*idle.back(), &response).ok());
  }
  std::vector<UniqueFd> silent;
  for (int i = 0; i < 5; ++i) {
    silent.push_back(ConnectSilently(agent_->socket_path()));
    ASSERT_TRUE(silent.back());
  }

  absl::Duration took = StopWithSigterm();
  std::cout << "stopped in " << took << " with 5 idle clients and 5 silent connections\n";
  // Shutdown used to wait for its 5 s deadline while a client held an idle connection.
  EXPECT_LT(took, absl::Seconds(3));
  struct stat st;
  EXPECT_NE(stat(agent_->socket_path().c_str(), &st), 0) << "the socket is removed at the stop";
  EXPECT_THAT(agent_->log(), HasSubstr("stopped in"));

  // The connections were closed by the agent: after the server's HTTP/2 settings and GOAWAY,
  // a silent one reads the end of the stream (or a reset).
  for (const UniqueFd& fd : silent) ASSERT_TRUE(ClosedByTheAgent(fd.get(), 1000));
  // An idle client carries on with the next agent on the same socket.
  agent_->Start();
  v1::ListEnvironmentsResponse response;
  grpc::Status s;
  for (int i = 0; i < 100 && !(s = CallList(*idle[0], &response)).ok(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_TRUE(s.ok()) << s.error_message();
}

// The fork server would die with the agent anyway (PR_SET_PDEATHSIG), but as its orphan: it
// would fall to PID 1 (here to the harness, a subreaper), and a PID 1 that does not reap keeps
// it a zombie for good. The agent ends and reaps it on its way out.
TEST_F(ShutdownTest, TheAgentReapsItsForkServerWhenItStops) {
  agent_->Start();
  pid_t fork_server = agent_->ForkServerPid();
  ASSERT_GT(fork_server, 0) << "no fork server among the agent's children";

  StopWithSigterm();
  pid_t found = waitpid(fork_server, nullptr, WNOHANG);
  int error = errno;
  EXPECT_EQ(found, -1) << "the fork server outlived the agent and was left to this process";
  EXPECT_EQ(error, ECHILD);
  if (found == 0) {
    kill(fork_server, SIGKILL);
    waitpid(fork_server, nullptr, 0);
  }
}

// Four clients create and delete their own environment in a loop while SIGTERM arrives. A call
// either completes with its real answer, or fails (UNAVAILABLE) and was not carried out:
// after a restart, each environment exists exactly when the client's last successful call was
// a create.
TEST_F(ShutdownTest, UnaryCallsInFlightFinishAndRefusedOnesDidNothing) {
  agent_->Start();
  ResourceSnapshot before = TakeResourceSnapshot(*agent_);
  constexpr int kClients = 4;
  struct Client {
    std::string path;
    std::string name;
    bool exists = false;  // as the client's successful calls say
    int calls = 0;
    grpc::Status failure;
  };
  std::vector<Client> clients(kClients);
  std::atomic<int> completed{0};
  std::vector<std::thread> threads;
  for (int c = 0; c < kClients; ++c) {
    clients[c].path = scratch_.MakeDir(absl::StrCat("projects/inflight-", c), kOwner, kOwner);
    threads.emplace_back([&, c] {
      Client& client = clients[c];
      auto stub = NewClient(agent_->socket_path());
      for (;;) {
        grpc::ClientContext context;
        context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
        grpc::Status s;
        if (!client.exists) {
          v1::CreateEnvironmentRequest request;
          request.set_project_path(client.path);
          v1::Environment env;
          s = stub->CreateEnvironment(&context, request, &env);
          if (s.ok()) client.name = env.name();
        } else {
          v1::DeleteEnvironmentRequest request;
          request.set_name(client.name);
          v1::DeleteEnvironmentResponse response;
          s = stub->DeleteEnvironment(&context, request, &response);
        }
        if (!s.ok()) {
          client.failure = s;
          return;
        }
        client.exists = !client.exists;
        ++client.calls;
        ++completed;
      }
    });
  }
  while (completed < 40) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  absl::Duration took = StopWithSigterm();
  for (std::thread& t : threads) t.join();

  std::string log = agent_->log();
  size_t stop_line = log.find("received SIGTERM");
  ASSERT_NE(stop_line, std::string::npos);
  int finished_during_stop = 0;
  for (absl::string_view line : absl::StrSplit(log.substr(stop_line), '\n')) {
    if (absl::StrContains(line, " create env=") || absl::StrContains(line, " delete env=")) {
      ++finished_during_stop;
    }
  }
  std::cout << "stopped in " << took << "; " << completed << " calls completed, "
            << finished_during_stop << " of them finished after SIGTERM\n";
  EXPECT_LT(took, absl::Seconds(8));
  // UNAVAILABLE, or CANCELLED for a call that crossed the server's GOAWAY on the wire.
  for (const Client& client : clients) {
    EXPECT_THAT(client.failure.error_code(),
                ::testing::AnyOf(grpc::StatusCode::UNAVAILABLE, grpc::StatusCode::CANCELLED))
        << client.path << ": " << client.failure.error_message();
  }

  agent_->Start();
  v1::ListEnvironmentsResponse listed;
  ASSERT_TRUE(CallList(agent_->stub(), &listed).ok());
  for (const Client& client : clients) {
    bool found = false;
    for (const v1::Environment& env : listed.environments()) {
      if (env.project_path() == client.path) {
        found = true;
        EXPECT_EQ(env.state(), v1::Environment::STATE_RUNNING) << env.detail();
      }
    }
    EXPECT_EQ(found, client.exists) << client.path << " after " << client.calls
                                    << " successful calls and " << client.failure.error_message();
  }
  agent_->Stop();
  EXPECT_EQ(DescribeLeaks(before, TakeResourceSnapshot(*agent_)), "");
}

TEST_F(ShutdownTest, ExecCallsEndAndEnvironmentsKeepRunningForTheNextStart) {
  agent_->Start();
  ResourceSnapshot before = TakeResourceSnapshot(*agent_);
  v1::Environment env = CreateEnvironmentOrFail(agent_->stub(), project_);
  ASSERT_FALSE(env.name().empty());
  // Only the same namespaces, re-adopted rather than rebuilt, still have this file later.
  ASSERT_EQ(Shell(agent_->stub(), env.name(), "echo kept > /tmp/kept").exit_code, 0);

  auto start = [&](std::vector<std::string> argv, bool detached) {
    v1::ExecStart s;
    s.set_environment(env.name());
    for (std::string& arg : argv) s.add_argv(std::move(arg));
    s.set_detached(detached);
    return s;
  };
  // Attached: dies of SIGHUP. Attached, ignoring SIGHUP: killed after the grace period.
  // Detached: keeps running.
  ExecStream attached(agent_->stub(), start({"sh", "-c", "echo ready; exec sleep 881"}, false));
  ExecStream stubborn(agent_->stub(),
                      start({"sh", "-c", "trap '' HUP; echo ready; sleep 882; echo late"}, false));
  ExecStream detached(agent_->stub(), start({"sh", "-c", "echo ready; exec sleep 883"}, true));
  ASSERT_TRUE(attached.WaitFor("ready"));
  ASSERT_TRUE(stubborn.WaitFor("ready"));
  ASSERT_TRUE(detached.WaitFor("ready"));
  // A call that has not sent its start message yet.
  grpc::ClientContext unstarted_context;
  auto unstarted = agent_->stub().Exec(&unstarted_context);
  // An idle client.
  auto idle = NewClient(agent_->socket_path());
  v1::ListEnvironmentsResponse listed;
  ASSERT_TRUE(CallList(*idle, &listed).ok());
  AgentUsage usage = MeasureAgent(agent_->pid());

  absl::Duration took = StopWithSigterm();
  std::cout << "agent before SIGTERM: " << usage << "; stopped in " << took << "\n";
  // At once, but for the 2 s between SIGHUP and SIGKILL that the stubborn process gets.
  EXPECT_LT(took, absl::Seconds(8));
  EXPECT_GE(took, absl::Seconds(1.5)) << "the hang-up grace period was cut short";

  for (ExecStream* stream : {&attached, &stubborn}) {
    ExecResult r = stream->Finish();
    EXPECT_EQ(r.status.error_code(), grpc::StatusCode::UNAVAILABLE);
    EXPECT_THAT(r.status.error_message(), HasSubstr("llima-agent is stopping"));
  }
  ExecResult r = detached.Finish();
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_THAT(r.status.error_message(), HasSubstr("detached process keeps running"));
  unstarted->WritesDone();
  v1::ExecResponse ignored;
  while (unstarted->Read(&ignored)) {
  }
  EXPECT_EQ(unstarted->Finish().error_code(), grpc::StatusCode::UNAVAILABLE);

  EXPECT_TRUE(GoneWithin("sleep 881", 2000)) << "an attached process ends with its call";
  EXPECT_TRUE(GoneWithin("sleep 882", 2000)) << "also when it ignores SIGHUP";
  EXPECT_TRUE(HostSees("sleep 883")) << "a detached process keeps running";
  // The environment itself is untouched: its init, pin and cgroup are there.
  ResourceSnapshot stopped = TakeResourceSnapshot(*agent_);
  EXPECT_THAT(DescribeLeaks(before, stopped), HasSubstr("llima-init " + env.name()));
  EXPECT_THAT(DescribeLeaks(before, stopped), HasSubstr("/envs/" + env.name() + "/mnt"));
  if (!agent_->cgroup_root().empty()) {
    EXPECT_THAT(DescribeLeaks(before, stopped), HasSubstr("cgroup: ./" + env.name()));
  }

  // The next start re-adopts it: same namespaces, same processes.
  agent_->Start();
  EXPECT_THAT(agent_->log(), HasSubstr("stopped in"));
  ExecResult after = Shell(agent_->stub(), env.name(), "cat /tmp/kept marker; ps -eo args");
  ASSERT_TRUE(after.status.ok()) << after.status.error_message();
  EXPECT_THAT(after.out, HasSubstr("kept\nin the project\n"));
  EXPECT_THAT(after.out, HasSubstr("sleep 883"));
  EXPECT_THAT(after.out, ::testing::Not(HasSubstr("sleep 881")));

  {
    OrphanReaper reaper(agent_->pid());
    agent_->Stop();
  }
  EXPECT_EQ(DescribeLeaks(before, TakeResourceSnapshot(*agent_)), "");
}

TEST_F(ShutdownTest, DetachedProcessesThatKeepWritingOutliveTheStop) {
  agent_->Start();
  ResourceSnapshot before = TakeResourceSnapshot(*agent_);
  v1::Environment env = CreateEnvironmentOrFail(agent_->stub(), project_);
  ASSERT_FALSE(env.name().empty());
  // One with its client still there, one whose client has gone; one on a terminal.
  std::vector<std::string> markers = {"tick-888", "tick-889", "tick-890"};
  std::vector<std::unique_ptr<ExecStream>> streams;
  for (size_t i = 0; i < markers.size(); ++i) {
    v1::ExecStart start;
    start.set_environment(env.name());
    start.add_argv("sh");
    start.add_argv("-c");
    start.add_argv("while :; do echo " + markers[i] + "; sleep 0.02; done");
    start.set_detached(true);
    start.set_tty(i == 2);
    streams.push_back(std::make_unique<ExecStream>(agent_->stub(), start));
    ASSERT_TRUE(streams.back()->WaitFor(markers[i]));
  }
  streams[1]->Cancel();
  streams[1].reset();

  absl::Duration took = StopWithSigterm();
  std::cout << "stopped in " << took << " with three detached processes writing\n";
  EXPECT_LT(took, absl::Seconds(3));
  EXPECT_THAT(agent_->log(), HasSubstr("(llima-drain)"));
  usleep(1000000);  // fifty writes later
  for (const std::string& marker : markers) {
    EXPECT_TRUE(HostSees("echo " + marker)) << marker << " died with the agent's stop";
  }

  agent_->Start();
  ExecResult r = Shell(agent_->stub(), env.name(), "ps -eo args");
  for (const std::string& marker : markers) EXPECT_THAT(r.out, HasSubstr("echo " + marker));
  // Deleting the environment ends them, and with them the process that took their output.
  {
    OrphanReaper reaper(agent_->pid());
    agent_->Stop();
  }
  for (const std::string& marker : markers) EXPECT_FALSE(HostSees("echo " + marker));
  EXPECT_EQ(HostOutput("ps -eo stat=,comm= | grep -v '^Z' | grep llima-drain"), "");
  EXPECT_EQ(DescribeLeaks(before, TakeResourceSnapshot(*agent_)), "");
}

TEST_F(ShutdownTest, AClientThatDoesNotReadDelaysTheStopOnlyUntilTheDeadline) {
  agent_->Start();
  ResourceSnapshot before = TakeResourceSnapshot(*agent_);
  v1::Environment env = CreateEnvironmentOrFail(agent_->stub(), project_);
  ASSERT_FALSE(env.name().empty());
  // The agent's last messages, and its status, stay stuck behind output nobody takes.
  grpc::ClientContext context;
  auto stalled = agent_->stub().Exec(&context);
  v1::ExecRequest first;
  first.mutable_start()->set_environment(env.name());
  first.mutable_start()->add_argv("yes");
  first.mutable_start()->add_argv("stop-887");
  ASSERT_TRUE(stalled->Write(first));
  for (int i = 0; i < 40 && !HostSees("yes stop-887"); ++i) usleep(50000);
  ASSERT_TRUE(HostSees("yes stop-887"));

  absl::Duration took = StopWithSigterm();
  std::cout << "stopped in " << took << " with a client that does not read\n";
  // The calls' deadline (5 s), then at most a second more.
  EXPECT_LT(took, absl::Seconds(7));
  EXPECT_TRUE(GoneWithin("yes stop-887", 3000)) << "its process ends as for a vanished client";
  context.TryCancel();
  stalled->Finish();

  agent_->Start();
  ExecResult r = Shell(agent_->stub(), env.name(), "cat marker");
  EXPECT_EQ(r.out, "in the project\n") << r.status.error_message();
  agent_->Stop();
  EXPECT_EQ(DescribeLeaks(before, TakeResourceSnapshot(*agent_)), "");
}

}  // namespace
}  // namespace llima::testing
