#pragma once

// How the reliability scenarios look at an agent from outside: what its process holds (resident
// memory, threads, open descriptors, read from /proc; printed before and after a scenario,
// threads and descriptors checked to come back), and clients with a connection of their own.

#include <dirent.h>
#include <errno.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <memory>
#include <ostream>
#include <string>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "gtest/gtest.h"
#include "llima/v1/agent.grpc.pb.h"
#include "read_file.h"
#include "unique_fd.h"

namespace llima::testing {

struct AgentUsage {
  long rss_kib = -1;
  int threads = -1;
  int fds = -1;
};

inline AgentUsage MeasureAgent(pid_t pid) {
  AgentUsage usage;
  std::string status = ReadFileOrEmpty("/proc/" + std::to_string(pid) + "/status");
  for (absl::string_view line : absl::StrSplit(status, '\n')) {
    if (absl::ConsumePrefix(&line, "VmRSS:")) {
      absl::ConsumeSuffix(&line, "kB");
      (void)absl::SimpleAtoi(absl::StripAsciiWhitespace(line), &usage.rss_kib);
    } else if (absl::ConsumePrefix(&line, "Threads:")) {
      (void)absl::SimpleAtoi(absl::StripAsciiWhitespace(line), &usage.threads);
    }
  }
  if (DIR* d = opendir(("/proc/" + std::to_string(pid) + "/fd").c_str())) {
    usage.fds = 0;
    while (dirent* e = readdir(d)) {
      if (e->d_name[0] != '.') ++usage.fds;
    }
    closedir(d);
  }
  return usage;
}

inline std::ostream& operator<<(std::ostream& out, const AgentUsage& usage) {
  return out << "RSS " << usage.rss_kib / 1024.0 << " MiB, " << usage.threads << " threads, "
             << usage.fds << " fds";
}

// Waits up to `timeout_ms` for threads and descriptors to come back to at most `baseline` plus
// `slack`, and returns what they are then.
inline AgentUsage WaitForUsageBackTo(pid_t pid, const AgentUsage& baseline, int slack,
                                     int timeout_ms = 10000) {
  AgentUsage now = MeasureAgent(pid);
  for (int waited = 0; waited < timeout_ms; waited += 50) {
    if (now.threads <= baseline.threads + slack && now.fds <= baseline.fds + slack) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    now = MeasureAgent(pid);
  }
  return now;
}

// A client on a connection of its own: channels to one address otherwise share one.
inline std::unique_ptr<v1::AgentService::Stub> NewClient(const std::string& socket_path) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  return v1::AgentService::NewStub(
      grpc::CreateCustomChannel("unix:" + socket_path, grpc::InsecureChannelCredentials(), args));
}

// A raw connection to the socket that never says anything; invalid if connect failed.
inline UniqueFd ConnectSilently(const std::string& socket_path) {
  UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  memcpy(address.sun_path, socket_path.c_str(), socket_path.size() + 1);
  if (connect(fd.get(), reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) return {};
  return fd;
}

// Reads `fd` until the agent ends the connection (the end of the stream, or a reset), each read
// waiting at most `timeout_ms`.
inline ::testing::AssertionResult ClosedByTheAgent(int fd, int timeout_ms) {
  char buffer[4096];
  ssize_t n;
  do {
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, timeout_ms) != 1) {
      return ::testing::AssertionFailure() << "nothing to read within " << timeout_ms << " ms";
    }
  } while ((n = recv(fd, buffer, sizeof(buffer), MSG_DONTWAIT)) > 0);
  if (n == 0 || errno == ECONNRESET) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << strerror(errno);
}

}  // namespace llima::testing
