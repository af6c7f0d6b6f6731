#pragma once

#include <chrono>

namespace safepoint {

// Wall-clock and monotonic time, replaceable in tests (FakeClock in tests/testutil).
// Thread-safety: implementations must be safe to call from any thread.
class Clock {
 public:
  virtual ~Clock() = default;
  // Wall-clock time: safety point ids, manifests, schedules, deadlines that survive restarts.
  [[nodiscard]] virtual std::chrono::system_clock::time_point Now() const = 0;
  // Monotonic time for timeouts within one process lifetime.
  [[nodiscard]] virtual std::chrono::steady_clock::time_point Monotonic() const = 0;
};

class RealClock final : public Clock {
 public:
  [[nodiscard]] std::chrono::system_clock::time_point Now() const override {
    return std::chrono::system_clock::now();
  }
  [[nodiscard]] std::chrono::steady_clock::time_point Monotonic() const override {
    return std::chrono::steady_clock::now();
  }
};

}  // namespace safepoint
