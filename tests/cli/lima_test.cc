// llima-box and the Lima VM, with a fake limactl that records its calls and plays a missing,
// stopped, running or broken instance. The agent "in the VM" is a real one on the socket path
// Lima would forward to.

#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <fstream>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "agent_harness.h"
#include "gmock/gmock.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"
#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"
#include "read_file.h"

namespace llima::testing {
namespace {

using ::testing::HasSubstr;

constexpr uid_t kOwner = 4242;

class LimaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(geteuid(), 0u) << "integration tests need root";
    dir_ = scratch_.path();
    scratch_.MakeDir("bin");
    scratch_.MakeDir("home");
    scratch_.MakeDir("instance");
    ASSERT_EQ(symlink(FAKE_LIMACTL, (dir_ + "/bin/limactl").c_str()), 0);
    project_ = scratch_.MakeDir("projects/app", kOwner, kOwner);
    agent_ = std::make_unique<AgentProcess>(scratch_.path() + "/agentroot",
                                            dir_ + "/instance/sock/agent.sock");
    scratch_.MakeDir("agentroot");
    agent_->Start();
  }
  void TearDown() override {
    if (HasFailure()) {
      std::cerr << "---- limactl calls ----\n" << Calls() << "---- agent log ----\n"
                << agent_->log();
    }
    agent_.reset();
  }

  void SetState(const std::string& state) { std::ofstream(dir_ + "/state") << state << "\n"; }
  std::string State() { return std::string(absl::StripTrailingAsciiWhitespace(
                            ReadFileOrEmpty(dir_ + "/state"))); }
  std::string Calls() { return ReadFileOrEmpty(dir_ + "/calls"); }

  struct Result {
    int code;
    std::string out;
  };
  // Runs llima-box with the fake limactl first in PATH and no explicit agent socket.
  Result Box(const std::string& args, const std::string& stdin_from = "/dev/null",
             bool with_fake = true) {
    std::string path = with_fake ? dir_ + "/bin:/usr/bin:/bin" : "/usr/bin:/bin";
    std::string command = absl::StrCat("env -u LLIMA_BOX_SOCKET PATH=", path, " HOME=", dir_,
                                       "/home FAKE_LIMA_DIR=", dir_, " '", LLIMA_BOX_BINARY,
                                       "' ", args, " <", stdin_from, " 2>&1");
    FILE* p = popen(command.c_str(), "r");
    Result r{-1, ""};
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof(buf), p)) > 0) r.out.append(buf, n);
    int status = pclose(p);
    r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    return r;
  }
  std::vector<std::string> CallLines() {
    return absl::StrSplit(Calls(), '\n', absl::SkipEmpty());
  }

  ScratchDir scratch_;
  std::string dir_;
  std::string project_;
  std::unique_ptr<AgentProcess> agent_;
};

TEST_F(LimaTest, ShellOnAFreshMachineCreatesThenStartsTheVmWithTheEmbeddedConfig) {
  SetState("missing");
  Result r = Box("shell " + project_ + " -- sh -c 'echo inside $(whoami)'");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_THAT(r.out, HasSubstr("inside app-"));
  EXPECT_THAT(r.out, HasSubstr("creating the llima-box VM"));
  EXPECT_THAT(r.out, HasSubstr("Starting the instance"));  // limactl's progress, passed on
  std::vector<std::string> calls = CallLines();
  int create = -1, start = -1;
  for (size_t i = 0; i < calls.size(); ++i) {
    EXPECT_EQ(calls[i].rfind("--tty=false ", 0), 0u) << calls[i];
    if (calls[i].rfind("--tty=false create --name=llima-box ", 0) == 0) create = i;
    if (calls[i] == "--tty=false start --timeout=30m llima-box") start = i;
  }
  ASSERT_GE(create, 0);
  EXPECT_GT(start, create);
  EXPECT_EQ(ReadFileOrEmpty(dir_ + "/created.yaml"), Box("config show").out);
  EXPECT_EQ(State(), "running");
  // The sources the VM builds the agent from are staged in the instance directory.
  EXPECT_THAT(HostOutput("tar tzf " + dir_ + "/instance/agent-src.tar.gz"),
              HasSubstr("provision/install-agent.sh"));
}

TEST_F(LimaTest, AnExistingInstanceIsStartedNotRecreatedAndItsConfigIsKept) {
  SetState("stopped");
  scratch_.MakeDir("home/.lima/llima-box");
  std::string config = dir_ + "/home/.lima/llima-box/lima.yaml";
  std::ofstream(config) << "# edited by the user\ncpus: 12\n";
  Result r = Box("shell " + project_ + " -- true");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_THAT(Calls(), HasSubstr("start --timeout=30m llima-box"));
  EXPECT_THAT(Calls(), ::testing::Not(HasSubstr("create")));
  EXPECT_EQ(ReadFileOrEmpty(config), "# edited by the user\ncpus: 12\n");
}

TEST_F(LimaTest, ARunningVmIsNotStarted) {
  SetState("running");
  Result r = Box("shell " + project_ + " -- sh -c 'exit 4'");
  EXPECT_EQ(r.code, 4) << r.out;
  EXPECT_THAT(Calls(), ::testing::Not(HasSubstr("start")));
  EXPECT_THAT(Calls(), ::testing::Not(HasSubstr("create")));
}

TEST_F(LimaTest, ABrokenVmGivesAnActionableError) {
  SetState("broken");
  Result r = Box("shell " + project_ + " -- true");
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.out, HasSubstr("Broken"));
  EXPECT_THAT(r.out, HasSubstr("cannot find the disk image"));
  EXPECT_THAT(r.out, HasSubstr("llima-box vm delete"));
  EXPECT_THAT(Calls(), ::testing::Not(HasSubstr("start")));
}

TEST_F(LimaTest, MissingLimactlSaysHowToInstallLima) {
  Result r = Box("shell " + project_, "/dev/null", /*with_fake=*/false);
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.out, HasSubstr("limactl was not found"));
  EXPECT_THAT(r.out, HasSubstr("install Lima"));
}

TEST_F(LimaTest, ABadCommandLineIsNamedExitsTwoAndTouchesNothing) {
  Result unknown = Box("bogus " + project_);
  EXPECT_EQ(unknown.code, 2) << unknown.out;
  EXPECT_THAT(unknown.out, HasSubstr("llima-box: unknown command 'bogus'"));
  EXPECT_THAT(unknown.out, HasSubstr("shell, create, list"));
  Result nested = Box("vm bogus");
  EXPECT_EQ(nested.code, 2) << nested.out;
  EXPECT_THAT(nested.out, HasSubstr("llima-box vm: unknown command 'bogus'"));
  EXPECT_THAT(nested.out, HasSubstr("start, stop, delete"));
  Result none = Box("");
  EXPECT_EQ(none.code, 2) << none.out;
  EXPECT_THAT(none.out, HasSubstr("a command is required"));
  Result option = Box("--bogus");
  EXPECT_EQ(option.code, 2) << option.out;
  EXPECT_THAT(option.out, HasSubstr("unknown option --bogus"));
  Result extra = Box("list extra");
  EXPECT_EQ(extra.code, 2) << extra.out;
  EXPECT_THAT(extra.out, HasSubstr("extra"));
  EXPECT_THAT(extra.out, HasSubstr("llima-box list --help"));
  EXPECT_EQ(Calls(), "");
  Result help = Box("--help");
  EXPECT_EQ(help.code, 0);
  EXPECT_THAT(help.out, HasSubstr("delete-all"));
}

// The CLI builds only the options of the command a line names (host-cli/main.cc): each command
// the full help lists must still have its own help, also after the global options, and its
// options must still parse.
TEST_F(LimaTest, EveryCommandTheHelpListsHasItsOwnHelp) {
  Result help = Box("--help");
  ASSERT_EQ(help.code, 0) << help.out;
  size_t at = help.out.find("Subcommands:\n");
  ASSERT_NE(at, std::string::npos) << help.out;
  std::vector<std::string> commands;
  for (absl::string_view line : absl::StrSplit(help.out.substr(at), '\n', absl::SkipEmpty())) {
    if (!absl::StartsWith(line, "  ")) continue;
    std::vector<std::string> words = absl::StrSplit(line, ' ', absl::SkipEmpty());
    commands.push_back(words.front());
  }
  EXPECT_EQ(commands.size(), 9u) << help.out;
  for (const std::string& command : commands) {
    for (const char* before : {"", "--local ", "--socket /nowhere ", "--socket=/nowhere "}) {
      Result own = Box(absl::StrCat(before, command, " --help"));
      EXPECT_EQ(own.code, 0) << before << command << ": " << own.out;
      EXPECT_THAT(own.out, HasSubstr(absl::StrCat(" ", command, " [OPTIONS]")))
          << before << command;
    }
  }
  Result options = Box("--socket /nowhere exec -w /tmp -e A=1 name -- true");
  EXPECT_EQ(options.code, 1) << options.out;  // parsed; then the agent is not there
  EXPECT_THAT(options.out, HasSubstr("/nowhere")) << options.out;
  EXPECT_EQ(Calls(), "");
}

TEST_F(LimaTest, DeleteAllWithoutATerminalRefusesWithoutForce) {
  SetState("running");
  ASSERT_EQ(Box("create " + project_).code, 0);
  Result refused = Box("delete-all");
  EXPECT_EQ(refused.code, 1);
  EXPECT_THAT(refused.out, HasSubstr("--force"));
  EXPECT_THAT(Box("list").out, HasSubstr(project_));
  Result forced = Box("delete-all --force");
  EXPECT_EQ(forced.code, 0) << forced.out;
  EXPECT_THAT(Box("list").out, ::testing::Not(HasSubstr(project_)));
}

TEST_F(LimaTest, DeleteFindsTheEnvironmentByPathOrName) {
  SetState("running");
  Result created = Box("create " + project_);
  ASSERT_EQ(created.code, 0);
  // The name is the last line (progress messages may come first).
  std::string out(absl::StripTrailingAsciiWhitespace(created.out));
  std::string name = out.substr(out.find_last_of('\n') + 1);
  EXPECT_EQ(Box("delete " + project_).code, 0);
  ASSERT_EQ(Box("create " + project_).code, 0);
  EXPECT_EQ(Box("delete " + name).code, 0);
  Result missing = Box("delete " + name);
  EXPECT_EQ(missing.code, 1);
  EXPECT_THAT(missing.out, HasSubstr("no environment named"));
}

// llima-box writes this JSON itself (it has no protobuf reflection): protobuf's own parser must
// read it back to exactly what the agent lists, and every field must be there.
TEST_F(LimaTest, ListAsJsonIsWhatTheAgentListsInProtobufsMapping) {
  SetState("running");
  Result created = Box("create " + project_);
  ASSERT_EQ(created.code, 0) << created.out;
  // The name is the last line (a note about the VM's agent may come before it).
  std::string name(absl::StripTrailingAsciiWhitespace(created.out));
  name = name.substr(name.find_last_of('\n') + 1);
  // A detached process, so that the repeated field and its timestamp are written too.
  v1::ExecStart start;
  start.set_environment(name);
  start.add_argv("sh");
  start.add_argv("-c");
  start.add_argv("echo up-931; exec sleep 931");
  start.set_detached(true);
  ExecStream detached(agent_->stub(), start);
  ASSERT_TRUE(detached.WaitFor("up-931"));

  Result r = Box("list --json");
  ASSERT_EQ(r.code, 0) << r.out;
  v1::ListEnvironmentsResponse parsed;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(r.out, &parsed).ok()) << r.out;
  v1::ListEnvironmentsResponse listed;
  ASSERT_TRUE(CallList(agent_->stub(), &listed).ok());
  ASSERT_EQ(listed.environments_size(), 1);
  ASSERT_EQ(listed.environments(0).detached_size(), 1);
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(parsed, listed))
      << "llima-box:\n" << parsed.DebugString() << "agent:\n" << listed.DebugString();
  // Every field is written in its own object, also those at their default value (which the
  // comparison above cannot tell from absent).
  google::protobuf::Struct objects;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(r.out, &objects).ok());
  ASSERT_TRUE(objects.fields().contains("environments"));
  ASSERT_EQ(objects.fields().at("environments").list_value().values_size(), 1);
  const google::protobuf::Struct& env =
      objects.fields().at("environments").list_value().values(0).struct_value();
  for (const char* member : {"detached", "limits", "limitsEnforcement"}) {
    ASSERT_TRUE(env.fields().contains(member)) << member << " is not written";
  }
  ASSERT_EQ(env.fields().at("detached").list_value().values_size(), 1);
  std::vector<std::pair<const google::protobuf::Descriptor*, const google::protobuf::Struct*>>
      written = {
          {v1::Environment::descriptor(), &env},
          {v1::DetachedProcess::descriptor(),
           &env.fields().at("detached").list_value().values(0).struct_value()},
          {v1::ResourceLimits::descriptor(), &env.fields().at("limits").struct_value()},
          {v1::LimitsEnforcement::descriptor(),
           &env.fields().at("limitsEnforcement").struct_value()}};
  for (const auto& [type, object] : written) {
    for (int i = 0; i < type->field_count(); ++i) {
      EXPECT_TRUE(object->fields().contains(type->field(i)->json_name()))
          << type->full_name() << " field " << type->field(i)->name() << " is not written";
    }
  }
  Exec(agent_->stub(), name, {"pkill", "-f", "sleep 931"});
}

TEST_F(LimaTest, ListAndStatusShowTheLimitsAndWhetherTheyAreEnforced) {
  SetState("running");
  ASSERT_EQ(Box("create " + project_).code, 0);
  Result list = Box("list");
  ASSERT_EQ(list.code, 0) << list.out;
  EXPECT_THAT(list.out, ::testing::MatchesRegex("NAME +STATE +PROCESSES +AGE +MEMORY +PIDS +CPU "
                                                "+PROJECT\n(.|\n)*"));
  EXPECT_THAT(list.out, ::testing::ContainsRegex(" 4096\\*? "));
  // A value the kernel does not enforce is marked, and the mark explained.
  bool marked = list.out.find("4096*") != std::string::npos;
  EXPECT_EQ(marked, list.out.find("\n* limits not enforced: ") != std::string::npos) << list.out;
  Result status = Box("status");
  EXPECT_THAT(status.out, HasSubstr("limits of a new environment: memory "));
  EXPECT_THAT(status.out, HasSubstr(", pids 4096, cpu max"));
  EXPECT_EQ(marked, status.out.find("limits not enforced: ") != std::string::npos) << status.out;
}

TEST_F(LimaTest, StatusReportsTheVmAndTheAgent) {
  SetState("running");
  Result r = Box("status");
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_THAT(r.out, HasSubstr("VM: Running (x86_64, 4 CPUs, 8192 MiB"));
  EXPECT_THAT(r.out, HasSubstr("agent: serving at " + agent_->socket_path() + ", version 0.1.0"));
  SetState("stopped");
  Result stopped = Box("status");
  EXPECT_EQ(stopped.code, 1);
  EXPECT_THAT(stopped.out, HasSubstr("VM: Stopped"));
}

TEST_F(LimaTest, VmCommandsDriveLimactl) {
  SetState("missing");
  EXPECT_EQ(Box("vm start").code, 0);
  EXPECT_EQ(State(), "running");
  EXPECT_EQ(Box("vm stop").code, 0);
  EXPECT_EQ(State(), "stopped");
  Result refused = Box("vm delete");
  EXPECT_EQ(refused.code, 1);
  EXPECT_EQ(State(), "stopped");
  EXPECT_EQ(Box("vm delete --force").code, 0);
  EXPECT_EQ(State(), "missing");
}

TEST_F(LimaTest, WaitsForTheForwardedSocketAndSaysSo) {
  SetState("running");
  agent_->Terminate();  // the VM runs, the agent (or Lima's forward) is not up yet
  std::thread late_agent([&] {
    usleep(1500000);
    agent_->Start();
  });
  Result r = Box("shell " + project_ + " -- echo finally");
  late_agent.join();
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_THAT(r.out, HasSubstr("waiting for the agent socket " + agent_->socket_path()));
  EXPECT_THAT(r.out, HasSubstr("finally"));
}

TEST_F(LimaTest, WaitsThroughAForwardThatAcceptsAndClosesUntilTheAgentAnswers) {
  SetState("running");
  agent_->Terminate();
  // Lima's forward is up before the agent behind it: connections are accepted, then closed.
  const std::string path = agent_->socket_path();
  int listener = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(listener, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  ASSERT_LT(path.size(), sizeof(addr.sun_path));
  memcpy(addr.sun_path, path.data(), path.size());
  unlink(path.c_str());
  ASSERT_EQ(bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(listen(listener, 16), 0);
  std::atomic<int> closed{0};
  std::thread forward([&] {
    auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(1500);
    while (std::chrono::steady_clock::now() < until) {
      pollfd p{listener, POLLIN, 0};
      if (poll(&p, 1, 50) == 1) {
        int c = accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
        if (c >= 0) {
          close(c);
          ++closed;
        }
      }
    }
    close(listener);
    unlink(path.c_str());
    agent_->Start();
  });
  Result r = Box("shell " + project_ + " -- echo answered");
  forward.join();
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_GT(closed.load(), 0) << "the forward was never tried";
  EXPECT_THAT(r.out, HasSubstr("waiting for llima-agent in the VM to answer"));
  EXPECT_THAT(r.out, HasSubstr("answered"));
}

TEST_F(LimaTest, LocalShellRunsAgainstAnAgentOnThisMachine) {
  // --local means the agent's default socket on this machine; take it for the test if free.
  if (access("/run/llima-box/agent.sock", F_OK) == 0) {
    GTEST_SKIP() << "an agent already serves /run/llima-box/agent.sock on this machine";
  }
  bool made_dir = access("/run/llima-box", F_OK) != 0;
  {
    AgentProcess local(scratch_.MakeDir("localroot"), "/run/llima-box/agent.sock");
    local.Start();
    Result r = Box("--local shell " + project_ + " -- sh -c 'echo local $(whoami); exit 6'");
    EXPECT_EQ(r.code, 6) << r.out;
    EXPECT_THAT(r.out, HasSubstr("local app-"));
    EXPECT_THAT(Calls(), ::testing::Not(HasSubstr("list")));
  }
  if (made_dir) rmdir("/run/llima-box");
}

TEST_F(LimaTest, LocalModeUsesTheLocalSocketWithoutLima) {
  Result r = Box("--local list");
  EXPECT_THAT(Calls(), ::testing::Not(HasSubstr("list")));
  if (access("/run/llima-box/agent.sock", F_OK) != 0) {
    EXPECT_EQ(r.code, 1);
    EXPECT_THAT(r.out, HasSubstr("cannot reach llima-agent at /run/llima-box/agent.sock"));
  }
}

}  // namespace
}  // namespace llima::testing
