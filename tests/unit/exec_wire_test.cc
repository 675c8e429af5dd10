// Exec's messages as the agent encodes them itself: what it puts on the wire must parse as the
// ExecResponse a client expects, with every byte read in place.

#include "exec_wire.h"

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "unique_fd.h"

namespace llima {
namespace {

std::string Flatten(const grpc::ByteBuffer& buffer) {
  std::vector<grpc::Slice> slices;
  EXPECT_TRUE(buffer.Dump(&slices).ok());
  std::string bytes;
  for (const grpc::Slice& s : slices) bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  return bytes;
}

std::string Pattern(size_t size) {
  std::string data(size, '\0');
  for (size_t i = 0; i < size; ++i) data[i] = static_cast<char>((i * 131 + i / 251) & 0xff);
  return data;
}

struct Pipe {
  Pipe() {
    int fds[2];
    EXPECT_EQ(pipe2(fds, O_CLOEXEC | O_NONBLOCK), 0);
    read_end.reset(fds[0]);
    write_end.reset(fds[1]);
    // Room for the largest message in one write, as the agent sizes a process's stdout.
    EXPECT_GE(fcntl(write_end.get(), F_SETPIPE_SZ, 1 << 20), 1 << 20) << strerror(errno);
  }
  void Write(const std::string& data) {
    ASSERT_EQ(write(write_end.get(), data.data(), data.size()),
              static_cast<ssize_t>(data.size()));
  }
  UniqueFd read_end;
  UniqueFd write_end;
};

class ReadOutputMessageTest : public ::testing::TestWithParam<size_t> {};

// Sizes on either side of each step in the length's varint, up to a whole chunk.
INSTANTIATE_TEST_SUITE_P(Sizes, ReadOutputMessageTest,
                         ::testing::Values(1, 22, 23, 24, 127, 128, 16383, 16384, 100000,
                                           (1 << 20) - 1, 1 << 20));

TEST_P(ReadOutputMessageTest, ParsesAsTheOutputWithEveryByteRead) {
  const size_t size = GetParam();
  for (bool is_stdout : {true, false}) {
    Pipe pipe;
    std::string data = Pattern(size);
    pipe.Write(data);
    grpc::ByteBuffer message;
    ASSERT_EQ(ReadOutputMessage(pipe.read_end.get(), 1 << 20, is_stdout, &message),
              static_cast<ssize_t>(size));
    v1::ExecResponse parsed;
    ASSERT_TRUE(parsed.ParseFromString(Flatten(message)));
    if (is_stdout) {
      ASSERT_EQ(parsed.response_case(), v1::ExecResponse::kStdout);
      EXPECT_TRUE(parsed.stdout() == data) << "stdout differs, size " << size;
    } else {
      ASSERT_EQ(parsed.response_case(), v1::ExecResponse::kStderr);
      EXPECT_TRUE(parsed.stderr() == data) << "stderr differs, size " << size;
    }
    // Encoded as protobuf itself would: nothing added, nothing left out.
    EXPECT_EQ(Flatten(message), parsed.SerializeAsString());
  }
}

TEST(ReadOutputMessage, TakesNoMoreThanAskedAndLeavesTheRestInThePipe) {
  Pipe pipe;
  pipe.Write("0123456789");
  grpc::ByteBuffer first, second;
  ASSERT_EQ(ReadOutputMessage(pipe.read_end.get(), 4, true, &first), 4);
  ASSERT_EQ(ReadOutputMessage(pipe.read_end.get(), 100, true, &second), 6);
  v1::ExecResponse a, b;
  ASSERT_TRUE(a.ParseFromString(Flatten(first)));
  ASSERT_TRUE(b.ParseFromString(Flatten(second)));
  EXPECT_EQ(a.stdout(), "0123");
  EXPECT_EQ(b.stdout(), "456789");
}

TEST(ReadOutputMessage, TheEndAndAnEmptyPipeLeaveTheMessageAlone) {
  Pipe pipe;
  grpc::ByteBuffer message;
  errno = 0;
  EXPECT_EQ(ReadOutputMessage(pipe.read_end.get(), 4096, true, &message), -1);
  EXPECT_EQ(errno, EAGAIN);
  EXPECT_FALSE(message.Valid());
  pipe.write_end.reset();
  EXPECT_EQ(ReadOutputMessage(pipe.read_end.get(), 4096, true, &message), 0);
  EXPECT_FALSE(message.Valid());
}

TEST(EncodeExecResponse, IsTheMessagesSerialization) {
  v1::ExecResponse exited;
  exited.mutable_exited()->set_exit_code(3);
  exited.mutable_exited()->set_signal(0);
  EXPECT_EQ(Flatten(EncodeExecResponse(exited)), exited.SerializeAsString());
}

TEST(DecodeExecRequest, ParsesARequestAndRefusesWhatIsNotOne) {
  v1::ExecRequest sent;
  sent.mutable_start()->set_environment("app-1234");
  sent.mutable_start()->add_argv("true");
  std::string wire = sent.SerializeAsString();
  grpc::Slice slice(wire);
  grpc::ByteBuffer raw(&slice, 1);
  absl::StatusOr<v1::ExecRequest> received = DecodeExecRequest(&raw);
  ASSERT_TRUE(received.ok());
  EXPECT_EQ(received->start().environment(), "app-1234");
  EXPECT_EQ(received->start().argv(0), "true");

  // Field 1 (start) claims 100 bytes and has 3.
  grpc::Slice truncated(std::string("\x0a\x64xyz", 5));
  grpc::ByteBuffer bad(&truncated, 1);
  absl::Status refused = DecodeExecRequest(&bad).status();
  EXPECT_EQ(refused.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(refused.message().find("not an ExecRequest"), std::string::npos);
}

}  // namespace
}  // namespace llima
