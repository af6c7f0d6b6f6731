#pragma once

// File times as one number.

#include <cstdint>
#include <ctime>
#include <optional>

namespace safepoint {

// Nanoseconds since the epoch of `t`; std::nullopt for a time that 64 bits do not hold (before
// 1677 or after 2262, which a file may be given).
[[nodiscard]] inline std::optional<std::int64_t> NanosSinceEpoch(const struct timespec& t) {
  std::int64_t ns = 0;
  if (__builtin_mul_overflow(static_cast<std::int64_t>(t.tv_sec), std::int64_t{1'000'000'000},
                             &ns) ||
      __builtin_add_overflow(ns, static_cast<std::int64_t>(t.tv_nsec), &ns)) {
    return std::nullopt;
  }
  return ns;
}

}  // namespace safepoint
