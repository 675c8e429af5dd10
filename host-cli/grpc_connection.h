#pragma once

// The clients' side of gRPC: one HTTP/2 connection (nghttp2) to a Unix socket, driven on the
// calling thread. A command of llima-box makes one or two calls and ends; gRPC's own client
// library costs more than that to start and to stop (its threads, its channel), several times
// what opening a shell may take in all. The wire format is gRPC's over HTTP/2: the agent serves
// it with gRPC, and any gRPC client can call it.

#include <poll.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "unique_fd.h"

namespace google::protobuf {
class MessageLite;
}

struct nghttp2_session;

namespace llima {

class GrpcConnection {
 public:
  // The largest message accepted from the server (ListEnvironments of thousands of
  // environments stays far below it).
  static constexpr size_t kMaxReceiveMessage = 16 << 20;
  // How long the server may take to greet a new connection (its HTTP/2 settings) when a call
  // has no earlier deadline: something that accepts and never speaks is not an agent.
  static constexpr absl::Duration kGreetingTimeout = absl::Seconds(10);

  // Connects to the socket at `path`: UNAVAILABLE when nobody listens there.
  static absl::StatusOr<std::unique_ptr<GrpcConnection>> Connect(const std::string& path);
  ~GrpcConnection();
  GrpcConnection(const GrpcConnection&) = delete;
  GrpcConnection& operator=(const GrpcConnection&) = delete;

  // A unary call of `method` ("/package.Service/Method").
  absl::Status Call(absl::string_view method, const google::protobuf::MessageLite& request,
                    google::protobuf::MessageLite& response,
                    absl::Time deadline = absl::InfiniteFuture());

  // A streaming call; one at a time on a connection. Messages written are queued and sent as
  // the connection allows; Wait() moves them.
  absl::Status StartStream(absl::string_view method, absl::Time deadline = absl::InfiniteFuture());
  // Queues a message; false once the call has ended or writes are done.
  bool Write(const google::protobuf::MessageLite& message);
  // Ends the stream from this side after what is queued (HTTP/2 END_STREAM).
  void WritesDone();
  // Ends the call now (RST_STREAM CANCEL); Finish() then says CANCELLED.
  void Cancel();
  // Not OK once the connection has failed (Usable() also knows of a server that said it takes
  // no more calls).
  const absl::Status& status() const { return connection_status_; }
  // Whether a new call can start here: reads what arrived since the last one (a GOAWAY, the
  // end of a connection the server closed as idle) without waiting.
  bool Usable();
  // Bytes written and not yet sent.
  size_t unsent_bytes() const;
  // Callers stop reading their input while this much is unsent; Wait() says when it is not.
  static constexpr size_t kSendBacklog = 1 << 20;
  bool send_backlogged() const { return unsent_bytes() >= kSendBacklog; }

  enum class Event {
    kMessage,   // Read() has a message
    kWatched,   // one of the watched descriptors has revents
    kSendRoom,  // the send backlog, there when Wait() began, is below kSendBacklog now
    kEnded,     // the call is over: Finish() says how
  };
  // Sends and receives until one of the events above. `watch` entries with fd < 0 are ignored;
  // their revents are set on return.
  Event Wait(absl::Span<pollfd> watch = {});
  // The next message received, parsed into `message`: true if there was one. A message that
  // does not parse, or that is compressed, ends the call with INTERNAL.
  bool Read(google::protobuf::MessageLite& message);
  // The status of the ended call.
  absl::Status Finish();

 private:
  struct Stream;
  GrpcConnection(UniqueFd fd, std::string path);

  // Sends what nghttp2 has to send, without blocking: false on a connection error.
  bool Flush();
  // Reads what the socket has: false on EOF or a connection error.
  bool Receive();
  void FailConnection(absl::Status status);
  void EndStream(absl::Status status);
  // The complete message at the front of the stream's buffer, if there is one.
  std::optional<absl::string_view> PeekMessage();

  friend struct GrpcConnectionCallbacks;

  UniqueFd fd_;
  std::string path_;
  nghttp2_session* session_ = nullptr;
  std::unique_ptr<uint8_t[]> receive_buffer_;
  std::string out_;  // bytes nghttp2 produced and the socket did not take yet
  size_t out_offset_ = 0;
  bool greeted_ = false;              // the server's SETTINGS arrived
  bool going_away_ = false;           // the server's GOAWAY arrived
  std::string send_error_;            // why sending failed; reading goes on until the end
  absl::Duration greeting_deadline_;  // on the monotonic clock
  absl::Status connection_status_;    // not OK once the connection is unusable
  std::unique_ptr<Stream> stream_;
};

}  // namespace llima
