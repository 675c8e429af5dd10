// The environment core against a real agent, as root: isolation, identity, exec semantics,
// idempotent create, input validation, delete and restart. Every check runs a command inside an
// environment through the Exec RPC.

#include <grpcpp/grpcpp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <set>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "agent_harness.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "naming.h"

namespace llima::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::UnorderedElementsAreArray;

constexpr uid_t kOwner = 4242;
constexpr gid_t kOwnerGroup = 4242;

std::string Trim(const std::string& s) { return std::string(absl::StripAsciiWhitespace(s)); }

class EnvironmentTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    setup_error_ = RunSuiteSetUp([] {
      RequireRoot("integration tests need root: they create namespaces and mounts");
      scratch_ = new ScratchDir();
      agent_ = new AgentProcess(scratch_->path());
      project_a_ = scratch_->MakeDir("projects/alpha", kOwner, kOwnerGroup);
      project_b_ = scratch_->MakeDir("projects/beta", kOwner, kOwnerGroup);
      agent_->Start();
      env_a_ = new std::string(CreateOrDie(project_a_));
      env_b_ = new std::string(CreateOrDie(project_b_));
    });
  }
  void SetUp() override { ASSERT_EQ(setup_error_, "") << "the suite's set-up failed"; }

  static void TearDownTestSuite() {
    delete agent_;
    agent_ = nullptr;
    delete scratch_;
    scratch_ = nullptr;
  }

  void TearDown() override {
    if (HasFailure() && agent_ != nullptr) {
      std::cerr << "---- agent log ----\n" << agent_->log() << "-------------------\n";
    }
  }

  static std::string CreateOrDie(const std::string& path) {
    auto env = Create(path);
    if (!env.first.ok()) {
      ADD_FAILURE() << "create " << path << ": " << env.first.error_message();
      return "";
    }
    return env.second.name();
  }

  static std::pair<grpc::Status, v1::Environment> Create(const std::string& path,
                                                         const std::string& name = "") {
    v1::CreateEnvironmentRequest request;
    request.set_project_path(path);
    request.set_name(name);
    v1::Environment env;
    grpc::Status status = CallCreate(agent_->stub(), request, &env);
    return {status, env};
  }

  static grpc::Status Delete(const std::string& name) { return CallDelete(agent_->stub(), name); }

  static std::vector<v1::Environment> List() {
    v1::ListEnvironmentsResponse response;
    EXPECT_TRUE(CallList(agent_->stub(), &response).ok());
    return {response.environments().begin(), response.environments().end()};
  }

  static ExecResult In(const std::string& env, const std::string& script) {
    return Shell(agent_->stub(), env, script);
  }

  static std::vector<std::string> StateEntries() {
    std::string out = HostOutput("ls -A '" + agent_->state_dir() + "/envs'");
    return absl::StrSplit(out, '\n', absl::SkipEmpty());
  }

  static inline std::string setup_error_;
  static inline ScratchDir* scratch_ = nullptr;
  static inline AgentProcess* agent_ = nullptr;
  static inline std::string project_a_;
  static inline std::string project_b_;
  static inline std::string* env_a_ = nullptr;
  static inline std::string* env_b_ = nullptr;
};

// ---- identity --------------------------------------------------------------------------------

TEST_F(EnvironmentTest, WorkingDirectoryIsTheProjectPath) {
  ExecResult r = In(*env_a_, "pwd");
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_EQ(r.out, project_a_ + "\n");
}

TEST_F(EnvironmentTest, ProcessesRunAsTheProjectOwner) {
  ExecResult r = In(*env_a_, "id -u; id -g; id -G");
  EXPECT_EQ(r.out, absl::StrCat(kOwner, "\n", kOwnerGroup, "\n", kOwnerGroup, "\n"));
}

TEST_F(EnvironmentTest, UserNameAndHomeAreTheEnvironmentName) {
  ExecResult r = In(*env_a_, "whoami; echo $HOME; cd && pwd; hostname");
  EXPECT_EQ(r.out, absl::StrCat(*env_a_, "\n/home/", *env_a_, "\n/home/", *env_a_, "\n", *env_a_,
                                "\n"));
}

TEST_F(EnvironmentTest, FileWrittenInProjectAppearsOnHostWithOwner) {
  ExecResult r = In(*env_a_, "echo written-inside > from-inside.txt");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::string host_path = project_a_ + "/from-inside.txt";
  struct stat st;
  ASSERT_EQ(stat(host_path.c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, kOwner);
  std::ifstream in(host_path);
  std::string content;
  std::getline(in, content);
  EXPECT_EQ(content, "written-inside");
}

TEST_F(EnvironmentTest, NoCapabilitiesAndNoNewPrivileges) {
  ExecResult r = In(*env_a_, "grep -E '^(CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs):' "
                             "/proc/self/status");
  EXPECT_THAT(r.out, HasSubstr("CapEff:\t0000000000000000"));
  EXPECT_THAT(r.out, HasSubstr("CapPrm:\t0000000000000000"));
  EXPECT_THAT(r.out, HasSubstr("CapBnd:\t0000000000000000"));
  EXPECT_THAT(r.out, HasSubstr("CapAmb:\t0000000000000000"));
  EXPECT_THAT(r.out, HasSubstr("NoNewPrivs:\t1"));
}

// ---- what an environment sees ----------------------------------------------------------------

TEST_F(EnvironmentTest, RootContainsOnlyTheAllowedEntries) {
  std::vector<std::string> expected = {"dev", "home", "proc", "run", "sys", "tmp", "var"};
  for (const char* system : {"usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "etc",
                             "opt"}) {
    struct stat st;
    if (lstat(absl::StrCat("/", system).c_str(), &st) == 0) expected.push_back(system);
  }
  ExecResult r = In(*env_a_, "ls -A /");
  std::vector<std::string> entries = absl::StrSplit(r.out, '\n', absl::SkipEmpty());
  EXPECT_THAT(entries, UnorderedElementsAreArray(expected));
  EXPECT_EQ(Trim(In(*env_a_, "ls -A /home").out), *env_a_);
}

TEST_F(EnvironmentTest, OtherProjectsRootStateAndSocketDoNotExist) {
  for (const std::string& path : {project_b_, std::string("/root"), agent_->state_dir(),
                                  agent_->socket_path(), scratch_->path() + "/run"}) {
    ExecResult r = In(*env_a_, "test -e '" + path + "'");
    EXPECT_EQ(r.exit_code, 1) << path << " is visible inside the environment";
  }
  // The host does have them, so the test above is not vacuous.
  struct stat st;
  EXPECT_EQ(stat(project_b_.c_str(), &st), 0);
  EXPECT_EQ(stat(agent_->socket_path().c_str(), &st), 0);
}

TEST_F(EnvironmentTest, ProjectMountDoesNotPropagateFromTheVm) {
  // Under systemd the VM's mounts are shared; a project cloned from there must still not
  // receive what is mounted under it later in the VM.
  ASSERT_EQ(system("mount --make-rshared /"), 0);
  std::string project = scratch_->MakeDir("projects/propagation", kOwner, kOwnerGroup);
  auto created = Create(project);
  std::string sub = project + "/late-mount";
  mkdir(sub.c_str(), 0755);
  int mounted = system(("mount -t tmpfs late " + sub + " && touch " + sub + "/from-vm").c_str());
  ExecResult r;
  if (created.first.ok()) {
    r = In(created.second.name(), "ls late-mount; grep ' " + project + " ' /proc/self/mountinfo");
  }
  system(("umount " + sub).c_str());
  system("mount --make-rprivate /");
  ASSERT_TRUE(created.first.ok()) << created.first.error_message();
  ASSERT_EQ(mounted, 0);
  EXPECT_THAT(r.out, HasSubstr(project));
  EXPECT_THAT(r.out, ::testing::Not(HasSubstr("from-vm")));
  EXPECT_THAT(r.out, ::testing::Not(HasSubstr("shared:")));
  EXPECT_TRUE(Delete(created.second.name()).ok());
}

TEST_F(EnvironmentTest, SystemDirectoriesAreReadOnly) {
  for (const std::string path : {"/etc/x", "/usr/x", "/x", "/opt/x", "/usr/local/x"}) {
    ExecResult r = In(*env_a_, "touch " + path);
    EXPECT_NE(r.exit_code, 0);
    EXPECT_THAT(r.err, HasSubstr("Read-only file system")) << path;
  }
  struct stat st;
  EXPECT_NE(stat("/etc/x", &st), 0) << "the host's /etc was written";
  // The synthesized identity files are read-only mounts of their own.
  ExecResult mounts = In(*env_a_, "grep -E ' /etc/(passwd|group) ' /proc/self/mountinfo");
  std::vector<std::string> lines = absl::StrSplit(mounts.out, '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 2u) << mounts.out;
  for (const std::string& line : lines) EXPECT_THAT(line, HasSubstr(" ro,")) << line;
}

TEST_F(EnvironmentTest, ProcShowsOnlyTheEnvironmentsProcesses) {
  // A process in B that A must not see, and one in A that it must.
  ExecResult b = In(*env_b_, "sleep 977 >/dev/null 2>&1 & echo $!");
  ASSERT_EQ(b.exit_code, 0);
  ExecResult a = In(*env_a_, "sleep 976 >/dev/null 2>&1 & sleep 0.1; "
                             "for p in /proc/[0-9]*; do tr '\\0' ' ' < $p/cmdline; echo; done");
  EXPECT_THAT(a.out, HasSubstr("sleep 976"));
  EXPECT_THAT(a.out, ::testing::Not(HasSubstr("sleep 977")));
  EXPECT_THAT(a.out, ::testing::Not(HasSubstr("llima-agent --socket")));
  // The host sees both.
  std::string host = HostOutput("ps -eo args");
  EXPECT_THAT(host, HasSubstr("sleep 977"));
  In(*env_a_, "pkill -f 'sleep 976'");
  In(*env_b_, "pkill -f 'sleep 977'");
}

TEST_F(EnvironmentTest, TmpAndShmArePrivateAndSharedByAllShellsOfOneEnvironment) {
  ASSERT_EQ(In(*env_a_, "echo a > /tmp/mark && echo a > /dev/shm/mark && echo a > /var/tmp/mark")
                .exit_code,
            0);
  EXPECT_EQ(In(*env_a_, "cat /tmp/mark /dev/shm/mark /var/tmp/mark").out, "a\na\na\n");
  EXPECT_EQ(In(*env_b_, "test -e /tmp/mark || test -e /dev/shm/mark || test -e /var/tmp/mark")
                .exit_code,
            1);
  struct stat st;
  EXPECT_NE(stat("/dev/shm/mark", &st), 0) << "the VM's /dev/shm was written";
}

TEST_F(EnvironmentTest, DevHasOnlyTheMinimalNodesAndItsOwnPtys) {
  ExecResult r = In(*env_a_, "ls -A /dev | tr '\\n' ' '; echo; ls -A /dev/pts | tr '\\n' ' '");
  EXPECT_THAT(r.out, HasSubstr("null"));
  EXPECT_THAT(r.out, HasSubstr("urandom"));
  EXPECT_THAT(r.out, ::testing::Not(HasSubstr("vda")));
  EXPECT_THAT(r.out, ::testing::Not(HasSubstr("mem ")));
  EXPECT_EQ(In(*env_a_, "head -c 4 /dev/zero | od -An -tx1").out, " 00 00 00 00\n");
}

TEST_F(EnvironmentTest, TheEnvironmentsInitIsLlimaInitWithNothingOfTheAgentMapped) {
  std::string pid = Trim(HostOutput("pgrep -f '^llima-init " + *env_a_ + "$'"));
  ASSERT_FALSE(pid.empty()) << HostOutput("ps -eo pid,args");
  // The agent answers once init has said it runs as llima-init; allow for a slow machine anyway.
  std::string exe;
  for (int i = 0; i < 40 && !absl::EndsWith(exe, "/llima-init\n"); ++i) {
    if (i > 0) usleep(50000);
    exe = HostOutput("readlink /proc/" + pid + "/exe");
  }
  EXPECT_THAT(exe, ::testing::EndsWith("/llima-init\n"));
  // Cloned from the fork server, it has become llima-init: no page of the agent's program or of
  // its heap is mapped in it any more.
  std::string maps = HostOutput("cat /proc/" + pid + "/maps");
  EXPECT_THAT(maps, HasSubstr("llima-init"));
  EXPECT_THAT(maps, ::testing::Not(HasSubstr("llima-agent")));
  std::string status = HostOutput("cat /proc/" + pid + "/status");
  EXPECT_THAT(status, HasSubstr("CapEff:\t0000000000000000"));
  EXPECT_THAT(status, HasSubstr("CapBnd:\t0000000000000000"));
  EXPECT_THAT(status, HasSubstr("NoNewPrivs:\t1"));
  // Inside, it is PID 1, and what it is stays closed to the environment's user.
  ExecResult in =
      In(*env_a_, "tr '\\0' ' ' < /proc/1/cmdline; echo; readlink /proc/1/exe || echo hidden");
  EXPECT_EQ(in.out, "llima-init " + *env_a_ + " \nhidden\n") << in.err;
}

TEST_F(EnvironmentTest, OrphansAreReapedByTheEnvironmentsInit) {
  // The shell exits at once; its child, orphaned, goes to the environment's init and must be
  // reaped when it ends, not left a zombie.
  ExecResult started = In(*env_a_, "sleep 2 >/dev/null 2>&1 & echo $!");
  ASSERT_EQ(started.exit_code, 0) << started.err;
  std::string orphan = Trim(started.out);
  ExecResult parent = In(*env_a_, "awk '{print $4}' /proc/" + orphan + "/stat");
  EXPECT_EQ(Trim(parent.out), "1") << "the orphan's parent: " << parent.out << parent.err;
  ExecResult gone = In(*env_a_, "for i in $(seq 70); do [ -e /proc/" + orphan +
                                    " ] || { echo reaped; exit 0; }; sleep 0.1; done; "
                                    "cat /proc/" +
                                    orphan + "/stat");
  EXPECT_EQ(gone.out, "reaped\n") << "still there 7 s later: " << gone.out;
}

TEST_F(EnvironmentTest, ProcessCountCountsTheEnvironmentsProcesses) {
  auto count = [&] {
    for (const auto& e : List()) {
      if (e.name() == *env_b_) return e.process_count();
    }
    return -1;
  };
  int before = count();
  ASSERT_EQ(In(*env_b_, "sleep 973 >/dev/null 2>&1 & sleep 972 >/dev/null 2>&1 &").exit_code, 0);
  EXPECT_EQ(count(), before + 2);
  // They are in the environment's cgroup, where delete and the limits find them.
  if (!agent_->cgroup_root().empty()) {
    std::string procs = HostOutput("cat " + agent_->cgroup_root() + "/" + *env_b_ +
                                   "/cgroup.procs | xargs -n1 -I{} cat /proc/{}/cmdline | "
                                   "tr '\\0' ' '");
    EXPECT_THAT(procs, HasSubstr("sleep 973"));
  }
  In(*env_b_, "pkill -f 'sleep 97[23]'");
  // Killed processes leave the cgroup once they are reaped (by the environment's init).
  for (int i = 0; i < 200 && count() != before; ++i) usleep(10000);
  EXPECT_EQ(count(), before);
}

// ---- exec ------------------------------------------------------------------------------------

TEST_F(EnvironmentTest, TheStartedPidIsThePidInsideTheEnvironment) {
  for (int i = 0; i < 3; ++i) {
    ExecResult r = In(*env_a_, "echo $$");
    ASSERT_TRUE(r.status.ok()) << r.status.error_message();
    EXPECT_GT(r.pid, 1);
    EXPECT_EQ(r.out, absl::StrCat(r.pid, "\n"));
  }
}

TEST_F(EnvironmentTest, ExitCodesAreReportedExactly) {
  for (int code : {0, 1, 42}) {
    ExecResult r = In(*env_a_, absl::StrCat("exit ", code));
    ASSERT_TRUE(r.status.ok()) << r.status.error_message();
    EXPECT_EQ(r.exit_code, code);
    EXPECT_EQ(r.signal, 0);
  }
}

TEST_F(EnvironmentTest, DeathBySignalIsReported) {
  ExecResult r = In(*env_a_, "kill -9 $$");
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_EQ(r.signal, 9);
  EXPECT_EQ(r.exit_code, 128 + 9);
}

TEST_F(EnvironmentTest, StdoutAndStderrStaySeparate) {
  ExecResult r = In(*env_a_, "echo out1; echo err1 >&2; echo out2; echo err2 >&2");
  EXPECT_EQ(r.out, "out1\nout2\n");
  EXPECT_EQ(r.err, "err1\nerr2\n");
}

TEST_F(EnvironmentTest, TenMebibytesOfStdinComeBackUnchanged) {
  std::string data(10 << 20, '\0');
  uint32_t x = 12345;
  for (char& c : data) {
    x = x * 1103515245 + 12345;
    c = static_cast<char>(x >> 24);
  }
  ExecResult r = Exec(agent_->stub(), *env_a_, {"cat"}, {.stdin_data = data});
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_EQ(r.out.size(), data.size());
  EXPECT_TRUE(r.out == data) << "stdout differs from stdin";
}

TEST_F(EnvironmentTest, ArgvIsPassedWithoutShellRequoting) {
  ExecResult r = Exec(agent_->stub(), *env_a_,
                      {"printf", "[%s]\\n", "a b", "$HOME", "'q'", "*", ""});
  EXPECT_EQ(r.out, "[a b]\n[$HOME]\n['q']\n[*]\n[]\n");
}

TEST_F(EnvironmentTest, EnvironmentVariablesAndWorkingDirectoryAreApplied) {
  ExecResult r = Exec(agent_->stub(), *env_a_, {"sh", "-c", "echo $GREETING; pwd"},
                      {.working_dir = "/tmp", .env = {{"GREETING", "hello there"}}});
  EXPECT_EQ(r.out, "hello there\n/tmp\n");
}

TEST_F(EnvironmentTest, StdinIsClosedWhenRequested) {
  ExecResult r = Exec(agent_->stub(), *env_a_, {"wc", "-c"}, {.stdin_data = "12345"});
  EXPECT_EQ(Trim(r.out), "5");
}

TEST_F(EnvironmentTest, CallEndsWhenTheProcessExitsEvenIfItsChildrenKeepOutputOpen) {
  // The background sleep inherits stdout and keeps the pipe open for a long time.
  ExecResult r = In(*env_a_, "sleep 971 & echo started");
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_EQ(r.out, "started\n");
  EXPECT_EQ(r.exit_code, 0);
  // The call returned while the child still ran: it did not wait for the pipe to close.
  EXPECT_THAT(HostOutput("ps -eo args"), HasSubstr("sleep 971"));
  In(*env_a_, "pkill -f 'sleep 971'");
}

TEST_F(EnvironmentTest, MissingProgramExitsWith127AndAMessage) {
  ExecResult r = Exec(agent_->stub(), *env_a_, {"no-such-program-here"});
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_EQ(r.exit_code, 127);
  EXPECT_THAT(r.err, HasSubstr("no-such-program-here"));
}

TEST_F(EnvironmentTest, BadExecRequestsGetClearErrors) {
  ExecResult unknown = Exec(agent_->stub(), "no-such-env-0000", {"true"});
  EXPECT_EQ(unknown.status.error_code(), grpc::StatusCode::NOT_FOUND);
  ExecResult empty = Exec(agent_->stub(), *env_a_, {});
  EXPECT_EQ(empty.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  ExecResult bad_dir = Exec(agent_->stub(), *env_a_, {"true"}, {.working_dir = "/nonexistent"});
  EXPECT_EQ(bad_dir.status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(bad_dir.status.error_message(), HasSubstr("/nonexistent"));
}

TEST_F(EnvironmentTest, ExecNamingAProjectCreatesItsEnvironmentOnceAndJoinsItAfter) {
  std::string project = scratch_->MakeDir("projects/by-path", kOwner, kOwnerGroup);
  ExecResult first =
      Exec(agent_->stub(), "", {"sh", "-c", "echo $(whoami) $(pwd); echo mark > /tmp/m"},
           {.project_path = project});
  ASSERT_TRUE(first.status.ok()) << first.status.error_message();
  EXPECT_EQ(first.exit_code, 0);
  auto [status, env] = Create(project);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(first.out, env.name() + " " + project + "\n");
  // The same environment again: its private /tmp still holds what the first call left.
  ExecResult second = Exec(agent_->stub(), "", {"cat", "/tmp/m"}, {.project_path = project});
  ASSERT_TRUE(second.status.ok()) << second.status.error_message();
  EXPECT_EQ(second.out, "mark\n");
  ExecResult by_name = Exec(agent_->stub(), env.name(), {"cat", "/tmp/m"});
  EXPECT_EQ(by_name.out, "mark\n");
  EXPECT_EQ(Exec(agent_->stub(), *env_a_, {"cat", "/tmp/m"}).exit_code, 1)
      << "another environment sees the mark";
}

// The project's environment is the one whose record says so: never another project's under
// the name the path derives to, nor, for a project whose environment was given a name of its
// own, a second one. CreateEnvironment refuses both; so does Exec, and runs nothing.
TEST_F(EnvironmentTest, ExecNamingAProjectNeverRunsInAnotherProjectsEnvironment) {
  std::string wanted = scratch_->MakeDir("projects/wanted", kOwner, kOwnerGroup);
  std::string squatter = scratch_->MakeDir("projects/squatter", kOwner, kOwnerGroup);
  absl::StatusOr<std::string> derived = DeriveEnvironmentName(wanted);
  ASSERT_TRUE(derived.ok()) << derived.status();
  auto [squatted, squatter_env] = Create(squatter, *derived);
  ASSERT_TRUE(squatted.ok()) << squatted.error_message();
  ExecResult r = Exec(agent_->stub(), "", {"pwd"}, {.project_path = wanted});
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::ALREADY_EXISTS) << r.out;
  EXPECT_THAT(r.status.error_message(), HasSubstr(squatter));
  EXPECT_EQ(r.out, "");

  std::string named = scratch_->MakeDir("projects/named", kOwner, kOwnerGroup);
  auto [made, named_env] = Create(named, "a-name-of-its-own");
  ASSERT_TRUE(made.ok()) << made.error_message();
  ExecResult n = Exec(agent_->stub(), "", {"pwd"}, {.project_path = named});
  EXPECT_EQ(n.status.error_code(), grpc::StatusCode::ALREADY_EXISTS) << n.out;
  EXPECT_THAT(n.status.error_message(), HasSubstr("a-name-of-its-own"));
  EXPECT_EQ(n.out, "");
  EXPECT_TRUE(Delete(*derived).ok());
  EXPECT_TRUE(Delete("a-name-of-its-own").ok());
}

TEST_F(EnvironmentTest, ExecNamesAnEnvironmentOrAProjectAndAProjectAsCreateWouldTakeIt) {
  ExecResult neither = Exec(agent_->stub(), "", {"true"});
  EXPECT_EQ(neither.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(neither.status.error_message(), HasSubstr("start.environment is empty"));
  ExecResult both = Exec(agent_->stub(), *env_a_, {"true"}, {.project_path = project_a_});
  EXPECT_EQ(both.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(both.status.error_message(), HasSubstr("one of them"));
  // A project CreateEnvironment refuses is refused with the same status, and nothing is made.
  std::string root_owned = scratch_->MakeDir("projects/root-owned-exec");
  for (const std::string& path :
       {std::string("relative/dir"), root_owned, scratch_->path() + "/projects/missing"}) {
    ExecResult r = Exec(agent_->stub(), "", {"true"}, {.project_path = path});
    auto [create_status, unused] = Create(path);
    EXPECT_FALSE(r.status.ok()) << path;
    EXPECT_EQ(r.status.error_code(), create_status.error_code()) << path;
    EXPECT_EQ(r.status.error_message(), create_status.error_message()) << path;
  }
  v1::ListEnvironmentsResponse listed;
  grpc::ClientContext context;
  ASSERT_TRUE(agent_->stub().ListEnvironments(&context, {}, &listed).ok());
  for (const v1::Environment& e : listed.environments()) {
    EXPECT_NE(e.project_path(), root_owned);
  }
}

// The agent decodes Exec's messages itself (a raw method): bytes that are not an ExecRequest,
// as the first message or a later one, end the call with INVALID_ARGUMENT.
TEST_F(EnvironmentTest, StreamMessagesThatAreNotExecRequestsAreRefused) {
  auto channel =
      grpc::CreateChannel("unix:" + agent_->socket_path(), grpc::InsecureChannelCredentials());
  const grpc::internal::RpcMethod exec("/llima.v1.AgentService/Exec",
                                       grpc::internal::RpcMethod::BIDI_STREAMING);
  // Field 1 (start) says 100 bytes follow; 3 do.
  grpc::Slice garbage(std::string("\x0a\x64xyz", 5));

  for (bool after_start : {false, true}) {
    SCOPED_TRACE(after_start ? "after the start message" : "as the first message");
    grpc::ClientContext context;
    std::unique_ptr<grpc::ClientReaderWriter<grpc::ByteBuffer, grpc::ByteBuffer>> stream(
        grpc::internal::ClientReaderWriterFactory<grpc::ByteBuffer, grpc::ByteBuffer>::Create(
            channel.get(), exec, &context));
    grpc::ByteBuffer response;
    if (after_start) {
      v1::ExecRequest start;
      start.mutable_start()->set_environment(*env_a_);
      start.mutable_start()->add_argv("cat");
      grpc::Slice encoded(start.SerializeAsString());
      ASSERT_TRUE(stream->Write(grpc::ByteBuffer(&encoded, 1)));
      ASSERT_TRUE(stream->Read(&response));  // started
    }
    ASSERT_TRUE(stream->Write(grpc::ByteBuffer(&garbage, 1)));
    stream->WritesDone();
    while (stream->Read(&response)) {
    }
    grpc::Status status = stream->Finish();
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << status.error_message();
    EXPECT_THAT(status.error_message(), HasSubstr("not an ExecRequest"));
  }
  // The call's end ends its process (SIGHUP, right after the status is sent).
  std::string left;
  for (int i = 0; i < 60 && left != "none\n"; ++i) {
    if (i > 0) usleep(50000);
    left = In(*env_a_, "pgrep -x cat || echo none").out;
  }
  EXPECT_EQ(left, "none\n");
}

// ---- create ----------------------------------------------------------------------------------

TEST_F(EnvironmentTest, CreatingTheSamePathTwiceReturnsTheSameEnvironment) {
  auto first = Create(project_a_);
  auto again = Create(project_a_ + "/");
  ASSERT_TRUE(first.first.ok() && again.first.ok());
  EXPECT_EQ(first.second.name(), *env_a_);
  EXPECT_EQ(again.second.name(), *env_a_);
  EXPECT_EQ(again.second.created_at().seconds(), first.second.created_at().seconds());
  EXPECT_EQ(first.second.state(), v1::Environment::STATE_RUNNING);
}

TEST_F(EnvironmentTest, NameFollowsTheDerivationRule) {
  EXPECT_EQ(*env_a_, *DeriveEnvironmentName(project_a_));
  EXPECT_EQ(env_a_->rfind("alpha-", 0), 0u);
}

TEST_F(EnvironmentTest, InvalidProjectPathsAreRefusedAndLeaveNoState) {
  std::string file = scratch_->path() + "/projects/file";
  std::ofstream(file) << "x";
  chown(file.c_str(), kOwner, kOwnerGroup);
  std::string root_owned = scratch_->MakeDir("projects/root-owned", 0, 0);
  std::string link = scratch_->path() + "/projects/link";
  symlink(project_a_.c_str(), link.c_str());

  struct Case {
    std::string path;
    grpc::StatusCode code;
    std::string message;
  };
  std::vector<Case> cases = {
      {"relative/path", grpc::StatusCode::INVALID_ARGUMENT, "relative"},
      {scratch_->path() + "/projects/../projects/alpha", grpc::StatusCode::INVALID_ARGUMENT,
       ".."},
      {std::string("/tmp/a\0b", 8), grpc::StatusCode::INVALID_ARGUMENT, "NUL"},
      {scratch_->path() + "/projects/missing", grpc::StatusCode::FAILED_PRECONDITION,
       "does not exist"},
      {file, grpc::StatusCode::FAILED_PRECONDITION, "not a directory"},
      {root_owned, grpc::StatusCode::FAILED_PRECONDITION, "owned by root"},
      {link, grpc::StatusCode::FAILED_PRECONDITION, "symbolic link"},
      {"", grpc::StatusCode::INVALID_ARGUMENT, "empty"},
      {"/proc/self", grpc::StatusCode::FAILED_PRECONDITION, "/proc"},
  };
  std::vector<std::string> state_before = StateEntries();
  size_t count_before = List().size();
  for (const Case& c : cases) {
    auto result = Create(c.path);
    EXPECT_EQ(result.first.error_code(), c.code) << c.path << ": " << result.first.error_message();
    EXPECT_THAT(result.first.error_message(), HasSubstr(c.message)) << c.path;
  }
  EXPECT_EQ(StateEntries(), state_before);
  EXPECT_EQ(List().size(), count_before);
}

TEST_F(EnvironmentTest, ADifferentPathMappingToATakenNameIsRefused) {
  // Find two project paths whose derived names collide (4 hex digits: a few hundred tries).
  std::map<std::string, std::string> seen;
  std::string first, second;
  for (int i = 0; i < 100000 && second.empty(); ++i) {
    std::string path = absl::StrCat(scratch_->path(), "/collide/", i, "/app");
    std::string name = *DeriveEnvironmentName(path);
    auto [it, inserted] = seen.emplace(name, path);
    if (!inserted) {
      first = it->second;
      second = path;
    }
  }
  ASSERT_FALSE(second.empty());
  scratch_->MakeDir(first.substr(scratch_->path().size() + 1), kOwner, kOwnerGroup);
  scratch_->MakeDir(second.substr(scratch_->path().size() + 1), kOwner, kOwnerGroup);
  auto created = Create(first);
  ASSERT_TRUE(created.first.ok()) << created.first.error_message();
  auto refused = Create(second);
  EXPECT_EQ(refused.first.error_code(), grpc::StatusCode::ALREADY_EXISTS);
  EXPECT_THAT(refused.first.error_message(), HasSubstr(created.second.name()));
  EXPECT_THAT(refused.first.error_message(), HasSubstr(first));
  // With a name of its own it works.
  auto named = Create(second, "collision-two");
  ASSERT_TRUE(named.first.ok()) << named.first.error_message();
  EXPECT_EQ(named.second.name(), "collision-two");
  EXPECT_TRUE(Delete(created.second.name()).ok());
  EXPECT_TRUE(Delete("collision-two").ok());
}

TEST_F(EnvironmentTest, GetFindsByNameAndByPath) {
  grpc::ClientContext c1;
  v1::GetEnvironmentRequest by_path;
  by_path.set_project_path(project_b_);
  v1::Environment env;
  ASSERT_TRUE(agent_->stub().GetEnvironment(&c1, by_path, &env).ok());
  EXPECT_EQ(env.name(), *env_b_);
  grpc::ClientContext c2;
  v1::GetEnvironmentRequest missing;
  missing.set_name("missing-0000");
  EXPECT_EQ(agent_->stub().GetEnvironment(&c2, missing, &env).error_code(),
            grpc::StatusCode::NOT_FOUND);
}

// A project's environment is found by its path until it is deleted; then the project may have a
// new one, under another name, and only that one is found.
TEST_F(EnvironmentTest, AProjectsEnvironmentIsFoundByPathUntilDeleted) {
  std::string project = scratch_->MakeDir("projects/found-by-path", kOwner, kOwnerGroup);
  auto [made, named] = Create(project, "found-first");
  ASSERT_TRUE(made.ok()) << made.error_message();
  v1::GetEnvironmentRequest by_path;
  by_path.set_project_path(project);
  v1::Environment env;
  grpc::ClientContext c1;
  ASSERT_TRUE(agent_->stub().GetEnvironment(&c1, by_path, &env).ok());
  EXPECT_EQ(env.name(), "found-first");

  ASSERT_TRUE(Delete("found-first").ok());
  grpc::ClientContext c2;
  EXPECT_EQ(agent_->stub().GetEnvironment(&c2, by_path, &env).error_code(),
            grpc::StatusCode::NOT_FOUND);

  auto [remade, renamed] = Create(project, "found-second");
  ASSERT_TRUE(remade.ok()) << remade.error_message();
  grpc::ClientContext c3;
  ASSERT_TRUE(agent_->stub().GetEnvironment(&c3, by_path, &env).ok());
  EXPECT_EQ(env.name(), "found-second");
  auto [again, again_env] = Create(project, "found-third");
  EXPECT_EQ(again.error_code(), grpc::StatusCode::ALREADY_EXISTS);
  EXPECT_THAT(again.error_message(), HasSubstr("found-second"));
  EXPECT_TRUE(Delete("found-second").ok());
}

// ---- delete and restart ----------------------------------------------------------------------

TEST_F(EnvironmentTest, DeleteRemovesEverythingButTheProject) {
  std::string project = scratch_->MakeDir("projects/doomed", kOwner, kOwnerGroup);
  std::ofstream(project + "/keep.txt") << "precious";
  auto created = Create(project);
  ASSERT_TRUE(created.first.ok()) << created.first.error_message();
  std::string name = created.second.name();
  ASSERT_EQ(In(name, "echo home > ~/file; sleep 975 >/dev/null 2>&1 &").exit_code, 0);
  ASSERT_THAT(HostOutput("ps -eo args"), HasSubstr("sleep 975"));
  std::string cgroup = agent_->cgroup_root().empty() ? "" : agent_->cgroup_root() + "/" + name;
  struct stat st;
  if (!cgroup.empty()) {
    ASSERT_EQ(stat(cgroup.c_str(), &st), 0);
  }

  ASSERT_TRUE(Delete(name).ok());

  EXPECT_THAT(HostOutput("ps -eo args"), ::testing::Not(HasSubstr("sleep 975")));
  EXPECT_THAT(HostOutput("cat /proc/self/mountinfo"), ::testing::Not(HasSubstr(name)));
  if (!cgroup.empty()) {
    EXPECT_NE(stat(cgroup.c_str(), &st), 0) << cgroup << " remains";
  }
  EXPECT_NE(stat((agent_->state_dir() + "/envs/" + name).c_str(), &st), 0);
  std::ifstream kept(project + "/keep.txt");
  std::string content;
  std::getline(kept, content);
  EXPECT_EQ(content, "precious");
  EXPECT_EQ(Delete(name).error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(Exec(agent_->stub(), name, {"true"}).status.error_code(),
            grpc::StatusCode::NOT_FOUND);
}

TEST_F(EnvironmentTest, EnvironmentsSurviveAKilledAgent) {
  ASSERT_EQ(In(*env_a_, "sleep 974 >/dev/null 2>&1 & echo before > /tmp/restart").exit_code, 0);
  agent_->Kill9();
  agent_->Start();
  std::vector<v1::Environment> envs = List();
  std::set<std::string> names;
  for (const auto& e : envs) names.insert(e.name());
  EXPECT_TRUE(names.count(*env_a_) && names.count(*env_b_));
  for (const auto& e : envs) EXPECT_EQ(e.state(), v1::Environment::STATE_RUNNING) << e.name();
  ExecResult r = In(*env_a_, "cat /tmp/restart; pgrep -f 'sleep 974' >/dev/null && echo alive");
  EXPECT_EQ(r.out, "before\nalive\n");
  EXPECT_THAT(agent_->log(), HasSubstr("adopt env=" + *env_a_));
  In(*env_a_, "pkill -f 'sleep 974'");
}

}  // namespace
}  // namespace llima::testing
