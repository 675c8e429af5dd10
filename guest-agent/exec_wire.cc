#include "exec_wire.h"

#include <errno.h>
#include <grpc/slice.h>
#include <grpcpp/impl/codegen/proto_utils.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>

#include "google/protobuf/io/coded_stream.h"

namespace llima {
namespace {

// A length-delimited field's tag fits one byte for field numbers below 16.
constexpr uint8_t LengthDelimitedTag(int field_number) {
  return static_cast<uint8_t>((field_number << 3) | 2);
}
static_assert(v1::ExecResponse::kStdoutFieldNumber < 16 &&
              v1::ExecResponse::kStderrFieldNumber < 16);

// The tag and the length of any read: a varint of a 32-bit size takes at most five bytes.
constexpr size_t kMaxHeader = 1 + 5;

}  // namespace

ssize_t ReadOutputMessage(int fd, size_t max, bool is_stdout, grpc::ByteBuffer* message) {
  grpc_slice buffer = grpc_slice_malloc(kMaxHeader + max);
  uint8_t* data = GRPC_SLICE_START_PTR(buffer) + kMaxHeader;
  ssize_t n = read(fd, data, max);
  if (n <= 0) {
    int saved = errno;
    grpc_slice_unref(buffer);
    errno = saved;
    return n;
  }
  // The header goes right before the data, so the message is one contiguous part of the slice.
  uint8_t header[kMaxHeader];
  header[0] = LengthDelimitedTag(is_stdout ? v1::ExecResponse::kStdoutFieldNumber
                                           : v1::ExecResponse::kStderrFieldNumber);
  uint8_t* end = google::protobuf::io::CodedOutputStream::WriteVarint32ToArray(
      static_cast<uint32_t>(n), header + 1);
  size_t header_size = static_cast<size_t>(end - header);
  std::memcpy(data - header_size, header, header_size);
  grpc::Slice whole(buffer, grpc::Slice::STEAL_REF);
  grpc::Slice framed = whole.sub(kMaxHeader - header_size, kMaxHeader + static_cast<size_t>(n));
  *message = grpc::ByteBuffer(&framed, 1);
  return n;
}

grpc::ByteBuffer EncodeExecResponse(const v1::ExecResponse& response) {
  grpc::ByteBuffer encoded;
  bool own_buffer;
  // Fails only for messages over 2 GiB, which responses other than output never are.
  (void)grpc::SerializationTraits<v1::ExecResponse>::Serialize(response, &encoded, &own_buffer);
  return encoded;
}

absl::StatusOr<v1::ExecRequest> DecodeExecRequest(grpc::ByteBuffer* raw) {
  v1::ExecRequest request;
  if (!grpc::SerializationTraits<v1::ExecRequest>::Deserialize(raw, &request).ok()) {
    return absl::InvalidArgumentError("a message of the stream is not an ExecRequest");
  }
  return request;
}

}  // namespace llima
