#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "core/base/result.h"

namespace safepoint {

// File names on Linux are any bytes but '/' and NUL; JSON strings carry UTF-8 only. Every JSON
// document safepoint keeps (manifests, rollback journal, fingerprint) stores a name under `key`
// as a string when it is valid UTF-8, and otherwise as the standard base64 (RFC 4648, padded) of
// its bytes under `key` + "_b64", so that no name is lost or changed (docs/format.md).
void PutName(nlohmann::json& object, const std::string& key, std::string_view bytes);

// Reads what PutName wrote. kCorrupt unless exactly one of `key` (a string) and `key`_b64 (valid
// base64) is present; `what` names the document in the message.
[[nodiscard]] Result<std::string> GetName(const nlohmann::json& object, const std::string& key,
                                          std::string_view what);

}  // namespace safepoint
