#include "service/schedule.h"

#include <algorithm>
#include <ctime>

namespace safepoint::service {

std::chrono::system_clock::time_point NextDailyAt(std::chrono::system_clock::time_point now,
                                                  std::chrono::minutes at) {
  std::time_t tt = std::chrono::system_clock::to_time_t(now);
  std::tm tm{};
  localtime_r(&tt, &tm);
  for (int day = 0; day < 3; ++day) {
    std::tm candidate = tm;
    candidate.tm_mday += day;
    candidate.tm_hour = static_cast<int>(at.count() / 60);
    candidate.tm_min = static_cast<int>(at.count() % 60);
    candidate.tm_sec = 0;
    candidate.tm_isdst = -1;  // let mktime apply the day's DST rule
    auto when = std::chrono::system_clock::from_time_t(std::mktime(&candidate));
    if (when > now) return when;
  }
  return now + std::chrono::hours(24);
}

bool DailySchedule::Due(TimePoint now, bool busy) {
  if (!daily_at_) return false;
  if (!next_) {
    next_ = NextDailyAt(now, *daily_at_);
    return false;
  }
  if (now < *next_) return false;
  if (busy) {
    next_ = now + std::chrono::minutes(1);
    return false;
  }
  next_ = NextDailyAt(now, *daily_at_);
  return true;
}

bool TokenBucket::Take(Instant now) {
  if (last_) {
    const double elapsed = std::chrono::duration<double>(now - *last_).count();
    tokens_ = std::min(capacity_, tokens_ + std::max(0.0, elapsed) * per_second_);
  }
  last_ = now;
  if (tokens_ < 1.0) return false;
  tokens_ -= 1.0;
  return true;
}

}  // namespace safepoint::service
