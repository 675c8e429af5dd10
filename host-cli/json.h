#pragma once

// Just the JSON llima-box needs, without protobuf's reflection (the clients use the lite
// runtime, see proto/CMakeLists.txt): reading `limactl list --json` and writing `list --json`.

#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace llima::json {

class Value {
 public:
  enum class Type { kNull, kBool, kNumber, kString, kArray, kObject };

  Type type() const { return type_; }
  bool is_null() const { return type_ == Type::kNull; }
  bool boolean() const { return boolean_; }
  // A string's text, or a number as it was written.
  const std::string& text() const { return text_; }
  const std::vector<Value>& items() const { return items_; }
  const std::vector<std::pair<std::string, Value>>& members() const { return members_; }
  // An object's member, the last of that name; nullptr when absent or not an object.
  const Value* Find(absl::string_view key) const;

 private:
  friend class Parser;
  Type type_ = Type::kNull;
  bool boolean_ = false;
  std::string text_;
  std::vector<Value> items_;
  std::vector<std::pair<std::string, Value>> members_;
};

// One JSON text (RFC 8259), nested at most 64 deep. INVALID_ARGUMENT names the offset of the
// first thing that is not JSON.
absl::StatusOr<Value> Parse(absl::string_view text);

// `s` as a JSON string, quotes included. Bytes from 0x80 up pass through as they are (the text
// is UTF-8); control characters, quotes and backslashes are escaped.
std::string Quote(absl::string_view s);

}  // namespace llima::json
