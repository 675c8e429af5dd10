#pragma once

// Exec's messages as gRPC carries them. Exec is served as a raw method so that output goes from
// the process's pipe to the socket without passing through a protobuf string: the pipe is read
// straight into the slice gRPC sends, behind the few bytes that make it an ExecResponse. The
// other messages are (de)serialized as gRPC itself would.

#include <grpcpp/support/byte_buffer.h>
#include <sys/types.h>

#include <cstddef>

#include "absl/status/statusor.h"
#include "llima/v1/agent.pb.h"

namespace llima {

// Reads up to `max` bytes from `fd` (one read) and makes them the message
// ExecResponse{stdout: bytes} (or stderr). Returns what read returned: the bytes read, 0 at the
// end of the stream or -1 with errno set; `message` is set only for a positive count.
ssize_t ReadOutputMessage(int fd, size_t max, bool is_stdout, grpc::ByteBuffer* message);

// The serialized form of any other response.
grpc::ByteBuffer EncodeExecResponse(const v1::ExecResponse& response);

// Parses a request as it came off the stream (and empties `raw`). INVALID_ARGUMENT for bytes
// that are not an ExecRequest.
absl::StatusOr<v1::ExecRequest> DecodeExecRequest(grpc::ByteBuffer* raw);

}  // namespace llima
