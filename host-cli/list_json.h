#pragma once

// `llima-box list --json`: the environments as ListEnvironmentsResponse in protobuf's JSON
// mapping (lowerCamelCase names, 64-bit integers as strings, enums by name, timestamps in RFC
// 3339), every scalar field printed even when it has its default value.

#include <string>
#include <vector>

#include "llima/v1/agent.pb.h"

namespace llima {

std::string EnvironmentsToJson(const std::vector<v1::Environment>& environments);

}  // namespace llima
