#include "results_table.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace llima::bench {
namespace {

// Three significant digits or so, never in exponent notation.
std::string Number(double v) {
  if (v >= 100) return absl::StrFormat("%.0f", v);
  if (v >= 10) return absl::StrFormat("%.1f", v);
  if (v >= 0.1) return absl::StrFormat("%.2f", v);
  return absl::StrFormat("%.2g", v);
}

std::string MedianP99(const std::optional<Latency>& l) {
  if (!l) return "not measured";
  return absl::StrCat(Number(l->median_ms), " / ", Number(l->p99_ms), " ms");
}

// GB/s (10^9 bytes) for `bytes` streamed in the median time.
std::optional<double> Throughput(uint64_t bytes, const std::optional<Latency>& l) {
  if (!l || l->median_ms <= 0) return std::nullopt;
  return static_cast<double>(bytes) / (l->median_ms / 1e3) / 1e9;
}

std::string Ratio(std::optional<double> a, std::optional<double> b) {
  if (!a || !b || *b <= 0) return "—";
  return absl::StrCat(Number(*a / *b), "×");
}

std::optional<double> Median(const std::optional<Latency>& l) {
  if (!l) return std::nullopt;
  return l->median_ms;
}

// "yes (0.21× target)" or "**no** (1.4× target)"; `higher_is_better` for throughput.
std::string Met(std::optional<double> value, double target, bool higher_is_better = false) {
  if (!value) return "—";
  bool met = higher_is_better ? *value >= target : *value <= target;
  return absl::StrCat(met ? "yes" : "**no**", " (", Number(*value / target), "× target)");
}

std::string Bytes(uint64_t bytes) {
  if (bytes >= (1u << 30) && bytes % (1u << 30) == 0) return absl::StrCat(bytes >> 30, " GiB");
  if (bytes >= (1u << 20) && bytes % (1u << 20) == 0) return absl::StrCat(bytes >> 20, " MiB");
  return absl::StrCat(bytes, " bytes");
}

std::string Mebibytes(int64_t bytes) {
  return bytes < 0 ? "?" : Number(static_cast<double>(bytes) / (1 << 20));
}

struct Row {
  std::string figure, ours, compared_with, ratio, target, met;
};

}  // namespace

std::string FormatResultsTable(const SuiteResults& r) {
  std::vector<Row> rows;
  const std::string not_given = "not given (--baseline DIR)";

  rows.push_back({"CreateEnvironment, agent side (median / p99)", MedianP99(r.create),
                  r.baseline_dir.empty()
                      ? absl::StrCat("create-namespace.sh: ", not_given)
                      : absl::StrCat("create-namespace.sh: ", MedianP99(r.create_baseline)),
                  Ratio(Median(r.create), Median(r.create_baseline)), "≤ 30 ms median",
                  Met(Median(r.create), 30)});
  std::optional<double> shell_vs_nsenter;
  if (r.shell && r.nsenter && r.nsenter->median_ms > 0) {
    shell_vs_nsenter = r.shell->median_ms / r.nsenter->median_ms;
  }
  rows.push_back({"`llima-box shell -- true`, end to end (median / p99)", MedianP99(r.shell),
                  absl::StrCat("`nsenter --mount=<pin> true`: ", MedianP99(r.nsenter)),
                  Ratio(Median(r.shell), Median(r.nsenter)), "≤ 1.5× nsenter",
                  Met(shell_vs_nsenter, 1.5)});
  rows.push_back({"〃", "〃",
                  r.baseline_dir.empty()
                      ? absl::StrCat("`sandbox.sh <env> <path> true`: ", not_given)
                      : absl::StrCat("`sandbox.sh <env> <path> true`: ", MedianP99(r.sandbox)),
                  Ratio(Median(r.shell), Median(r.sandbox)), "—", "—"});
  rows.push_back(
      {"〃", "〃",
       absl::StrCat("`llima-box --version`, the CLI's start alone: ", MedianP99(r.cli_start)),
       Ratio(Median(r.shell), Median(r.cli_start)), "—", "—"});
  rows.push_back({"〃", "〃",
                  absl::StrCat("`llima-box create <path>`, existing: the start, a "
                               "connection and one call: ",
                               MedianP99(r.cli_one_call)),
                  Ratio(Median(r.shell), Median(r.cli_one_call)), "—", "—"});
  rows.push_back({"Exec `true`, connected client (median / p99)", MedianP99(r.exec_true), "—", "—",
                  "≤ 3 ms median", Met(Median(r.exec_true), 3)});
  std::optional<double> exec_gbps = Throughput(r.streamed_bytes, r.exec_stream);
  std::optional<double> pipe_gbps = Throughput(r.streamed_bytes, r.pipe_stream);
  rows.push_back(
      {absl::StrCat("Exec stdout of `head -c ", Bytes(r.streamed_bytes), " /dev/zero` (median)"),
       exec_gbps ? absl::StrCat(Number(*exec_gbps), " GB/s in messages of ",
                                Number(r.exec_stream_message_bytes / 1024),
                                " KiB; CPU s per GB: agent ", Number(r.exec_agent_cpu_per_gb),
                                ", client ", Number(r.exec_client_cpu_per_gb))
                 : "not measured",
       absl::StrCat("pipe into this process: ",
                    pipe_gbps ? absl::StrCat(Number(*pipe_gbps), " GB/s; CPU s per GB: reader ",
                                             Number(r.pipe_reader_cpu_per_gb))
                              : "not measured"),
       Ratio(exec_gbps, pipe_gbps), "≥ 1 GB/s", Met(exec_gbps, 1, /*higher_is_better=*/true)});
  std::optional<double> relay_gbps = Throughput(r.streamed_bytes, r.relay_stream);
  rows.push_back(
      {"〃", "〃",
       absl::StrCat("the same hops without gRPC (pipe, `dd bs=1M`, Unix socket, this "
                    "process): ",
                    relay_gbps ? absl::StrCat(Number(*relay_gbps), " GB/s") : "not measured"),
       Ratio(exec_gbps, relay_gbps), "—", "—"});
  std::optional<double> growth;
  if (r.create_first && r.create_last && r.create_first->median_ms > 0) {
    growth = r.create_last->median_ms / r.create_first->median_ms;
  }
  rows.push_back(
      {absl::StrFormat("CreateEnvironment of environments %d–%d vs 1–%d (median)",
                       r.environments - r.edge + 1, r.environments, r.edge),
       // The minimum too: the machine's load moves a median over the seconds between the two
       // ends of the run; the fastest create of each end shows what the count itself costs.
       r.create_first && r.create_last
           ? absl::StrCat(Number(r.create_last->median_ms), " vs ",
                          Number(r.create_first->median_ms), " ms (fastest ",
                          Number(r.create_last->min_ms), " vs ", Number(r.create_first->min_ms),
                          ")")
           : "not measured",
       absl::StrCat("the first ", r.edge), growth ? absl::StrCat(Number(*growth), "×") : "—",
       "≤ 1.2× the first", Met(growth, 1.2)});
  std::optional<double> cpu_growth;
  if (r.create_cpu_first && r.create_cpu_last && r.create_cpu_first->median_ms > 0) {
    cpu_growth = r.create_cpu_last->median_ms / r.create_cpu_first->median_ms;
  }
  rows.push_back({"〃 CPU time they took: agent, fork server, environment (median)",
                  // What the creates cost, whatever the hypervisor took from the guest meanwhile:
                  // wall times swing with steal over the seconds between the two ends of the run.
                  r.create_cpu_first && r.create_cpu_last
                      ? absl::StrCat(Number(r.create_cpu_last->median_ms), " vs ",
                                     Number(r.create_cpu_first->median_ms), " ms")
                      : "not measured",
                  absl::StrCat("the first ", r.edge),
                  cpu_growth ? absl::StrCat(Number(*cpu_growth), "×") : "—", "—", "—"});
  rows.push_back(
      {"〃 of which the kernel's pivot_root(2), alone in a new mount namespace (median)",
       r.pivot_at_zero_us && r.pivot_at_n_us
           ? absl::StrCat(Number(*r.pivot_at_n_us), " vs ", Number(*r.pivot_at_zero_us), " µs")
           : "not measured",
       absl::StrCat("with ", r.environments, " environments vs none: ", r.threads_at_n, " vs ",
                    r.threads_at_zero, " threads on the machine"),
       Ratio(r.pivot_at_n_us, r.pivot_at_zero_us), "—", "—"});
  rows.push_back({absl::StrCat("ListEnvironments at ", r.environments, " (median / p99)"),
                  MedianP99(r.list_at_n), "—", "—", "≤ 20 ms", Met(Median(r.list_at_n), 20)});
  std::optional<double> rss_mib;
  if (r.rss_at_n >= 0) rss_mib = static_cast<double>(r.rss_at_n) / (1 << 20);
  rows.push_back(
      {absl::StrCat("agent VmRSS at 0 → ", r.environments, " environments (after deleting them)"),
       absl::StrCat(Mebibytes(r.rss_at_zero), " → ", Mebibytes(r.rss_at_n), " MiB (",
                    Mebibytes(r.rss_after_delete), ")"),
       "—", "—", "≤ 64 MiB", Met(rss_mib, 64)});
  rows.push_back(
      {absl::StrCat("〃 the environments' inits at ", r.environments, ": PSS and page tables"),
       r.inits_memory_at_n >= 0
           ? absl::StrCat(Mebibytes(r.inits_memory_at_n), " MiB for ", r.inits_at_n, " (",
                          Number(static_cast<double>(r.inits_memory_at_n) / 1024 /
                                 std::max(1, r.inits_at_n)),
                          " KiB each)")
           : "not measured",
       "—", "—", "none", "—"});
  rows.push_back({absl::StrCat("DeleteEnvironment of all ", r.environments, ", one by one"),
                  r.delete_all_seconds ? absl::StrCat(Number(*r.delete_all_seconds), " s (",
                                                      Number(*r.delete_all_seconds * 1e3 /
                                                             std::max(1, r.environments)),
                                                      " ms each)")
                                       : "not measured",
                  "—", "—", "none", "—"});

  std::string out = absl::StrCat("llima-box benchmarks, ", r.run, "; GB = 10^9 bytes\n");
  absl::StrAppend(&out, "machine: ", r.machine, "; load average ", r.load_at_start, " at start, ",
                  r.load_at_end, " at end; CPU steal ",
                  absl::StrFormat("%.1f", r.cpu_steal_percent), "% during the run\n");
  absl::StrAppend(&out, "baseline: ",
                  r.baseline_dir.empty()
                      ? "not given"
                      : absl::StrCat(r.baseline_dir, " (run in a throwaway world)"),
                  "\n\n");
  absl::StrAppend(&out, "| figure | llima-box | compared with | ratio | target | met |\n");
  absl::StrAppend(&out, "|---|---|---|---|---|---|\n");
  for (const Row& row : rows) {
    absl::StrAppend(
        &out, "| ",
        absl::StrJoin({row.figure, row.ours, row.compared_with, row.ratio, row.target, row.met},
                      " | "),
        " |\n");
  }
  if (!r.failures.empty()) {
    absl::StrAppend(&out, "\nfailed calls:\n");
    for (const std::string& f : r.failures) absl::StrAppend(&out, "  ", f, "\n");
  }
  return out;
}

}  // namespace llima::bench
