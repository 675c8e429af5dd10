#pragma once

// Order statistics of latency samples, the same definition for every benchmark of the suite.

#include <algorithm>
#include <cmath>
#include <vector>

namespace llima::bench {

// The nearest-rank percentile (q in (0, 1]): the smallest sample that at least q of all samples
// do not exceed. With 100 samples p99 is the second largest; with fewer than 100, the largest.
inline double Percentile(std::vector<double> samples, double q) {
  if (samples.empty()) return 0;
  std::sort(samples.begin(), samples.end());
  size_t rank = static_cast<size_t>(std::ceil(q * static_cast<double>(samples.size())));
  return samples[std::clamp<size_t>(rank, 1, samples.size()) - 1];
}

inline double Minimum(const std::vector<double>& samples) {
  return samples.empty() ? 0 : *std::min_element(samples.begin(), samples.end());
}

// The middle sample, or the mean of the two middle ones.
inline double Median(std::vector<double> samples) {
  if (samples.empty()) return 0;
  std::sort(samples.begin(), samples.end());
  size_t n = samples.size();
  return n % 2 == 1 ? samples[n / 2] : (samples[n / 2 - 1] + samples[n / 2]) / 2;
}

}  // namespace llima::bench
