#include "identity.h"

#include <unistd.h>

#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace llima {
namespace {

constexpr unsigned kFirstRegularId = 1000;
constexpr unsigned kNobodyId = 65534;

bool IsSystemId(unsigned id) { return id < kFirstRegularId || id == kNobodyId; }

// Fields of a colon-separated database line, or empty when the line is malformed.
std::vector<absl::string_view> Fields(absl::string_view line, size_t expected) {
  std::vector<absl::string_view> fields = absl::StrSplit(line, ':');
  if (fields.size() != expected) return {};
  return fields;
}

bool IsUsableShell(absl::string_view shell) {
  if (shell.empty() || shell.find("nologin") != absl::string_view::npos ||
      shell == "/bin/false" || shell == "/usr/bin/false") {
    return false;
  }
  return access(std::string(shell).c_str(), X_OK) == 0;
}

}  // namespace

IdentityFiles SynthesizeIdentityFiles(absl::string_view host_passwd, absl::string_view host_group,
                                      const EnvironmentIdentity& identity) {
  IdentityFiles files;
  for (absl::string_view line : absl::StrSplit(host_passwd, '\n', absl::SkipEmpty())) {
    std::vector<absl::string_view> f = Fields(line, 7);
    unsigned uid, gid;
    if (f.empty() || !absl::SimpleAtoi(f[2], &uid) || !absl::SimpleAtoi(f[3], &gid)) continue;
    if (!IsSystemId(uid) || uid == identity.uid || f[0] == identity.name) continue;
    absl::StrAppend(&files.passwd, line, "\n");
  }
  absl::StrAppend(&files.passwd, identity.name, ":x:", identity.uid, ":", identity.gid, ":",
                  identity.name, ":", identity.home, ":", identity.shell, "\n");

  for (absl::string_view line : absl::StrSplit(host_group, '\n', absl::SkipEmpty())) {
    std::vector<absl::string_view> f = Fields(line, 4);
    unsigned gid;
    if (f.empty() || !absl::SimpleAtoi(f[2], &gid)) continue;
    if (!IsSystemId(gid) || gid == identity.gid || f[0] == identity.name) continue;
    // Member lists could name VM users the environment does not know; drop them.
    absl::StrAppend(&files.group, f[0], ":", f[1], ":", f[2], ":\n");
  }
  absl::StrAppend(&files.group, identity.name, ":x:", identity.gid, ":\n");
  return files;
}

std::string LoginShellFor(absl::string_view host_passwd, uid_t uid) {
  for (absl::string_view line : absl::StrSplit(host_passwd, '\n', absl::SkipEmpty())) {
    std::vector<absl::string_view> f = Fields(line, 7);
    unsigned id;
    if (f.empty() || !absl::SimpleAtoi(f[2], &id) || id != uid) continue;
    if (IsUsableShell(f[6])) return std::string(f[6]);
    break;
  }
  return access("/bin/bash", X_OK) == 0 ? "/bin/bash" : "/bin/sh";
}

gid_t PrimaryGroupFor(absl::string_view host_passwd, uid_t uid, gid_t fallback) {
  for (absl::string_view line : absl::StrSplit(host_passwd, '\n', absl::SkipEmpty())) {
    std::vector<absl::string_view> f = Fields(line, 7);
    unsigned id, gid;
    if (f.empty() || !absl::SimpleAtoi(f[2], &id) || id != uid) continue;
    if (absl::SimpleAtoi(f[3], &gid)) return gid;
  }
  return fallback;
}

}  // namespace llima
