#pragma once

// Home Assistant MQTT discovery for safepoint: one device-based discovery payload
// (`<discovery_prefix>/device/<node_id>/config`) that declares every entity, and the small
// retained state topics those entities read besides `<base>/status`. Pure: no I/O.
//
// Entities (component key -> platform):
//   continue, cancel                         button  available only while a decision is pending
//   overwrite, merge, abort                  button  available only while conflicts wait
//   backup ("Back up now"), rollback         button  ("Roll back" uses the selected safety point)
//   safety_point                             select  safety points, newest first
//   status                                   sensor  enum of the eight lifecycle states
//   last_backup                              sensor  timestamp
//   last_backup_size                         sensor  data_size (B or MB)
//   last_backup_files, safety_points, progress  sensor
//   awaiting_confirmation, problem           binary_sensor
//   event                                    event   lifecycle events
// docs/mqtt-api.md documents every topic these use.

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/base/result.h"

namespace safepoint::discovery {

enum class SizeUnit { kBytes, kMegabytes };

struct Options {
  std::string base_topic = "safepoint";  // no wildcards, no leading/trailing '/'
  std::string discovery_prefix = "homeassistant";
  std::string node_id = "safepoint";  // [a-zA-Z0-9_-]+
  std::string device_name = "Safepoint";
  std::string manufacturer = "safepoint";
  std::string model = "Safety point service";
  std::string sw_version;                     // omitted when empty
  std::string support_url;                    // origin `url`; omitted when empty
  SizeUnit size_unit = SizeUnit::kMegabytes;  // of the "last backup size" sensor
};

// What the discovery payload and the state topics depend on besides Options.
struct DiscoveryState {
  std::vector<std::string> safety_points;  // ids, newest first
  std::optional<std::string> selected;     // the select's current option (ignored if unknown)
  bool decision_pending = false;           // awaiting_confirmation: Continue/Cancel available
  bool conflict_pending = false;           // awaiting_conflict_resolution: Overwrite/Merge/Abort
};

// kBadInput when node_id has characters outside [a-zA-Z0-9_-] or a topic is empty, contains
// '+', '#' or NUL, or starts or ends with '/'.
[[nodiscard]] Status ValidateOptions(const Options& options);

// `<discovery_prefix>/device/<node_id>/config`
[[nodiscard]] std::string DiscoveryTopic(const Options& options);
// `<base>/availability/decision` and `<base>/availability/conflict`: online/offline, retained.
[[nodiscard]] std::string DecisionAvailabilityTopic(const Options& options);
[[nodiscard]] std::string ConflictAvailabilityTopic(const Options& options);
// `<base>/safety_points`: {count, ids, selected}, retained.
[[nodiscard]] std::string SafetyPointsTopic(const Options& options);

// The options of the status sensor (the lifecycle's eight states, in order).
[[nodiscard]] const std::vector<std::string_view>& StatusOptions();
// The event entity's event_types (the lifecycle's event types).
[[nodiscard]] const std::vector<std::string_view>& EventTypes();

// The device-based discovery payload. Publish it retained on DiscoveryTopic() after connecting,
// when `homeassistant/status` says `online`, and whenever the list of safety points changes
// (the select's options live in it). REQUIRES: ValidateOptions(options) is ok.
[[nodiscard]] nlohmann::json DeviceDiscovery(const Options& options, const DiscoveryState& state);

// The (topic, payload) pairs to publish retained, in order, whenever `state` changes and after
// each discovery publish: both availability groups and the safety-point list/selection.
// `<base>/status` and `<base>/availability` are published by the service itself.
[[nodiscard]] std::vector<std::pair<std::string, std::string>> StateTopics(
    const Options& options, const DiscoveryState& state);

}  // namespace safepoint::discovery
