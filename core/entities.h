#pragma once

#include <chrono>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/config.h"
#include "core/result.h"

// Entity states mirrored from MQTT, as stored in a safety point's `state/entities.json`.
// docs/format-entities.md specifies the JSON layout.
namespace safepoint::entities {

// The latest message seen on one topic.
struct EntityRecord {
  std::string topic;
  // The payload bytes exactly as received (may be any bytes, not only UTF-8 or JSON).
  std::string payload;
  bool retained = false;
  std::chrono::system_clock::time_point received_at;
};

struct EntitySnapshot {
  std::chrono::system_clock::time_point captured_at;
  // One record per topic; ToJson sorts them by topic.
  std::vector<EntityRecord> records;
  // Messages the mirror dropped because of mqtt.mirror.max_topics / max_payload_bytes.
  std::uint64_t dropped_topics = 0;
  std::uint64_t dropped_payloads = 0;
  // Where the states came from, e.g. "mqtt".
  std::string source = "mqtt";
};

// The state/entities.json document (format 1). Payloads stay exactly recoverable: see
// docs/format-entities.md ("payload", "payload_raw", "payload_b64"). Time stamps are ISO-8601
// UTC with milliseconds ("2024-05-01T12:00:00.123Z"); finer precision is not kept.
[[nodiscard]] nlohmann::json ToJson(const EntitySnapshot& snapshot);

// Parses a state/entities.json document. Errors: kBadInput naming the offending field (wrong
// format number, missing or mistyped fields, bad time stamps, bad base64).
[[nodiscard]] Result<EntitySnapshot> EntitySnapshotFromJson(const nlohmann::json& json);

// Entities that were available in `before` and are unavailable in `now`, sorted. An entity is
// identified by its topic without the last level:
// - Zigbee2MQTT: "<prefix>/<friendly name>/availability" with {"state":"online"|"offline"} or a
//   plain online/offline payload -> "<prefix>/<friendly name>".
// - Home Assistant statestream: "<base>/<domain>/<object id>/state" whose payload is
//   "unavailable" -> "<base>/<domain>/<object id>" (any other state counts as available).
// Entities missing from either snapshot are not reported.
[[nodiscard]] std::vector<std::string> UnavailableNow(const EntitySnapshot& before,
                                                      const EntitySnapshot& now);

// MQTT topic filter matching for the entity mirror. `+` matches one level, `#` as the last
// level matches zero or more levels (so "a/#" matches "a"), and, as an extension for exclude
// lists, `#` as a middle level matches one or more levels ("zigbee2mqtt/#/set/#" matches
// "zigbee2mqtt/living room/lamp/set" and "zigbee2mqtt/lamp/set/brightness"). Topics starting
// with '$' are not matched by a filter starting with a wildcard (MQTT 4.7.2).
[[nodiscard]] bool TopicMatches(std::string_view filter, std::string_view topic);

// True when the mirror keeps `topic`: it matches one of mirror.filters and none of
// mirror.exclude.
[[nodiscard]] bool MirrorAccepts(const config::MirrorConfig& mirror, std::string_view topic);

// ISO-8601 UTC with milliseconds, e.g. "2024-05-01T12:00:00.123Z".
[[nodiscard]] std::string FormatTime(std::chrono::system_clock::time_point t);
// Parses "YYYY-MM-DDTHH:MM:SS[.fff...]Z"; std::nullopt when malformed.
[[nodiscard]] std::optional<std::chrono::system_clock::time_point> ParseTime(std::string_view s);

}  // namespace safepoint::entities
