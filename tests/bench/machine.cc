#include "machine.h"

#include <dirent.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <sstream>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "read_file.h"

namespace llima::bench {
namespace {

// The value of a "Key:   value unit" line of a /proc file, "" when absent.
std::string ProcField(const std::string& file, absl::string_view key) {
  for (absl::string_view line : absl::StrSplit(ReadFileOrEmpty(file), '\n')) {
    if (!absl::ConsumePrefix(&line, key)) continue;
    line = absl::StripLeadingAsciiWhitespace(line);  // /proc/cpuinfo pads keys with tabs
    if (absl::ConsumePrefix(&line, ":")) return std::string(absl::StripAsciiWhitespace(line));
  }
  return "";
}

// A "NNN kB" field in bytes, -1 when absent.
int64_t KilobyteField(const std::string& file, absl::string_view key) {
  std::string value = ProcField(file, key);
  int64_t kb;
  if (!absl::SimpleAtoi(absl::StripSuffix(value, " kB"), &kb)) return -1;
  return kb * 1024;
}

// The "cpu" line of /proc/stat: user nice system idle iowait irq softirq steal ...
void ReadCpuTimes(uint64_t* steal, uint64_t* total) {
  *steal = *total = 0;
  std::istringstream stat(ReadFileOrEmpty("/proc/stat"));
  std::string cpu;
  stat >> cpu;
  for (int i = 0; i < 8; ++i) {
    uint64_t ticks = 0;
    stat >> ticks;
    *total += ticks;
    if (i == 7) *steal = ticks;
  }
}

}  // namespace

std::string DescribeMachine() {
  std::string cpu = ProcField("/proc/cpuinfo", "model name");
  if (cpu.empty()) cpu = "unknown CPU";
  utsname u{};
  uname(&u);
  int64_t memory = KilobyteField("/proc/meminfo", "MemTotal");
  return absl::StrFormat("%s, %ld cores, %.1f GiB, Linux %s", cpu, sysconf(_SC_NPROCESSORS_ONLN),
                         static_cast<double>(memory) / (1 << 30), u.release);
}

std::string LoadAverage() {
  std::vector<std::string> fields = absl::StrSplit(ReadFileOrEmpty("/proc/loadavg"), ' ');
  return fields.empty() ? "?" : fields[0];
}

int ThreadsOnMachine() {
  // "0.80 0.85 0.90 2/1195 12345": the fourth field is running/existing scheduling entities.
  std::vector<std::string> fields = absl::StrSplit(ReadFileOrEmpty("/proc/loadavg"), ' ');
  if (fields.size() < 4) return -1;
  std::vector<std::string> counts = absl::StrSplit(fields[3], '/');
  int threads;
  if (counts.size() != 2 || !absl::SimpleAtoi(counts[1], &threads)) return -1;
  return threads;
}

CpuStealMeter::CpuStealMeter() { ReadCpuTimes(&steal_, &total_); }

double CpuStealMeter::PercentSinceStart() const {
  uint64_t steal, total;
  ReadCpuTimes(&steal, &total);
  if (total <= total_) return 0;
  return 100.0 * static_cast<double>(steal - steal_) / static_cast<double>(total - total_);
}

int64_t ResidentBytes(pid_t pid) {
  return KilobyteField(absl::StrCat("/proc/", pid, "/status"), "VmRSS");
}

double CpuSeconds(pid_t pid) {
  std::string stat = ReadFileOrEmpty(absl::StrCat("/proc/", pid, "/stat"));
  // utime and stime are fields 14 and 15; the command name (field 2) may contain spaces.
  size_t end = stat.rfind(')');
  if (end == std::string::npos) return -1;
  std::vector<std::string> fields = absl::StrSplit(stat.substr(end + 2), ' ');
  uint64_t utime, stime;
  if (fields.size() < 13 || !absl::SimpleAtoi(fields[11], &utime) ||
      !absl::SimpleAtoi(fields[12], &stime)) {
    return -1;
  }
  return static_cast<double>(utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

namespace {

// The first field of every /proc/PID/task/*/schedstat (time on the CPU, ns); the children of
// its threads (/proc/PID/task/*/children) go into `children` unless it is null.
int64_t ThreadsRunNanoseconds(pid_t pid, std::vector<pid_t>* children) {
  std::string tasks = absl::StrCat("/proc/", pid, "/task");
  DIR* dir = opendir(tasks.c_str());
  if (dir == nullptr) return -1;
  int64_t total = 0;
  while (dirent* entry = readdir(dir)) {
    if (entry->d_name[0] == '.') continue;
    std::string task = absl::StrCat(tasks, "/", entry->d_name);
    std::vector<std::string> fields = absl::StrSplit(ReadFileOrEmpty(task + "/schedstat"), ' ');
    int64_t ns;
    if (!fields.empty() && absl::SimpleAtoi(fields[0], &ns)) total += ns;
    if (children == nullptr) continue;
    for (absl::string_view child :
         absl::StrSplit(ReadFileOrEmpty(task + "/children"), ' ', absl::SkipWhitespace())) {
      pid_t child_pid;
      if (absl::SimpleAtoi(child, &child_pid)) children->push_back(child_pid);
    }
  }
  closedir(dir);
  return total;
}

}  // namespace

int64_t FamilyRunNanoseconds(pid_t pid) {
  std::vector<pid_t> children;
  int64_t total = ThreadsRunNanoseconds(pid, &children);
  if (total < 0) return -1;
  for (pid_t child : children) total += std::max<int64_t>(ThreadsRunNanoseconds(child, nullptr), 0);
  return total;
}

int64_t CgroupUsageMicroseconds(const std::string& dir) {
  for (absl::string_view line : absl::StrSplit(ReadFileOrEmpty(dir + "/cpu.stat"), '\n')) {
    int64_t us;
    if (absl::ConsumePrefix(&line, "usage_usec ") && absl::SimpleAtoi(line, &us)) return us;
  }
  return -1;
}

int64_t AvailableMemoryBytes() { return KilobyteField("/proc/meminfo", "MemAvailable"); }

int64_t ChildrenMemoryBytes(pid_t pid, int* count) {
  *count = 0;
  std::string children = ReadFileOrEmpty(absl::StrCat("/proc/", pid, "/task/", pid, "/children"));
  int64_t total = 0;
  for (absl::string_view child : absl::StrSplit(children, ' ', absl::SkipWhitespace())) {
    int64_t pss = KilobyteField(absl::StrCat("/proc/", child, "/smaps_rollup"), "Pss");
    int64_t tables = KilobyteField(absl::StrCat("/proc/", child, "/status"), "VmPTE");
    if (pss < 0 || tables < 0) continue;  // ended meanwhile
    total += pss + tables;
    ++*count;
  }
  return *count > 0 ? total : -1;
}

}  // namespace llima::bench
