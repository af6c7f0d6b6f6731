#include "core/base/json_name.h"

#include <sodium.h>

#include <optional>

#include "core/base/utf8.h"

namespace safepoint {

namespace {

constexpr int kVariant = sodium_base64_VARIANT_ORIGINAL;

std::string Encode(std::string_view bytes) {
  std::string out(sodium_base64_ENCODED_LEN(bytes.size(), kVariant), '\0');
  sodium_bin2base64(out.data(), out.size(), reinterpret_cast<const unsigned char*>(bytes.data()),
                    bytes.size(), kVariant);
  out.resize(out.size() - 1);  // the terminating NUL
  return out;
}

std::optional<std::string> Decode(std::string_view text) {
  std::string out(text.size() / 4 * 3 + 3, '\0');
  std::size_t len = 0;
  const char* end = nullptr;
  if (sodium_base642bin(reinterpret_cast<unsigned char*>(out.data()), out.size(), text.data(),
                        text.size(), nullptr, &len, &end, kVariant) != 0 ||
      end != text.data() + text.size()) {
    return std::nullopt;
  }
  out.resize(len);
  return out;
}

}  // namespace

void PutName(nlohmann::json& object, const std::string& key, std::string_view bytes) {
  if (IsValidUtf8(bytes)) {
    object[key] = std::string(bytes);
  } else {
    object[key + "_b64"] = Encode(bytes);
  }
}

Result<std::string> GetName(const nlohmann::json& object, const std::string& key,
                            std::string_view what) {
  auto bad = [&](const std::string& why) {
    return Fail(ErrorCode::kCorrupt, std::string(what) + ": field '" + key + "': " + why);
  };
  if (!object.is_object()) return bad("not in an object");
  auto plain = object.find(key);
  auto encoded = object.find(key + "_b64");
  const bool has_plain = plain != object.end();
  const bool has_encoded = encoded != object.end();
  if (has_plain == has_encoded) {
    return bad(has_plain ? "given both as text and as base64" : "missing");
  }
  if (has_plain) {
    if (!plain->is_string()) return bad("not a string");
    return plain->get<std::string>();
  }
  if (!encoded->is_string()) return bad("base64 form is not a string");
  auto bytes = Decode(encoded->get_ref<const std::string&>());
  if (!bytes) return bad("base64 form is not valid base64");
  // A name that is valid UTF-8 is always written as text: two spellings of one name would let
  // two manifests that describe the same tree differ.
  if (IsValidUtf8(*bytes)) return bad("base64 form holds a UTF-8 name");
  if (bytes->find('\0') != std::string::npos) return bad("contains NUL");
  return *bytes;
}

}  // namespace safepoint
