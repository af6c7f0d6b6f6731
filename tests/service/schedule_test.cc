// The daily schedule and the error-answer budget (service/schedule.h), with made-up times.
#include "service/schedule.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <time.h>

#include <optional>
#include <string>

namespace safepoint::service {
namespace {

using std::chrono::hours;
using std::chrono::milliseconds;
using std::chrono::minutes;
using std::chrono::seconds;
using TimePoint = std::chrono::system_clock::time_point;

// Runs a test in one time zone and restores the previous one.
class InZone {
 public:
  explicit InZone(const char* zone) {
    if (const char* old = ::getenv("TZ")) old_ = old;
    ::setenv("TZ", zone, 1);
    ::tzset();
  }
  ~InZone() {
    if (old_) {
      ::setenv("TZ", old_->c_str(), 1);
    } else {
      ::unsetenv("TZ");
    }
    ::tzset();
  }
  InZone(const InZone&) = delete;
  InZone& operator=(const InZone&) = delete;

 private:
  std::optional<std::string> old_;
};

TimePoint Utc(int y, unsigned m, unsigned d, int h, int min) {
  return std::chrono::sys_days{std::chrono::year{y} / m / d} + hours(h) + minutes(min);
}

TEST(NextDailyAt, IsTheNextLocalTimeStrictlyAfterNow) {
  InZone zone("UTC0");
  EXPECT_EQ(NextDailyAt(Utc(2026, 12, 3, 3, 0), hours(4)), Utc(2026, 12, 3, 4, 0));
  EXPECT_EQ(NextDailyAt(Utc(2026, 12, 3, 4, 0), hours(4)), Utc(2026, 12, 4, 4, 0));
  EXPECT_EQ(NextDailyAt(Utc(2026, 12, 31, 23, 59), minutes(0)), Utc(2027, 1, 1, 0, 0));
}

TEST(NextDailyAt, FollowsDaylightSavingTime) {
  // Central Europe: UTC+1 in winter, UTC+2 from the last Sunday of March, 02:00 -> 03:00.
  InZone zone("CET-1CEST,M3.5.0,M10.5.0/3");
  EXPECT_EQ(NextDailyAt(Utc(2026, 12, 3, 12, 0), hours(4)), Utc(2026, 12, 4, 3, 0));
  EXPECT_EQ(NextDailyAt(Utc(2026, 7, 3, 12, 0), hours(4)), Utc(2026, 7, 4, 2, 0));
  // 2027-03-28 has no 02:30: the safety point comes at 03:30 local (01:30 UTC), not a day late.
  EXPECT_EQ(NextDailyAt(Utc(2027, 3, 27, 12, 0), minutes(150)), Utc(2027, 3, 28, 1, 30));
}

TEST(DailySchedule, ArmsFirstThenFiresOncePerDay) {
  InZone zone("UTC0");
  DailySchedule schedule(minutes(3 * 60 + 30));
  const TimePoint start = Utc(2026, 12, 3, 1, 0);
  EXPECT_FALSE(schedule.Due(start, false));
  EXPECT_EQ(schedule.next(), Utc(2026, 12, 3, 3, 30));
  EXPECT_FALSE(schedule.Due(Utc(2026, 12, 3, 3, 29), false));
  EXPECT_TRUE(schedule.Due(Utc(2026, 12, 3, 3, 30), false));
  EXPECT_EQ(schedule.next(), Utc(2026, 12, 4, 3, 30));
  EXPECT_FALSE(schedule.Due(Utc(2026, 12, 3, 3, 31), false));
}

TEST(DailySchedule, WaitsAMinuteAtATimeWhileBusy) {
  InZone zone("UTC0");
  DailySchedule schedule(hours(4));
  EXPECT_FALSE(schedule.Due(Utc(2026, 12, 3, 0, 0), false));
  EXPECT_FALSE(schedule.Due(Utc(2026, 12, 3, 4, 0), true));
  EXPECT_EQ(schedule.next(), Utc(2026, 12, 3, 4, 1));
  EXPECT_FALSE(schedule.Due(Utc(2026, 12, 3, 4, 0) + seconds(59), false));
  EXPECT_FALSE(schedule.Due(Utc(2026, 12, 3, 4, 1), true));
  EXPECT_TRUE(schedule.Due(Utc(2026, 12, 3, 4, 2), false));
  EXPECT_EQ(schedule.next(), Utc(2026, 12, 4, 4, 0));
}

TEST(DailySchedule, OffNeverFires) {
  DailySchedule schedule(std::nullopt);
  EXPECT_FALSE(schedule.Due(Utc(2026, 12, 3, 0, 0), false));
  EXPECT_FALSE(schedule.Due(Utc(2027, 12, 3, 0, 0), false));
  EXPECT_FALSE(schedule.next().has_value());
}

TEST(TokenBucket, SpendsItsCapacityThenRefillsAtItsRate) {
  TokenBucket bucket(100, 50);
  const TokenBucket::Instant t0{seconds(1000)};
  int granted = 0;
  for (int i = 0; i < 150; ++i) granted += bucket.Take(t0);
  EXPECT_EQ(granted, 100);
  // 50 per second: 5 tokens after 100 ms, never more than the capacity.
  granted = 0;
  for (int i = 0; i < 10; ++i) granted += bucket.Take(t0 + milliseconds(100));
  EXPECT_EQ(granted, 5);
  granted = 0;
  for (int i = 0; i < 500; ++i) granted += bucket.Take(t0 + seconds(3600));
  EXPECT_EQ(granted, 100);
}

TEST(TokenBucket, AClockGoingBackGrantsNothingExtra) {
  TokenBucket bucket(2, 1);
  const TokenBucket::Instant t0{seconds(1000)};
  EXPECT_TRUE(bucket.Take(t0));
  EXPECT_TRUE(bucket.Take(t0));
  EXPECT_FALSE(bucket.Take(t0 - seconds(10)));
  EXPECT_FALSE(bucket.Take(t0 - seconds(10)));
}

}  // namespace
}  // namespace safepoint::service
