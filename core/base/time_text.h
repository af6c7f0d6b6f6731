#pragma once

#include <chrono>
#include <string>
#include <string_view>

#include "core/base/result.h"

// Time as text, in UTC, for everything safepoint writes and reads back: status and event
// payloads, the persisted service state, the entity mirror's snapshots.
namespace safepoint {

using TimePoint = std::chrono::system_clock::time_point;

// "2026-02-11T12:10:54+00:00" (whole seconds), as in status and event payloads.
[[nodiscard]] std::string FormatIsoTime(TimePoint time);
// "2026-02-11T12:10:54.123Z" (milliseconds), as in entity snapshots.
[[nodiscard]] std::string FormatMillisTime(TimePoint time);
// "2026-02-11T12:10:54.123456789Z" (exact: no fraction when it is zero), as in the persisted
// state.
[[nodiscard]] std::string FormatExactTime(TimePoint time);
// "2026-02-11 12:15:54 UTC", for messages people read.
[[nodiscard]] std::string FormatHumanUtcTime(TimePoint time);
// "2026-02-11T12:10:54Z" (whole seconds, UTC), as in rollback journals and fingerprints.
[[nodiscard]] std::string FormatUtcSecondsTime(TimePoint time);

// In the machine's local time zone:
// "2026-02-11_13-10-54": safety point ids and rollback record names.
[[nodiscard]] std::string FormatLocalStamp(TimePoint time);
// "2026-02-11T13:10:54+01:00": a manifest's created_at.
[[nodiscard]] std::string FormatLocalIsoTime(TimePoint time);
// "2026-02-11 13:10:54 CET": the deadlines in the service's messages.
[[nodiscard]] std::string FormatLocalHumanTime(TimePoint time);

// Parses every UTC form above but the human one: YYYY-MM-DDTHH:MM:SS, 0..9 fraction digits, zone
// 'Z' or '+00:00'; years 1678..2261 (what the clock's 64-bit nanoseconds hold).
[[nodiscard]] Result<TimePoint> ParseIsoTime(std::string_view text);

}  // namespace safepoint
