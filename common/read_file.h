#pragma once

#include <string>

namespace llima {

// The whole content of a (small) file, or "" when it cannot be read: for /proc, /sys and
// /etc files whose absence the caller treats like emptiness.
std::string ReadFileOrEmpty(const std::string& path);

}  // namespace llima
