#include "agent_source.h"

#include "embedded_agent_source.h"

namespace llima {

absl::string_view EmbeddedAgentSource() {
  return absl::string_view(kEmbeddedAgentSource, sizeof(kEmbeddedAgentSource) - 1);
}

}  // namespace llima
