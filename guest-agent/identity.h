#pragma once

// The identity processes of an environment run as: the owner of the project directory, named
// after the environment inside it through a synthesized /etc/passwd and /etc/group. No user is
// added to the VM.

#include <sys/types.h>

#include <string>
#include "absl/strings/string_view.h"

namespace llima {

struct EnvironmentIdentity {
  std::string name;   // environment name, used as user and group name
  uid_t uid = 0;
  gid_t gid = 0;
  std::string home;   // /home/<name>
  std::string shell;  // login shell
};

struct IdentityFiles {
  std::string passwd;
  std::string group;
};

// Keeps the VM's system accounts (ids below 1000, and nobody) so that file listings show
// owners, drops every other account, and any entry that would share the environment's uid, gid
// or name, then adds the environment's own entries.
IdentityFiles SynthesizeIdentityFiles(absl::string_view host_passwd, absl::string_view host_group,
                                      const EnvironmentIdentity& identity);

// The login shell for `uid` from `host_passwd`, when it names an existing shell; otherwise
// /bin/bash, or /bin/sh.
std::string LoginShellFor(absl::string_view host_passwd, uid_t uid);

// The primary group of `uid` in `host_passwd`, or `fallback`.
gid_t PrimaryGroupFor(absl::string_view host_passwd, uid_t uid, gid_t fallback);

}  // namespace llima
