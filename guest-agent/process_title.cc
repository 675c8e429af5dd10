#include "process_title.h"

#include <sys/prctl.h>

#include <algorithm>
#include <cstring>
#include <string>

namespace llima {
namespace {

char* g_area = nullptr;
size_t g_area_size = 0;

}  // namespace

void RememberArgumentArea(int argc, char** argv) {
  if (argc <= 0) return;
  g_area = argv[0];
  char* end = argv[argc - 1] + strlen(argv[argc - 1]);
  g_area_size = static_cast<size_t>(end - g_area);  // without the final NUL
}

void SetProcessTitle(absl::string_view title) {
  std::string comm(title.substr(0, 15));
  prctl(PR_SET_NAME, comm.c_str());
  if (g_area == nullptr) return;
  size_t n = std::min(title.size(), g_area_size);
  memset(g_area, 0, g_area_size);
  memcpy(g_area, title.data(), n);
  // With the area's final NUL overwritten, the kernel reports the command line only up to the
  // first NUL (the setproctitle convention) instead of the whole zero-padded area.
  if (n < g_area_size) g_area[g_area_size] = ' ';
}

}  // namespace llima
