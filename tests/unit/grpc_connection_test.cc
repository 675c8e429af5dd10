// GrpcConnection, the clients' HTTP/2 gRPC caller, against a real gRPC C++ server in this
// process: unary calls, their errors, deadlines and sizes, Exec's bidirectional stream, and
// sockets behind which no gRPC server speaks; and against a small HTTP/2 server of its own
// (nghttp2) for answers a gRPC server does not give on demand: HTTP errors, resets, GOAWAY, a
// connection closed under a sending client.

#include "grpc_connection.h"

#include <fcntl.h>
#include <grpc/grpc.h>
#include <grpcpp/grpcpp.h>
#include <nghttp2/nghttp2.h>
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
#include <deque>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <ostream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
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
    case GrpcConnection::Event::kSendRoom:
      *out << "kSendRoom";
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
  for (size_t i = 0; i < size; ++i)
    data[i] = static_cast<char>((i * 131 + i / 251 + i / 65521) & 0xff);
  return data;
}

// Varied printable text (string fields must be UTF-8).
std::string Text(size_t size, size_t seed) {
  std::string text(size, 'a');
  for (size_t i = 0; i < size; ++i)
    text[i] = static_cast<char>('a' + (i * 7 + seed * 13 + i / 97) % 26);
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
//   Exec, as exec_mode says:
//     kEcho: echoes each stdin as stdout; on close_stdin sends exited{7} and ends OK.
//     kDiscard: counts the stdin bytes (in discarded) and drops them, as `cat > /dev/null`
//       does, silent until close_stdin; then sends exited{0} and ends OK.
//     kRefuseInput: reads one message, then ends FAILED_PRECONDITION "no more input wanted"
//       without reading the rest.
//   Its end is reported in exec_ended: whether the call was cancelled.
class TestAgent final : public v1::AgentService::Service {
 public:
  enum class ExecMode { kEcho, kDiscard, kRefuseInput };

  std::atomic<int> creates{0};
  std::atomic<size_t> listing_bytes{64 << 10};
  std::atomic<ExecMode> exec_mode{ExecMode::kEcho};
  std::atomic<size_t> discarded{0};
  Signal slow_call_ended;
  Signal exec_ended;

  // How long the last CreateEnvironment or Exec had left when its handler began, as the
  // server knows it from the call's grpc-timeout (infinite without one).
  std::optional<absl::Duration> deadline_left() {
    std::lock_guard<std::mutex> lock(mu_);
    return deadline_left_;
  }

  grpc::Status CreateEnvironment(grpc::ServerContext* context,
                                 const v1::CreateEnvironmentRequest* request,
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
    if (exec_mode == ExecMode::kRefuseInput) {
      stream->Read(&request);
      exec_ended.Set(context->IsCancelled());
      return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, "no more input wanted");
    }
    while (stream->Read(&request)) {
      if (exec_mode == ExecMode::kDiscard) {
        if (request.has_stdin()) {
          discarded += request.stdin().size();
          continue;
        }
        if (request.has_close_stdin()) {
          v1::ExecResponse response;
          response.mutable_exited()->set_exit_code(0);
          stream->Write(response);
          exec_ended.Set(context->IsCancelled());
          return grpc::Status::OK;
        }
        continue;
      }
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

// A gRPC server of its own for a test, on `path`, shut down (its calls cancelled) when
// destroyed. Declared after the service it serves, which must outlive it.
class ExtraServer {
 public:
  ExtraServer(const std::string& path, grpc::Service* service,
              const std::function<void(grpc::ServerBuilder&)>& configure = {}) {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("unix:" + path, grpc::InsecureServerCredentials());
    builder.RegisterService(service);
    if (configure) configure(builder);
    server_ = builder.BuildAndStart();
    EXPECT_NE(server_, nullptr) << "no gRPC server at " << path;
  }
  ~ExtraServer() {
    if (server_ == nullptr) return;
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
    server_->Wait();
  }
  explicit operator bool() const { return server_ != nullptr; }

 private:
  std::unique_ptr<grpc::Server> server_;
};

// Input that is always there, as a fast stdin's is: a pipe with a byte in it that is never
// read. A Wait() watching it returns kWatched after one turn of sending and receiving.
struct AlwaysReadable {
  AlwaysReadable() {
    int fds[2];
    EXPECT_EQ(pipe2(fds, O_CLOEXEC | O_NONBLOCK), 0) << strerror(errno);
    read_end.reset(fds[0]);
    write_end.reset(fds[1]);
    EXPECT_EQ(write(write_end.get(), "x", 1), 1);
  }
  UniqueFd read_end, write_end;
};

// The process's peak resident memory (VmHWM) in KiB, from /proc/self/status; -1 if unknown.
long PeakResidentKiB() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (absl::string_view(line).substr(0, 6) != "VmHWM:") continue;
    absl::string_view value = absl::string_view(line).substr(6);
    while (!value.empty() && (value.front() == ' ' || value.front() == '\t'))
      value.remove_prefix(1);
    value = value.substr(0, value.find(' '));
    long kib;
    return absl::SimpleAtoi(value, &kib) ? kib : -1;
  }
  return -1;
}

// Resets the peak to the present resident memory ("5" to /proc/self/clear_refs): false if the
// kernel does not allow it.
bool ResetPeakResident() {
  std::ofstream clear_refs("/proc/self/clear_refs");
  clear_refs << "5";
  clear_refs.flush();
  return clear_refs.good();
}

// A message as gRPC frames it: uncompressed, its length big-endian, the message.
std::string Framed(const google::protobuf::MessageLite& message) {
  std::string bytes = message.SerializeAsString();
  std::string framed(5, '\0');
  for (int i = 0; i < 4; ++i) framed[1 + i] = static_cast<char>(bytes.size() >> (24 - 8 * i));
  return framed + bytes;
}

// Asks Usable() every 50 ms for up to 10 s: whether it said false.
bool BecomesUnusable(GrpcConnection& connection) {
  absl::Time limit = absl::Now() + absl::Seconds(10);
  while (connection.Usable()) {
    if (absl::Now() >= limit) return false;
    absl::SleepFor(absl::Milliseconds(50));
  }
  return true;
}

// A small HTTP/2 server (nghttp2's server API) on a Unix socket, in a thread of its own. It
// accepts one connection and hands each request, once its headers are in, to `respond`, which
// answers with the calls below (on the server's thread). The thread ends when the client closes
// the connection, when `respond` closes it, or after 5 s without a byte from the client; the
// destructor waits for it.
class RawHttp2Server {
 public:
  using Headers = std::vector<std::pair<std::string, std::string>>;
  // `request` counts the requests from 1.
  using Respond = std::function<void(RawHttp2Server& server, int32_t stream_id, int request)>;

  RawHttp2Server(const std::string& path, Respond respond)
      : listener_(Listen(path)), respond_(std::move(respond)), thread_([this] { Serve(); }) {}

  int requests() const { return requests_; }

  // Whether the client sent `event` within 10 s: "RST_STREAM <stream> <error code>" or
  // "END_STREAM <stream>" (the client closing its side).
  bool Saw(const std::string& event) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, std::chrono::seconds(10), [&] {
      return std::find(events_.begin(), events_.end(), event) != events_.end();
    });
  }
  std::vector<std::string> events() {
    std::lock_guard<std::mutex> lock(mu_);
    return events_;
  }

  // HEADERS on the stream; with end_stream, the response ends with them (trailers, or a
  // trailers-only answer).
  void SendHeaders(int32_t stream_id, const Headers& headers, bool end_stream) {
    std::vector<nghttp2_nv> nva;
    for (const auto& [name, value] : headers) {
      nva.push_back({reinterpret_cast<uint8_t*>(const_cast<char*>(name.data())),
                     reinterpret_cast<uint8_t*>(const_cast<char*>(value.data())), name.size(),
                     value.size(), NGHTTP2_NV_FLAG_NONE});
    }
    int rv = nghttp2_submit_headers(session_, end_stream ? NGHTTP2_FLAG_END_STREAM : 0, stream_id,
                                    nullptr, nva.data(), nva.size(), nullptr);
    EXPECT_EQ(rv, 0) << nghttp2_strerror(rv);
    Send();
  }
  // DATA on the stream, not ending it.
  void SendData(int32_t stream_id, std::string bytes) {
    bodies_.push_back({std::move(bytes), 0});
    nghttp2_data_provider provider{};
    provider.source.ptr = &bodies_.back();
    provider.read_callback = ReadBody;
    int rv = nghttp2_submit_data(session_, NGHTTP2_FLAG_NONE, stream_id, &provider);
    EXPECT_EQ(rv, 0) << nghttp2_strerror(rv);
    Send();
  }
  void SendReset(int32_t stream_id, uint32_t error_code) {
    EXPECT_EQ(nghttp2_submit_rst_stream(session_, NGHTTP2_FLAG_NONE, stream_id, error_code), 0);
    Send();
  }
  void SendGoaway(int32_t last_stream_id) {
    EXPECT_EQ(nghttp2_submit_goaway(session_, NGHTTP2_FLAG_NONE, last_stream_id, NGHTTP2_NO_ERROR,
                                    nullptr, 0),
              0);
    Send();
  }
  // Reads what the client sent and nobody read yet, without waiting.
  void Drain() {
    char buffer[65536];
    while (peer_ && recv(peer_.get(), buffer, sizeof buffer, MSG_DONTWAIT) > 0) {
    }
  }
  // Closes the connection; the thread then ends.
  void Close() { peer_.reset(); }
  // Stops reading (shutdown SHUT_RD): the client's sends fail (EPIPE), what this side sends
  // still arrives. The thread ends when `respond` returns (reading then gives an end of file).
  void StopReading() { EXPECT_EQ(shutdown(peer_.get(), SHUT_RD), 0) << strerror(errno); }

 private:
  struct Body {
    std::string bytes;
    size_t offset;
  };

  static ssize_t ReadBody(nghttp2_session*, int32_t, uint8_t* buf, size_t length, uint32_t* flags,
                          nghttp2_data_source* source, void*) {
    auto* body = static_cast<Body*>(source->ptr);
    size_t n = std::min(length, body->bytes.size() - body->offset);
    memcpy(buf, body->bytes.data() + body->offset, n);
    body->offset += n;
    if (body->offset == body->bytes.size()) {
      *flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
    }
    return static_cast<ssize_t>(n);
  }

  static int OnFrame(nghttp2_session*, const nghttp2_frame* frame, void* user) {
    auto* server = static_cast<RawHttp2Server*>(user);
    if (frame->hd.type == NGHTTP2_HEADERS && frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
      server->requested_.push_back(frame->hd.stream_id);
    }
    if (frame->hd.type == NGHTTP2_RST_STREAM) {
      server->Note(absl::StrCat("RST_STREAM ", frame->hd.stream_id, " ",
                                nghttp2_http2_strerror(frame->rst_stream.error_code)));
    }
    if ((frame->hd.type == NGHTTP2_HEADERS || frame->hd.type == NGHTTP2_DATA) &&
        (frame->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
      server->Note(absl::StrCat("END_STREAM ", frame->hd.stream_id));
    }
    return 0;
  }

  void Note(std::string event) {
    std::lock_guard<std::mutex> lock(mu_);
    events_.push_back(std::move(event));
    cv_.notify_all();
  }

  // Writes all that nghttp2 has to send (waiting at most 5 s for the client to take it).
  bool Send() {
    for (;;) {
      if (!peer_) return false;
      const uint8_t* data;
      ssize_t n = nghttp2_session_mem_send(session_, &data);
      if (n < 0) return false;
      if (n == 0) return true;
      while (n > 0) {
        ssize_t sent = send(peer_.get(), data, static_cast<size_t>(n), MSG_NOSIGNAL | MSG_DONTWAIT);
        if (sent < 0 && (errno == EAGAIN || errno == EINTR)) {
          pollfd p{peer_.get(), POLLOUT, 0};
          if (poll(&p, 1, 5000) != 1) return false;
          continue;
        }
        if (sent < 0) return false;
        data += sent;
        n -= sent;
      }
    }
  }

  void Serve() {
    peer_ = AcceptWithin5s(listener_.get());
    if (!peer_) return;
    nghttp2_session_callbacks* callbacks;
    if (nghttp2_session_callbacks_new(&callbacks) != 0) return;
    nghttp2_session_callbacks_set_on_frame_recv_callback(callbacks, OnFrame);
    int rv = nghttp2_session_server_new(&session_, callbacks, this);
    nghttp2_session_callbacks_del(callbacks);
    if (rv != 0) return;
    nghttp2_submit_settings(session_, NGHTTP2_FLAG_NONE, nullptr, 0);
    uint8_t buffer[16384];
    while (Send()) {
      pollfd p{peer_.get(), POLLIN, 0};
      if (poll(&p, 1, 5000) != 1) break;
      ssize_t n = recv(peer_.get(), buffer, sizeof buffer, 0);
      if (n <= 0 || nghttp2_session_mem_recv(session_, buffer, static_cast<size_t>(n)) < 0) break;
      while (!requested_.empty() && peer_) {
        int32_t stream_id = requested_.front();
        requested_.pop_front();
        respond_(*this, stream_id, ++requests_);
      }
    }
    nghttp2_session_del(session_);
    session_ = nullptr;
    peer_.reset();
  }

  UniqueFd listener_;
  Respond respond_;
  UniqueFd peer_;
  nghttp2_session* session_ = nullptr;
  std::deque<int32_t> requested_;
  std::deque<Body> bodies_;  // stable addresses for the data providers
  std::atomic<int> requests_{0};
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::string> events_;
  std::jthread thread_;  // last: starts when all above is ready, joined before it goes
};

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

  std::unique_ptr<GrpcConnection> Connect() { return Connect(socket_path_); }
  static std::unique_ptr<GrpcConnection> Connect(const std::string& path) {
    absl::StatusOr<std::unique_ptr<GrpcConnection>> connection = GrpcConnection::Connect(path);
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

  // The client's side of the raw server's AnswerReadyThenWait: an Exec stream started, one
  // input written, the "ready" message read.
  static void StartExecUntilReady(GrpcConnection& connection) {
    ASSERT_TRUE(connection.StartStream(kExec, Soon()).ok());
    ASSERT_TRUE(connection.Write(Stdin("first")));
    EXPECT_EQ(NextResponse(connection).stdout(), "ready");
  }
  // For a raw server that answers with AnswerReadyThenWait: connects to `path`, starts the Exec
  // until "ready", lets the server go on and waits until it has done what it does next
  // (`done`), then queues 64 KiB of input for the next Wait to send.
  static void SendAfterTheServerWentOn(const std::string& path, Signal& go, Signal& done,
                                       std::unique_ptr<GrpcConnection>* connection) {
    *connection = Connect(path);
    ASSERT_NE(*connection, nullptr);
    ASSERT_NO_FATAL_FAILURE(StartExecUntilReady(**connection));
    go.Set(true);
    ASSERT_THAT(done.WaitFor(std::chrono::seconds(10)), Optional(true));
    ASSERT_TRUE((*connection)->Write(Stdin(Bytes(64 << 10))));
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

  // The server knows the deadline too (grpc-timeout) and may end the call first, with its own
  // message: which side's timer fires first is not determined. (With a server that does not
  // know deadlines: ADeadlineEndsTheCallWithAResetTheServerSees.)
  EXPECT_EQ(status.code(), absl::StatusCode::kDeadlineExceeded) << status;
  EXPECT_THAT(
      std::string(status.message()),
      AnyOf(HasSubstr(socket_path_ + " did not finish the call in time"), Eq("Deadline Exceeded")));
  // The server's handler learns that the call is over.
  EXPECT_THAT(agent_.slow_call_ended.WaitFor(std::chrono::seconds(10)), Optional(true));
  // A call's deadline is not the connection's failure: it stays usable and serves the next call.
  EXPECT_TRUE(connection->status().ok()) << connection->status();
  EXPECT_TRUE(connection->Usable());
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

  absl::Status status = (*connection)->Call(kInfo, v1::GetAgentInfoRequest(), info, Soon());

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

  absl::Status status = (*connection)->Call(kInfo, v1::GetAgentInfoRequest(), info, Soon());

  EXPECT_THAT(status.code(),
              AnyOf(Eq(absl::StatusCode::kUnavailable), Eq(absl::StatusCode::kInternal)))
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

  absl::Status status =
      (*connection)
          ->Call(kInfo, v1::GetAgentInfoRequest(), info, absl::Now() + absl::Milliseconds(300));

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
    if (event == GrpcConnection::Event::kSendRoom) continue;
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
  // A deadline far beyond the wait for the server below: only the cancel can end its handler
  // within that wait.
  ASSERT_TRUE(connection->StartStream(kExec, absl::Now() + absl::Seconds(60)).ok());
  ASSERT_TRUE(connection->Write(Stdin("hello")));
  EXPECT_EQ(NextResponse(*connection).stdout(), "hello");  // the server's handler is running

  connection->Cancel();

  EXPECT_EQ(connection->Finish().code(), absl::StatusCode::kCancelled) << connection->Finish();
  // The cancel went out on the wire: the handler, blocked reading, sees its call cancelled.
  EXPECT_THAT(agent_.exec_ended.WaitFor(std::chrono::seconds(10)), Optional(true));
  // The connection serves the next call.
  EXPECT_TRUE(connection->Usable());
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
  EXPECT_TRUE(watch[1].revents & POLLIN) << watch[1].revents;  // the entry after the ignored one
  char byte;
  ASSERT_EQ(read(read_end.get(), &byte, 1), 1);

  // The stream goes on as before; the drained pipe's POLLIN is not left in its entry (a caller
  // would read a pipe that has nothing).
  ASSERT_TRUE(connection->Write(CloseStdin()));
  connection->WritesDone();
  ASSERT_EQ(connection->Wait(watch), GrpcConnection::Event::kMessage);
  EXPECT_EQ(watch[1].revents, 0);
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
  EXPECT_THAT(status.code(),
              AnyOf(Eq(absl::StatusCode::kUnavailable), Eq(absl::StatusCode::kCancelled)))
      << status;
  EXPECT_THAT(agent_.exec_ended.WaitFor(std::chrono::seconds(10)), Optional(true));
}

TEST_F(GrpcConnectionTest, TheMethodNameNeedNotOutliveStartStream) {
  std::unique_ptr<GrpcConnection> connection = Connect();
  ASSERT_NE(connection, nullptr);
  std::string method = kExec;
  ASSERT_TRUE(connection->StartStream(method, Soon()).ok());
  // Overwritten before anything is sent: a request still pointing at these bytes would ask for
  // "/zzz...", which the server does not serve (UNIMPLEMENTED, not the echo).
  std::fill(method.begin(), method.end(), 'z');
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

v1::ExecRequest CloseStdinRequest() {
  v1::ExecRequest request;
  request.set_close_stdin(true);
  return request;
}

// What an upload as agent_client.cc's Exec makes it gave.
struct Upload {
  size_t written = 0;      // stdin bytes written (Write took them)
  size_t most_unsent = 0;  // the largest unsent_bytes() seen
  bool closed = false;     // close_stdin and WritesDone went out
  std::vector<v1::ExecResponse> responses;
};

// Uploads `total` bytes of stdin in messages of `chunk` bytes (each begins with its index), then
// close_stdin, as agent_client.cc's Exec does: its input (here always there, as a fast stdin's
// is) is watched only while the send is not backlogged, and kSendRoom says when it is no more.
// Writing stops if a Write is refused (the call is over). Returns when the call ends.
Upload UploadLikeTheCli(GrpcConnection& connection, size_t chunk, size_t total) {
  Upload upload;
  AlwaysReadable input;
  v1::ExecRequest request;
  request.set_stdin(Bytes(chunk));
  bool input_over = false;
  for (;;) {
    upload.most_unsent = std::max(upload.most_unsent, connection.unsent_bytes());
    pollfd watch[] = {
        {!input_over && !connection.send_backlogged() ? input.read_end.get() : -1, POLLIN, 0}};
    GrpcConnection::Event event = connection.Wait(watch);
    if (event == GrpcConnection::Event::kEnded) break;
    if (event == GrpcConnection::Event::kSendRoom) continue;
    if (event == GrpcConnection::Event::kMessage) {
      v1::ExecResponse response;
      while (connection.Read(response)) upload.responses.push_back(response);
      continue;
    }
    EXPECT_TRUE(watch[0].revents & POLLIN) << watch[0].revents;
    if (upload.written < total) {
      (*request.mutable_stdin())[0] = static_cast<char>(upload.written / chunk);
      if (connection.Write(request)) {
        upload.written += chunk;
        continue;
      }
    } else if (connection.Write(CloseStdinRequest())) {
      connection.WritesDone();
      upload.closed = true;
    }
    input_over = true;
  }
  return upload;
}

TEST_F(GrpcConnectionTest, ALongUploadKeepsTheClientsMemoryBounded) {
  agent_.exec_mode = TestAgent::ExecMode::kDiscard;
  std::unique_ptr<GrpcConnection> connection = Connect();
  ASSERT_NE(connection, nullptr);
  constexpr size_t kChunk = 1 << 20;
  constexpr size_t kTotal = 256 << 20;
  // Sent data kept in a send buffer would hold all 256 MiB (a buffer that never drops what it
  // sent grew by 540 MiB here): this is a quarter of that, and twice what the upload needs (its
  // backlog, the server's windows and buffers in this same process: 15 to 30 MiB).
  constexpr long kMaxGrowthKiB = 64 << 10;
  ASSERT_TRUE(ResetPeakResident()) << "cannot reset the peak resident memory";
  long before = PeakResidentKiB();
  ASSERT_GT(before, 0);
  ASSERT_TRUE(connection->StartStream(kExec, absl::Now() + absl::Seconds(60)).ok());

  Upload upload = UploadLikeTheCli(*connection, kChunk, kTotal);
  long peak = PeakResidentKiB();

  absl::Status status = connection->Finish();
  EXPECT_TRUE(status.ok()) << status;
  EXPECT_EQ(upload.written, kTotal);
  EXPECT_TRUE(upload.closed);
  ASSERT_EQ(upload.responses.size(), 1u);
  EXPECT_EQ(upload.responses[0].exited().exit_code(), 0);
  EXPECT_EQ(agent_.discarded, kTotal);
  // Input stops while the backlog is over its limit: at most one message more.
  EXPECT_LT(upload.most_unsent, GrpcConnection::kSendBacklog + kChunk + 64);
  EXPECT_LT(peak - before, kMaxGrowthKiB)
      << "the resident memory grew from " << before << " KiB to " << peak << " KiB";
}

// A command that reads its input and says nothing until it ends, slow to begin reading: the
// backlog passes its limit, the client stops reading input, and must hear when the backlog is
// gone (kSendRoom), or it waits for a message that never comes.
class SlowStartAgent final : public v1::AgentService::Service {
 public:
  std::atomic<size_t> received{0};
  grpc::Status Exec(grpc::ServerContext*,
                    grpc::ServerReaderWriter<v1::ExecResponse, v1::ExecRequest>* stream) override {
    absl::SleepFor(absl::Milliseconds(300));  // lets the backlog build up; not a timing check
    v1::ExecRequest request;
    while (stream->Read(&request)) {
      if (request.has_stdin()) received += request.stdin().size();
      if (request.has_close_stdin()) {
        v1::ExecResponse response;
        response.mutable_exited()->set_exit_code(0);
        stream->Write(response);
        return grpc::Status::OK;
      }
    }
    return grpc::Status(grpc::StatusCode::ABORTED, "the stream ended before close_stdin");
  }
};

TEST_F(GrpcConnectionTest, AnUploadToASilentServerGoesOnAfterTheBacklogStoppedTheInput) {
  std::string path = dir_ + "/slow.sock";
  SlowStartAgent slow;
  ExtraServer server(path, &slow);
  ASSERT_TRUE(server);
  std::unique_ptr<GrpcConnection> connection = Connect(path);
  ASSERT_NE(connection, nullptr);
  constexpr size_t kChunk = 128 << 10;  // agent_client.cc's kStdinChunk
  constexpr size_t kTotal = 8 << 20;
  ASSERT_TRUE(connection->StartStream(kExec, Soon()).ok());

  Upload upload = UploadLikeTheCli(*connection, kChunk, kTotal);

  absl::Status status = connection->Finish();
  EXPECT_TRUE(status.ok()) << status << " after " << upload.written << " bytes written, "
                           << slow.received << " received";
  EXPECT_GE(upload.most_unsent, GrpcConnection::kSendBacklog) << "the backlog never built up";
  EXPECT_EQ(slow.received, kTotal);
  ASSERT_EQ(upload.responses.size(), 1u);
  EXPECT_EQ(upload.responses[0].exited().exit_code(), 0);
}

// The agent's interactive Exec: a callback-API reactor that ends the call (its last message
// and OK) while the client has not closed its side. (gRPC's server follows its trailers with
// RST_STREAM NO_ERROR, which alone would end the call here too; a server that does not:
// TrailersEndTheCallWithoutAResetWhileTheClientHasNotClosedItsSide.)
class FinishingAgent final : public v1::AgentService::CallbackService {
 public:
  std::atomic<int> done{0};

  grpc::ServerBidiReactor<v1::ExecRequest, v1::ExecResponse>* Exec(
      grpc::CallbackServerContext*) override {
    class Reactor final : public grpc::ServerBidiReactor<v1::ExecRequest, v1::ExecResponse> {
     public:
      explicit Reactor(FinishingAgent* agent) : agent_(agent) { StartRead(&request_); }
      void OnReadDone(bool ok) override {
        if (!ok || !request_.has_start()) {
          Finish(grpc::Status(grpc::StatusCode::ABORTED, "no start message"));
          return;
        }
        // The exit code says the start message arrived whole: its argv's size.
        response_.mutable_exited()->set_exit_code(request_.start().argv_size());
        StartWriteAndFinish(&response_, grpc::WriteOptions(), grpc::Status::OK);
      }
      void OnDone() override {
        ++agent_->done;
        delete this;
      }

     private:
      FinishingAgent* agent_;
      v1::ExecRequest request_;
      v1::ExecResponse response_;
    };
    return new Reactor(this);
  }
};

TEST_F(GrpcConnectionTest, TheServerEndingTheCallEndsItWhileTheClientHasNotClosedItsSide) {
  std::string path = dir_ + "/callback.sock";
  FinishingAgent finishing;
  ExtraServer server(path, &finishing);
  ASSERT_TRUE(server);
  std::unique_ptr<GrpcConnection> connection = Connect(path);
  ASSERT_NE(connection, nullptr);

  for (int call = 1; call <= 2; ++call) {  // and the connection serves the next such call
    SCOPED_TRACE(absl::StrCat("call ", call));
    ASSERT_TRUE(connection->StartStream(kExec, Soon()).ok());
    v1::ExecRequest start;
    start.mutable_start()->set_environment("env");
    for (int i = 0; i < 3 + call; ++i) start.mutable_start()->add_argv(absl::StrCat("arg", i));
    ASSERT_TRUE(connection->Write(start));  // and no WritesDone

    ASSERT_EQ(connection->Wait(), GrpcConnection::Event::kMessage) << connection->Finish();
    v1::ExecResponse response;
    ASSERT_TRUE(connection->Read(response));
    EXPECT_EQ(response.exited().exit_code(), 3 + call) << response.ShortDebugString();
    EXPECT_EQ(connection->Wait(), GrpcConnection::Event::kEnded);
    absl::Status status = connection->Finish();
    EXPECT_TRUE(status.ok()) << status;
    EXPECT_TRUE(connection->Usable());
  }
  connection.reset();
  absl::Time limit = absl::Now() + absl::Seconds(10);
  while (finishing.done < 2 && absl::Now() < limit) absl::SleepFor(absl::Milliseconds(5));
  EXPECT_EQ(finishing.done, 2);
}

// gRPC's server sends GOAWAY to a connection idle for GRPC_ARG_MAX_CONNECTION_IDLE_MS, then
// closes it: Usable(), asked between calls, reads that and says no.
TEST_F(GrpcConnectionTest, AConnectionTheServerClosesAsIdleBecomesUnusableAndANewOneWorks) {
  std::string path = dir_ + "/idle.sock";
  TestAgent idle_agent;
  ExtraServer server(path, &idle_agent, [](grpc::ServerBuilder& builder) {
    builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_IDLE_MS, 200);
  });
  ASSERT_TRUE(server);
  std::unique_ptr<GrpcConnection> connection = Connect(path);
  ASSERT_NE(connection, nullptr);
  v1::CreateEnvironmentRequest request;
  request.set_project_path("/before/idle");
  v1::Environment environment;
  ASSERT_TRUE(connection->Call(kCreate, request, environment, Soon()).ok());

  EXPECT_TRUE(BecomesUnusable(*connection)) << "still usable after 10 s";

  // A call there fails at once, as unavailable (the server said GOAWAY, or closed the
  // connection): not a hang until its deadline, not another error.
  absl::Status status = connection->Call(kCreate, request, environment, Soon());
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
  EXPECT_FALSE(connection->Usable());
  // A new connection serves calls.
  connection = Connect(path);
  ASSERT_NE(connection, nullptr);
  request.set_project_path("/after/idle");
  status = connection->Call(kCreate, request, environment, Soon());
  ASSERT_TRUE(status.ok()) << status;
  EXPECT_EQ(environment.project_path(), "/after/idle");
  EXPECT_EQ(idle_agent.creates, 2);
}

// The server ends the call (its status, FAILED_PRECONDITION) while the client is still
// uploading. gRPC's server sends its trailers and then RST_STREAM NO_ERROR, and keeps the
// connection: the client must report the server's status, not an error of its own. (Whether a
// send fails meanwhile depends on timing here; the test after this one makes it fail.)
TEST_F(GrpcConnectionTest, AServerEndingTheCallDuringAnUploadGivesItsStatus) {
  agent_.exec_mode = TestAgent::ExecMode::kRefuseInput;
  std::unique_ptr<GrpcConnection> connection = Connect();
  ASSERT_NE(connection, nullptr);
  constexpr size_t kTotal = 64 << 20;  // the server is long done before this
  ASSERT_TRUE(connection->StartStream(kExec, absl::Now() + absl::Seconds(30)).ok());

  Upload upload = UploadLikeTheCli(*connection, 1 << 20, kTotal);

  absl::Status status = connection->Finish();
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition) << status;
  EXPECT_EQ(status.message(), "no more input wanted");
  EXPECT_LT(upload.written, kTotal);
  EXPECT_FALSE(upload.closed);
  EXPECT_TRUE(upload.responses.empty());
  EXPECT_THAT(agent_.exec_ended.WaitFor(std::chrono::seconds(10)), Optional(false));
}

// The raw server's side of the send-error tests: a response's headers and one "ready" message,
// then nothing until the test says go. False if it never does.
bool AnswerReadyThenWait(RawHttp2Server& raw, int32_t stream_id, Signal& go) {
  raw.SendHeaders(stream_id, {{":status", "200"}, {"content-type", "application/grpc"}}, false);
  v1::ExecResponse ready;
  ready.set_stdout("ready");
  raw.SendData(stream_id, Framed(ready));
  return go.WaitFor(std::chrono::seconds(10)).has_value();
}

// The server's last message and status arrive, then it closes the connection while the client
// still has input to send: the send fails (EPIPE), and what the server sent before is still
// read and reported. Ordered without timing: the client writes only once the server has closed.
TEST_F(GrpcConnectionTest, AfterASendFailsTheServersLastMessageAndStatusAreStillRead) {
  std::string path = dir_ + "/raw.sock";
  Signal go, closed;
  RawHttp2Server server(path, [&](RawHttp2Server& raw, int32_t stream_id, int) {
    if (!AnswerReadyThenWait(raw, stream_id, go)) return;
    v1::ExecResponse exited;
    exited.mutable_exited()->set_exit_code(9);
    raw.SendData(stream_id, Framed(exited));
    raw.SendHeaders(stream_id, {{"grpc-status", "9"}, {"grpc-message", "no more input wanted"}},
                    true);
    raw.Close();
    closed.Set(true);
  });
  // Input queued before the answer is read: the next Wait sends first, to a closed socket.
  // (Less than the backlog limit: Wait says nothing of the send.)
  std::unique_ptr<GrpcConnection> connection;
  ASSERT_NO_FATAL_FAILURE(SendAfterTheServerWentOn(path, go, closed, &connection));
  ASSERT_EQ(connection->Wait(), GrpcConnection::Event::kMessage) << connection->Finish();
  v1::ExecResponse response;
  ASSERT_TRUE(connection->Read(response));
  EXPECT_EQ(response.exited().exit_code(), 9);
  EXPECT_EQ(connection->Wait(), GrpcConnection::Event::kEnded);

  absl::Status status = connection->Finish();
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition) << status;
  EXPECT_EQ(status.message(), "no more input wanted");
  // The connection is over.
  EXPECT_FALSE(connection->Usable());
}

// As above, without a status: the end of the connection fails the call, and names the failed
// send (the reason the server may have had).
TEST_F(GrpcConnectionTest, ASendThatFailedIsNamedWhenTheServerClosesWithoutAStatus) {
  std::string path = dir_ + "/raw.sock";
  Signal go, closed;
  RawHttp2Server server(path, [&](RawHttp2Server& raw, int32_t stream_id, int) {
    if (!AnswerReadyThenWait(raw, stream_id, go)) return;
    raw.Drain();  // nothing unread: the client then reads an end of file, not a reset
    raw.Close();
    closed.Set(true);
  });
  std::unique_ptr<GrpcConnection> connection;
  ASSERT_NO_FATAL_FAILURE(SendAfterTheServerWentOn(path, go, closed, &connection));
  EXPECT_EQ(connection->Wait(), GrpcConnection::Event::kEnded);

  absl::Status status = connection->Finish();
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
  EXPECT_THAT(status.message(), HasSubstr(path));
  EXPECT_THAT(status.message(), HasSubstr("sending had failed"));
  EXPECT_EQ(connection->status(), status);
}

// A connection on which a send failed (the server stopped reading: EPIPE) can carry no more
// calls, though its call ended well and the server has not closed it: what a new call sends
// would be dropped, and the call would wait for an answer to a request never sent, until its
// deadline (or forever without one).
TEST_F(GrpcConnectionTest, AConnectionWhoseSendingFailedIsNotUsable) {
  std::string path = dir_ + "/raw.sock";
  Signal go, answered, finish;
  RawHttp2Server server(path, [&](RawHttp2Server& raw, int32_t stream_id, int) {
    if (!AnswerReadyThenWait(raw, stream_id, go)) return;
    raw.StopReading();
    v1::ExecResponse exited;
    exited.mutable_exited()->set_exit_code(0);
    raw.SendData(stream_id, Framed(exited));
    raw.SendHeaders(stream_id, {{"grpc-status", "0"}}, true);
    answered.Set(true);
    finish.WaitFor(std::chrono::seconds(20));  // the connection stays open until then
  });
  std::unique_ptr<GrpcConnection> connection;  // its next send fails
  ASSERT_NO_FATAL_FAILURE(SendAfterTheServerWentOn(path, go, answered, &connection));
  EXPECT_EQ(NextResponse(*connection).exited().exit_code(), 0);
  EXPECT_EQ(connection->Wait(), GrpcConnection::Event::kEnded);
  EXPECT_TRUE(connection->Finish().ok()) << connection->Finish();

  EXPECT_FALSE(connection->Usable());
  v1::AgentInfo info;
  absl::Status status = connection->Call(kInfo, v1::GetAgentInfoRequest(), info, Soon());
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
  finish.Set(true);
}

// How answers that are not gRPC's ordinary ones map to codes: an HTTP error status without
// grpc-status, a reset stream, a trailers-only answer.
TEST_F(GrpcConnectionTest, HttpStatusesResetsAndTrailersOnlyAnswersMapToCodes) {
  struct Case {
    const char* name;
    std::function<void(RawHttp2Server&, int32_t)> answer;
    absl::StatusCode code;
    std::string message_part;            // in the message
    std::optional<std::string> message;  // the whole message
  };
  auto headers_only = [](RawHttp2Server::Headers headers) {
    return [headers](RawHttp2Server& raw, int32_t stream_id) {
      raw.SendHeaders(stream_id, headers, true);
    };
  };
  auto reset = [](uint32_t code) {
    return [code](RawHttp2Server& raw, int32_t stream_id) { raw.SendReset(stream_id, code); };
  };
  const Case cases[] = {
      {"503", headers_only({{":status", "503"}}), absl::StatusCode::kUnavailable, "HTTP status 503",
       std::nullopt},
      {"404", headers_only({{":status", "404"}}), absl::StatusCode::kUnimplemented,
       "HTTP status 404", std::nullopt},
      {"REFUSED_STREAM", reset(NGHTTP2_REFUSED_STREAM), absl::StatusCode::kUnavailable,
       "did not take the call", std::nullopt},
      {"INTERNAL_ERROR", reset(NGHTTP2_INTERNAL_ERROR), absl::StatusCode::kInternal,
       "INTERNAL_ERROR", std::nullopt},
      {"trailers-only",
       headers_only({{":status", "200"},
                     {"content-type", "application/grpc"},
                     {"grpc-status", "5"},
                     {"grpc-message", "a%20b%25"}}),
       absl::StatusCode::kNotFound, "", std::string("a b%")},
  };
  int n = 0;
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    std::string path = absl::StrCat(dir_, "/raw-", ++n, ".sock");
    RawHttp2Server server(
        path, [&](RawHttp2Server& raw, int32_t stream_id, int) { c.answer(raw, stream_id); });
    std::unique_ptr<GrpcConnection> connection = Connect(path);
    ASSERT_NE(connection, nullptr);
    v1::AgentInfo info;

    absl::Status status = connection->Call(kInfo, v1::GetAgentInfoRequest(), info, Soon());

    EXPECT_EQ(status.code(), c.code) << status;
    EXPECT_THAT(status.message(), HasSubstr(c.message_part));
    if (c.message) {
      EXPECT_EQ(status.message(), *c.message);
    }
    // An answer to one call is not the connection's failure.
    EXPECT_TRUE(connection->status().ok()) << connection->status();
    EXPECT_EQ(server.requests(), 1);
  }
}

// A server that does not know deadlines (it never answers the first call): the client's own
// deadline ends the call, and the server is told with RST_STREAM CANCEL; the connection serves
// the next call.
TEST_F(GrpcConnectionTest, ADeadlineEndsTheCallWithAResetTheServerSees) {
  std::string path = dir_ + "/raw.sock";
  RawHttp2Server server(path, [](RawHttp2Server& raw, int32_t stream_id, int request) {
    if (request == 1) return;  // no answer
    raw.SendHeaders(stream_id, {{":status", "200"}, {"content-type", "application/grpc"}}, false);
    v1::AgentInfo info;
    info.set_version("second");
    raw.SendData(stream_id, Framed(info));
    raw.SendHeaders(stream_id, {{"grpc-status", "0"}}, true);
  });
  std::unique_ptr<GrpcConnection> connection = Connect(path);
  ASSERT_NE(connection, nullptr);
  v1::AgentInfo info;

  absl::Status status = connection->Call(kInfo, v1::GetAgentInfoRequest(), info,
                                         absl::Now() + absl::Milliseconds(200));

  EXPECT_EQ(status.code(), absl::StatusCode::kDeadlineExceeded) << status;
  EXPECT_THAT(status.message(), HasSubstr(path + " did not finish the call in time"));
  EXPECT_TRUE(server.Saw("RST_STREAM 1 CANCEL")) << testing::PrintToString(server.events());
  EXPECT_TRUE(connection->Usable());
  status = connection->Call(kInfo, v1::GetAgentInfoRequest(), info, Soon());
  ASSERT_TRUE(status.ok()) << status;
  EXPECT_EQ(info.version(), "second");
}

// The server's trailers (END_STREAM) end the call though the client has not closed its side,
// also from a server that does not then reset the stream (gRPC's does): the client does not
// wait for a reset, and the connection serves the next call.
TEST_F(GrpcConnectionTest, TrailersEndTheCallWithoutAResetWhileTheClientHasNotClosedItsSide) {
  std::string path = dir_ + "/raw.sock";
  RawHttp2Server server(path, [](RawHttp2Server& raw, int32_t stream_id, int request) {
    raw.SendHeaders(stream_id, {{":status", "200"}, {"content-type", "application/grpc"}}, false);
    v1::ExecResponse exited;
    exited.mutable_exited()->set_exit_code(request);
    raw.SendData(stream_id, Framed(exited));
    raw.SendHeaders(stream_id, {{"grpc-status", "0"}}, true);
  });
  std::unique_ptr<GrpcConnection> connection = Connect(path);
  ASSERT_NE(connection, nullptr);

  for (int call = 1; call <= 2; ++call) {
    SCOPED_TRACE(absl::StrCat("call ", call));
    ASSERT_TRUE(connection->StartStream(kExec, Soon()).ok());
    ASSERT_TRUE(connection->Write(Stdin("input")));  // and no WritesDone

    ASSERT_EQ(connection->Wait(), GrpcConnection::Event::kMessage) << connection->Finish();
    v1::ExecResponse response;
    ASSERT_TRUE(connection->Read(response));
    EXPECT_EQ(response.exited().exit_code(), call);
    EXPECT_EQ(connection->Wait(), GrpcConnection::Event::kEnded);
    absl::Status status = connection->Finish();
    EXPECT_TRUE(status.ok()) << status;
    EXPECT_TRUE(connection->status().ok()) << connection->status();
  }
  EXPECT_EQ(server.requests(), 2);
}

// A GOAWAY, after a call, from a server that keeps the connection open: Usable() reads it and
// says no, and a call started there anyway ends at once as not taken (nghttp2 does not open the
// stream) instead of waiting.
TEST_F(GrpcConnectionTest, AfterAGoawayTheConnectionIsUnusableAndACallThereIsNotTaken) {
  std::string path = dir_ + "/raw.sock";
  Signal answered;
  RawHttp2Server server(path, [&](RawHttp2Server& raw, int32_t stream_id, int) {
    raw.SendHeaders(stream_id, {{":status", "200"}, {"content-type", "application/grpc"}}, false);
    v1::AgentInfo info;
    info.set_version("raw");
    raw.SendData(stream_id, Framed(info));
    raw.SendHeaders(stream_id, {{"grpc-status", "0"}}, true);
    // Only once the call is over on the client's side: Usable() has to read it.
    if (answered.WaitFor(std::chrono::seconds(10)).has_value()) raw.SendGoaway(stream_id);
  });
  std::unique_ptr<GrpcConnection> connection = Connect(path);
  ASSERT_NE(connection, nullptr);
  v1::AgentInfo info;
  absl::Status status = connection->Call(kInfo, v1::GetAgentInfoRequest(), info, Soon());
  ASSERT_TRUE(status.ok()) << status;
  EXPECT_EQ(info.version(), "raw");
  EXPECT_TRUE(connection->Usable());
  answered.Set(true);

  EXPECT_TRUE(BecomesUnusable(*connection)) << "still usable after 10 s";

  status = connection->Call(kInfo, v1::GetAgentInfoRequest(), info, Soon());
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
  EXPECT_THAT(status.message(), HasSubstr("did not take the call"));
  EXPECT_EQ(server.requests(), 1);
}

}  // namespace
}  // namespace llima
