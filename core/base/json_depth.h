#pragma once

#include <cstddef>
#include <string_view>

namespace safepoint {

// True when `text`, read as JSON, opens more than `max_depth` nested arrays/objects (brackets
// inside strings do not count). A linear scan that allocates nothing; `text` need not be JSON.
// Untrusted JSON (MQTT payloads, mirrored states) is checked with it before any parser sees it,
// so a hostile document cannot make parsing or destruction expensive.
[[nodiscard]] bool JsonNestedDeeperThan(std::string_view text, std::size_t max_depth);

}  // namespace safepoint
