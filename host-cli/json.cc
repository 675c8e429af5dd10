#include "json.h"

#include <cstdint>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace llima::json {

namespace {

// The two-character escapes of JSON strings: the letter after the backslash, the byte it means
// ('/' is read as well but never written).
constexpr std::pair<char, char> kEscapes[] = {{'"', '"'},  {'\\', '\\'}, {'b', '\b'}, {'f', '\f'},
                                              {'n', '\n'}, {'r', '\r'},   {'t', '\t'}};

const char* Unescaped(char letter) {
  for (const auto& [l, byte] : kEscapes) {
    if (l == letter) return &byte;
  }
  return nullptr;
}

const char* Escaped(char byte) {
  for (const auto& [letter, b] : kEscapes) {
    if (b == byte) return &letter;
  }
  return nullptr;
}

}  // namespace

const Value* Value::Find(absl::string_view key) const {
  const Value* found = nullptr;
  for (const auto& [name, value] : members_) {
    if (name == key) found = &value;
  }
  return found;
}

class Parser {
 public:
  explicit Parser(absl::string_view text) : text_(text) {}

  absl::StatusOr<Value> Document() {
    Value value;
    if (!ParseValue(value, 0)) return Error();
    SkipSpace();
    if (pos_ != text_.size()) {
      why_ = "text after the value";
      return Error();
    }
    return value;
  }

 private:
  static constexpr int kMaxDepth = 64;

  absl::Status Error() const {
    return absl::InvalidArgumentError(absl::StrCat("not JSON at offset ", pos_, ": ", why_));
  }
  bool Fail(const char* why) {
    why_ = why;
    return false;
  }
  void SkipSpace() {
    while (pos_ < text_.size() && (text_[pos_] == ' ' || text_[pos_] == '\t' ||
                                   text_[pos_] == '\n' || text_[pos_] == '\r')) {
      ++pos_;
    }
  }
  bool Consume(absl::string_view word) {
    if (text_.substr(pos_, word.size()) != word) return false;
    pos_ += word.size();
    return true;
  }

  bool ParseValue(Value& out, int depth) {
    if (depth > kMaxDepth) return Fail("nested too deeply");
    SkipSpace();
    if (pos_ >= text_.size()) return Fail("the text ends where a value should be");
    char c = text_[pos_];
    if (c == '{') return ParseObject(out, depth);
    if (c == '[') return ParseArray(out, depth);
    if (c == '"') {
      out.type_ = Value::Type::kString;
      return ParseString(out.text_);
    }
    if (c == '-' || absl::ascii_isdigit(static_cast<unsigned char>(c))) return ParseNumber(out);
    if (Consume("true")) {
      out.type_ = Value::Type::kBool;
      out.boolean_ = true;
      return true;
    }
    if (Consume("false")) {
      out.type_ = Value::Type::kBool;
      return true;
    }
    if (Consume("null")) return true;
    return Fail("not a value");
  }

  bool ParseObject(Value& out, int depth) {
    out.type_ = Value::Type::kObject;
    ++pos_;  // {
    SkipSpace();
    if (Consume("}")) return true;
    for (;;) {
      SkipSpace();
      if (pos_ >= text_.size() || text_[pos_] != '"') return Fail("expected a member name");
      std::string name;
      if (!ParseString(name)) return false;
      SkipSpace();
      if (!Consume(":")) return Fail("expected ':'");
      Value value;
      if (!ParseValue(value, depth + 1)) return false;
      out.members_.emplace_back(std::move(name), std::move(value));
      SkipSpace();
      if (Consume(",")) continue;
      if (Consume("}")) return true;
      return Fail("expected ',' or '}'");
    }
  }

  bool ParseArray(Value& out, int depth) {
    out.type_ = Value::Type::kArray;
    ++pos_;  // [
    SkipSpace();
    if (Consume("]")) return true;
    for (;;) {
      Value item;
      if (!ParseValue(item, depth + 1)) return false;
      out.items_.push_back(std::move(item));
      SkipSpace();
      if (Consume(",")) continue;
      if (Consume("]")) return true;
      return Fail("expected ',' or ']'");
    }
  }

  bool ParseNumber(Value& out) {
    size_t start = pos_;
    auto digits = [&] {
      size_t from = pos_;
      while (pos_ < text_.size() && absl::ascii_isdigit(static_cast<unsigned char>(text_[pos_]))) {
        ++pos_;
      }
      return pos_ > from;
    };
    Consume("-");
    if (Consume("0")) {
      // No leading zeros.
    } else if (!digits()) {
      return Fail("expected digits");
    }
    if (Consume(".") && !digits()) return Fail("expected digits after '.'");
    if (pos_ < text_.size() && (text_[pos_] == 'e' || text_[pos_] == 'E')) {
      ++pos_;
      if (!Consume("+")) Consume("-");
      if (!digits()) return Fail("expected an exponent");
    }
    out.type_ = Value::Type::kNumber;
    out.text_ = std::string(text_.substr(start, pos_ - start));
    return true;
  }

  bool Hex4(uint32_t& out) {
    if (pos_ + 4 > text_.size()) return Fail("expected four hex digits");
    out = 0;
    for (int i = 0; i < 4; ++i) {
      char c = text_[pos_++];
      out <<= 4;
      if (c >= '0' && c <= '9') {
        out |= static_cast<uint32_t>(c - '0');
      } else if (c >= 'a' && c <= 'f') {
        out |= static_cast<uint32_t>(c - 'a' + 10);
      } else if (c >= 'A' && c <= 'F') {
        out |= static_cast<uint32_t>(c - 'A' + 10);
      } else {
        return Fail("expected four hex digits");
      }
    }
    return true;
  }

  static void AppendUtf8(std::string& out, uint32_t cp) {
    if (cp < 0x80) {
      out += static_cast<char>(cp);
    } else if (cp < 0x800) {
      out += static_cast<char>(0xc0 | (cp >> 6));
      out += static_cast<char>(0x80 | (cp & 0x3f));
    } else if (cp < 0x10000) {
      out += static_cast<char>(0xe0 | (cp >> 12));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
      out += static_cast<char>(0x80 | (cp & 0x3f));
    } else {
      out += static_cast<char>(0xf0 | (cp >> 18));
      out += static_cast<char>(0x80 | ((cp >> 12) & 0x3f));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
      out += static_cast<char>(0x80 | (cp & 0x3f));
    }
  }

  bool ParseString(std::string& out) {
    ++pos_;  // "
    for (;;) {
      if (pos_ >= text_.size()) return Fail("the text ends inside a string");
      char c = text_[pos_++];
      if (c == '"') return true;
      if (static_cast<unsigned char>(c) < 0x20) return Fail("a control character in a string");
      if (c != '\\') {
        out += c;
        continue;
      }
      if (pos_ >= text_.size()) return Fail("the text ends inside a string");
      char escape = text_[pos_++];
      if (escape == '/') {
        out += '/';
        continue;
      }
      if (const char* byte = Unescaped(escape)) {
        out += *byte;
        continue;
      }
      if (escape != 'u') return Fail("an unknown escape in a string");
      uint32_t cp;
      if (!Hex4(cp)) return false;
      if (cp >= 0xd800 && cp < 0xdc00) {
        uint32_t low;
        if (!Consume("\\u") || !Hex4(low) || low < 0xdc00 || low >= 0xe000) {
          return Fail("a lone UTF-16 surrogate");
        }
        cp = 0x10000 + ((cp - 0xd800) << 10) + (low - 0xdc00);
      } else if (cp >= 0xdc00 && cp < 0xe000) {
        return Fail("a lone UTF-16 surrogate");
      }
      AppendUtf8(out, cp);
    }
  }

  absl::string_view text_;
  size_t pos_ = 0;
  const char* why_ = "";
};

absl::StatusOr<Value> Parse(absl::string_view text) { return Parser(text).Document(); }

std::string Quote(absl::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    if (const char* letter = Escaped(c)) {
      out += '\\';
      out += *letter;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      absl::StrAppendFormat(&out, "\\u%04x", static_cast<unsigned char>(c));
    } else {
      out += c;
    }
  }
  out += '"';
  return out;
}

}  // namespace llima::json
