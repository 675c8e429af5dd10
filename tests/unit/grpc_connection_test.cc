// GrpcConnection, the clients' HTTP/2 gRPC caller, against a real gRPC C++ server in this
// process: unary calls, their errors, deadlines and sizes, Exec's bidirectional stream, and
// sockets behind which no gRPC server speaks.

#include "grpc_connection.h"

#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <ostream>
#include <string>
#include <thread>
#include <vector>

#include <grpc/grpc.h>
#include <grpcpp/grpcpp.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "llima/v1/agent.grpc.pb.h"
#include "unique_fd.h"

namespace llima {

void PrintTo(GrpcConnection::Event event, std::ostream* out) {
  switch (event) {
    case GrpcConnection::Event::kMessage:
      *out << "kMessage";
      return;
    case GrpcConnection::Event::kWatched:
      *out << "kWatched";
      return;
    case GrpcConnection::Event::kEnded:
      *out << "kEnded";
      return;
  }
  *out << "Event(" << static_cast<int>(event) << ")";
}

namespace {

using ::testing::AnyOf;
using ::testing::Eq;
using ::testing::HasSubstr;
using ::testing::Optional;

constexpr char kCreate[] = "/llima.v1.AgentService/CreateEnvironment";
constexpr char kGet[] = "/llima.v1.AgentService/GetEnvironment";
constexpr char kList[] = "/llima.v1.AgentService/ListEnvironments";
constexpr char kInfo[] = "/llima.v1.AgentService/GetAgentInfo";
constexpr char kExec[] = "/llima.v1.AgentService/Exec";

// Long enough for anything these tests do, short enough that a hang ends as a failure.
absl::Time Soon() { return absl::Now() + absl::Seconds(10); }

// Varied bytes: every value, no short period.
std::string Bytes(size_t size) {
  std::string data(size, '\0');
  for (size_t i = 0; i < size; ++i) data[i] = static_cast<char>((i * 131 + i / 251 + i / 65521) & 0xff);
  return data;
}

// Varied printable text (string fields must be UTF-8).
std::string Text(size_t size, size_t seed) {
  std::string text(size, 'a');
  for (size_t i = 0; i < size; ++i) text[i] = static_cast<char>('a' + (i * 7 + seed * 13 + i / 97) % 26);
  return text;
}

// A listing whose serialized size is exactly `bytes` (at least 64 KiB): environments of about
// 8 KiB each, the last one's detail sized to make up the rest.
v1::ListEnvironmentsResponse Listing(size_t bytes) {
  constexpr size_t kDetail = 8000;
  v1::ListEnvironmentsResponse listing;
  auto add = [&](size_t i, size_t detail) {
    v1::Environment* env = listing.add_environments();
    env->set_name(absl::StrCat("env-", i));
    env->set_project_path(absl::StrCat("/home/user/project-", i));
    env->set_state(v1::Environment::STATE_RUNNING);
    env->set_uid(1000 + i);
    env->set_detail(Text(detail, i));
  };
  size_t count = bytes / (kDetail + 64) - 1;
  for (size_t i = 0; i < count; ++i) add(i, kDetail);
  add(count, kDetail);
  for (int attempt = 0; attempt < 8 && listing.ByteSizeLong() != bytes; ++attempt) {
    std::string* detail = listing.mutable_environments(count)->mutable_detail();
    size_t size = listing.ByteSizeLong();
    detail->assign(Text(detail->size() + bytes - size, count));
  }
  return listing;
}

// Work a caller may do between StartStream and its first Wait; here it uses some stack, as any
// function call does.
[[gnu::noinline]] void DoOtherWork() {
  volatile char scratch[16384];
  for (size_t i = 0; i < sizeof scratch; ++i) scratch[i] = static_cast<char>(i);
}

// A value set once by a server thread and awaited by the test, with a time limit.
class Signal {
 public:
  void Set(bool value) {
    std::lock_guard<std::mutex> lock(mu_);
    value_ = value;
    cv_.notify_all();
  }
  std::optional<bool> WaitFor(std::chrono::milliseconds limit) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_for(lock, limit, [&] { return value_.has_value(); });
    return value_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::optional<bool> value_;
};

// Waits until the call is cancelled (its deadline, the client's cancel, shutdown) or 5 s pass.
bool AwaitCancellation(grpc::ServerContext* context) {
  absl::Time limit = absl::Now() + absl::Seconds(5);
  while (!context->IsCancelled() && absl::Now() < limit) absl::SleepFor(absl::Milliseconds(2));
  return context->IsCancelled();
}

// The service the tests call.
//   CreateEnvironment: echoes the request into an Environment.
//   GetEnvironment: NOT_FOUND "no environment named <name>".
//   ListEnvironments: Listing(listing_bytes).
//   GetAgentInfo: slow; answers only after 5 s unless cancelled first (slow_call_ended).
//   Exec: echoes each stdin as stdout; on close_stdin sends exited{7} and ends OK. Its end is
//     reported in exec_ended: whether the call was cancelled.
class TestAgent final : public v1::AgentService::Service {
 public:
  std::atomic<int> creates{0};
  std::atomic<size_t> listing_bytes{64 << 10};
  Signal slow_call_ended;
  Signal exec_ended;

  // How long the last CreateEnvironment or Exec had left when its handler began, as the
  // server knows it from the call's grpc-timeout (infinite without one).
  std::optional<absl::Duration> deadline_left() {
    std::lock_guard<std::mutex> lock(mu_);
    return deadline_left_;
  }

  grpc::Status CreateEnvironment(grpc::ServerContext* context, const v1::CreateEnvironmentRequest* request,
                                 v1::Environment* environment) override {
    NoteDeadline(context);
    ++creates;
    environment->set_name(request->name().empty() ? "derived-name" : request->name());
    environment->set_project_path(request->project_path());
    environment->set_state(v1::Environment::STATE_RUNNING);
    environment->set_home("/home/" + environment->name());
    return grpc::Status::OK;
  }

  grpc::Status GetEnvironment(grpc::ServerContext*, const v1::GetEnvironmentRequest* request,
                              v1::Environment*) override {
    return grpc::Status(grpc::StatusCode::NOT_FOUND, "no environment named " + request->name());
  }

  grpc::Status ListEnvironments(grpc::ServerContext*, const v1::ListEnvironmentsRequest*,
                                v1::ListEnvironmentsResponse* response) override {
    *response = Listing(listing_bytes);
    return grpc::Status::OK;
  }

  grpc::Status GetAgentInfo(grpc::ServerContext* context, const v1::GetAgentInfoRequest*,
                            v1::AgentInfo* info) override {
    slow_call_ended.Set(AwaitCancellation(context));
    info->set_version("too late");
    return grpc::Status::OK;
  }

  grpc::Status Exec(grpc::ServerContext* context,
                    grpc::ServerReaderWriter<v1::ExecResponse, v1::ExecRequest>* stream) override {
    NoteDeadline(context);
    v1::ExecRequest request;
    while (stream->Read(&request)) {
      v1::ExecResponse response;
      if (request.has_stdin()) {
        response.set_stdout(request.stdin());
        if (!stream->Write(response)) break;
      } else if (request.has_close_stdin()) {
        response.mutable_exited()->set_exit_code(7);
        stream->Write(response);
        exec_ended.Set(context->IsCancelled());
        return grpc::Status::OK;
      }
    }
    exec_ended.Set(context->IsCancelled());
    return grpc::Status(grpc::StatusCode::ABORTED, "the stream ended before close_stdin");
  }

 private:
  void NoteDeadline(grpc::ServerContext* context) {
    auto deadline = context->deadline();
    std::lock_guard<std::mutex> lock(mu_);
    deadline_left_ = deadline == std::chrono::system_clock::time_point::max()
                         ? absl::InfiniteDuration()
                         : absl::FromChrono(deadline) - absl::Now();
  }

  std::mutex mu_;
  std::optional<absl::Duration> deadline_left_;
};

// A plain Unix socket listening at `path`: no HTTP/2 behind it.
UniqueFd Listen(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  EXPECT_LT(path.size(), sizeof(addr.sun_path));
  memcpy(addr.sun_path, path.data(), std::min(path.size(), sizeof(addr.sun_path) - 1));
  UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  EXPECT_TRUE(fd) << strerror(errno);
  EXPECT_EQ(bind(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)), 0)
      << strerror(errno);
  EXPECT_EQ(listen(fd.get(), 4), 0) << strerror(errno);
  return fd;
}

// Accepts one connection within 5 s (not forever: a test that fails before connecting must
// still end).
UniqueFd AcceptWithin5s(int listener) {
  pollfd p{listener, POLLIN, 0};
  if (poll(&p, 1, 5000) != 1) return UniqueFd();
  return UniqueFd(accept4(listener, nullptr, nullptr, SOCK_CLOEXEC));
}

// gRPC's library stays initialised for the whole run. Otherwise each test's server, its last
// user, shuts it down when destroyed, which now and then waits 10 s for gRPC's executor thread.
class GrpcLibrary : public ::testing::Environment {
 public:
  void SetUp() override { grpc_init(); }
};
::testing::Environment* const kGrpcLibrary = ::testing::AddGlobalTestEnvironment(new GrpcLibrary);

class GrpcConnectionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char dir[] = "/tmp/grpc_connection_test.XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr) << strerror(errno);
    dir_ = dir;
    socket_path_ = dir_ + "/agent.sock";
    grpc::ServerBuilder builder;
    builder.AddListeningPort("unix:" + socket_path_, grpc::InsecureServerCredentials());
    builder.RegisterService(&agent_);
    builder.SetMaxSendMessageSize(64 << 20);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr) << "no gRPC server at " << socket_path_;
  }

  void TearDown() override {
    if (server_ != nullptr) {
      server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
      server_->Wait();
    }
    if (!dir_.empty()) {
      std::error_code ignored;
      std::filesystem::remove_all(dir_, ignored);
    }
  }

  std::unique_ptr<GrpcConnection> Connect() {
    absl::StatusOr<std::unique_ptr<GrpcConnection>> connection =
        GrpcConnection::Connect(socket_path_);
    EXPECT_TRUE(connection.ok()) << connection.status();
    return connection.ok() ? *std::move(connection) : nullptr;
  }

  // The next message of the stream (after a kMessage from Wait).
  static v1::ExecResponse NextResponse(GrpcConnection& connection) {
    v1::ExecResponse response;
    EXPECT_EQ(connection.Wait(), GrpcConnection::Event::kMessage);
    EXPECT_TRUE(connection.Read(response));
    return response;
  }

  static v1::ExecRequest Stdin(absl::string_view data) {
    v1::ExecRequest request;
    request.set_stdin(std::string(data));
    return request;
  }

  static v1::ExecRequest CloseStdin() {
    v1::ExecRequest request;
    request.set_close_stdin(true);
    return request;
  }

  std::string dir_;
  std::string socket_path_;
  TestAgent agent_;
  std::unique_ptr<grpc::Server> server_;
};

// --- Unary calls ---

TEST_F(GrpcConnectionTest, AUnaryCallRoundTripsItsRequestAndResponse) {
  std::unique_ptr<GrpcConnection> connection = Connect();
  ASSERT_NE(connection, nullptr);
  v1::CreateEnvironmentRequest request;
  request.set_project_path("/home/ada/engine");
  request.set_name("engine-1a2b");
  v1::Environment environment;

  ASSERT_TRUE(connection->Call(kCreate, request, environment, Soon()).ok());

  EXPECT_EQ(environment.name(), "engine-1a2b");
  EXPECT_EQ(environment.project_path(), "/home/ada/engine");
  EXPECT_EQ(environment.state(), v1::Environment::STATE_RUNNING);
  EXPECT_EQ(environment.home(), "/home/engine-1a2b");
  EXPECT_EQ(agent_.creates, 1);
}

TEST_F(GrpcConnectionTest, AUnaryCallWithoutADeadlineWorks) {
  std::unique_ptr<GrpcConnection> connection = Connect();
  ASSERT_NE(connection, nullptr);
  v1::CreateEnvironmentRequest request;
  request.set_project_path("/srv/p");
  v1::Environment environment;

  ASSERT_TRUE(connection->Call(kCreate, request, environment).ok());

  EXPECT_EQ(environment.name(), "derived-name");
  EXPECT_EQ(environment.project_path(), "/srv/p");
  EXPECT_THAT(agent_.deadline_left(), Optional(absl::InfiniteDuration()));
}

TEST_F(GrpcConnectionTest, TheServerLearnsTheDeadlineOfAUnaryCall) {
  std::unique_ptr<GrpcConnection> connection = Connect();
  ASSERT_NE(connection, nullptr);
  v1::Environment environment;

  absl::Status status = connection->Call(kCreate, v1::CreateEnvironmentRequest(), environment,
                                         absl::Now() + absl::Seconds(30));

  ASSERT_TRUE(status.ok()) << status;
  std::optional<absl::Duration> left = agent_.deadline_left();
  ASSERT_TRUE(left.has_value());
  EXPECT_GT(*left, absl::Seconds(20));
  EXPECT_LE(*left, absl::Seconds(30));
}

TEST_F(GrpcConnectionTest, TheServerLearnsTheDeadlineOfAStream) {
  std::unique_ptr<GrpcConnection> connection = Connect();
  ASSERT_NE(connection, nullptr);
  ASSERT_TRUE(connection->StartStream(kExec, absl::Now() + absl::Seconds(30)).ok());
  DoOtherWork();
  ASSERT_TRUE(connection->Write(Stdin("hello")));
  EXPECT_EQ(NextResponse(*connection).stdout(), "hello");  // the handler has begun

  std::optional<absl::Duration> left = agent_.deadline_left();
  ASSERT_TRUE(left.has_value());
  EXPECT_GT(*left, absl::Seconds(20));
  EXPECT_LE(*left, absl::Seconds(30));
  connection->Cancel();
}

TEST_F(GrpcConnectionTest, AnErrorStatusArrivesWithItsCodeAndDecodedMessage) {
  std::unique_ptr<GrpcConnection> connection = Connect();
  ASSERT_NE(connection, nullptr);
  // gRPC percent-encodes grpc-message: '%', everything outside printable ASCII.
  for (const std::string& name : {
           std::string("plain"),
           std::string("100% sure"),
           std::string("Grüße — from the café"),
           std::string("line one\nline two\ttabbed\r"),
           std::string("looks encoded: %41%2541 %zz %4 trailing %"),
           std::string("emoji \xF0\x9F\x90\xA7 and \x7F control"),
       }) {
    v1::GetEnvironmentRequest request;
    request.set_name(name);
    v1::Environment environment;

    absl::Status status = connection->Call(kGet, request, environment, Soon());

    EXPECT_EQ(status.code(), absl::StatusCode::kNotFound) << status;
    EXPECT_EQ(status.message(), "no environment named " + name);
  }
}

TEST_F(GrpcConnectionTest, ManyCallsInSequenceShareOneConnectionAndErrorsDoNotSpoilIt) {
  std::unique_ptr<GrpcConnection> connection = Connect();
  ASSERT_NE(connection, nullptr);
  int created = 0;
  for (int i = 0; i < 60; ++i) {
    if (i % 6 == 5) {
      v1::GetEnvironmentRequest request;
      request.set_name(absl::StrCat("gone-", i));
      v1::Environment environment;
      absl::Status status = connection->Call(kGet, request, environment, Soon());
      EXPECT_EQ(status.code(), absl::StatusCode::kNotFound) << "call " << i << ": " << status;
      continue;
    }
    v1::CreateEnvironmentRequest request;
    request.set_project_path(absl::StrCat("/home/u/p", i));
    v1::Environment environment;
    absl::Status status = connection->Call(kCreate, request, environment, Soon());
    ASSERT_TRUE(status.ok()) << "call " << i << ": " << status;
    EXPECT_EQ(environment.project_path(), absl::StrCat("/home/u/p", i));
    ++created;
  }
  EXPECT_EQ(created, 50);
  EXPECT_EQ(agent_.creates, 50);
  EXPECT_TRUE(connection->status().ok()) << connection->status();
}

TEST_F(GrpcConnectionTest, ALargeResponseArrivesWholeAndEqual) {
  std::unique_ptr<GrpcConnection> connection = Connect();
  ASSERT_NE(connection, nullptr);
  constexpr size_t kSize = 8 << 20;
  agent_.listing_bytes = kSize;
  v1::ListEnvironmentsResponse expected = Listing(kSize);
  ASSERT_EQ(expected.ByteSizeLong(), kSize);
  v1::ListEnvironmentsResponse listing;

  absl::Status status = connection->Call(kList, v1::ListEnvironmentsRequest(), listing, Soon());

  ASSERT_TRUE(status.ok()) << status;
  EXPECT_EQ(listing.environments_size(), expected.environments_size());
  EXPECT_EQ(listing.ByteSizeLong(), kSize);
  EXPECT_TRUE(listing.SerializeAsString() == expected.SerializeAsString())
      << "the listing differs from the one sent";
}

TEST_F(GrpcConnectionTest, AResponseOfExactlyTheLargestAcceptedSizeArrives) {
  std::unique_ptr<GrpcConnection> connection = Connect();
  ASSERT_NE(connection, nullptr);
  agent_.listing_bytes = GrpcConnection::kMaxReceiveMessage;
  v1::ListEnvironmentsResponse listing;

  absl::Status status = connection->Call(kList, v1::ListEnvironmentsRequest(), listing, Soon());

  ASSERT_TRUE(status.ok()) << status;
  EXPECT_EQ(listing.ByteSizeLong(), GrpcConnection::kMaxReceiveMessage);
}

TEST_F(GrpcConnectionTest, AResponseOverTheLargestAcceptedSizeFailsResourceExhausted) {
  std::unique_ptr<GrpcConnection> connection = Connect();
  ASSERT_NE(connection, nullptr);
  agent_.listing_bytes = GrpcConnection::kMaxReceiveMessage + 1;
  v1::ListEnvironmentsResponse listing;

  absl::Status status = connection->Call(kList, v1::ListEnvironmentsRequest(), listing, Soon());

  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted) << status;
  EXPECT_THAT(status.message(), HasSubstr(absl::StrCat(GrpcConnection::kMaxReceiveMessage + 1)));

  // The refused response does not spoil the connection.
  v1::CreateEnvironmentRequest request;
  request.set_project_path("/after/refusal");
  v1::Environment environment;
  status = connection->Call(kCreate, request, environment, Soon());
  ASSERT_TRUE(status.ok()) << status;
  EXPECT_EQ(environment.project_path(), "/after/refusal");
}

TEST_F(GrpcConnectionTest, ADeadlinePassingWhileTheServerIsSlowGivesDeadlineExceeded) {
  std::unique_ptr<GrpcConnection> connection = Connect();
  ASSERT_NE(connection, nullptr);
  v1::AgentInfo info;

  absl::Status status = connection->Call(kInfo, v1::GetAgentInfoRequest(), info,
                                         absl::Now() + absl::Milliseconds(200));

  EXPECT_EQ(status.code(), absl::StatusCode::kDeadlineExceeded) << status;
  EXPECT_EQ(info.version(), "");
  // The server's handler learns that the call is over.
  EXPECT_THAT(agent_.slow_call_ended.WaitFor(std::chrono::seconds(10)), Optional(true));
  // And the connection serves the next call.
  v1::CreateEnvironmentRequest request;
  request.set_project_path("/after/deadline");
  v1::Environment environment;
  status = connection->Call(kCreate, request, environment, Soon());
  EXPECT_TRUE(status.ok()) << status;
}

TEST_F(GrpcConnectionTest, AnUnknownMethodIsUnimplemented) {
  std::unique_ptr<GrpcConnection> connection = Connect();
  ASSERT_NE(connection, nullptr);
  for (const char* method :
       {"/llima.v1.AgentService/NoSuchMethod", "/llima.v9.NoSuchService/GetAgentInfo"}) {
    v1::AgentInfo info;
    absl::Status status = connection->Call(method, v1::GetAgentInfoRequest(), info, Soon());
    EXPECT_EQ(status.code(), absl::StatusCode::kUnimplemented) << method << ": " << status;
  }
}

// --- Sockets without a gRPC server ---

TEST_F(GrpcConnectionTest, NothingAtThePathIsUnavailableNamingThePath) {
  std::string path = dir_ + "/no-agent-here.sock";

  absl::StatusOr<std::unique_ptr<GrpcConnection>> connection = GrpcConnection::Connect(path);

  ASSERT_FALSE(connection.ok());
  EXPECT_EQ(connection.status().code(), absl::StatusCode::kUnavailable) << connection.status();
  EXPECT_THAT(connection.status().message(), HasSubstr(path));
}

TEST_F(GrpcConnectionTest, ASocketNobodyListensOnAnyMoreIsUnavailableNamingThePath) {
  std::string path = dir_ + "/stale.sock";
  Listen(path);  // bound, then closed: the file stays

  absl::StatusOr<std::unique_ptr<GrpcConnection>> connection = GrpcConnection::Connect(path);

  ASSERT_FALSE(connection.ok());
  EXPECT_EQ(connection.status().code(), absl::StatusCode::kUnavailable) << connection.status();
  EXPECT_THAT(connection.status().message(), HasSubstr(path));
}

TEST_F(GrpcConnectionTest, ASocketThatClosesAtOnceFailsTheCallUnavailable) {
  std::string path = dir_ + "/closes.sock";
  UniqueFd listener = Listen(path);
  std::jthread closer([fd = listener.get()] { AcceptWithin5s(fd); });  // closes what it accepts
  absl::StatusOr<std::unique_ptr<GrpcConnection>> connection = GrpcConnection::Connect(path);
  ASSERT_TRUE(connection.ok()) << connection.status();
  v1::AgentInfo info;

  absl::Status status =
      (*connection)->Call(kInfo, v1::GetAgentInfoRequest(), info, Soon());

  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
  EXPECT_THAT(status.message(), HasSubstr(path));
  // The connection is done for: the next call fails at once, the same way.
  EXPECT_EQ((*connection)->status().code(), absl::StatusCode::kUnavailable);
  status = (*connection)->Call(kInfo, v1::GetAgentInfoRequest(), info, Soon());
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
}

TEST_F(GrpcConnectionTest, ASocketThatAnswersSomethingElseThanHttp2FailsTheCall) {
  std::string path = dir_ + "/http1.sock";
  UniqueFd listener = Listen(path);
  std::jthread http1([fd = listener.get()] {
    UniqueFd peer = AcceptWithin5s(fd);
    if (!peer) return;
    static constexpr char kAnswer[] =
        "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n";
    (void)!write(peer.get(), kAnswer, sizeof(kAnswer) - 1);
    // Keeps the connection open until the client closes it (or 5 s pass).
    char buffer[4096];
    pollfd p{peer.get(), POLLIN, 0};
    while (poll(&p, 1, 5000) == 1 && read(peer.get(), buffer, sizeof buffer) > 0) {
    }
  });
  absl::StatusOr<std::unique_ptr<GrpcConnection>> connection = GrpcConnection::Connect(path);
  ASSERT_TRUE(connection.ok()) << connection.status();
  v1::AgentInfo info;

  absl::Status status =
      (*connection)->Call(kInfo, v1::GetAgentInfoRequest(), info, Soon());

  EXPECT_THAT(status.code(), AnyOf(Eq(absl::StatusCode::kUnavailable),
                                   Eq(absl::StatusCode::kInternal)))
      << status;
  connection->reset();  // lets the peer thread end
}

TEST_F(GrpcConnectionTest, ASocketThatNeverAnswersFailsAtTheDeadlineInsteadOfHanging) {
  std::string path = dir_ + "/silent.sock";
  UniqueFd listener = Listen(path);
  absl::StatusOr<std::unique_ptr<GrpcConnection>> connection = GrpcConnection::Connect(path);
  ASSERT_TRUE(connection.ok()) << connection.status();
  UniqueFd peer = AcceptWithin5s(listener.get());  // accepted, never read, never answered
  ASSERT_TRUE(peer);
  v1::AgentInfo info;

  absl::Status status = (*connection)->Call(kInfo, v1::GetAgentInfoRequest(), info,
                                            absl::Now() + absl::Milliseconds(300));

  EXPECT_EQ(status.code(), absl::StatusCode::kDeadlineExceeded) << status;
}

TEST_F(GrpcConnectionTest, ADeadlineEndsTheCallEvenWhileAWatchedDescriptorIsAlwaysReady) {
  std::string path = dir_ + "/silent.sock";
  UniqueFd listener = Listen(path);
  absl::StatusOr<std::unique_ptr<GrpcConnection>> connection = GrpcConnection::Connect(path);
  ASSERT_TRUE(connection.ok()) << connection.status();
  UniqueFd peer = AcceptWithin5s(listener.get());  // never answers
  ASSERT_TRUE(peer);
  int fds[2];
  ASSERT_EQ(pipe2(fds, O_CLOEXEC | O_NONBLOCK), 0);
  UniqueFd read_end(fds[0]), write_end(fds[1]);
  ASSERT_EQ(write(write_end.get(), "x", 1), 1);  // never read: the pipe stays readable
  pollfd watch[] = {{read_end.get(), POLLIN, 0}};
  ASSERT_TRUE((*connection)->StartStream(kExec, absl::Now() + absl::Milliseconds(300)).ok());

  absl::Time give_up = absl::Now() + absl::Seconds(5);
  GrpcConnection::Event event;
  int watched = 0;
  while ((event = (*connection)->Wait(watch)) == GrpcConnection::Event::kWatched &&
         absl::Now() < give_up) {
    ++watched;
  }

  EXPECT_EQ(event, GrpcConnection::Event::kEnded) << "still kWatched after " << watched << " waits";
  absl::Status status = (*connection)->Finish();
  EXPECT_EQ(status.code(), absl::StatusCode::kDeadlineExceeded) << status;
}

// --- Streams ---

TEST_F(GrpcConnectionTest, AStreamCarriesManyMegabytesBothWaysInOrder) {
  std::unique_ptr<GrpcConnection> connection = Connect();
  ASSERT_NE(connection, nullptr);
  const std::string data = Bytes(32 << 20);
  // Chunk sizes of all kinds, the largest over the HTTP/2 frames' and windows' sizes.
  constexpr size_t kChunks[] = {1, 4093, 65536, 100003, 262144, 1 << 20, 3, 1500000};
  constexpr size_t kUnsentLimit = 2 << 20;
  ASSERT_TRUE(connection->StartStream(kExec, absl::Now() + absl::Seconds(30)).ok());

  size_t sent = 0;
  size_t chunk = 0;
  bool closed = false;
  std::string echoed;
  echoed.reserve(data.size());
  std::optional<int> exit_code;
  int stdout_after_exit = 0;
  for (;;) {
    while (sent < data.size() && connection->unsent_bytes() < kUnsentLimit) {
      size_t n = std::min(kChunks[chunk++ % std::size(kChunks)], data.size() - sent);
      ASSERT_TRUE(connection->Write(Stdin(absl::string_view(data).substr(sent, n))));
      sent += n;
    }
    if (sent == data.size() && !closed) {
      ASSERT_TRUE(connection->Write(CloseStdin()));
      connection->WritesDone();
      closed = true;
      EXPECT_FALSE(connection->Write(Stdin("after WritesDone")));
    }
    GrpcConnection::Event event = connection->Wait();
    if (event == GrpcConnection::Event::kEnded) break;
    ASSERT_EQ(event, GrpcConnection::Event::kMessage);
    v1::ExecResponse response;
    ASSERT_TRUE(connection->Read(response));
    if (response.has_stdout()) {
      if (exit_code) ++stdout_after_exit;
      echoed += response.stdout();
    } else if (response.has_exited()) {
      exit_code = response.exited().exit_code();
    } else {
      ADD_FAILURE() << "unexpected response " << response.ShortDebugString();
    }
  }

  absl::Status status = connection->Finish();
  EXPECT_TRUE(status.ok()) << status;
  EXPECT_EQ(echoed.size(), data.size());
  if (echoed != data) {
    auto [a, b] = std::mismatch(echoed.begin(), echoed.end(), data.begin(), data.end());
    ADD_FAILURE() << "the echo differs from byte " << (a - echoed.begin()) << " on";
  }
  EXPECT_THAT(exit_code, Optional(7));
  EXPECT_EQ(stdout_after_exit, 0);
  EXPECT_THAT(agent_.exec_ended.WaitFor(std::chrono::seconds(10)), Optional(false));
}

TEST_F(GrpcConnectionTest, CancelEndsTheStreamCancelledAndTheServerSeesIt) {
  std::unique_ptr<GrpcConnection> connection = Connect();
  ASSERT_NE(connection, nullptr);
  ASSERT_TRUE(connection->StartStream(kExec, Soon()).ok());
  ASSERT_TRUE(connection->Write(Stdin("hello")));
  EXPECT_EQ(NextResponse(*connection).stdout(), "hello");  // the server's handler is running

  connection->Cancel();

  EXPECT_EQ(connection->Finish().code(), absl::StatusCode::kCancelled) << connection->Finish();
  EXPECT_EQ(connection->Wait(), GrpcConnection::Event::kEnded);
  EXPECT_FALSE(connection->Write(Stdin("too late")));
  EXPECT_THAT(agent_.exec_ended.WaitFor(std::chrono::seconds(10)), Optional(true));
  // The connection serves the next call.
  v1::CreateEnvironmentRequest request;
  request.set_project_path("/after/cancel");
  v1::Environment environment;
  absl::Status status = connection->Call(kCreate, request, environment, Soon());
  EXPECT_TRUE(status.ok()) << status;
  EXPECT_EQ(environment.project_path(), "/after/cancel");
}

TEST_F(GrpcConnectionTest, WaitReturnsWatchedWhenAWatchedDescriptorIsReadyWhileTheStreamIsIdle) {
  std::unique_ptr<GrpcConnection> connection = Connect();
  ASSERT_NE(connection, nullptr);
  int fds[2];
  ASSERT_EQ(pipe2(fds, O_CLOEXEC | O_NONBLOCK), 0);
  UniqueFd read_end(fds[0]), write_end(fds[1]);
  pollfd watch[] = {{-1, POLLIN, 0}, {read_end.get(), POLLIN, 0}};
  ASSERT_TRUE(connection->StartStream(kExec, Soon()).ok());

  // With nothing on the pipe, a message still ends the wait.
  ASSERT_TRUE(connection->Write(Stdin("ping")));
  ASSERT_EQ(connection->Wait(watch), GrpcConnection::Event::kMessage);
  v1::ExecResponse response;
  ASSERT_TRUE(connection->Read(response));
  EXPECT_EQ(response.stdout(), "ping");

  // The stream is idle; the pipe becomes readable.
  ASSERT_EQ(write(write_end.get(), "x", 1), 1);
  EXPECT_EQ(connection->Wait(watch), GrpcConnection::Event::kWatched);
  EXPECT_TRUE(watch[1].revents & POLLIN) << watch[1].revents;
  EXPECT_EQ(watch[0].revents, 0);
  char byte;
  ASSERT_EQ(read(read_end.get(), &byte, 1), 1);

  // The stream goes on as before.
  ASSERT_TRUE(connection->Write(CloseStdin()));
  connection->WritesDone();
  ASSERT_EQ(connection->Wait(watch), GrpcConnection::Event::kMessage);
  ASSERT_TRUE(connection->Read(response));
  EXPECT_EQ(response.exited().exit_code(), 7);
  EXPECT_EQ(connection->Wait(watch), GrpcConnection::Event::kEnded);
  EXPECT_TRUE(connection->Finish().ok()) << connection->Finish();
}

TEST_F(GrpcConnectionTest, TheServerShuttingDownEndsAnOpenStreamInsteadOfHanging) {
  std::unique_ptr<GrpcConnection> connection = Connect();
  ASSERT_NE(connection, nullptr);
  ASSERT_TRUE(connection->StartStream(kExec, Soon()).ok());
  ASSERT_TRUE(connection->Write(Stdin("hello")));
  EXPECT_EQ(NextResponse(*connection).stdout(), "hello");

  // Shutdown blocks until the handlers return: from another thread.
  std::jthread shutdown([this] {
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::milliseconds(100));
  });
  GrpcConnection::Event event = connection->Wait();
  shutdown.join();

  EXPECT_EQ(event, GrpcConnection::Event::kEnded);
  absl::Status status = connection->Finish();
  EXPECT_THAT(status.code(), AnyOf(Eq(absl::StatusCode::kUnavailable),
                                   Eq(absl::StatusCode::kCancelled)))
      << status;
  EXPECT_THAT(agent_.exec_ended.WaitFor(std::chrono::seconds(10)), Optional(true));
}

TEST_F(GrpcConnectionTest, TheMethodNameNeedNotOutliveStartStream) {
  std::unique_ptr<GrpcConnection> connection = Connect();
  ASSERT_NE(connection, nullptr);
  {
    std::string method = kExec;  // on the heap: longer than a short string
    ASSERT_TRUE(connection->StartStream(method, Soon()).ok());
  }
  std::string other(sizeof(kExec) - 1, 'z');  // may take the memory the name had
  ASSERT_TRUE(connection->Write(Stdin("hello")));

  ASSERT_EQ(connection->Wait(), GrpcConnection::Event::kMessage) << connection->Finish();
  v1::ExecResponse response;
  ASSERT_TRUE(connection->Read(response));
  EXPECT_EQ(response.stdout(), "hello");
  connection->Cancel();
}

TEST_F(GrpcConnectionTest, OneStreamAtATime) {
  std::unique_ptr<GrpcConnection> connection = Connect();
  ASSERT_NE(connection, nullptr);
  ASSERT_TRUE(connection->StartStream(kExec, Soon()).ok());
  EXPECT_EQ(connection->Finish().code(), absl::StatusCode::kFailedPrecondition);

  absl::Status second = connection->StartStream(kExec, Soon());
  EXPECT_EQ(second.code(), absl::StatusCode::kFailedPrecondition) << second;
  v1::Environment environment;
  absl::Status unary =
      connection->Call(kCreate, v1::CreateEnvironmentRequest(), environment, Soon());
  EXPECT_EQ(unary.code(), absl::StatusCode::kFailedPrecondition) << unary;

  // The first stream is unharmed.
  ASSERT_TRUE(connection->Write(Stdin("still here")));
  EXPECT_EQ(NextResponse(*connection).stdout(), "still here");
  ASSERT_TRUE(connection->Write(CloseStdin()));
  connection->WritesDone();
  EXPECT_EQ(NextResponse(*connection).exited().exit_code(), 7);
  EXPECT_EQ(connection->Wait(), GrpcConnection::Event::kEnded);
  EXPECT_TRUE(connection->Finish().ok()) << connection->Finish();
}

TEST_F(GrpcConnectionTest, AMessageThatDoesNotParseEndsTheCallWithInternal) {
  std::unique_ptr<GrpcConnection> connection = Connect();
  ASSERT_NE(connection, nullptr);
  ASSERT_TRUE(connection->StartStream(kExec, Soon()).ok());
  // The echo's bytes field 2 is, for an Environment, the string project_path: not UTF-8 here.
  ASSERT_TRUE(connection->Write(Stdin("\xff\xfe not UTF-8")));
  ASSERT_EQ(connection->Wait(), GrpcConnection::Event::kMessage);
  v1::Environment wrong_type;

  EXPECT_FALSE(connection->Read(wrong_type));

  EXPECT_EQ(connection->Wait(), GrpcConnection::Event::kEnded);
  EXPECT_EQ(connection->Finish().code(), absl::StatusCode::kInternal) << connection->Finish();
  // The server is told: the call is cancelled.
  EXPECT_THAT(agent_.exec_ended.WaitFor(std::chrono::seconds(10)), Optional(true));
}

}  // namespace
}  // namespace llima
