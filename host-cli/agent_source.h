#pragma once

#include "absl/strings/string_view.h"

namespace llima {

// The gzip'd tar of the sources the VM builds llima-agent from (provision/README.md).
absl::string_view EmbeddedAgentSource();

}  // namespace llima
