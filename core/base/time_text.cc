#include "core/base/time_text.h"

#include <cstdio>
#include <ctime>

namespace safepoint {
namespace {

using std::chrono::duration_cast;
using std::chrono::floor;
using std::chrono::nanoseconds;
using std::chrono::seconds;

struct Civil {
  int year;
  unsigned month;
  unsigned day;
  int hour;
  int minute;
  int second;
  long long nanos;
};

Civil ToCivil(TimePoint time) {
  const auto secs = floor<seconds>(time);
  const auto days = floor<std::chrono::days>(secs);
  const std::chrono::year_month_day ymd{days};
  const std::chrono::hh_mm_ss hms{secs - days};
  return Civil{static_cast<int>(ymd.year()),
               static_cast<unsigned>(ymd.month()),
               static_cast<unsigned>(ymd.day()),
               static_cast<int>(hms.hours().count()),
               static_cast<int>(hms.minutes().count()),
               static_cast<int>(hms.seconds().count()),
               static_cast<long long>(duration_cast<nanoseconds>(time - secs).count())};
}

std::string FormatCivil(const Civil& c, char date_time_separator) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d-%02u-%02u%c%02d:%02d:%02d", c.year, c.month, c.day,
                date_time_separator, c.hour, c.minute, c.second);
  return buf;
}

// strftime(3) of `time` (whole seconds) in UTC or in local time.
std::string Strftime(TimePoint time, const char* format, bool local) {
  const std::time_t secs = std::chrono::system_clock::to_time_t(time);
  std::tm tm{};
  if (local) {
    ::localtime_r(&secs, &tm);
  } else {
    ::gmtime_r(&secs, &tm);
  }
  char buf[64];
  const std::size_t n = std::strftime(buf, sizeof buf, format, &tm);
  return std::string(buf, n);
}

}  // namespace

std::string FormatUtcSecondsTime(TimePoint time) {
  return Strftime(time, "%Y-%m-%dT%H:%M:%SZ", false);
}

std::string FormatLocalStamp(TimePoint time) { return Strftime(time, "%Y-%m-%d_%H-%M-%S", true); }

std::string FormatLocalIsoTime(TimePoint time) {
  std::string s = Strftime(time, "%Y-%m-%dT%H:%M:%S%z", true);
  if (s.size() >= 5) s.insert(s.size() - 2, ":");  // +0100 -> +01:00
  return s;
}

std::string FormatLocalHumanTime(TimePoint time) {
  return Strftime(time, "%Y-%m-%d %H:%M:%S %Z", true);
}

std::string FormatIsoTime(TimePoint time) { return FormatCivil(ToCivil(time), 'T') + "+00:00"; }

std::string FormatMillisTime(TimePoint time) {
  const Civil civil = ToCivil(time);
  char buf[16];
  std::snprintf(buf, sizeof buf, ".%03lld", civil.nanos / 1'000'000);
  return FormatCivil(civil, 'T') + buf + "Z";
}

std::string FormatExactTime(TimePoint time) {
  const Civil civil = ToCivil(time);
  std::string out = FormatCivil(civil, 'T');
  if (civil.nanos != 0) {
    char buf[16];
    std::snprintf(buf, sizeof buf, ".%09lld", civil.nanos);
    out += buf;
  }
  return out + "Z";
}

Result<TimePoint> ParseIsoTime(std::string_view text) {
  const auto bad = [&] {
    return Fail(ErrorCode::kBadInput,
                "not an ISO 8601 UTC time: '" + std::string(text.substr(0, 40)) + "'");
  };
  // YYYY-MM-DDTHH:MM:SS
  if (text.size() < 20) return bad();
  const auto digits = [&](std::size_t pos, std::size_t count, int& value) {
    value = 0;
    for (std::size_t i = pos; i < pos + count; ++i) {
      if (text[i] < '0' || text[i] > '9') return false;
      value = value * 10 + (text[i] - '0');
    }
    return true;
  };
  int year = 0, month = 0, day = 0, hour = 0, minute = 0, second = 0;
  if (!digits(0, 4, year) || text[4] != '-' || !digits(5, 2, month) || text[7] != '-' ||
      !digits(8, 2, day) || text[10] != 'T' || !digits(11, 2, hour) || text[13] != ':' ||
      !digits(14, 2, minute) || text[16] != ':' || !digits(17, 2, second)) {
    return bad();
  }
  const std::chrono::year_month_day ymd{std::chrono::year{year},
                                        std::chrono::month{static_cast<unsigned>(month)},
                                        std::chrono::day{static_cast<unsigned>(day)}};
  if (!ymd.ok() || hour > 23 || minute > 59 || second > 59) return bad();
  // system_clock counts nanoseconds in 64 bits: 1677-09-21 .. 2262-04-11. A year outside would
  // overflow (undefined behaviour) instead of being refused.
  if (year < 1678 || year > 2261) return bad();
  std::size_t pos = 19;
  long long nanos = 0;
  if (text[pos] == '.') {
    ++pos;
    std::size_t count = 0;
    while (pos < text.size() && text[pos] >= '0' && text[pos] <= '9') {
      if (++count > 9) return bad();
      nanos = nanos * 10 + (text[pos] - '0');
      ++pos;
    }
    if (count == 0) return bad();
    for (; count < 9; ++count) nanos *= 10;
  }
  const std::string_view zone = text.substr(pos);
  if (zone != "Z" && zone != "+00:00") return bad();
  const auto time = std::chrono::sys_days{ymd} + std::chrono::hours{hour} +
                    std::chrono::minutes{minute} + seconds{second} + nanoseconds{nanos};
  return std::chrono::time_point_cast<std::chrono::system_clock::duration>(time);
}

std::string FormatHumanUtcTime(TimePoint time) { return FormatCivil(ToCivil(time), ' ') + " UTC"; }

}  // namespace safepoint
