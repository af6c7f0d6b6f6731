#include "discovery/discovery.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstddef>
#include <set>
#include <string>

namespace safepoint::discovery {
namespace {

using nlohmann::json;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

Options TestOptions() {
  Options options;
  options.sw_version = "0.1.0";
  options.support_url = "https://example.invalid/safepoint";
  return options;
}

DiscoveryState TestState() {
  DiscoveryState state;
  state.safety_points = {"2026-02-11_13-10-54-2", "2026-02-11_13-10-54", "2026-02-10_04-00-00"};
  state.selected = "2026-02-11_13-10-54";
  return state;
}

// Options Home Assistant documents for the platforms used here (full names; plus the
// abbreviations this payload uses: `p` for platform).
const std::set<std::string>& KnownComponentKeys() {
  static const std::set<std::string> kKeys = {
      "p",
      "name",
      "unique_id",
      "default_entity_id",
      "icon",
      "availability",
      "availability_mode",
      "command_topic",
      "payload_press",
      "state_topic",
      "value_template",
      "options",
      "device_class",
      "unit_of_measurement",
      "suggested_display_precision",
      "state_class",
      "entity_category",
      "json_attributes_topic",
      "json_attributes_template",
      "event_types",
      "qos",
  };
  return kKeys;
}

// Recursively collects every object key.
void CollectKeys(const json& j, std::vector<std::string>& keys) {
  if (j.is_object()) {
    for (const auto& [key, value] : j.items()) {
      keys.push_back(key);
      CollectKeys(value, keys);
    }
  } else if (j.is_array()) {
    for (const auto& value : j) CollectKeys(value, keys);
  }
}

// [a-zA-Z0-9_-]+ (HA's id charset). No std::regex: GCC 12 warns inside it under sanitizers.
bool IsIdCharset(const std::string& s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-';
  });
}

// "<platform>.<object id>" with a lower-case [a-z0-9_]+ object id.
bool IsEntityId(const std::string& s, const std::string& platform) {
  const std::string prefix = platform + ".";
  if (s.size() <= prefix.size() || s.compare(0, prefix.size(), prefix) != 0) return false;
  return std::all_of(s.begin() + static_cast<std::ptrdiff_t>(prefix.size()), s.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
  });
}

std::vector<std::string> AvailabilityTopics(const json& component) {
  std::vector<std::string> topics;
  for (const auto& entry : component.at("availability")) topics.push_back(entry.at("topic"));
  return topics;
}

TEST(Discovery, TopicIsDeviceBased) {
  EXPECT_EQ(DiscoveryTopic(Options{}), "homeassistant/device/safepoint/config");
  Options options;
  options.discovery_prefix = "ha";
  options.node_id = "safepoint-2";
  EXPECT_EQ(DiscoveryTopic(options), "ha/device/safepoint-2/config");
}

TEST(Discovery, HasDeviceAndOrigin) {
  const json payload = DeviceDiscovery(TestOptions(), TestState());
  EXPECT_EQ(payload.at("dev"), json::parse(R"({"identifiers":["safepoint"],"name":"Safepoint",
    "manufacturer":"safepoint","model":"Safety point service","sw_version":"0.1.0"})"));
  EXPECT_EQ(payload.at("o"), json::parse(R"({"name":"safepoint","sw":"0.1.0",
    "url":"https://example.invalid/safepoint"})"));
  // Top level: only the documented device-discovery keys.
  for (const auto& [key, value] : payload.items()) {
    EXPECT_TRUE(key == "dev" || key == "o" || key == "cmps" || key == "qos") << key;
  }
}

TEST(Discovery, OriginWithoutOptionalFields) {
  const json payload = DeviceDiscovery(Options{}, DiscoveryState{});
  EXPECT_EQ(payload.at("o"), json::parse(R"({"name":"safepoint"})"));
  EXPECT_FALSE(payload.at("dev").contains("sw_version"));
  EXPECT_FALSE(payload.at("dev").at("identifiers").empty());
}

TEST(Discovery, DeclaresEveryEntity) {
  const json cmps = DeviceDiscovery(TestOptions(), TestState()).at("cmps");
  std::vector<std::string> keys;
  for (const auto& [key, value] : cmps.items())
    keys.push_back(key + ":" + value.at("p").get<std::string>());
  EXPECT_THAT(keys,
              ::testing::UnorderedElementsAre(
                  "continue:button", "cancel:button", "backup:button", "rollback:button",
                  "overwrite:button", "merge:button", "abort:button", "safety_point:select",
                  "status:sensor", "last_backup:sensor", "last_backup_size:sensor",
                  "last_backup_files:sensor", "safety_points:sensor", "progress:sensor",
                  "awaiting_confirmation:binary_sensor", "problem:binary_sensor", "event:event"));
}

TEST(Discovery, EveryComponentFollowsHomeAssistantRules) {
  const Options options = TestOptions();
  const json payload = DeviceDiscovery(options, TestState());
  std::set<std::string> unique_ids;
  std::set<std::string> entity_ids;

  for (const auto& [key, c] : payload.at("cmps").items()) {
    SCOPED_TRACE(key);
    EXPECT_TRUE(IsIdCharset(key));
    const std::string platform = c.at("p");
    // unique_id: present, valid, unique across the device.
    ASSERT_TRUE(c.contains("unique_id"));
    const std::string unique_id = c.at("unique_id");
    EXPECT_TRUE(IsIdCharset(unique_id)) << unique_id;
    EXPECT_TRUE(unique_ids.insert(unique_id).second) << "duplicate " << unique_id;
    // default_entity_id (never object_id): "<platform>.<object id>", unique.
    ASSERT_TRUE(c.contains("default_entity_id"));
    const std::string default_entity_id = c.at("default_entity_id");
    EXPECT_TRUE(IsEntityId(default_entity_id, platform)) << default_entity_id;
    EXPECT_EQ(default_entity_id.substr(0, platform.size() + 1), platform + ".");
    EXPECT_TRUE(entity_ids.insert(default_entity_id).second);
    EXPECT_TRUE(c.contains("name"));
    // Only documented option names.
    for (const auto& [option, unused] : c.items()) {
      EXPECT_TRUE(KnownComponentKeys().count(option)) << "unknown option " << option;
    }
    // Required options per platform.
    if (platform == "button") {
      EXPECT_TRUE(c.at("command_topic").is_string());
      EXPECT_TRUE(c.at("payload_press").is_string());
    } else if (platform == "select") {
      EXPECT_TRUE(c.at("command_topic").is_string());
      EXPECT_TRUE(c.at("options").is_array());
      for (const auto& option : c.at("options")) EXPECT_TRUE(option.is_string());
    } else if (platform == "sensor" || platform == "binary_sensor") {
      EXPECT_TRUE(c.at("state_topic").is_string());
    } else if (platform == "event") {
      EXPECT_TRUE(c.at("state_topic").is_string());
      EXPECT_FALSE(c.at("event_types").empty());
    } else {
      ADD_FAILURE() << "unexpected platform " << platform;
    }
    // Every topic lives under the base topic.
    for (const char* topic_key : {"command_topic", "state_topic", "json_attributes_topic"}) {
      if (c.contains(topic_key)) {
        EXPECT_EQ(c.at(topic_key).get<std::string>().rfind(options.base_topic + "/", 0), 0u);
      }
    }
    // Availability: the service's own topic always comes first.
    const auto topics = AvailabilityTopics(c);
    ASSERT_FALSE(topics.empty());
    EXPECT_EQ(topics[0], "safepoint/availability");
    if (topics.size() > 1) {
      EXPECT_EQ(c.at("availability_mode"), "all");
    } else {
      EXPECT_FALSE(c.contains("availability_mode"));
    }
  }
}

TEST(Discovery, NoObjectIdAnywhere) {
  std::vector<std::string> keys;
  CollectKeys(DeviceDiscovery(TestOptions(), TestState()), keys);
  for (const auto& key : keys) {
    EXPECT_NE(key, "object_id");
    EXPECT_NE(key, "obj_id");
  }
  EXPECT_FALSE(keys.empty());
}

TEST(Discovery, DecisionAndConflictButtonsAreGated) {
  const json cmps = DeviceDiscovery(TestOptions(), TestState()).at("cmps");
  for (const char* key : {"continue", "cancel"}) {
    EXPECT_THAT(AvailabilityTopics(cmps.at(key)),
                ElementsAre("safepoint/availability", "safepoint/availability/decision"))
        << key;
  }
  for (const char* key : {"overwrite", "merge", "abort"}) {
    EXPECT_THAT(AvailabilityTopics(cmps.at(key)),
                ElementsAre("safepoint/availability", "safepoint/availability/conflict"))
        << key;
  }
  for (const char* key : {"backup", "rollback", "status", "safety_point"}) {
    EXPECT_THAT(AvailabilityTopics(cmps.at(key)), ElementsAre("safepoint/availability")) << key;
  }
}

TEST(Discovery, ButtonsPublishCommands) {
  const json cmps = DeviceDiscovery(TestOptions(), TestState()).at("cmps");
  EXPECT_EQ(cmps.at("continue").at("command_topic"), "safepoint/cmd/continue");
  EXPECT_EQ(cmps.at("continue").at("payload_press"), "PRESS");
  EXPECT_EQ(cmps.at("cancel").at("command_topic"), "safepoint/cmd/cancel");
  EXPECT_EQ(cmps.at("backup").at("command_topic"), "safepoint/cmd/backup");
  EXPECT_EQ(cmps.at("backup").at("name"), "Back up now");
  EXPECT_EQ(cmps.at("rollback").at("command_topic"), "safepoint/cmd/rollback");
  EXPECT_EQ(cmps.at("rollback").at("payload_press"), "PRESS");
  for (const char* action : {"overwrite", "merge", "abort"}) {
    EXPECT_EQ(cmps.at(action).at("command_topic"), "safepoint/cmd/resolve");
    EXPECT_EQ(json::parse(cmps.at(action).at("payload_press").get<std::string>()),
              json({{"action", action}}));
  }
}

TEST(Discovery, SelectListsSafetyPointsNewestFirst) {
  const json select = DeviceDiscovery(TestOptions(), TestState()).at("cmps").at("safety_point");
  EXPECT_EQ(select.at("options"),
            json({"2026-02-11_13-10-54-2", "2026-02-11_13-10-54", "2026-02-10_04-00-00"}));
  EXPECT_EQ(select.at("command_topic"), "safepoint/cmd/select");
  EXPECT_EQ(select.at("state_topic"), "safepoint/safety_points");
  // No safety points yet: an empty option list is allowed.
  EXPECT_EQ(
      DeviceDiscovery(TestOptions(), DiscoveryState{}).at("cmps").at("safety_point").at("options"),
      json::array());
}

TEST(Discovery, SensorsUseValidDeviceClasses) {
  const json cmps = DeviceDiscovery(TestOptions(), TestState()).at("cmps");
  const json& status = cmps.at("status");
  EXPECT_EQ(status.at("device_class"), "enum");
  EXPECT_EQ(status.at("options"),
            json({"idle", "backing_up", "awaiting_confirmation", "updating", "health_check",
                  "rolling_back", "awaiting_conflict_resolution", "error"}));
  // HA refuses a unit or state class on enum and timestamp sensors.
  for (const char* key : {"status", "last_backup"}) {
    EXPECT_FALSE(cmps.at(key).contains("unit_of_measurement")) << key;
    EXPECT_FALSE(cmps.at(key).contains("state_class")) << key;
  }
  EXPECT_EQ(status.at("state_topic"), "safepoint/status");
  EXPECT_EQ(status.at("value_template"), "{{ value_json.state }}");
  EXPECT_EQ(cmps.at("last_backup").at("device_class"), "timestamp");
  EXPECT_EQ(cmps.at("last_backup_size").at("device_class"), "data_size");
  EXPECT_EQ(cmps.at("last_backup_size").at("unit_of_measurement"), "MB");
  EXPECT_EQ(cmps.at("progress").at("unit_of_measurement"), "%");
  EXPECT_EQ(cmps.at("safety_points").at("state_topic"), "safepoint/safety_points");
  EXPECT_EQ(cmps.at("problem").at("device_class"), "problem");
  EXPECT_FALSE(cmps.at("awaiting_confirmation").contains("device_class"));
  EXPECT_THAT(cmps.at("awaiting_confirmation").at("value_template").get<std::string>(),
              HasSubstr("'awaiting_confirmation'"));
  const json& event = cmps.at("event");
  EXPECT_EQ(event.at("state_topic"), "safepoint/event");
  EXPECT_EQ(event.at("event_types").size(), EventTypes().size());
  EXPECT_EQ(event.at("event_types").at(0), "backup_completed");
}

TEST(Discovery, SizeInBytes) {
  Options options = TestOptions();
  options.size_unit = SizeUnit::kBytes;
  const json size = DeviceDiscovery(options, TestState()).at("cmps").at("last_backup_size");
  EXPECT_EQ(size.at("unit_of_measurement"), "B");
  EXPECT_FALSE(size.contains("suggested_display_precision"));
  EXPECT_THAT(size.at("value_template").get<std::string>(),
              HasSubstr("value_json.last_backup.bytes if"));
}

TEST(Discovery, EntityIdsFollowTheNodeId) {
  Options options = TestOptions();
  options.node_id = "Safe-Point";
  const json cmps = DeviceDiscovery(options, TestState()).at("cmps");
  EXPECT_EQ(cmps.at("continue").at("unique_id"), "Safe-Point_continue");
  EXPECT_EQ(cmps.at("continue").at("default_entity_id"), "button.safe_point_continue");
  EXPECT_EQ(cmps.at("status").at("default_entity_id"), "sensor.safe_point_status");
  EXPECT_EQ(DeviceDiscovery(options, TestState()).at("dev").at("identifiers"),
            json({"Safe-Point"}));
}

TEST(Discovery, CustomBaseTopic) {
  Options options = TestOptions();
  options.base_topic = "home/safepoint";
  const json cmps = DeviceDiscovery(options, TestState()).at("cmps");
  EXPECT_EQ(cmps.at("cancel").at("command_topic"), "home/safepoint/cmd/cancel");
  EXPECT_THAT(AvailabilityTopics(cmps.at("cancel")),
              ElementsAre("home/safepoint/availability", "home/safepoint/availability/decision"));
}

// Finding 7 of issue 9: Home Assistant before 2026.5 ignores the device-level `qos`, so a
// component without its own subscribed and published at QoS 0 and a button press could be lost.
TEST(Discovery, ButtonPressesCanBeLostEveryComponentCarriesQos1) {
  const json payload = DeviceDiscovery(TestOptions(), TestState());
  EXPECT_EQ(payload.at("qos"), 1);
  for (const auto& [key, component] : payload.at("cmps").items()) {
    ASSERT_TRUE(component.contains("qos")) << key;
    EXPECT_EQ(component.at("qos"), json(1)) << key;
  }
  // The exact component of a decision button, a resolve button and the select.
  const json& cmps = payload.at("cmps");
  EXPECT_EQ(cmps.at("continue"), json::parse(R"({
    "p": "button", "name": "Continue", "unique_id": "safepoint_continue",
    "default_entity_id": "button.safepoint_continue", "qos": 1, "icon": "mdi:check-circle",
    "command_topic": "safepoint/cmd/continue", "payload_press": "PRESS",
    "availability": [{"topic": "safepoint/availability"},
                     {"topic": "safepoint/availability/decision"}],
    "availability_mode": "all"})"));
  EXPECT_EQ(cmps.at("merge"), json::parse(R"({
    "p": "button", "name": "Merge conflicts", "unique_id": "safepoint_merge",
    "default_entity_id": "button.safepoint_merge", "qos": 1, "icon": "mdi:call-merge",
    "command_topic": "safepoint/cmd/resolve", "payload_press": "{\"action\":\"merge\"}",
    "availability": [{"topic": "safepoint/availability"},
                     {"topic": "safepoint/availability/conflict"}],
    "availability_mode": "all"})"));
  EXPECT_EQ(cmps.at("safety_point"), json::parse(R"({
    "p": "select", "name": "Safety point", "unique_id": "safepoint_safety_point",
    "default_entity_id": "select.safepoint_safety_point", "qos": 1, "icon": "mdi:history",
    "availability": [{"topic": "safepoint/availability"}],
    "command_topic": "safepoint/cmd/select", "state_topic": "safepoint/safety_points",
    "value_template": "{{ value_json.selected if value_json.selected else 'None' }}",
    "options": ["2026-02-11_13-10-54-2", "2026-02-11_13-10-54", "2026-02-10_04-00-00"]})"));
  // Every component that commands anything is among them.
  int commanding = 0;
  for (const auto& [key, component] : cmps.items()) {
    if (component.contains("command_topic")) ++commanding;
  }
  EXPECT_EQ(commanding, 8);
}

TEST(StateTopics, AvailabilityGroupsAndSafetyPoints) {
  DiscoveryState state = TestState();
  state.decision_pending = true;
  const auto topics = StateTopics(TestOptions(), state);
  ASSERT_EQ(topics.size(), 3u);
  EXPECT_EQ(topics[0],
            std::make_pair(std::string("safepoint/availability/decision"), std::string("online")));
  EXPECT_EQ(topics[1],
            std::make_pair(std::string("safepoint/availability/conflict"), std::string("offline")));
  EXPECT_EQ(topics[2].first, "safepoint/safety_points");
  EXPECT_EQ(json::parse(topics[2].second), json::parse(R"({"count":3,
    "ids":["2026-02-11_13-10-54-2","2026-02-11_13-10-54","2026-02-10_04-00-00"],
    "selected":"2026-02-11_13-10-54"})"));

  state.decision_pending = false;
  state.conflict_pending = true;
  state.selected = "2020-01-01_00-00-00";  // deleted meanwhile: no selection
  const auto later = StateTopics(TestOptions(), state);
  EXPECT_EQ(later[0].second, "offline");
  EXPECT_EQ(later[1].second, "online");
  EXPECT_EQ(json::parse(later[2].second)["selected"], nullptr);
}

TEST(Options, Validation) {
  EXPECT_TRUE(ValidateOptions(Options{}));
  const auto expect_bad = [](Options options, const std::string& needle) {
    const auto status = ValidateOptions(options);
    ASSERT_FALSE(status);
    EXPECT_EQ(status.error().code, ErrorCode::kBadInput);
    EXPECT_THAT(status.error().message, HasSubstr(needle));
  };
  Options o;
  o.node_id = "safe point";
  expect_bad(o, "node_id");
  o.node_id = "";
  expect_bad(o, "node_id");
  o.node_id = "a/b";
  expect_bad(o, "node_id");
  o = Options{};
  o.base_topic = "safepoint/#";
  expect_bad(o, "base_topic");
  o.base_topic = "/safepoint";
  expect_bad(o, "base_topic");
  o.base_topic = "safepoint/";
  expect_bad(o, "base_topic");
  o = Options{};
  o.discovery_prefix = "home+assistant";
  expect_bad(o, "discovery_prefix");
  o = Options{};
  o.node_id = "Node_1-a";
  o.base_topic = "home/safepoint";
  EXPECT_TRUE(ValidateOptions(o));
}

}  // namespace
}  // namespace safepoint::discovery
