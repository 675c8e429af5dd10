// The agent process itself: its socket, health service, log, rollback of failed creates, and
// the llima-box command line against it.

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <fstream>

#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "agent_harness.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "naming.h"

namespace llima::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::MatchesRegex;

constexpr uid_t kOwner = 4242;

class AgentTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(geteuid(), 0u) << "integration tests need root";
    agent_ = std::make_unique<AgentProcess>(scratch_.path());
  }
  void TearDown() override {
    if (HasFailure()) std::cerr << "---- agent log ----\n" << agent_->log();
    agent_.reset();
  }

  grpc::Status Create(const std::string& path, v1::Environment* env) {
    return CallCreate(agent_->stub(), path, env);
  }

  // What a failed operation may not leave behind.
  void ExpectNoTraceOf(const std::string& name) {
    struct stat st;
    EXPECT_NE(stat((agent_->state_dir() + "/envs/" + name).c_str(), &st), 0)
        << "state directory of " << name << " remains";
    if (!agent_->cgroup_root().empty()) {
      EXPECT_NE(stat((agent_->cgroup_root() + "/" + name).c_str(), &st), 0)
          << "cgroup of " << name << " remains";
    }
    EXPECT_THAT(HostOutput("cat /proc/self/mountinfo"), ::testing::Not(HasSubstr(name)));
    EXPECT_THAT(HostOutput("ps -eo args"), ::testing::Not(HasSubstr("llima-init " + name)));
  }

  ScratchDir scratch_;
  std::unique_ptr<AgentProcess> agent_;
};

TEST_F(AgentTest, SocketIsPrivateToItsOwner) {
  agent_->Start({"--socket-owner", std::to_string(kOwner)});
  struct stat st;
  ASSERT_EQ(stat(agent_->socket_path().c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_EQ(st.st_uid, kOwner);
  std::string dir = scratch_.path() + "/run";
  ASSERT_EQ(stat(dir.c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 0u);
  EXPECT_EQ(st.st_mode & 022, 0u);
  struct stat state;
  ASSERT_EQ(stat(agent_->state_dir().c_str(), &state), 0);
  EXPECT_EQ(state.st_mode & 0777, 0700u);
}

TEST_F(AgentTest, RefusesASocketDirectoryOthersCanWrite) {
  std::string dir = scratch_.MakeDir("run", kOwner, kOwner);
  AgentProcess other(scratch_.path());
  try {
    other.Start();
    FAIL() << "the agent started with a socket directory owned by uid " << kOwner;
  } catch (const std::exception& e) {
    EXPECT_THAT(e.what(), HasSubstr("must be a directory owned by root"));
  }
}

std::string InitProgram() {
  std::string agent = AgentBinary();
  return agent.substr(0, agent.rfind('/') + 1) + "llima-init";
}

TEST_F(AgentTest, RefusesToStartWithoutItsInitOrWithOneOthersCouldChange) {
  // The agent alone in a directory: no llima-init beside it nor in ../libexec/llima-box/.
  std::string dir = scratch_.MakeDir("alone/sbin");
  std::string run = absl::StrCat("cd '", dir, "' && cp '", AgentBinary(), "' llima-agent && ",
                                 "timeout -s KILL 10 ./llima-agent --socket '", dir,
                                 "/agent.sock' --state-dir '", dir, "/state' --cgroup-name '",
                                 agent_->cgroup_name(), "-alone' 2>&1; echo \"exit $?\"");
  std::string out = HostOutput(run);
  EXPECT_THAT(out, HasSubstr("llima-init, installed with llima-agent, is neither at " + dir +
                             "/llima-init nor at " + dir + "/../libexec/llima-box/llima-init"));
  EXPECT_THAT(out, HasSubstr("exit 1"));
  struct stat st;
  EXPECT_NE(stat((dir + "/state").c_str(), &st), 0) << "the state directory was made: " << out;
  EXPECT_NE(stat((dir + "/agent.sock").c_str(), &st), 0);

  // In the installed layout, but writable by its group: it would run as PID 1 of every
  // environment, so it is refused.
  std::string libexec = scratch_.MakeDir("alone/libexec/llima-box");
  ASSERT_EQ(
      HostOutput(absl::StrCat("cp '", InitProgram(), "' '", libexec, "/llima-init' && chmod 0775 '",
                              libexec, "/llima-init' && echo copied")),
      "copied\n");
  out = HostOutput(run);
  EXPECT_THAT(out, HasSubstr(dir +
                             "/../libexec/llima-box/llima-init may be changed by others "
                             "than root (" +
                             libexec + "/llima-init: owner uid 0, mode 0775)"));
  EXPECT_THAT(out, HasSubstr("exit 1"));
  EXPECT_NE(stat((dir + "/state").c_str(), &st), 0) << out;

  // Set-user-ID: refused.
  ASSERT_EQ(chmod((libexec + "/llima-init").c_str(), 04755), 0);
  out = HostOutput(run);
  EXPECT_THAT(out, HasSubstr(libexec + "/llima-init is set-user-ID or set-group-ID"));
  EXPECT_THAT(out, HasSubstr("exit 1"));

  // The file as it should be, in a directory others can write (and so swap it in): refused.
  ASSERT_EQ(chmod((libexec + "/llima-init").c_str(), 0755), 0);
  ASSERT_EQ(chmod(libexec.c_str(), 0777), 0);
  out = HostOutput(run);
  EXPECT_THAT(out, HasSubstr("may be changed by others than root (" + libexec +
                             ": owner uid 0, mode 0777)"));
  EXPECT_THAT(out, HasSubstr("exit 1"));
  EXPECT_NE(stat((dir + "/state").c_str(), &st), 0) << out;
}

TEST_F(AgentTest, TheInitProgramRefusesToRunOutsideAnEnvironment) {
  std::string out =
      HostOutput("timeout -s KILL 10 '" + InitProgram() + "' some-env 2>&1; echo \"exit $?\"");
  EXPECT_THAT(out, HasSubstr("started by llima-agent only"));
  EXPECT_THAT(out, HasSubstr("exit 2"));
}

// A copy of llima-agent in a directory of the test's own, with `init` beside it as llima-init.
std::string AgentBesideInit(const ScratchDir& scratch, const std::string& init) {
  std::string dir = scratch.MakeDir("own-agent");
  std::string copied =
      HostOutput(absl::StrCat("cp '", AgentBinary(), "' '", dir, "/llima-agent' && cp '", init,
                              "' '", dir, "/llima-init' && echo copied"));
  EXPECT_EQ(copied, "copied\n");
  return dir;
}

TEST_F(AgentTest, AnInitThatCannotBecomeLlimaInitStillServesAndTheLogSaysWhy) {
  std::string dir = AgentBesideInit(scratch_, InitProgram());
  agent_->set_binary(dir + "/llima-agent");
  agent_->Start();
  // Opened at start; no longer executable when an init wants to become it.
  ASSERT_EQ(chmod((dir + "/llima-init").c_str(), 0644), 0);
  std::string project = scratch_.MakeDir("projects/fallback", kOwner, kOwner);
  v1::Environment env;
  grpc::Status status = Create(project, &env);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_THAT(agent_->log(),
              HasSubstr("warning: environment " + env.name() +
                        ": exec llima-init: Permission denied; its init stays a copy of the fork "
                        "server"));
  ExecResult run =
      Shell(agent_->stub(), env.name(), "tr '\\0' ' ' < /proc/1/cmdline; echo; echo $$");
  EXPECT_EQ(run.out, "llima-init " + env.name() + " \n2\n") << run.err;
}

TEST_F(AgentTest, ACreateWhoseInitEndsAsItBecomesLlimaInitFailsAndLeavesNothing) {
  // A program that exits at once, in llima-init's place: the environment would have no PID 1.
  std::string dir = AgentBesideInit(scratch_, "/bin/true");
  agent_->set_binary(dir + "/llima-agent");
  agent_->Start();
  std::string project = scratch_.MakeDir("projects/no-init", kOwner, kOwner);
  v1::Environment env;
  grpc::Status status = Create(project, &env);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INTERNAL);
  EXPECT_THAT(status.error_message(),
              HasSubstr("the environment's init ended as it became llima-init (exit status 0)"));
  absl::StatusOr<std::string> name = DeriveEnvironmentName(project);
  ASSERT_TRUE(name.ok());
  ExpectNoTraceOf(*name);
  EXPECT_EQ(HostOutput("ls -A '" + agent_->state_dir() + "/envs'"), "");
}

TEST_F(AgentTest, ServesTheStandardHealthService) {
  agent_->Start();
  auto channel =
      grpc::CreateChannel("unix:" + agent_->socket_path(), grpc::InsecureChannelCredentials());
  grpc::GenericStub generic(channel);
  grpc::ClientContext context;
  grpc::ByteBuffer request;  // HealthCheckRequest{} encodes to nothing
  grpc::Slice empty("");
  request = grpc::ByteBuffer(&empty, 1);
  grpc::ByteBuffer response;
  grpc::CompletionQueue cq;
  std::unique_ptr<grpc::GenericClientAsyncResponseReader> call = generic.PrepareUnaryCall(
      &context, "/grpc.health.v1.Health/Check", request, &cq);
  call->StartCall();
  grpc::Status status;
  call->Finish(&response, &status, reinterpret_cast<void*>(1));
  void* tag;
  bool ok;
  ASSERT_TRUE(cq.Next(&tag, &ok));
  ASSERT_TRUE(status.ok()) << status.error_message();
  std::vector<grpc::Slice> slices;
  ASSERT_TRUE(response.Dump(&slices).ok());
  std::string bytes;
  for (const auto& s : slices) bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  EXPECT_EQ(bytes, std::string("\x08\x01", 2)) << "status is not SERVING";
}

TEST_F(AgentTest, LogsOneLinePerOperation) {
  agent_->Start();
  std::string project = scratch_.MakeDir("projects/logged", kOwner, kOwner);
  v1::Environment env;
  ASSERT_TRUE(Create(project, &env).ok());
  Shell(agent_->stub(), env.name(), "exit 3");
  std::string log = agent_->log();
  EXPECT_THAT(log, ::testing::ContainsRegex("create env=" + env.name() + " path=" + project +
                                          " [0-9.]+ms OK"));
  EXPECT_THAT(log, ::testing::ContainsRegex("exec env=" + env.name() + " pid=[0-9]+ argv0=sh "
                                          "[0-9.]+ms OK"));
  v1::Environment ignored;
  Create("relative", &ignored);
  EXPECT_THAT(agent_->log(), ::testing::ContainsRegex("create path=relative [0-9.]+ms "
                                                    "INVALID_ARGUMENT: .*relative"));
}

// Every new environment's mount namespace is a copy of the fork server's, so that one must not
// grow with the environments: their pins stay in the agent's namespace.
TEST_F(AgentTest, TheForkServersMountTableDoesNotGrowWithTheEnvironments) {
  agent_->Start();
  pid_t fork_server = agent_->ForkServerPid();
  ASSERT_GT(fork_server, 0) << "no fork server among the agent's children";
  // Mounts on this agent's state directory only: agents of tests running alongside (ctest -j)
  // mount their own meanwhile, and those propagate into every namespace.
  const std::string state_dir = agent_->state_dir();
  auto mounts = [&state_dir](pid_t pid) {
    std::string table = HostOutput(absl::StrCat("cat /proc/", pid, "/mountinfo"));
    long count = 0;
    for (absl::string_view line : absl::StrSplit(table, '\n', absl::SkipEmpty())) {
      std::vector<absl::string_view> fields = absl::StrSplit(line, ' ');
      if (fields.size() > 4 && absl::StartsWith(fields[4], state_dir)) ++count;
    }
    return count;
  };
  long agent_before = mounts(agent_->pid());
  long fork_server_before = mounts(fork_server);
  for (int i = 0; i < 10; ++i) {
    v1::Environment env;
    ASSERT_TRUE(Create(scratch_.MakeDir(absl::StrCat("projects/m", i), kOwner, kOwner), &env).ok());
  }
  EXPECT_EQ(mounts(agent_->pid()), agent_before + 10) << "one pin per environment";
  EXPECT_EQ(mounts(fork_server), fork_server_before);
}

// Each start binds the state directory onto itself and binds its view, unless they are mounted
// already: restarts, after a stop or a crash, must not stack them. The root has a space in it,
// which /proc/self/mountinfo writes as \040.
TEST_F(AgentTest, RestartsLeaveOneMountOfTheStateDirectoryAndOneOfItsView) {
  AgentProcess agent(scratch_.MakeDir("with space"));
  agent.Start();
  agent.Stop();
  agent.Start();
  agent.Kill9();
  agent.Start();
  std::vector<std::string> mounts = MountPointsBelow(agent.state_dir());
  EXPECT_EQ(std::count(mounts.begin(), mounts.end(), agent.state_dir()), 1)
      << absl::StrJoin(mounts, "\n");
  EXPECT_EQ(std::count(mounts.begin(), mounts.end(), agent.state_dir() + "/view"), 1)
      << absl::StrJoin(mounts, "\n");
  // Homes are cloned through the view: an environment gets its home.
  v1::Environment env;
  grpc::Status created =
      CallCreate(agent.stub(), scratch_.MakeDir("projects/spaced", kOwner, kOwner), &env);
  ASSERT_TRUE(created.ok()) << created.error_message();
  EXPECT_EQ(Shell(agent.stub(), env.name(), "touch ~/kept && ls ~").out, "kept\n");
}

class FailedCreateTest : public AgentTest, public ::testing::WithParamInterface<std::string> {};

TEST_P(FailedCreateTest, FailureAtAnyStepIsRolledBack) {
  agent_->Start({}, {"LLIMA_AGENT_FAIL_AT=" + GetParam()});
  std::string project = scratch_.MakeDir("projects/rollback", kOwner, kOwner);
  std::ofstream(project + "/keep") << "data";
  v1::Environment env;
  grpc::Status status = Create(project, &env);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INTERNAL);
  EXPECT_THAT(status.error_message(), HasSubstr("injected failure at " + GetParam()));
  // Its exact name: tests running beside this one make environments named rollback-* too.
  absl::StatusOr<std::string> name = DeriveEnvironmentName(project);
  ASSERT_TRUE(name.ok()) << name.status();
  ExpectNoTraceOf(*name);
  std::string entries = HostOutput("ls -A '" + agent_->state_dir() + "/envs'");
  EXPECT_EQ(entries, "");
  std::ifstream kept(project + "/keep");
  std::string content;
  std::getline(kept, content);
  EXPECT_EQ(content, "data");
  grpc::ClientContext context;
  v1::ListEnvironmentsResponse list;
  ASSERT_TRUE(agent_->stub().ListEnvironments(&context, {}, &list).ok());
  EXPECT_EQ(list.environments_size(), 0);
}

INSTANTIATE_TEST_SUITE_P(EveryStep, FailedCreateTest,
                         ::testing::Values("create:directory", "create:cgroup", "create:init",
                                           "create:pin", "create:record"),
                         [](const auto& info) {
                           std::string name = info.param.substr(info.param.find(':') + 1);
                           return name;
                         });

// ---- llima-box -------------------------------------------------------------------------------

class CliTest : public AgentTest {
 protected:
  struct Result {
    int code;
    std::string out;
  };
  Result Cli(const std::string& args, bool use_env_var = true) {
    std::string prefix = use_env_var ? "LLIMA_BOX_SOCKET='" + agent_->socket_path() + "' " : "";
    std::string flag = use_env_var ? "" : " --socket '" + agent_->socket_path() + "'";
    std::string command =
        absl::StrCat(prefix, "'", LLIMA_BOX_BINARY, "'", flag, " ", args, " </dev/null 2>&1");
    FILE* p = popen(command.c_str(), "r");
    Result r{-1, ""};
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof(buf), p)) > 0) r.out.append(buf, n);
    int status = pclose(p);
    r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    return r;
  }
};

TEST_F(CliTest, CreateListExecDelete) {
  agent_->Start();
  std::string project = scratch_.MakeDir("projects/cli-app", kOwner, kOwner);
  Result created = Cli("create " + project);
  ASSERT_EQ(created.code, 0) << created.out;
  std::string name = std::string(absl::StripTrailingAsciiWhitespace(created.out));
  EXPECT_THAT(name, MatchesRegex("cli-app-[0-9a-f]{4}"));

  Result listed = Cli("list", /*use_env_var=*/false);
  EXPECT_EQ(listed.code, 0);
  EXPECT_THAT(listed.out, HasSubstr(name));
  EXPECT_THAT(listed.out, HasSubstr(project));
  EXPECT_THAT(listed.out, HasSubstr("running"));
  EXPECT_THAT(Cli("list --json").out, HasSubstr("\"name\":\"" + name + "\""));

  Result ran = Cli("exec " + name + " -- sh -c 'echo inside $(whoami); exit 7'");
  EXPECT_EQ(ran.code, 7);
  EXPECT_EQ(ran.out, "inside " + name + "\n");
  EXPECT_EQ(Cli("exec " + name + " -- sh -c 'kill -TERM $$'").code, 128 + 15);

  Result deleted = Cli("delete " + name);
  EXPECT_EQ(deleted.code, 0) << deleted.out;
  Result missing = Cli("exec " + name + " -- true");
  EXPECT_EQ(missing.code, 1);
  EXPECT_THAT(missing.out, HasSubstr("no environment named " + name));
}

TEST_F(CliTest, WorksWithClosedOrBrokenStandardStreams) {
  agent_->Start();
  std::string project = scratch_.MakeDir("projects/streams", kOwner, kOwner);
  ASSERT_EQ(Cli("create " + project).code, 0);
  std::string cli = absl::StrCat("LLIMA_BOX_SOCKET='", agent_->socket_path(), "' '",
                                 LLIMA_BOX_BINARY, "' shell '", project, "'");
  // stdin closed (as under cron): the command sees end of input, the CLI does not hang.
  EXPECT_EQ(HostOutput("timeout 20 sh -c \"" + cli + " -- cat <&-; echo status-\\$?\""),
            "status-0\n");
  // SIGPIPE ignored and the reader gone: the CLI ends (and with it the command).
  EXPECT_EQ(HostOutput("timeout 20 bash -c \"trap '' PIPE; " + cli +
                       " -- yes | head -1; echo status-\\${PIPESTATUS[0]}\" 2>/dev/null"),
            "y\nstatus-1\n");
}

// Input the command never got stays where it was: a call refused before the process started
// reads none of it, so the next reader of the same stream gets it all.
TEST_F(CliTest, InputIsLeftUnreadWhenTheCommandCannotStart) {
  agent_->Start();
  std::string cli =
      absl::StrCat("LLIMA_BOX_SOCKET='", agent_->socket_path(), "' '", LLIMA_BOX_BINARY, "'");
  EXPECT_EQ(HostOutput("printf 'for the next reader' | { " + cli +
                       " exec no-such-env -- cat 2>/dev/null; echo \" status-$?\"; cat; }"),
            " status-1\nfor the next reader");
}

// An agent that serves Exec in its own way, for what the CLI sends: it either understands
// ExecStart.project_path or, as agents before it did, answers a start without an environment
// name with INVALID_ARGUMENT. Exec echoes the input it gets, then exits 5.
class ScriptedAgent final : public v1::AgentService::Service {
 public:
  explicit ScriptedAgent(bool understands_project_path)
      : understands_project_path_(understands_project_path) {}

  std::atomic<int> creates{0};
  std::atomic<int> execs{0};

  grpc::Status CreateEnvironment(grpc::ServerContext*, const v1::CreateEnvironmentRequest* request,
                                 v1::Environment* env) override {
    ++creates;
    env->set_name("scripted-env");
    env->set_project_path(request->project_path());
    env->set_shell("/bin/sh");
    return grpc::Status::OK;
  }

  grpc::Status Exec(grpc::ServerContext*,
                    grpc::ServerReaderWriter<v1::ExecResponse, v1::ExecRequest>* stream) override {
    ++execs;
    v1::ExecRequest request;
    if (!stream->Read(&request) || !request.has_start()) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "no start");
    }
    const v1::ExecStart& start = request.start();
    std::string where = start.environment();
    if (where.empty() && understands_project_path_) where = "project " + start.project_path();
    if (where.empty()) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "start.environment is empty");
    }
    v1::ExecResponse response;
    response.mutable_started()->set_pid(2);
    stream->Write(response);
    response.set_stdout("in " + where + ": ");
    stream->Write(response);
    while (stream->Read(&request) && !request.has_close_stdin()) {
      response.set_stdout(request.stdin());
      stream->Write(response);
    }
    response.mutable_exited()->set_exit_code(5);
    stream->Write(response);
    return grpc::Status::OK;
  }

 private:
  const bool understands_project_path_;
};

TEST_F(CliTest, ShellRunsACommandInOneCallAndInTwoWithAnAgentThatPredatesProjectPath) {
  std::string project = scratch_.MakeDir("projects/scripted", kOwner, kOwner);
  for (bool understands : {true, false}) {
    SCOPED_TRACE(understands ? "current agent" : "older agent");
    ScriptedAgent service(understands);
    std::string socket = scratch_.path() + "/scripted.sock";
    grpc::ServerBuilder builder;
    builder.AddListeningPort("unix:" + socket, grpc::InsecureServerCredentials());
    builder.RegisterService(&service);
    std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
    ASSERT_NE(server, nullptr);
    std::string out =
        HostOutput(absl::StrCat("printf 'typed input' | '", LLIMA_BOX_BINARY, "' --socket '",
                                socket, "' shell '", project, "' -- cat; echo \" status-$?\""));
    server->Shutdown();
    if (understands) {
      EXPECT_EQ(out, "in project " + project + ": typed input status-5\n");
      EXPECT_EQ(service.creates, 0);
      EXPECT_EQ(service.execs, 1);
    } else {
      // Refused before it started, the first call read no input: the second one gets it all.
      EXPECT_EQ(out, "in scripted-env: typed input status-5\n");
      EXPECT_EQ(service.creates, 1);
      EXPECT_EQ(service.execs, 2);
    }
    unlink(socket.c_str());
  }
}

TEST_F(CliTest, ExplainsAnUnreachableAgent) {
  Result r = Cli("list");  // no agent started
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.out, HasSubstr("cannot reach llima-agent at " + agent_->socket_path()));
}

}  // namespace
}  // namespace llima::testing
