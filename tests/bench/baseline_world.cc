#include "baseline_world.h"

#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "latency_benchmark.h"
#include "posix_error.h"
#include "timed_command.h"

namespace llima::bench {
namespace {

constexpr char kFigureLine[] = "llima-bench-figure";
constexpr char kFailureLine[] = "llima-bench-failure";
constexpr long kNsfsMagic = 0x6e736673;

// What create-namespace.sh expects before it runs: the project and /home/<env>/namespace.mnt.
absl::Status PrepareEnvironment(const std::string& env, const std::string& project) {
  for (const std::string& dir :
       {std::string("/srv"), std::string("/srv/projects"), project, absl::StrCat("/home/", env)}) {
    if (mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) return PosixError(errno, "mkdir " + dir);
  }
  std::string ns_file = absl::StrCat("/home/", env, "/namespace.mnt");
  if (!std::ofstream(ns_file)) return absl::InternalError("cannot create " + ns_file);
  return absl::OkStatus();
}

bool WaitForNamespaceFile(const std::string& ns_file, int timeout_ms) {
  for (int waited = 0;; waited += 10) {
    struct statfs fs;
    if (statfs(ns_file.c_str(), &fs) == 0 && fs.f_type == kNsfsMagic) return true;
    if (waited >= timeout_ms) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

// Runs create-namespace.sh and returns its time. The bind of the new namespace to its file
// (`unshare --mount=FILE`) failed with EINVAL whenever the script ran on another CPU than the
// one the world was made on (see tests/throwaway-world.sh, which now keeps the world on one).
// The original script exits 0 after its fixed `sleep 2` whatever became of the namespace it
// started in the background; the stand-in exits 1. So only a create whose namespace is there
// afterwards counts, and a failed one is run again.
absl::StatusOr<double> CreateNamespace(const std::string& env, const std::string& project) {
  std::string ns_file = absl::StrCat("/home/", env, "/namespace.mnt");
  absl::Status last;
  for (int attempt = 1; attempt <= 5; ++attempt) {
    if (absl::Status s = PrepareEnvironment(env, project); !s.ok()) return s;
    absl::StatusOr<double> ms = TimeCommand({"create-namespace.sh", env, project});
    if (ms.ok() && WaitForNamespaceFile(ns_file, 2000)) return *ms;
    last = ms.ok() ? absl::InternalError(ns_file + " is no namespace afterwards") : ms.status();
    fprintf(stderr, "create-namespace.sh %s: %s; again\n", env.c_str(),
            std::string(last.message()).c_str());
  }
  return absl::InternalError(
      absl::StrCat("create-namespace.sh ", env, " failed 5 times; the last: ", last.message()));
}

}  // namespace

int MeasureBaselineHere(const RunSize& size) {
  const std::string sandbox_env = "bench-sandbox";
  const std::string sandbox_project = "/srv/projects/sandbox";
  absl::Status ready = CreateNamespace(sandbox_env, sandbox_project).status();
  if (!ready.ok()) {
    printf("%s set up %s: %s\n", kFailureLine, sandbox_env.c_str(),
           std::string(ready.message()).c_str());
    return 1;
  }

  int next = 0;
  RegisterLatency("create-namespace.sh", size.baseline_creates, [&]() -> absl::StatusOr<double> {
    std::string env = absl::StrCat("create-", next++);
    return CreateNamespace(env, "/srv/projects/" + env);
  });
  RegisterLatency("sandbox.sh", size.commands, [&] {
    return TimeCommand({"sandbox.sh", sandbox_env, sandbox_project, "true"});
  });
  LatencyFigures figures = RunLatencyBenchmarks();
  for (const auto& [name, l] : figures.by_name) {
    if (figures.Get(name)) {
      printf("%s %s %.6f %.6f %.6f %d\n", kFigureLine, name.c_str(), l.median_ms, l.p99_ms,
             l.min_ms, l.samples);
    }
  }
  for (const std::string& f : figures.failures) printf("%s %s\n", kFailureLine, f.c_str());
  fflush(stdout);
  return figures.failures.empty() ? 0 : 1;
}

void MeasureBaselineInThrowawayWorld(const std::string& scripts_dir, const RunSize& size,
                                     SuiteResults* results) {
  results->baseline_dir = scripts_dir;
  char self[4096];
  ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
  if (n <= 0) {
    results->failures.push_back("baseline: cannot find this program's own path");
    return;
  }
  self[n] = '\0';
  std::string text;
  absl::Status run = RunCapturingOutput(
      {LLIMA_THROWAWAY_WORLD, "--install", scripts_dir + "/create-namespace.sh", "--install",
       scripts_dir + "/sandbox.sh", "--install", absl::StrCat(self, ":llima_bench"), "--",
       "/usr/local/bin/llima_bench", kInsideThrowawayWorldFlag, "--" + size.name},
      &text);
  bool reported_failure = false;
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
    std::vector<std::string> f = absl::StrSplit(line, absl::MaxSplits(' ', 1));
    if (f[0] == kFailureLine && f.size() == 2) {
      results->failures.push_back("baseline " + f[1]);
      reported_failure = true;
      continue;
    }
    if (f[0] != kFigureLine) continue;
    if (f.size() != 2) continue;
    std::istringstream fields(f[1]);
    std::string name;
    Latency l;
    if (!(fields >> name >> l.median_ms >> l.p99_ms >> l.min_ms >> l.samples)) continue;
    if (name == "create-namespace.sh") results->create_baseline = l;
    if (name == "sandbox.sh") results->sandbox = l;
  }
  if (!run.ok() && !reported_failure) {
    results->failures.push_back(absl::StrCat("baseline: ", run.message()));
  }
}

}  // namespace llima::bench
