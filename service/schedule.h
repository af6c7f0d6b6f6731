#pragma once

#include <chrono>
#include <optional>

// Two small decisions of the service, kept pure so they are tested with a made-up clock: when
// the daily safety point is due, and how many error answers the service may still give.
namespace safepoint::service {

// Next local wall-clock time at `minutes_after_midnight` strictly after `now` (local time, the
// day's daylight-saving rule applied: a time that does not exist that day comes an hour later).
[[nodiscard]] std::chrono::system_clock::time_point NextDailyAt(
    std::chrono::system_clock::time_point now, std::chrono::minutes minutes_after_midnight);

// The `service.schedule.daily_at` safety point.
class DailySchedule {
 public:
  using TimePoint = std::chrono::system_clock::time_point;

  // No schedule when `daily_at` is empty (`off`).
  explicit DailySchedule(std::optional<std::chrono::minutes> daily_at) : daily_at_(daily_at) {}

  // True when a scheduled safety point is due at `now`. The first call only arms the schedule
  // (the next daily time after `now`); while `busy` (another operation runs) a due one waits
  // and is asked again a minute later.
  [[nodiscard]] bool Due(TimePoint now, bool busy);
  // When Due has something to decide next; empty when there is no schedule or it is unarmed.
  [[nodiscard]] std::optional<TimePoint> next() const { return next_; }

 private:
  std::optional<std::chrono::minutes> daily_at_;
  std::optional<TimePoint> next_;
};

// A token bucket: `capacity` tokens, refilled at `per_second`; each Take spends one.
class TokenBucket {
 public:
  using Instant = std::chrono::steady_clock::time_point;

  TokenBucket(double capacity, double per_second)
      : capacity_(capacity), per_second_(per_second), tokens_(capacity) {}

  // True (and one token spent) when a token is left at `now`.
  [[nodiscard]] bool Take(Instant now);

 private:
  double capacity_;
  double per_second_;
  double tokens_;
  std::optional<Instant> last_;
};

}  // namespace safepoint::service
