#pragma once

#include <cstddef>
#include <initializer_list>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <string_view>

#include "core/base/result.h"

// Reading untrusted JSON payloads (MQTT commands, update messages, Zigbee2MQTT answers): bounded
// in size and nesting, every field checked for its type and length, unknown fields refused. Each
// error is a kBadInput message that quotes the input only as a short printable excerpt.
namespace safepoint::service::payload {

// A short, printable excerpt of untrusted text for an error message.
[[nodiscard]] std::string Excerpt(std::string_view text);
// `s` without leading and trailing blanks and line ends.
[[nodiscard]] std::string_view Trim(std::string_view s);
// Refuses a payload over `max_bytes` or one that is blank.
[[nodiscard]] Status CheckSize(std::string_view payload, std::size_t max_bytes);
// Refuses a document nested deeper than 16 levels, before any parser sees it.
[[nodiscard]] Status CheckNesting(std::string_view payload);
// Parses JSON nested at most 16 levels (so a hostile payload cannot make parsing or destruction
// expensive).
[[nodiscard]] Result<nlohmann::json> ParseJson(std::string_view payload);
// ParseJson, and the document must be an object.
[[nodiscard]] Result<nlohmann::json> ParseObject(std::string_view payload);
// "null", "boolean", "number", "string", "array" or "object".
[[nodiscard]] std::string_view TypeName(const nlohmann::json& value);

enum class TextKind {
  kLine,       // no control characters (C0, DEL, C1) at all, nor U+2028 and U+2029
  kMultiline,  // newlines and tabs allowed
};

// Refuses text over `max_length` bytes or with control characters `kind` does not allow.
[[nodiscard]] Status CheckText(std::string_view field, std::string_view value,
                               std::size_t max_length, TextKind kind);

// Reads the fields of one JSON object and remembers which keys are allowed, so unknown keys
// (usually typos) are reported instead of silently ignored. A null field counts as absent.
class Fields {
 public:
  Fields(const nlohmann::json& object, std::initializer_list<std::string_view> allowed)
      : object_(object), allowed_(allowed.begin(), allowed.end()) {}

  [[nodiscard]] Status CheckNoUnknown() const;
  [[nodiscard]] bool Has(std::string_view key) const;
  [[nodiscard]] Result<std::optional<std::string>> OptionalString(
      std::string_view key, std::size_t max_length, TextKind kind = TextKind::kLine) const;
  // Present and not empty.
  [[nodiscard]] Result<std::string> RequiredString(std::string_view key,
                                                   std::size_t max_length) const;
  [[nodiscard]] Result<bool> RequiredBool(std::string_view key) const;
  [[nodiscard]] Result<std::optional<int>> OptionalInt(std::string_view key) const;

 private:
  const nlohmann::json& object_;
  std::set<std::string_view, std::less<>> allowed_;
};

}  // namespace safepoint::service::payload
