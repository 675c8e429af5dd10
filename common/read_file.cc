#include "read_file.h"

#include <fstream>
#include <sstream>

namespace llima {

std::string ReadFileOrEmpty(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace llima
