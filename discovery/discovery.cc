#include "discovery/discovery.h"

#include <algorithm>
#include <cctype>

#include "core/base/mqtt_names.h"

namespace safepoint::discovery {
namespace {

using nlohmann::json;

constexpr std::string_view kOnline = "online";
constexpr std::string_view kOffline = "offline";

// HA entity ids are lower-case [a-z0-9_]; node ids may also hold upper case and '-'.
std::string EntitySlug(std::string_view node_id) {
  std::string slug;
  for (char c : node_id) {
    if (c == '-') {
      slug.push_back('_');
    } else {
      slug.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
    }
  }
  return slug;
}

Status ValidateTopic(std::string_view name, std::string_view topic) {
  if (auto st = mqtt_names::CheckBaseTopic(topic); !st) {
    return Fail(ErrorCode::kBadInput, std::string(name) + " '" + std::string(topic) +
                                          "' is not a usable MQTT topic: " + st.error().message);
  }
  return {};
}

class Builder {
 public:
  Builder(const Options& options, const DiscoveryState& state)
      : options_(options), state_(state), slug_(EntitySlug(options.node_id)) {}

  [[nodiscard]] json Build() const {
    json cmps = Buttons();
    cmps.update(Sensors());
    cmps.update(BinarySensors());
    cmps["safety_point"] = SafetyPointSelect();
    cmps["event"] = LifecycleEvent();
    json device{{"identifiers", json::array({options_.node_id})},
                {"name", options_.device_name},
                {"manufacturer", options_.manufacturer},
                {"model", options_.model}};
    if (!options_.sw_version.empty()) device["sw_version"] = options_.sw_version;

    json origin{{"name", "safepoint"}};
    if (!options_.sw_version.empty()) origin["sw"] = options_.sw_version;
    if (!options_.support_url.empty()) origin["url"] = options_.support_url;

    return json{{"dev", std::move(device)},
                {"o", std::move(origin)},
                {"cmps", std::move(cmps)},
                {"qos", 1}};
  }

  // The buttons: the decision, back up and roll back now, and the conflict resolutions.
  [[nodiscard]] json Buttons() const {
    json cmps = json::object();
    cmps["continue"] = Button("continue", "Continue", "mdi:check-circle", "continue", "PRESS",
                              DecisionAvailabilityTopic(options_));
    cmps["cancel"] = Button("cancel", "Cancel", "mdi:close-circle", "cancel", "PRESS",
                            DecisionAvailabilityTopic(options_));
    cmps["backup"] = Button("backup", "Back up now", "mdi:content-save", "backup", "PRESS", "");
    cmps["rollback"] =
        Button("rollback", "Roll back", "mdi:backup-restore", "rollback", "PRESS", "");
    cmps["overwrite"] = Button("overwrite", "Overwrite conflicts", "mdi:file-replace", "resolve",
                               R"({"action":"overwrite"})", ConflictAvailabilityTopic(options_));
    cmps["merge"] = Button("merge", "Merge conflicts", "mdi:call-merge", "resolve",
                           R"({"action":"merge"})", ConflictAvailabilityTopic(options_));
    cmps["abort"] = Button("abort", "Abort rollback", "mdi:cancel", "resolve",
                           R"({"action":"abort"})", ConflictAvailabilityTopic(options_));
    return cmps;
  }

  // The safety point the "Roll back" button uses.
  [[nodiscard]] json SafetyPointSelect() const {
    json select = Common("select", "safety_point", "Safety point", "mdi:history", "");
    select["command_topic"] = options_.base_topic + "/cmd/select";
    select["state_topic"] = SafetyPointsTopic(options_);
    select["value_template"] = "{{ value_json.selected if value_json.selected else 'None' }}";
    select["options"] = state_.safety_points;
    return select;
  }

  // The status sensors: state, last safety point, count and progress.
  [[nodiscard]] json Sensors() const {
    json cmps = json::object();
    json status =
        StatusSensor("sensor", "status", "Status", "mdi:shield-sync", "{{ value_json.state }}");
    status["device_class"] = "enum";
    status["options"] = StatusOptions();
    status["json_attributes_topic"] = StatusTopic();
    status["json_attributes_template"] =
        "{{ {'operation': value_json.operation, 'pending': value_json.pending, "
        "'last_error': value_json.last_error} | tojson }}";
    cmps["status"] = std::move(status);

    json last = StatusSensor("sensor", "last_backup", "Last safety point", "mdi:clock-check",
                             "{{ value_json.last_backup.time if value_json.last_backup "
                             "else 'None' }}");
    last["device_class"] = "timestamp";
    cmps["last_backup"] = std::move(last);

    const bool megabytes = options_.size_unit == SizeUnit::kMegabytes;
    json size = StatusSensor(
        "sensor", "last_backup_size", "Last safety point size", "",
        megabytes ? "{{ (value_json.last_backup.bytes / 1000000) | round(2) "
                    "if value_json.last_backup else 'None' }}"
                  : "{{ value_json.last_backup.bytes if value_json.last_backup else 'None' }}");
    size["device_class"] = "data_size";
    size["unit_of_measurement"] = megabytes ? "MB" : "B";
    if (megabytes) size["suggested_display_precision"] = 1;
    size["entity_category"] = "diagnostic";
    cmps["last_backup_size"] = std::move(size);

    json files =
        StatusSensor("sensor", "last_backup_files", "Last safety point files", "mdi:file-multiple",
                     "{{ value_json.last_backup.files if value_json.last_backup else 'None' }}");
    files["unit_of_measurement"] = "files";
    files["entity_category"] = "diagnostic";
    cmps["last_backup_files"] = std::move(files);

    json count = Common("sensor", "safety_points", "Safety points", "mdi:archive", "");
    count["state_topic"] = SafetyPointsTopic(options_);
    count["value_template"] = "{{ value_json.count }}";
    count["state_class"] = "measurement";
    count["entity_category"] = "diagnostic";
    cmps["safety_points"] = std::move(count);

    json progress =
        StatusSensor("sensor", "progress", "Progress", "mdi:progress-clock",
                     "{{ value_json.progress if value_json.progress is not none else 0 }}");
    progress["unit_of_measurement"] = "%";
    cmps["progress"] = std::move(progress);
    return cmps;
  }

  // Awaiting confirmation, and a problem to look at.
  [[nodiscard]] json BinarySensors() const {
    json cmps = json::object();
    cmps["awaiting_confirmation"] = StatusSensor(
        "binary_sensor", "awaiting_confirmation", "Awaiting confirmation", "mdi:help-circle",
        "{{ 'ON' if value_json.state == 'awaiting_confirmation' else 'OFF' }}");
    json problem = StatusSensor(
        "binary_sensor", "problem", "Problem", "",
        "{{ 'ON' if value_json.state in ['error', 'awaiting_conflict_resolution'] else 'OFF' }}");
    problem["device_class"] = "problem";
    cmps["problem"] = std::move(problem);
    return cmps;
  }

  // The lifecycle's events (update_succeeded, rollback_completed, ...).
  [[nodiscard]] json LifecycleEvent() const {
    json event = Common("event", "event", "Lifecycle event", "mdi:bell-ring", "");
    event["state_topic"] = options_.base_topic + "/event";
    event["event_types"] = EventTypes();
    return event;
  }

 private:
  [[nodiscard]] std::string StatusTopic() const { return options_.base_topic + "/status"; }

  // Keys every component carries, `qos: 1` included. `gate`: a second availability topic
  // (availability_mode all).
  [[nodiscard]] json Common(std::string_view platform, std::string_view key, std::string_view name,
                            std::string_view icon, const std::string& gate) const {
    json availability = json::array({json{{"topic", options_.base_topic + "/availability"}}});
    json c{{"p", platform},
           {"name", name},
           {"unique_id", options_.node_id + "_" + std::string(key)},
           {"default_entity_id", std::string(platform) + "." + slug_ + "_" + std::string(key)},
           // Home Assistant before 2026.5 ignores the device-level `qos` of device discovery and
           // would subscribe and publish at QoS 0: a button press could be lost.
           {"qos", 1}};
    if (!icon.empty()) c["icon"] = icon;
    if (!gate.empty()) {
      availability.push_back(json{{"topic", gate}});
      c["availability_mode"] = "all";
    }
    c["availability"] = std::move(availability);
    return c;
  }

  [[nodiscard]] json Button(std::string_view key, std::string_view name, std::string_view icon,
                            std::string_view command, std::string_view press,
                            const std::string& gate) const {
    json c = Common("button", key, name, icon, gate);
    c["command_topic"] = options_.base_topic + "/cmd/" + std::string(command);
    c["payload_press"] = press;
    return c;
  }

  [[nodiscard]] json StatusSensor(std::string_view platform, std::string_view key,
                                  std::string_view name, std::string_view icon,
                                  std::string_view value_template) const {
    json c = Common(platform, key, name, icon, "");
    c["state_topic"] = StatusTopic();
    c["value_template"] = value_template;
    return c;
  }

  const Options& options_;
  const DiscoveryState& state_;
  std::string slug_;
};

}  // namespace

Status ValidateOptions(const Options& options) {
  if (options.node_id.empty() ||
      !std::all_of(options.node_id.begin(), options.node_id.end(), [](char c) {
        return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '_' || c == '-';
      })) {
    return Fail(ErrorCode::kBadInput, "node_id must be non-empty and only hold [a-zA-Z0-9_-]");
  }
  SP_RETURN_IF_ERROR(ValidateTopic("base_topic", options.base_topic));
  SP_RETURN_IF_ERROR(ValidateTopic("discovery_prefix", options.discovery_prefix));
  if (options.device_name.empty()) return Fail(ErrorCode::kBadInput, "device name is empty");
  return {};
}

std::string DiscoveryTopic(const Options& options) {
  return options.discovery_prefix + "/device/" + options.node_id + "/config";
}

std::string DecisionAvailabilityTopic(const Options& options) {
  return options.base_topic + "/availability/decision";
}

std::string ConflictAvailabilityTopic(const Options& options) {
  return options.base_topic + "/availability/conflict";
}

std::string SafetyPointsTopic(const Options& options) {
  return options.base_topic + "/safety_points";
}

const std::vector<std::string_view>& StatusOptions() {
  // Kept equal to service::StateNames(); tests/service/lifecycle_test.cc checks it.
  static const std::vector<std::string_view> states = {
      "idle",         "backing_up",   "awaiting_confirmation",        "updating",
      "health_check", "rolling_back", "awaiting_conflict_resolution", "error"};
  return states;
}

const std::vector<std::string_view>& EventTypes() {
  // Kept equal to service::EventTypeNames(); tests/service/lifecycle_test.cc checks it.
  static const std::vector<std::string_view> types = {
      "backup_completed",   "backup_failed",       "confirmation_requested", "update_continued",
      "update_cancelled",   "update_expired",      "update_succeeded",       "update_failed",
      "update_timed_out",   "health_check_failed", "rollback_started",       "rollback_completed",
      "rollback_conflicts", "rollback_aborted",    "rollback_failed",        "update_changes",
      "rollback_recovered"};
  return types;
}

nlohmann::json DeviceDiscovery(const Options& options, const DiscoveryState& state) {
  return Builder(options, state).Build();
}

std::vector<std::pair<std::string, std::string>> StateTopics(const Options& options,
                                                             const DiscoveryState& state) {
  json selected = nullptr;
  if (state.selected && std::find(state.safety_points.begin(), state.safety_points.end(),
                                  *state.selected) != state.safety_points.end()) {
    selected = *state.selected;
  }
  const json points{
      {"count", state.safety_points.size()}, {"ids", state.safety_points}, {"selected", selected}};
  return {
      {DecisionAvailabilityTopic(options),
       std::string(state.decision_pending ? kOnline : kOffline)},
      {ConflictAvailabilityTopic(options),
       std::string(state.conflict_pending ? kOnline : kOffline)},
      {SafetyPointsTopic(options), points.dump()},
  };
}

}  // namespace safepoint::discovery
