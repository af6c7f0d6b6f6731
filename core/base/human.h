#pragma once

#include <cstdint>
#include <string>

namespace safepoint {

// A size for people, in decimal units: "999 B", "1.6 kB", "2.3 MB", "4.0 GB" (one decimal from
// a kilobyte on). The CLI, the service's events and its logs all print sizes this way.
[[nodiscard]] std::string HumanBytes(std::uint64_t bytes);

}  // namespace safepoint
