// Load: 50 clients, each on a connection of its own, create, use and delete environments of 20
// projects at once, for a bounded number of rounds. No call may fail, nothing may be left
// behind, and the agent's memory must settle: it is printed before, between and after two equal
// phases, and the second phase may not add to what the first left.

#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <atomic>
#include <iostream>
#include <mutex>
#include <shared_mutex>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "agent_harness.h"
#include "agent_probes.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace llima::testing {
namespace {

constexpr uid_t kOwner = 4242;
constexpr int kClients = 50;
constexpr int kProjects = 20;
constexpr int kRoundsPerPhase = 20;
constexpr int kSlack = 8;  // threads and descriptors gRPC's executor keeps once it was busy

// The clients' shared view of a project's environment. Creates, gets and execs hold the lock
// shared, deletes hold it alone: an exec never races a delete of its environment (that race
// ends the process, which is right but not what this test counts), while creates and execs of
// many clients overlap freely, in one environment and across them.
struct Project {
  std::string path;
  std::shared_mutex lock;
  std::atomic<bool> exists{false};  // as the successful calls say
};

struct Outcomes {
  std::atomic<int> calls{0};
  std::atomic<int> deletes_of_absent{0};  // NOT_FOUND, as expected
  std::atomic<int> failures{0};
  std::mutex mu;
  std::vector<std::string> first_failures;

  void Fail(const std::string& what) {
    ++failures;
    std::lock_guard lock(mu);
    if (first_failures.size() < 10) first_failures.push_back(what);
  }
};

// One client's rounds: create (an existing environment is returned), get it by path, run a
// command in it, then delete it. A delete answers NOT_FOUND exactly when another client deleted
// the environment since it was last created; every other answer is a success.
void RunClient(const std::string& socket_path, int client, int rounds,
               std::vector<Project>& projects, Outcomes& outcomes) {
  auto stub = NewClient(socket_path);
  auto deadline = [] { return std::chrono::system_clock::now() + std::chrono::seconds(60); };
  for (int round = 0; round < rounds; ++round) {
    Project& project = projects[(client * 7 + round) % kProjects];
    std::string where = absl::StrCat("client ", client, " round ", round, " ", project.path);
    std::string name;
    {
      std::shared_lock lock(project.lock);
      grpc::ClientContext create_context;
      create_context.set_deadline(deadline());
      v1::CreateEnvironmentRequest create;
      create.set_project_path(project.path);
      v1::Environment env;
      grpc::Status s = stub->CreateEnvironment(&create_context, create, &env);
      ++outcomes.calls;
      if (!s.ok()) {
        outcomes.Fail(where + ": create: " + s.error_message());
        continue;
      }
      project.exists = true;
      name = env.name();

      grpc::ClientContext get_context;
      get_context.set_deadline(deadline());
      v1::GetEnvironmentRequest get;
      get.set_project_path(project.path);
      s = stub->GetEnvironment(&get_context, get, &env);
      ++outcomes.calls;
      if (!s.ok() || env.name() != name) {
        outcomes.Fail(where + ": get: " + s.error_message() + " " + env.name());
      }

      std::string word = absl::StrCat("client-", client, "-round-", round);
      ExecResult r = Exec(*stub, name, {"echo", word});
      ++outcomes.calls;
      if (!r.status.ok() || r.exit_code != 0 || r.out != word + "\n") {
        outcomes.Fail(absl::StrCat(where, ": exec: ", r.status.error_message(), " exit ",
                                   r.exit_code, " out '", r.out, "' err '", r.err, "'"));
      }
    }
    std::unique_lock lock(project.lock);
    bool existed = project.exists;
    grpc::ClientContext delete_context;
    delete_context.set_deadline(deadline());
    v1::DeleteEnvironmentRequest request;
    request.set_name(name);
    v1::DeleteEnvironmentResponse response;
    grpc::Status s = stub->DeleteEnvironment(&delete_context, request, &response);
    ++outcomes.calls;
    if (existed ? s.ok() : s.error_code() == grpc::StatusCode::NOT_FOUND) {
      if (!existed) ++outcomes.deletes_of_absent;
    } else {
      outcomes.Fail(absl::StrCat(where, ": delete of ", existed ? "an existing" : "a deleted",
                                 " environment: ", s.error_code(), " ", s.error_message()));
    }
    project.exists = false;
  }
}

// All clients at once, `rounds` each; returns how long it took.
absl::Duration RunPhase(const std::string& socket_path, int rounds, std::vector<Project>& projects,
                        Outcomes& outcomes) {
  absl::Time start = absl::Now();
  std::vector<std::thread> clients;
  for (int c = 0; c < kClients; ++c) {
    clients.emplace_back([&, c] { RunClient(socket_path, c, rounds, projects, outcomes); });
  }
  for (std::thread& t : clients) t.join();
  return absl::Now() - start;
}

TEST(LoadTest, FiftyClientsCreateExecAndDeleteOnTwentyProjects) {
  ASSERT_EQ(geteuid(), 0u) << "reliability tests need root";
  ScratchDir scratch;
  AgentProcess agent(scratch.path());
  agent.Start();
  ResourceSnapshot before = TakeResourceSnapshot(agent);
  std::vector<Project> projects(kProjects);
  for (int p = 0; p < kProjects; ++p) {
    projects[p].path = scratch.MakeDir(absl::StrCat("projects/load-", p), kOwner, kOwner);
  }
  AgentUsage idle = MeasureAgent(agent.pid());

  Outcomes outcomes;
  absl::Duration warm_up = RunPhase(agent.socket_path(), 1, projects, outcomes);
  AgentUsage warm = WaitForUsageBackTo(agent.pid(), idle, kSlack);
  absl::Duration first = RunPhase(agent.socket_path(), kRoundsPerPhase, projects, outcomes);
  AgentUsage after_first = WaitForUsageBackTo(agent.pid(), idle, kSlack);
  absl::Duration second = RunPhase(agent.socket_path(), kRoundsPerPhase, projects, outcomes);
  AgentUsage after_second = WaitForUsageBackTo(agent.pid(), idle, kSlack);

  std::cout << kClients << " clients on " << kProjects << " projects: " << outcomes.calls
            << " calls (" << outcomes.deletes_of_absent
            << " deletes of an environment another client had deleted: NOT_FOUND) in " << warm_up
            << " + " << first << " + " << second << "\n"
            << "agent idle:              " << idle << "\n"
            << "after a warm-up round:   " << warm << "\n"
            << "after " << kRoundsPerPhase << " rounds:         " << after_first << "\n"
            << "after " << kRoundsPerPhase << " more rounds:    " << after_second << "\n";
  EXPECT_EQ(outcomes.failures.load(), 0);
  for (const std::string& failure : outcomes.first_failures) ADD_FAILURE() << failure;
  EXPECT_EQ(outcomes.calls.load(), kClients * (1 + 2 * kRoundsPerPhase) * 4);

  // Clients gone: their connections and whatever served them are released.
  EXPECT_LE(after_second.threads, idle.threads + kSlack);
  EXPECT_LE(after_second.fds, idle.fds + kSlack);
  // Memory settles: the second phase, like the first, adds nothing lasting. A loose bound; the
  // numbers above are the measurement.
  EXPECT_LT(after_second.rss_kib - after_first.rss_kib, 16 * 1024);

  agent.Stop();
  EXPECT_EQ(DescribeLeaks(before, TakeResourceSnapshot(agent)), "");
  if (HasFailure()) std::cerr << "---- agent log (end) ----\n" << agent.log().substr(0, 20000);
}

}  // namespace
}  // namespace llima::testing
