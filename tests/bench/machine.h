#pragma once

// What the figures were measured on, and how busy it was: the benchmark table names the machine
// because the same build runs twice as fast on a quiet one.

#include <sys/types.h>

#include <cstdint>
#include <string>

namespace llima::bench {

// "AMD EPYC, 2 cores, 23.4 GiB, Linux 6.1.0-13-amd64".
std::string DescribeMachine();

// The 1-minute load average, as /proc/loadavg has it ("4.58").
std::string LoadAverage();

// Threads (of every process) on the machine, from /proc/loadavg; -1 when unknown.
int ThreadsOnMachine();

// Share of CPU time the hypervisor gave to others (steal) since construction, in percent of all
// CPU time; 0 on bare metal.
class CpuStealMeter {
 public:
  CpuStealMeter();
  double PercentSinceStart() const;

 private:
  uint64_t steal_ = 0;
  uint64_t total_ = 0;
};

// VmRSS of a process in bytes, -1 when it cannot be read.
int64_t ResidentBytes(pid_t pid);

// CPU time (user and system, all threads) a process has used, in seconds; -1 when unknown.
double CpuSeconds(pid_t pid);

// CPU time the scheduler has given the threads of a process and of its children (those alive
// now), from /proc/PID/task/*/schedstat, in nanoseconds; -1 when unknown. Time the hypervisor
// gave to other guests (steal) is not in it on a kernel with paravirtual time accounting, as it
// is in wall time.
int64_t FamilyRunNanoseconds(pid_t pid);

// usage_usec of a cgroup v2 directory's cpu.stat: the CPU time of its processes and of those
// of its descendants, including the ones that have exited; -1 when unknown.
int64_t CgroupUsageMicroseconds(const std::string& dir);

// MemAvailable of /proc/meminfo in bytes, -1 when it cannot be read.
int64_t AvailableMemoryBytes();

// What the children of a single-threaded process (the fork server's: the environments' inits)
// cost in memory: their proportional set sizes and page tables, summed, in bytes; -1 when
// unknown. `count` receives how many were measured.
int64_t ChildrenMemoryBytes(pid_t pid, int* count);

}  // namespace llima::bench
