// A project path is opened once without following symlinks, checked on that descriptor and
// mounted through it (OpenProjectDirectory, CloneTree). Here a thread swaps a component of the
// project path between a directory of the project's owner and a symlink to another user's
// directory, with renameat2(RENAME_EXCHANGE) so that the path exists at every instant, while
// the test creates the environment of that path again and again. Each create must either be
// refused for the symlink or mount the owner's directory: a mount that follows a symlink
// swapped in after the check is the escape of CVE-2018-15664 and CVE-2021-30465. Both outcomes
// must occur, or the race was not run.

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "agent_harness.h"
#include "environment_store.h"
#include "gtest/gtest.h"
#include "unique_fd.h"

namespace llima::testing {
namespace {

constexpr uid_t kOwner = 4242;      // owns the project; the environment runs as this uid
constexpr uid_t kOtherUser = 4343;  // owns the directory the symlink points to

// Each race ends at whichever bound comes first; two races stay within about a minute on a
// slow two-core machine.
constexpr int kMaxAttempts = 2000;
constexpr auto kTimeBudget = std::chrono::seconds(25);
// Every so many accepted creates, the check made from the host is confirmed by a command run
// inside the environment.
constexpr int kExecCheckEvery = 25;

// Exchanges two entries of one directory back and forth as fast as it can, on a thread of its
// own, until destroyed: a path through one of the names reaches one entry at one instant and
// the other at the next.
class EntrySwapper {
 public:
  EntrySwapper(const std::string& dir, std::string first, std::string second)
      : dir_(open(dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC)),
        first_(std::move(first)),
        second_(std::move(second)),
        thread_([this] { Run(); }) {}
  ~EntrySwapper() {
    stop_ = true;
    thread_.join();
  }
  EntrySwapper(const EntrySwapper&) = delete;
  EntrySwapper& operator=(const EntrySwapper&) = delete;

  uint64_t swaps() const { return swaps_.load(std::memory_order_relaxed); }
  // errno of the exchange that failed and ended the swapping, 0 while it runs.
  int error() const { return error_.load(); }

 private:
  void Run() {
    while (!stop_.load(std::memory_order_relaxed)) {
      if (renameat2(dir_.get(), first_.c_str(), dir_.get(), second_.c_str(), RENAME_EXCHANGE) !=
          0) {
        error_ = errno;
        return;
      }
      swaps_.fetch_add(1, std::memory_order_relaxed);
    }
  }

  const UniqueFd dir_;
  const std::string first_;
  const std::string second_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> swaps_{0};
  std::atomic<int> error_{0};
  std::thread thread_;  // last: it starts once everything it uses exists
};

// What one race saw.
struct RaceTally {
  int attempts = 0;
  int accepted = 0;
  int refused_for_symlink = 0;
  int overlapped_by_swaps = 0;  // creates during which the entries were exchanged at least once
  int checked_by_exec = 0;
  int wrong_mounts = 0;
  std::string first_wrong_mount;
  std::map<std::string, int> refusals;  // "CODE: message" -> how often
  uint64_t swaps = 0;
  int swap_error = 0;
  double seconds = 0;
};

void WriteFileOwnedBy(const std::string& path, const std::string& content, uid_t uid) {
  std::ofstream(path) << content;
  ASSERT_EQ(chown(path.c_str(), uid, uid), 0) << path << ": " << strerror(errno);
}

// Names in `dir`, sorted; "(unreadable: ...)" if it cannot be listed.
std::vector<std::string> Entries(const std::string& dir) {
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return {absl::StrCat("(unreadable: ", strerror(errno), ")")};
  std::vector<std::string> names;
  while (dirent* e = readdir(d)) {
    std::string name = e->d_name;
    if (name != "." && name != "..") names.push_back(name);
  }
  closedir(d);
  std::sort(names.begin(), names.end());
  return names;
}

bool SameInode(const struct stat& a, const struct stat& b) {
  return a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

std::string Tail(const std::string& text, int lines) {
  size_t at = text.size();
  while (lines-- > 0 && at > 0) at = text.rfind('\n', at - 1);
  return at == std::string::npos ? text : text.substr(at + 1);
}

class SymlinkRaceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(geteuid(), 0u) << "security tests need root";
    scratch_ = std::make_unique<ScratchDir>();
    // What the symlink leads to: another user's project, with a secret in it.
    std::string victim = scratch_->MakeDir("victim/project", kOtherUser, kOtherUser);
    ASSERT_NO_FATAL_FAILURE(WriteFileOwnedBy(victim + "/secret", "s3cret", kOtherUser));
    agent_ = std::make_unique<AgentProcess>(scratch_->path());
    agent_->Start();
  }

  void TearDown() override {
    if (HasFailure() && agent_ != nullptr) {
      std::cerr << "---- agent log, last lines ----\n"
                << Tail(agent_->log(), 30) << "-------------------------------\n";
    }
    agent_.reset();  // deletes every environment, then stops the agent
    scratch_.reset();
  }

  // A project directory of kOwner at `relative`, holding the marker file `mine`.
  std::string MakeProject(const std::string& relative) {
    std::string dir = scratch_->MakeDir(relative, kOwner, kOwner);
    WriteFileOwnedBy(dir + "/mine", "mine", kOwner);
    return dir;
  }

  // Creates the environment of `project` until a bound is reached while the entries
  // `real_name` (a directory on the project path) and `decoy_name` (a symlink) of `swap_dir`
  // are exchanged; checks and deletes every environment that gets created.
  RaceTally Race(const std::string& label, const std::string& project, const std::string& swap_dir,
                 const std::string& real_name, const std::string& decoy_name) {
    RaceTally tally;
    struct stat real;
    if (stat(project.c_str(), &real) != 0) {
      ADD_FAILURE() << "stat " << project << ": " << strerror(errno);
      return tally;
    }
    auto start = std::chrono::steady_clock::now();
    {
      EntrySwapper swapper(swap_dir, real_name, decoy_name);
      while (tally.attempts < kMaxAttempts &&
             std::chrono::steady_clock::now() - start < kTimeBudget) {
        ++tally.attempts;
        uint64_t swaps_before = swapper.swaps();
        grpc::ClientContext context;
        v1::CreateEnvironmentRequest request;
        request.set_project_path(project);
        v1::Environment env;
        grpc::Status status = agent_->stub().CreateEnvironment(&context, request, &env);
        if (swapper.swaps() != swaps_before) ++tally.overlapped_by_swaps;
        if (!status.ok()) {
          auto code = static_cast<absl::StatusCode>(status.error_code());
          ++tally.refusals[absl::StrCat(absl::StatusCodeToString(code), ": ",
                                        status.error_message())];
          if (code == absl::StatusCode::kFailedPrecondition &&
              absl::StrContains(status.error_message(), "symbolic link")) {
            ++tally.refused_for_symlink;
          }
          continue;
        }
        ++tally.accepted;
        std::string wrong = WrongMount(env, project, real);
        if (wrong.empty() && tally.accepted % kExecCheckEvery == 1) {
          ++tally.checked_by_exec;
          wrong = WrongViewFromInside(env.name(), project);
        }
        if (!wrong.empty() && tally.wrong_mounts++ == 0) tally.first_wrong_mount = wrong;
        // The same path names the same environment: a second create would return this one.
        grpc::Status deleted = Delete(env.name());
        if (!deleted.ok()) {
          ADD_FAILURE() << "delete " << env.name() << ": " << deleted.error_message();
          break;
        }
      }
      tally.swaps = swapper.swaps();
      tally.swap_error = swapper.error();
    }
    tally.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    Report(label, tally);
    return tally;
  }

  // Why the environment does not show exactly the project directory at `project`, or empty.
  // Looks from the host through the environment's init: /proc/<init>/root is the environment's
  // root in its mount namespace, so this is the view every process started in it gets.
  std::string WrongMount(const v1::Environment& env, const std::string& project,
                         const struct stat& real) {
    EnvironmentStore store(agent_->state_dir());
    absl::StatusOr<internal::EnvironmentRecord> record = store.ReadRecord(env.name());
    if (!record.ok()) {
      return absl::StrCat("read the record of ", env.name(), ": ", record.status().message());
    }
    std::string proc = absl::StrCat("/proc/", record->init_pid());
    struct stat ns, pin;
    if (stat((proc + "/ns/mnt").c_str(), &ns) != 0 ||
        stat(store.PinPath(env.name()).c_str(), &pin) != 0 || !SameInode(ns, pin)) {
      return absl::StrCat("pid ", record->init_pid(), " is not in the mount namespace of ",
                          env.name());
    }
    std::string inside = proc + "/root" + project;
    struct stat seen;
    if (stat(inside.c_str(), &seen) != 0) {
      return absl::StrCat(env.name(), ": stat ", project, " inside: ", strerror(errno));
    }
    std::vector<std::string> entries = Entries(inside);
    if (!SameInode(seen, real) || entries != std::vector<std::string>{"mine"} ||
        env.uid() != kOwner) {
      return absl::StrCat(env.name(), " shows at ", project, " inode ", seen.st_dev, ":",
                          seen.st_ino, " holding [", absl::StrJoin(entries, " "),
                          "] and runs as uid ", env.uid(), "; the project directory is inode ",
                          real.st_dev, ":", real.st_ino, " holding [mine] of uid ", kOwner);
    }
    return "";
  }

  // The same question asked by a process inside the environment.
  std::string WrongViewFromInside(const std::string& env, const std::string& project) {
    ExecResult r = Exec(agent_->stub(), env, {"ls", "-A", project});
    if (!r.status.ok() || r.exit_code != 0 || r.out != "mine\n") {
      return absl::StrCat("`ls -A ", project, "` in ", env, " printed \"", r.out, r.err,
                          "\" (exit ", r.exit_code, ", ", r.status.error_message(), ")");
    }
    return "";
  }

  grpc::Status Delete(const std::string& name) { return CallDelete(agent_->stub(), name); }

  static void Report(const std::string& label, const RaceTally& tally) {
    printf(
        "%s: %d creates in %.1f s while the path was swapped %llu times (%d creates saw a swap)\n",
        label.c_str(), tally.attempts, tally.seconds, static_cast<unsigned long long>(tally.swaps),
        tally.overlapped_by_swaps);
    printf("  accepted %d (%d of them also checked with ls inside), wrong mounts %d\n",
           tally.accepted, tally.checked_by_exec, tally.wrong_mounts);
    printf("  refused %d:\n", tally.attempts - tally.accepted);
    for (const auto& [reason, count] : tally.refusals) printf("  %6d  %s\n", count, reason.c_str());
    fflush(stdout);
  }

  static void ExpectRaceRanAndNeverRedirected(const RaceTally& tally) {
    EXPECT_EQ(tally.swap_error, 0) << "renameat2(RENAME_EXCHANGE): " << strerror(tally.swap_error);
    EXPECT_EQ(tally.wrong_mounts, 0)
        << tally.wrong_mounts << " environments mounted something else than the project; first: "
        << tally.first_wrong_mount;
    EXPECT_GT(tally.accepted, 0) << "no create got through: no mount was checked";
    EXPECT_GT(tally.refused_for_symlink, 0)
        << "no create met the symlink: the race was not exercised";
    EXPECT_GT(tally.overlapped_by_swaps, 0) << "the path never changed while a create ran";
    EXPECT_EQ(tally.accepted + tally.refused_for_symlink, tally.attempts)
        << "creates refused for another reason than the symlink (listed above)";
  }

  std::unique_ptr<ScratchDir> scratch_;
  std::unique_ptr<AgentProcess> agent_;
};

// race/last/project is the project directory one instant and a symlink to
// victim/project the next.
TEST_F(SymlinkRaceTest, SymlinkSwappedInAsLastComponentNeverRedirectsTheMount) {
  std::string project = MakeProject("race/last/project");
  std::string dir = scratch_->path() + "/race/last";
  ASSERT_EQ(symlink((scratch_->path() + "/victim/project").c_str(), (dir + "/decoy").c_str()), 0)
      << strerror(errno);
  RaceTally tally = Race("symlink as the last component", project, dir, "project", "decoy");
  ExpectRaceRanAndNeverRedirected(tally);
}

// In race/middle/link/project, `link` is a directory holding the project one instant and a
// symlink to victim (whose `project` is the other user's) the next.
TEST_F(SymlinkRaceTest, SymlinkSwappedInAsMiddleComponentNeverRedirectsTheMount) {
  std::string project = MakeProject("race/middle/link/project");
  std::string dir = scratch_->path() + "/race/middle";
  ASSERT_EQ(symlink((scratch_->path() + "/victim").c_str(), (dir + "/decoy").c_str()), 0)
      << strerror(errno);
  RaceTally tally = Race("symlink as a middle component", project, dir, "link", "decoy");
  ExpectRaceRanAndNeverRedirected(tally);
}

}  // namespace
}  // namespace llima::testing
