#include "service/payload.h"

#include <cstdint>
#include <limits>
#include <utility>

#include "core/base/json_depth.h"

namespace safepoint::service::payload {
namespace {

using nlohmann::json;

constexpr std::size_t kMaxNesting = 16;
constexpr std::size_t kExcerptLength = 40;

}  // namespace

Status CheckNesting(std::string_view payload) {
  if (JsonNestedDeeperThan(payload, kMaxNesting)) {
    return Fail(ErrorCode::kBadInput,
                "payload nested deeper than " + std::to_string(kMaxNesting) + " levels");
  }
  return {};
}

// A short, printable excerpt of untrusted text for an error message.
std::string Excerpt(std::string_view text) {
  std::string out;
  for (char c : text.substr(0, kExcerptLength)) {
    const auto u = static_cast<unsigned char>(c);
    out.push_back(u >= 0x20 && u < 0x7f ? c : '?');
  }
  if (text.size() > kExcerptLength) out += "...";
  return out;
}

std::string_view Trim(std::string_view s) {
  const auto is_space = [](char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; };
  while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
  return s;
}

Status CheckSize(std::string_view payload, std::size_t max_bytes) {
  if (payload.size() > max_bytes) {
    return Fail(ErrorCode::kBadInput, "payload of " + std::to_string(payload.size()) +
                                          " bytes exceeds the limit of " +
                                          std::to_string(max_bytes) + " bytes");
  }
  if (Trim(payload).empty()) return Fail(ErrorCode::kBadInput, "empty payload");
  return {};
}

Result<json> ParseJson(std::string_view payload) {
  SP_RETURN_IF_ERROR(CheckNesting(payload));
  // The JSON reader takes a NUL byte for the end of the text, and what follows would go unread:
  // valid JSON holds none (a string spells it \u0000).
  if (payload.find('\0') != std::string_view::npos) {
    return Fail(ErrorCode::kBadInput, "payload is not valid JSON: it holds a NUL byte");
  }
  try {
    return json::parse(payload.begin(), payload.end());
  } catch (const json::out_of_range&) {
    // A number no double holds (1e400): said so, not "invalid JSON" (what follows it is not
    // checked: parsing stops there).
    return Fail(ErrorCode::kBadInput,
                "payload holds a number out of range: '" + Excerpt(payload) + "'");
  } catch (const json::exception&) {
    return Fail(ErrorCode::kBadInput, "payload is not valid JSON: '" + Excerpt(payload) + "'");
  }
}

Result<json> ParseObject(std::string_view payload) {
  auto doc = ParseJson(payload);
  if (!doc) return tl::unexpected(std::move(doc.error()));
  if (!doc->is_object()) return Fail(ErrorCode::kBadInput, "payload must be a JSON object");
  return std::move(*doc);
}

std::string_view TypeName(const json& value) {
  if (value.is_null()) return "null";
  if (value.is_boolean()) return "boolean";
  if (value.is_number()) return "number";
  if (value.is_string()) return "string";
  if (value.is_array()) return "array";
  return "object";
}

Status CheckText(std::string_view field, std::string_view value, std::size_t max_length,
                 TextKind kind) {
  if (value.size() > max_length) {
    return Fail(ErrorCode::kBadInput, "'" + std::string(field) + "' is longer than " +
                                          std::to_string(max_length) + " bytes");
  }
  const auto byte = [&](std::size_t i) {
    return i < value.size() ? static_cast<unsigned char>(value[i]) : 0u;
  };
  for (std::size_t i = 0; i < value.size(); ++i) {
    const auto u = byte(i);
    const bool allowed_control = kind == TextKind::kMultiline && (u == '\n' || u == '\t');
    // C0 controls and DEL; the C1 controls U+0080..U+009F (UTF-8 c2 80..c2 9f); in one line
    // also U+2028 LINE SEPARATOR and U+2029 PARAGRAPH SEPARATOR (e2 80 a8, e2 80 a9).
    const bool c0 = (u < 0x20 || u == 0x7f) && !allowed_control;
    const bool c1 = u == 0xC2 && byte(i + 1) >= 0x80 && byte(i + 1) <= 0x9F;
    const bool separator = kind == TextKind::kLine && u == 0xE2 && byte(i + 1) == 0x80 &&
                           (byte(i + 2) == 0xA8 || byte(i + 2) == 0xA9);
    if (c0 || c1) {
      return Fail(ErrorCode::kBadInput,
                  "'" + std::string(field) + "' contains a control character");
    }
    if (separator) {
      return Fail(ErrorCode::kBadInput,
                  "'" + std::string(field) + "' contains a line or paragraph separator");
    }
  }
  return {};
}

Status Fields::CheckNoUnknown() const {
  for (const auto& [key, unused] : object_.items()) {
    if (allowed_.count(key) == 0) {
      std::string known;
      for (std::string_view name : allowed_) {
        if (!known.empty()) known += ", ";
        known += name;
      }
      return Fail(ErrorCode::kBadInput,
                  "unknown field '" + Excerpt(key) + "' (allowed: " + known + ")");
    }
  }
  return {};
}

bool Fields::Has(std::string_view key) const {
  const auto it = object_.find(key);
  return it != object_.end() && !it->is_null();
}

Result<std::optional<std::string>> Fields::OptionalString(std::string_view key,
                                                          std::size_t max_length,
                                                          TextKind kind) const {
  const auto it = object_.find(key);
  if (it == object_.end() || it->is_null()) return std::optional<std::string>();
  if (!it->is_string()) {
    return Fail(ErrorCode::kBadInput,
                "'" + std::string(key) + "' must be a string, not " + std::string(TypeName(*it)));
  }
  const auto& value = it->get_ref<const std::string&>();
  SP_RETURN_IF_ERROR(CheckText(key, value, max_length, kind));
  return std::optional<std::string>(value);
}

Result<std::string> Fields::RequiredString(std::string_view key, std::size_t max_length) const {
  auto value = OptionalString(key, max_length);
  if (!value) return tl::unexpected(std::move(value.error()));
  if (!value->has_value()) {
    return Fail(ErrorCode::kBadInput, "missing required field '" + std::string(key) + "'");
  }
  if ((*value)->empty()) {
    return Fail(ErrorCode::kBadInput, "'" + std::string(key) + "' must not be empty");
  }
  return std::move(**value);
}

Result<bool> Fields::RequiredBool(std::string_view key) const {
  const auto it = object_.find(key);
  if (it == object_.end() || it->is_null()) {
    return Fail(ErrorCode::kBadInput, "missing required field '" + std::string(key) + "'");
  }
  if (!it->is_boolean()) {
    return Fail(ErrorCode::kBadInput, "'" + std::string(key) + "' must be true or false, not " +
                                          std::string(TypeName(*it)));
  }
  return it->get<bool>();
}

Result<std::optional<int>> Fields::OptionalInt(std::string_view key) const {
  const auto it = object_.find(key);
  if (it == object_.end() || it->is_null()) return std::optional<int>();
  if (it->is_number_unsigned()) {
    const auto v = it->get<std::uint64_t>();
    if (v <= static_cast<std::uint64_t>(std::numeric_limits<int>::max())) {
      return std::optional<int>(static_cast<int>(v));
    }
  } else if (it->is_number_integer()) {
    const auto v = it->get<std::int64_t>();
    if (v >= std::numeric_limits<int>::min() && v <= std::numeric_limits<int>::max()) {
      return std::optional<int>(static_cast<int>(v));
    }
  } else {
    return Fail(ErrorCode::kBadInput,
                "'" + std::string(key) + "' must be an integer, not " + std::string(TypeName(*it)));
  }
  return Fail(ErrorCode::kBadInput, "'" + std::string(key) + "' is out of range");
}

}  // namespace safepoint::service::payload
