// Keystroke-to-echo latency of `llima-box shell` at a terminal: one byte written to the
// terminal the CLI runs on travels CLI -> agent -> the environment's pty (whose line
// discipline echoes it) -> agent -> CLI -> terminal. The remote program reads into /dev/null,
// so only the echo comes back. The echo of a local pty, measured the same way, is the floor.
//
//   pty_latency [keystrokes]     (default 1000; needs root)

#include <poll.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "agent_harness.h"
#include "latency_stats.h"

namespace llima::testing {
namespace {

using Clock = std::chrono::steady_clock;

// Sends `count` keystrokes one at a time and times each until its echo is back.
bool Measure(PtyProcess& pty, int count, std::vector<double>* micros) {
  const std::string keys = "abcdefghijklmnopqrstuvwxyz";
  for (int i = 0; i < count; ++i) {
    std::string key(1, keys[i % keys.size()]);
    auto start = Clock::now();
    pty.Write(key);
    if (!pty.WaitFor(key, 5000)) return false;
    micros->push_back(std::chrono::duration<double, std::micro>(Clock::now() - start).count());
    if (i % 60 == 59) pty.Write("\r");  // keep the line short
  }
  return true;
}

void Print(const char* what, const std::vector<double>& us) {
  printf("%-40s %6zu %10.0f %10.0f %10.0f\n", what, us.size(), llima::bench::Median(us),
         llima::bench::Percentile(us, 0.99), llima::bench::Minimum(us));
}

int Main(int argc, char** argv) {
  int count = 1000;
  if (argc > 1 && (!absl::SimpleAtoi(argv[1], &count) || count <= 0)) {
    fprintf(stderr, "usage: %s [keystrokes]\n", argv[0]);
    return 2;
  }
  if (geteuid() != 0) {
    fprintf(stderr, "pty_latency: needs root\n");
    return 2;
  }
  ScratchDir scratch;
  AgentProcess agent(scratch.path());
  agent.Start();
  std::string project = scratch.MakeDir("projects/typing", 4242, 4242);

  PtyProcess local({"/bin/sh", "-c", "echo READY; exec cat >/dev/null"}, {});
  local.WaitFor("READY");
  std::vector<double> local_us;
  if (!Measure(local, count, &local_us)) {
    fprintf(stderr, "no echo from the local pty\n");
    return 1;
  }

  PtyProcess shell(
      {LLIMA_BOX_BINARY, "shell", project, "--", "sh", "-c", "echo READY; exec cat >/dev/null"},
      {"LLIMA_BOX_SOCKET=" + agent.socket_path(), "TERM=xterm"});
  // Measure only once the remote side runs: before that, the local terminal (not yet raw)
  // would echo by itself.
  if (!shell.WaitFor("READY", 10000)) {
    fprintf(stderr, "llima-box shell did not echo:\n%s\n%s", shell.output().c_str(),
            agent.log().c_str());
    return 1;
  }
  std::vector<double> shell_us;
  if (!Measure(shell, count, &shell_us)) {
    fprintf(stderr, "echo stopped:\n%s", shell.output().c_str());
    return 1;
  }
  shell.Write("\x03");
  shell.Wait();

  printf("%-40s %6s %10s %10s %10s\n", "keystroke -> echo", "keys", "median us", "p99 us",
         "min us");
  Print("local pty echo, the floor", local_us);
  Print("llima-box shell (remote pty echo)", shell_us);
  return 0;
}

}  // namespace
}  // namespace llima::testing

int main(int argc, char** argv) { return llima::testing::Main(argc, argv); }
