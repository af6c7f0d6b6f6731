#pragma once

#include <string>
#include <string_view>

namespace safepoint {

// True when `s` is well-formed UTF-8 (no overlong forms, surrogates or code points above
// U+10FFFF). JSON output (manifests, MQTT payloads) can carry only such text.
[[nodiscard]] bool IsValidUtf8(std::string_view s);

// `s` with every byte that is not part of a well-formed UTF-8 sequence replaced by '?', for
// messages that must be JSON-safe (warnings, log lines).
[[nodiscard]] std::string SanitizeUtf8(std::string_view s);

}  // namespace safepoint
