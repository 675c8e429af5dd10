// The agent's socket refuses peers that live inside an environment, even if they find a way to
// it (the path does not exist there; here the test reaches it through the VM's root, kept as
// its working directory across setns).

#include <fcntl.h>
#include <grp.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <grpcpp/create_channel_posix.h>

#include "absl/strings/str_cat.h"
#include "agent_harness.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace llima::testing {
namespace {

// A connection to `socket_path` made by a child process, from inside the mount namespace
// pinned at `pin` when given. The child stays alive (so the agent can inspect it) until
// Release().
class ForeignConnection {
 public:
  ForeignConnection(const std::string& socket_path, const std::string& pin) {
    int pair[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) return;
    pid_ = fork();
    if (pid_ == 0) {
      close(pair[0]);
      int root = open("/", O_PATH | O_DIRECTORY);
      if (!pin.empty()) {
        int ns = open(pin.c_str(), O_RDONLY);
        if (ns < 0 || setns(ns, CLONE_NEWNS) != 0) _exit(10);
      }
      sockaddr_un address{};
      address.sun_family = AF_UNIX;
      // Relative to the VM's root, kept as the working directory across setns.
      if (fchdir(root) != 0) _exit(13);
      snprintf(address.sun_path, sizeof(address.sun_path), "%s", socket_path.c_str() + 1);
      int conn = socket(AF_UNIX, SOCK_STREAM, 0);
      if (connect(conn, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) _exit(11);
      // Hand the connection to the parent, then wait until told to go.
      char byte = 'c';
      iovec iov{&byte, 1};
      alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))];
      msghdr msg{};
      msg.msg_iov = &iov;
      msg.msg_iovlen = 1;
      msg.msg_control = control;
      msg.msg_controllen = sizeof(control);
      cmsghdr* c = CMSG_FIRSTHDR(&msg);
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_RIGHTS;
      c->cmsg_len = CMSG_LEN(sizeof(int));
      memcpy(CMSG_DATA(c), &conn, sizeof(int));
      if (sendmsg(pair[1], &msg, 0) != 1) _exit(12);
      (void)!read(pair[1], &byte, 1);
      _exit(0);
    }
    close(pair[1]);
    control_ = pair[0];
    char byte;
    iovec iov{&byte, 1};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))];
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof(control);
    if (recvmsg(control_, &msg, 0) == 1 && CMSG_FIRSTHDR(&msg) != nullptr) {
      memcpy(&fd_, CMSG_DATA(CMSG_FIRSTHDR(&msg)), sizeof(int));
    }
  }
  ~ForeignConnection() {
    if (control_ >= 0) close(control_);
    if (pid_ > 0) waitpid(pid_, nullptr, 0);
  }
  // -1 when the child could not connect.
  int fd() const { return fd_; }

 private:
  pid_t pid_ = -1;
  int control_ = -1;
  int fd_ = -1;
};

grpc::Status ListOver(int fd) {
  auto channel = grpc::CreateInsecureChannelFromFd("agent", fd);
  auto stub = v1::AgentService::NewStub(channel);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  v1::ListEnvironmentsResponse response;
  return stub->ListEnvironments(&context, {}, &response);
}

// ListEnvironments over a connection made from inside `env_name`'s mount namespace.
grpc::Status ListFromInside(const AgentProcess& agent, const std::string& env_name) {
  ForeignConnection inside(agent.socket_path(), agent.state_dir() + "/envs/" + env_name + "/mnt");
  if (inside.fd() < 0) {
    return grpc::Status(grpc::StatusCode::INTERNAL,
                        "the test could not reach the socket from inside");
  }
  return ListOver(inside.fd());
}

// An agent with one environment, ready to be reached from outside and from inside it.
class SocketPeerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(geteuid(), 0u) << "security tests need root";
    agent_.Start();
    env_ = CreateEnvironmentOrFail(agent_.stub(), scratch_.MakeDir("projects/peer", 4242, 4242));
    ASSERT_FALSE(env_.name().empty());
  }

  ScratchDir scratch_;
  AgentProcess agent_{scratch_.path()};
  v1::Environment env_;
};

TEST_F(SocketPeerTest, APeerInsideAnEnvironmentIsRefusedWithPermissionDenied) {
  // From the VM: served.
  ForeignConnection outside(agent_.socket_path(), "");
  ASSERT_GE(outside.fd(), 0);
  EXPECT_TRUE(ListOver(outside.fd()).ok());

  // From the environment's mount namespace: refused, and the call says why.
  grpc::Status refused = ListFromInside(agent_, env_.name());
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(refused.error_message(), ::testing::HasSubstr("inside an environment"));
  EXPECT_THAT(agent_.log(),
              ::testing::HasSubstr("refused a connection from inside an environment"));
}

TEST_F(SocketPeerTest, APeerInsideAnAdoptedEnvironmentIsRefusedAfterARestart) {
  v1::Environment other =
      CreateEnvironmentOrFail(agent_.stub(), scratch_.MakeDir("projects/other", 4242, 4242));
  ASSERT_FALSE(other.name().empty());
  // The restarted agent knows the environments from their records and pins only.
  agent_.Terminate();
  agent_.Start();
  grpc::Status refused = ListFromInside(agent_, env_.name());
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::PERMISSION_DENIED) << refused.error_message();

  // Deleting the other one leaves this one known as an environment.
  ASSERT_TRUE(CallDelete(agent_.stub(), other.name()).ok());
  refused = ListFromInside(agent_, env_.name());
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::PERMISSION_DENIED) << refused.error_message();
}

// connect() to `socket_path` by a child running as `uid`: 0 or the errno.
int ConnectAs(const std::string& socket_path, uid_t uid) {
  pid_t pid = fork();
  if (pid == 0) {
    if (setgroups(0, nullptr) != 0 || setresgid(uid, uid, uid) != 0 ||
        setresuid(uid, uid, uid) != 0) {
      _exit(255);
    }
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    snprintf(address.sun_path, sizeof(address.sun_path), "%s", socket_path.c_str());
    int conn = socket(AF_UNIX, SOCK_STREAM, 0);
    _exit(connect(conn, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0 ? 0 : errno);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 254;
}

TEST(SocketPeer, OnlyTheSocketOwnerCanConnect) {
  ASSERT_EQ(geteuid(), 0u) << "security tests need root";
  constexpr uid_t kOwner = 4242;
  ScratchDir scratch;
  AgentProcess agent(scratch.path());
  agent.Start({"--socket-owner", std::to_string(kOwner)});
  EXPECT_EQ(ConnectAs(agent.socket_path(), kOwner), 0);
  EXPECT_EQ(ConnectAs(agent.socket_path(), 4343), EACCES);
  EXPECT_EQ(ConnectAs(agent.socket_path(), 65534), EACCES);
}

}  // namespace
}  // namespace llima::testing
