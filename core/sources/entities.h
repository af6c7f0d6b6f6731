#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/base/io.h"
#include "core/base/result.h"
#include "core/config/config.h"

// Entity states mirrored from MQTT, as stored in a safety point's `state/entities.json`.
// docs/format-entities.md specifies the JSON layout.
namespace safepoint::entities {

// A payload is parsed (to show it as JSON in state/entities.json) only when it is at most
// kMaxParsedBytes long and nested at most kMaxParsedDepth levels deep; any other payload is
// stored as text (or base64), byte-exact, and never handed to the JSON parser. Deep nesting
// makes parsing and indenting costly (a DOM node per level, indentation quadratic in depth).
inline constexpr std::size_t kMaxParsedBytes = 64 * 1024;
inline constexpr std::size_t kMaxParsedDepth = 64;

// The latest message seen on one topic.
struct EntityRecord {
  std::string topic;
  // The payload bytes exactly as received (may be any bytes, not only UTF-8 or JSON). Shared
  // and never modified: a snapshot of the mirror costs a pointer per topic, not a payload copy.
  // nullptr reads as an empty payload.
  std::shared_ptr<const std::string> payload;
  bool retained = false;
  std::chrono::system_clock::time_point received_at;
  // `payload` holds a zstd frame of the bytes received (KeepPayload); read them with
  // PayloadBytes.
  bool compressed = false;
};

// How the mirror keeps a payload: compressed (zstd level 1) when it is at least
// kCompressFromBytes long and that saves at least an eighth, else as received. Zigbee2MQTT's
// larger messages are JSON whose keys repeat; a payload that does not compress costs no more
// than before.
inline constexpr std::size_t kCompressFromBytes = 512;
struct KeptPayload {
  std::shared_ptr<const std::string> bytes;
  bool compressed = false;
};
[[nodiscard]] KeptPayload KeepPayload(std::string_view payload);

// The bytes `r` received: its payload, or that decompressed into `scratch` (valid until
// `scratch` or `r` changes). An absent payload reads as empty.
// Errors: kInternal for a compressed payload that does not decompress to its recorded size.
[[nodiscard]] Result<std::string_view> PayloadBytes(const EntityRecord& r, std::string& scratch);

struct EntitySnapshot {
  std::chrono::system_clock::time_point captured_at;
  // One record per topic; ToJson sorts them by topic.
  std::vector<EntityRecord> records;
  // Messages the mirror dropped because of mqtt.mirror.max_topics / max_payload_bytes.
  std::uint64_t dropped_topics = 0;
  std::uint64_t dropped_payloads = 0;
  // The last dropped message, for the warning: "<topic> (<size> bytes)"; empty when none.
  std::string last_dropped_payload;
  // Where the states came from, e.g. "mqtt".
  std::string source = "mqtt";
};

// What WriteJson wrote.
struct WriteReport {
  std::uint64_t entities = 0;
  std::uint64_t bytes = 0;
  // For the safety point's warnings (exact texts in docs/format-entities.md, "Limits"): payloads
  // stored as text because of the parse limits, messages the mirror dropped.
  std::vector<std::string> warnings;
};

// Writes the state/entities.json document (format 1) to `out`, one entity per line, streaming:
// memory stays within a few times kMaxParsedBytes plus a buffer, whatever the snapshot's size.
// Payloads stay exactly recoverable: see docs/format-entities.md ("payload", "payload_raw",
// "payload_b64"). Time stamps are ISO-8601 UTC with milliseconds ("2024-05-01T12:00:00.123Z");
// finer precision is not kept. Errors: those of `out`.
[[nodiscard]] Result<WriteReport> WriteJson(const EntitySnapshot& snapshot, ByteSink& out);

// WriteJson into a new file `path` (created 0600, O_EXCL, not following links).
// Errors: kIo naming the path.
[[nodiscard]] Result<WriteReport> WriteJsonFile(const EntitySnapshot& snapshot,
                                                const std::string& path);

// The document WriteJson writes, parsed (for tests and small snapshots).
[[nodiscard]] nlohmann::json ToJson(const EntitySnapshot& snapshot);

// The records UnavailableNow looks at (topics ending in /availability or /state): what the
// service keeps of a safety point's snapshot for the health check after an update.
[[nodiscard]] EntitySnapshot AvailabilityOnly(const EntitySnapshot& snapshot);

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

// Parses the times of an entity snapshot, "YYYY-MM-DDTHH:MM:SS[.fff...]Z" (ParseIsoTime with a
// 'Z' zone), to the millisecond; std::nullopt when malformed. They are written with
// FormatMillisTime (core/base/time_text.h).
[[nodiscard]] std::optional<std::chrono::system_clock::time_point> ParseTime(std::string_view s);

}  // namespace safepoint::entities
