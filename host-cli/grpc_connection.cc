#include "grpc_connection.h"

#include <errno.h>
#include <fcntl.h>
#include <nghttp2/nghttp2.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "google/protobuf/message_lite.h"

namespace llima {

namespace {

// Per stream and for the whole connection: the agent may send this much before this side has
// read it. A 1 MiB output chunk of Exec then never waits for a window update.
constexpr int32_t kStreamWindow = 4 << 20;
constexpr int32_t kConnectionWindow = 16 << 20;
// Frames the agent may send: fewer, larger frames for streamed output.
constexpr uint32_t kMaxFrame = 1 << 20;
constexpr size_t kReceiveChunk = 256 * 1024;
// Bytes gathered from nghttp2 before they go to the socket in one send.
constexpr size_t kSendBatch = 1 << 20;
constexpr size_t kMessageHeader = 5;  // compressed flag, big-endian length

absl::StatusCode CodeOfHttpStatus(int http_status) {
  switch (http_status) {
    case 400:
      return absl::StatusCode::kInternal;
    case 401:
      return absl::StatusCode::kUnauthenticated;
    case 403:
      return absl::StatusCode::kPermissionDenied;
    case 404:
      return absl::StatusCode::kUnimplemented;
    case 429:
    case 502:
    case 503:
    case 504:
      return absl::StatusCode::kUnavailable;
    default:
      return absl::StatusCode::kUnknown;
  }
}

int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// grpc-message is percent-encoded (everything outside printable ASCII, and '%').
std::string PercentDecode(absl::string_view in) {
  std::string out;
  out.reserve(in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    if (in[i] == '%' && i + 2 < in.size() && HexDigit(in[i + 1]) >= 0 && HexDigit(in[i + 2]) >= 0) {
      out.push_back(static_cast<char>(HexDigit(in[i + 1]) * 16 + HexDigit(in[i + 2])));
      i += 2;
    } else {
      out.push_back(in[i]);
    }
  }
  return out;
}

std::string GrpcTimeout(absl::Duration left) {
  int64_t ms = std::max<int64_t>(1, absl::ToInt64Milliseconds(left));
  if (ms <= 99999999) return absl::StrCat(ms, "m");
  return absl::StrCat(std::min<int64_t>(99999999, ms / 1000), "S");
}

// Deadlines are kept on the monotonic clock: a suspended host or a clock step must neither
// expire a call early nor stretch it.
absl::Duration MonotonicNow() {
  timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return absl::DurationFromTimespec(now);
}

// Drops the sent front of a buffer that is appended to while it is sent, once it is most of it.
void DropSentPrefix(std::string& buffer, size_t& offset) {
  if (offset == buffer.size()) {
    buffer.clear();
    offset = 0;
  } else if (offset >= (1 << 20) && offset > buffer.size() / 2) {
    buffer.erase(0, offset);
    offset = 0;
  }
}

// nghttp2 copies name and value at submission: the stream's headers need not outlive it.
nghttp2_nv Header(absl::string_view name, absl::string_view value) {
  return nghttp2_nv{reinterpret_cast<uint8_t*>(const_cast<char*>(name.data())),
                    reinterpret_cast<uint8_t*>(const_cast<char*>(value.data())), name.size(),
                    value.size(), NGHTTP2_NV_FLAG_NONE};
}

}  // namespace

struct GrpcConnection::Stream {
  int32_t id = -1;
  absl::Duration deadline = absl::InfiniteDuration();  // on MonotonicNow()'s clock
  // Framed messages written and not yet handed to nghttp2.
  std::string send;
  size_t send_offset = 0;
  bool writes_done = false;
  // Bytes received, from received_offset on not yet read as messages.
  std::string received;
  size_t received_offset = 0;
  int http_status = 0;
  std::optional<int> grpc_status;
  std::string grpc_message;
  bool closed = false;  // the server ended the stream (END_STREAM), or nghttp2 closed it
  uint32_t reset_code = 0;
  // Set when this side ended the call (cancel, deadline, a bad message, a lost connection).
  std::optional<absl::Status> ended_here;

  bool ended() const { return closed || ended_here.has_value(); }
};

// nghttp2's callbacks, with access to the connection's state.
struct GrpcConnectionCallbacks {
  static GrpcConnection::Stream* StreamOf(void* user, int32_t stream_id) {
    auto* c = static_cast<GrpcConnection*>(user);
    if (c->stream_ == nullptr || c->stream_->id != stream_id) return nullptr;
    return c->stream_.get();
  }

  static ssize_t ReadData(nghttp2_session*, int32_t stream_id, uint8_t* buf, size_t length,
                          uint32_t* flags, nghttp2_data_source*, void* user) {
    GrpcConnection::Stream* s = StreamOf(user, stream_id);
    if (s == nullptr) {
      *flags |= NGHTTP2_DATA_FLAG_EOF;
      return 0;
    }
    size_t left = s->send.size() - s->send_offset;
    if (left == 0) {
      if (s->writes_done) {
        *flags |= NGHTTP2_DATA_FLAG_EOF;
        return 0;
      }
      return NGHTTP2_ERR_DEFERRED;
    }
    size_t n = std::min(left, length);
    memcpy(buf, s->send.data() + s->send_offset, n);
    s->send_offset += n;
    // Input keeps coming while it is sent: what went out must not stay behind.
    DropSentPrefix(s->send, s->send_offset);
    if (s->send.empty() && s->writes_done) *flags |= NGHTTP2_DATA_FLAG_EOF;
    return static_cast<ssize_t>(n);
  }

  static int OnHeader(nghttp2_session*, const nghttp2_frame* frame, const uint8_t* name,
                      size_t namelen, const uint8_t* value, size_t valuelen, uint8_t, void* user) {
    if (frame->hd.type != NGHTTP2_HEADERS) return 0;
    GrpcConnection::Stream* s = StreamOf(user, frame->hd.stream_id);
    if (s == nullptr) return 0;
    absl::string_view n(reinterpret_cast<const char*>(name), namelen);
    absl::string_view v(reinterpret_cast<const char*>(value), valuelen);
    int number;
    if (n == ":status") {
      if (absl::SimpleAtoi(v, &number)) s->http_status = number;
    } else if (n == "grpc-status") {
      if (absl::SimpleAtoi(v, &number)) s->grpc_status = number;
    } else if (n == "grpc-message") {
      s->grpc_message = PercentDecode(v);
    }
    return 0;
  }

  static int OnData(nghttp2_session*, uint8_t, int32_t stream_id, const uint8_t* data, size_t len,
                    void* user) {
    GrpcConnection::Stream* s = StreamOf(user, stream_id);
    if (s == nullptr || s->ended_here) return 0;
    s->received.append(reinterpret_cast<const char*>(data), len);
    return 0;
  }

  static int OnFrame(nghttp2_session*, const nghttp2_frame* frame, void* user) {
    auto* c = static_cast<GrpcConnection*>(user);
    if (frame->hd.type == NGHTTP2_SETTINGS && !(frame->hd.flags & NGHTTP2_FLAG_ACK)) {
      c->greeted_ = true;
    } else if (frame->hd.type == NGHTTP2_GOAWAY) {
      c->going_away_ = true;  // no new streams; ones it did not take end as refused
    } else if ((frame->hd.type == NGHTTP2_HEADERS || frame->hd.type == NGHTTP2_DATA) &&
               (frame->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
      // The server's side is over (its trailers came): so is the call, whether or not this
      // side has closed its own.
      if (GrpcConnection::Stream* s = StreamOf(user, frame->hd.stream_id)) s->closed = true;
    }
    return 0;
  }

  static int OnClose(nghttp2_session*, int32_t stream_id, uint32_t error_code, void* user) {
    GrpcConnection::Stream* s = StreamOf(user, stream_id);
    if (s == nullptr) return 0;
    s->closed = true;
    s->reset_code = error_code;
    return 0;
  }
};

absl::StatusOr<std::unique_ptr<GrpcConnection>> GrpcConnection::Connect(const std::string& path) {
  sockaddr_un addr{};
  if (path.size() >= sizeof(addr.sun_path)) {
    return absl::InvalidArgumentError(
        absl::StrCat("socket path too long (", path.size(), " bytes): ", path));
  }
  addr.sun_family = AF_UNIX;
  memcpy(addr.sun_path, path.data(), path.size());
  UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return absl::InternalError(absl::StrCat("socket: ", strerror(errno)));
  while (connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) {
    if (errno == EINTR) continue;
    return absl::UnavailableError(
        absl::StrCat("cannot reach llima-agent at ", path, ": ", strerror(errno)));
  }
  int flags = fcntl(fd.get(), F_GETFL);
  if (flags < 0 || fcntl(fd.get(), F_SETFL, flags | O_NONBLOCK) != 0) {
    return absl::InternalError(
        absl::StrCat("make the agent socket non-blocking: ", strerror(errno)));
  }

  std::unique_ptr<GrpcConnection> c(new GrpcConnection(std::move(fd), path));
  nghttp2_session_callbacks* callbacks;
  if (nghttp2_session_callbacks_new(&callbacks) != 0) {
    return absl::ResourceExhaustedError("out of memory for the HTTP/2 session");
  }
  nghttp2_session_callbacks_set_on_header_callback(callbacks, GrpcConnectionCallbacks::OnHeader);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(callbacks,
                                                            GrpcConnectionCallbacks::OnData);
  nghttp2_session_callbacks_set_on_frame_recv_callback(callbacks, GrpcConnectionCallbacks::OnFrame);
  nghttp2_session_callbacks_set_on_stream_close_callback(callbacks,
                                                         GrpcConnectionCallbacks::OnClose);
  int rv = nghttp2_session_client_new(&c->session_, callbacks, c.get());
  nghttp2_session_callbacks_del(callbacks);
  if (rv != 0) {
    return absl::InternalError(absl::StrCat("HTTP/2 session: ", nghttp2_strerror(rv)));
  }
  nghttp2_settings_entry settings[] = {
      {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, kStreamWindow},
      {NGHTTP2_SETTINGS_MAX_FRAME_SIZE, kMaxFrame},
  };
  rv = nghttp2_submit_settings(c->session_, NGHTTP2_FLAG_NONE, settings, std::size(settings));
  if (rv == 0) {
    rv =
        nghttp2_session_set_local_window_size(c->session_, NGHTTP2_FLAG_NONE, 0, kConnectionWindow);
  }
  if (rv != 0) {
    return absl::InternalError(absl::StrCat("HTTP/2 settings: ", nghttp2_strerror(rv)));
  }
  c->greeting_deadline_ = MonotonicNow() + kGreetingTimeout;
  return c;
}

GrpcConnection::GrpcConnection(UniqueFd fd, std::string path)
    : fd_(std::move(fd)), path_(std::move(path)) {}

GrpcConnection::~GrpcConnection() {
  if (session_ != nullptr) nghttp2_session_del(session_);
}

void GrpcConnection::FailConnection(absl::Status status) {
  if (connection_status_.ok()) connection_status_ = std::move(status);
  if (stream_ != nullptr && !stream_->ended()) stream_->ended_here = connection_status_;
}

void GrpcConnection::EndStream(absl::Status status) {
  Stream* s = stream_.get();
  if (s == nullptr || s->ended()) return;
  s->ended_here = std::move(status);
  nghttp2_submit_rst_stream(session_, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_CANCEL);
  Flush();
}

bool GrpcConnection::Flush() {
  if (!connection_status_.ok()) return false;
  for (;;) {
    // Gather what nghttp2 has, so that a request goes out in one piece.
    while (out_.size() - out_offset_ < kSendBatch) {
      const uint8_t* data;
      ssize_t n = nghttp2_session_mem_send(session_, &data);
      if (n < 0) {
        FailConnection(absl::InternalError(
            absl::StrCat("HTTP/2 to llima-agent at ", path_, ": ", nghttp2_strerror(n))));
        return false;
      }
      if (n == 0) break;
      // Nothing reaches the server any more; what it sent before is still read.
      if (!send_error_.empty()) continue;
      DropSentPrefix(out_, out_offset_);
      out_.append(reinterpret_cast<const char*>(data), static_cast<size_t>(n));
    }
    DropSentPrefix(out_, out_offset_);
    if (out_.empty()) return true;
    ssize_t sent = send(fd_.get(), out_.data() + out_offset_, out_.size() - out_offset_,
                        MSG_NOSIGNAL | MSG_DONTWAIT);
    if (sent < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return true;
      // The server closed its side (EPIPE) or the connection broke. What it sent before (its
      // last output, the call's status) is still to be read: the end of reading fails the
      // connection, naming this error.
      send_error_ = strerror(errno);
      out_.clear();
      out_offset_ = 0;
      return true;
    }
    out_offset_ += static_cast<size_t>(sent);
  }
}

bool GrpcConnection::Receive() {
  // Not zero-filled: only the pages a read reaches get touched (a short command's answers are a
  // few hundred bytes, and faulting in the whole buffer cost more than the call).
  if (receive_buffer_ == nullptr) receive_buffer_.reset(new uint8_t[kReceiveChunk]);
  uint8_t* buffer = receive_buffer_.get();
  ssize_t n = recv(fd_.get(), buffer, kReceiveChunk, MSG_DONTWAIT);
  if (n < 0) {
    if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) return true;
    FailConnection(absl::UnavailableError(
        absl::StrCat("the connection to llima-agent at ", path_, " failed: ", strerror(errno))));
    return false;
  }
  if (n == 0) {
    FailConnection(absl::UnavailableError(absl::StrCat(
        "llima-agent at ", path_, " closed the connection",
        greeted_ ? ""
                 : " without answering (no agent behind the socket, or one at its limit of "
                   "connections)",
        send_error_.empty() ? "" : absl::StrCat(" (sending had failed: ", send_error_, ")"))));
    return false;
  }
  ssize_t used = nghttp2_session_mem_recv(session_, buffer, static_cast<size_t>(n));
  if (used < 0) {
    FailConnection(absl::InternalError(absl::StrCat("HTTP/2 from llima-agent at ", path_, ": ",
                                                    nghttp2_strerror(static_cast<int>(used)))));
    return false;
  }
  return true;
}

bool GrpcConnection::Usable() {
  // After a failed send nothing would reach the server.
  if (!connection_status_.ok() || going_away_ || !send_error_.empty()) return false;
  // What arrived since the last call: a GOAWAY or the end of the connection (the agent closes
  // connections left idle) says not to start another call here.
  pollfd readable{fd_.get(), POLLIN, 0};
  while (connection_status_.ok() && !going_away_ && poll(&readable, 1, 0) == 1) {
    if (!Receive()) break;
    Flush();
  }
  return connection_status_.ok() && !going_away_ && send_error_.empty();
}

absl::Status GrpcConnection::StartStream(absl::string_view method, absl::Time deadline) {
  if (!connection_status_.ok()) return connection_status_;
  if (!send_error_.empty()) {
    return absl::UnavailableError(
        absl::StrCat("cannot send to llima-agent at ", path_, " any more: ", send_error_));
  }
  if (stream_ != nullptr && !stream_->ended()) {
    return absl::FailedPreconditionError("a call is already in progress on this connection");
  }
  stream_ = std::make_unique<Stream>();
  if (deadline != absl::InfiniteFuture()) {
    stream_->deadline = MonotonicNow() + (deadline - absl::Now());
  }
  std::string timeout;
  std::vector<nghttp2_nv> headers = {
      Header(":method", "POST"),
      Header(":scheme", "http"),
      Header(":path", method),
      Header(":authority", "llima-agent"),
      Header("content-type", "application/grpc"),
      Header("te", "trailers"),
      Header("user-agent", "llima-box"),
  };
  if (deadline != absl::InfiniteFuture()) {
    timeout = GrpcTimeout(deadline - absl::Now());
    headers.push_back(Header("grpc-timeout", timeout));
  }
  nghttp2_data_provider body{};
  body.read_callback = GrpcConnectionCallbacks::ReadData;
  int32_t id =
      nghttp2_submit_request(session_, nullptr, headers.data(), headers.size(), &body, nullptr);
  if (id < 0) {
    stream_.reset();
    return absl::InternalError(absl::StrCat("start an HTTP/2 stream: ", nghttp2_strerror(id)));
  }
  stream_->id = id;
  return absl::OkStatus();
}

bool GrpcConnection::Write(const google::protobuf::MessageLite& message) {
  Stream* s = stream_.get();
  if (s == nullptr || s->ended() || s->writes_done) return false;
  size_t size = message.ByteSizeLong();
  if (size > UINT32_MAX) return false;
  size_t at = s->send.size();
  s->send.resize(at + kMessageHeader + size);
  char* p = s->send.data() + at;
  p[0] = 0;
  p[1] = static_cast<char>(size >> 24);
  p[2] = static_cast<char>(size >> 16);
  p[3] = static_cast<char>(size >> 8);
  p[4] = static_cast<char>(size);
  message.SerializeWithCachedSizesToArray(reinterpret_cast<uint8_t*>(p + kMessageHeader));
  nghttp2_session_resume_data(session_, s->id);
  return true;
}

void GrpcConnection::WritesDone() {
  Stream* s = stream_.get();
  if (s == nullptr || s->ended() || s->writes_done) return;
  s->writes_done = true;
  nghttp2_session_resume_data(session_, s->id);
}

void GrpcConnection::Cancel() { EndStream(absl::CancelledError("the call was cancelled")); }

size_t GrpcConnection::unsent_bytes() const {
  size_t queued = stream_ != nullptr ? stream_->send.size() - stream_->send_offset : 0;
  return queued + (out_.size() - out_offset_);
}

std::optional<absl::string_view> GrpcConnection::PeekMessage() {
  Stream* s = stream_.get();
  if (s == nullptr || s->ended_here) return std::nullopt;
  size_t available = s->received.size() - s->received_offset;
  if (available < kMessageHeader) return std::nullopt;
  const auto* p = reinterpret_cast<const uint8_t*>(s->received.data() + s->received_offset);
  size_t length = (size_t{p[1]} << 24) | (size_t{p[2]} << 16) | (size_t{p[3]} << 8) | p[4];
  if (p[0] != 0) {
    EndStream(
        absl::InternalError("llima-agent sent a compressed message, which was not asked for"));
    return std::nullopt;
  }
  if (length > kMaxReceiveMessage) {
    EndStream(absl::ResourceExhaustedError(absl::StrCat("llima-agent sent a message of ", length,
                                                        " bytes; at most ", kMaxReceiveMessage,
                                                        " are accepted")));
    return std::nullopt;
  }
  if (available - kMessageHeader < length) return std::nullopt;
  return absl::string_view(reinterpret_cast<const char*>(p) + kMessageHeader, length);
}

bool GrpcConnection::Read(google::protobuf::MessageLite& message) {
  std::optional<absl::string_view> bytes = PeekMessage();
  if (!bytes) return false;
  Stream* s = stream_.get();
  bool parsed = message.ParseFromArray(bytes->data(), static_cast<int>(bytes->size()));
  s->received_offset += kMessageHeader + bytes->size();
  if (s->received_offset == s->received.size()) {
    s->received.clear();
    s->received_offset = 0;
  } else if (s->received_offset > s->received.size() / 2) {
    s->received.erase(0, s->received_offset);
    s->received_offset = 0;
  }
  if (!parsed) {
    EndStream(absl::InternalError("llima-agent sent a message that does not parse"));
    return false;
  }
  return true;
}

GrpcConnection::Event GrpcConnection::Wait(absl::Span<pollfd> watch) {
  std::vector<pollfd> pfds(1 + watch.size());
  // A caller that stopped reading its input for the backlog must hear when it is gone, even if
  // nothing else happens (a command that reads its input and says nothing).
  const bool backlogged = send_backlogged();
  for (pollfd& p : watch) p.revents = 0;
  for (;;) {
    Stream* s = stream_.get();
    if (s == nullptr) return Event::kEnded;
    if (PeekMessage()) return Event::kMessage;
    if (s->ended()) {
      // The server ended the call while this side had not closed its own (an interactive
      // session never does): close it, as the call is over.
      if (s->closed && !s->ended_here &&
          nghttp2_session_get_stream_local_close(session_, s->id) == 0) {
        nghttp2_submit_rst_stream(session_, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_NO_ERROR);
        Flush();
      }
      return Event::kEnded;
    }
    if (!Flush()) continue;  // the stream has ended with the connection's error
    if (backlogged && !send_backlogged()) return Event::kSendRoom;
    if (!nghttp2_session_want_read(session_) && !nghttp2_session_want_write(session_) &&
        out_offset_ == out_.size()) {
      FailConnection(
          absl::UnavailableError(absl::StrCat("llima-agent at ", path_, " ended the connection")));
      continue;
    }
    // Checked on every turn, not only when poll times out: a peer that keeps sending must not
    // keep a call past its deadline.
    absl::Duration now = MonotonicNow();
    if (!greeted_ && now >= greeting_deadline_) {
      FailConnection(
          absl::UnavailableError(absl::StrCat("llima-agent at ", path_, " did not answer within ",
                                              absl::FormatDuration(kGreetingTimeout))));
      continue;
    }
    if (now >= s->deadline) {
      EndStream(absl::DeadlineExceededError(
          absl::StrCat("llima-agent at ", path_, " did not finish the call in time")));
      continue;
    }
    absl::Duration deadline = s->deadline;
    if (!greeted_) deadline = std::min(deadline, greeting_deadline_);
    int timeout = -1;
    if (deadline != absl::InfiniteDuration()) {
      absl::Duration left = deadline - now;
      timeout =
          left <= absl::ZeroDuration()
              ? 0
              : static_cast<int>(std::min<int64_t>(
                    INT32_MAX, absl::ToInt64Milliseconds(absl::Ceil(left, absl::Milliseconds(1)))));
    }
    pfds[0] = {fd_.get(), static_cast<short>(POLLIN | (out_offset_ < out_.size() ? POLLOUT : 0)),
               0};
    for (size_t i = 0; i < watch.size(); ++i) {
      pfds[i + 1] = {watch[i].fd, watch[i].events, 0};
      watch[i].revents = 0;
    }
    int ready = poll(pfds.data(), pfds.size(), timeout);
    if (ready < 0) {
      if (errno == EINTR) continue;
      FailConnection(absl::InternalError(absl::StrCat("poll: ", strerror(errno))));
      continue;
    }
    if (ready == 0) continue;  // a deadline: the checks above end the call
    if (pfds[0].revents & (POLLIN | POLLHUP | POLLERR)) Receive();
    bool watched = false;
    for (size_t i = 0; i < watch.size(); ++i) {
      watch[i].revents = watch[i].fd >= 0 ? pfds[i + 1].revents : 0;
      watched |= watch[i].revents != 0;
    }
    if (watched) return Event::kWatched;
  }
}

absl::Status GrpcConnection::Finish() {
  Stream* s = stream_.get();
  if (s == nullptr) return absl::FailedPreconditionError("no call was made");
  if (s->ended_here) return *s->ended_here;
  if (!s->closed) return absl::FailedPreconditionError("the call has not ended");
  if (s->grpc_status) {
    if (*s->grpc_status == 0) return absl::OkStatus();
    auto code = *s->grpc_status > 0 && *s->grpc_status <= 16
                    ? static_cast<absl::StatusCode>(*s->grpc_status)
                    : absl::StatusCode::kUnknown;
    return absl::Status(code, s->grpc_message);
  }
  if (s->http_status != 0 && s->http_status != 200) {
    return absl::Status(
        CodeOfHttpStatus(s->http_status),
        absl::StrCat("llima-agent at ", path_, " answered with HTTP status ", s->http_status));
  }
  if (s->reset_code == NGHTTP2_REFUSED_STREAM) {
    return absl::UnavailableError(
        absl::StrCat("llima-agent at ", path_,
                     " did not take the call (it is stopping, or closed an idle connection)"));
  }
  if (s->reset_code == NGHTTP2_CANCEL)
    return absl::CancelledError("llima-agent cancelled the call");
  if (s->reset_code != NGHTTP2_NO_ERROR) {
    return absl::InternalError(absl::StrCat("llima-agent at ", path_, " reset the call (",
                                            nghttp2_http2_strerror(s->reset_code), ")"));
  }
  return absl::InternalError(
      absl::StrCat("llima-agent at ", path_, " ended the call without a status"));
}

absl::Status GrpcConnection::Call(absl::string_view method,
                                  const google::protobuf::MessageLite& request,
                                  google::protobuf::MessageLite& response, absl::Time deadline) {
  if (absl::Status started = StartStream(method, deadline); !started.ok()) return started;
  Write(request);
  WritesDone();
  int messages = 0;
  for (;;) {
    Event event = Wait();
    if (event == Event::kEnded) break;
    if (event == Event::kMessage && Read(response)) ++messages;
  }
  absl::Status status = Finish();
  if (!status.ok()) return status;
  if (messages != 1) {
    return absl::InternalError(absl::StrCat("llima-agent answered ", method, " with ", messages,
                                            " messages instead of one"));
  }
  return absl::OkStatus();
}

}  // namespace llima
