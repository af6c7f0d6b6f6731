// The MQTT URL and topic rules (core/base/mqtt_names.h), checked against Mosquitto's own
// library as an independent oracle: a topic the service accepts is one the broker accepts, and
// the other way round.
#include "core/base/mqtt_names.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <mosquitto.h>

#include <random>
#include <string>
#include <vector>

namespace safepoint::mqtt_names {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

// What Mosquitto accepts as a topic name / a subscription filter (MQTT_RC 0 = success). Its
// checks take no empty topic into account (MQTT requires at least one character), so that is
// asserted on its own below.
bool BrokerAcceptsName(const std::string& t) {
  return mosquitto_validate_utf8(t.data(), static_cast<int>(t.size())) == MOSQ_ERR_SUCCESS &&
         mosquitto_pub_topic_check2(t.data(), t.size()) == MOSQ_ERR_SUCCESS;
}

bool BrokerAcceptsFilter(const std::string& t) {
  return mosquitto_validate_utf8(t.data(), static_cast<int>(t.size())) == MOSQ_ERR_SUCCESS &&
         mosquitto_sub_topic_check2(t.data(), t.size()) == MOSQ_ERR_SUCCESS;
}

// Random topics over the characters that matter: level separators, wildcards, ASCII, controls,
// multi-byte UTF-8 (German, Chinese, emoji), noncharacters, surrogates, overlong forms and
// stray bytes.
std::string RandomTopic(std::mt19937& rng) {
  static const std::vector<std::string> kPieces = {
      "/",
      "/",
      "+",
      "#",
      "a",
      "b",
      "home",
      "safepoint",
      " ",
      "-",
      "_",
      "$SYS",
      "\x01",
      "\x1f",
      "\x7f",
      "\n",
      std::string(1, '\0'),
      "k\xc3\xbc"
      "chenlicht",                 // küchenlicht
      "\xe5\xae\xa2\xe5\x8e\x85",  // 客厅
      "\xf0\x9f\x92\xa1",          // 💡
      "\xc2\x80",
      "\xc2\x9f",
      "\xc2\xa0",  // C1 controls and NBSP
      "\xef\xb7\x90",
      "\xef\xbf\xbe",
      "\xef\xbf\xbf",
      "\xf0\x9f\xbf\xbf",  // noncharacters
      "\xed\xa0\x80",      // a surrogate
      "\xc0\xaf",          // overlong '/'
      "\xff",
      "\x80",
      "\xe2\x82",  // stray and truncated bytes
  };
  std::uniform_int_distribution<std::size_t> count(1, 8);
  std::uniform_int_distribution<std::size_t> pick(0, kPieces.size() - 1);
  std::string t;
  for (std::size_t n = count(rng); n > 0; --n) t += kPieces[pick(rng)];
  return t;
}

TEST(MqttNames, TopicNamesAgreeWithMosquitto) {
  std::mt19937 rng(20261203);
  int accepted = 0;
  for (int i = 0; i < 20000; ++i) {
    const std::string t = RandomTopic(rng);
    const bool ours = CheckTopicName(t).has_value();
    ASSERT_EQ(ours, BrokerAcceptsName(t)) << "topic bytes: " << ::testing::PrintToString(t);
    accepted += ours;
  }
  // Both sides of the rule were exercised.
  EXPECT_GT(accepted, 1000);
  EXPECT_LT(accepted, 19000);
}

TEST(MqttNames, TopicFiltersAgreeWithMosquitto) {
  std::mt19937 rng(1804404001);
  int accepted = 0;
  for (int i = 0; i < 20000; ++i) {
    const std::string t = RandomTopic(rng);
    const bool ours = CheckTopicFilter(t).has_value();
    ASSERT_EQ(ours, BrokerAcceptsFilter(t)) << "filter bytes: " << ::testing::PrintToString(t);
    accepted += ours;
  }
  EXPECT_GT(accepted, 1000);
  EXPECT_LT(accepted, 19000);
}

TEST(MqttNames, LengthLimitIsTheProtocols) {
  const std::string longest(kMaxTopicBytes, 'a');
  EXPECT_TRUE(CheckTopicName(longest));
  EXPECT_TRUE(BrokerAcceptsName(longest));
  EXPECT_FALSE(CheckTopicName(longest + "a"));
  EXPECT_FALSE(BrokerAcceptsName(longest + "a"));
  EXPECT_FALSE(CheckTopicFilter(longest + "a"));
}

TEST(MqttNames, EmptyTopicsAreRefused) {
  EXPECT_EQ(CheckTopicName("").error().message, "must not be empty");
  EXPECT_EQ(CheckTopicFilter("").error().message, "empty topic filter");
  EXPECT_EQ(CheckBaseTopic("").error().message, "must not be empty");
}

TEST(MqttNames, BaseTopicsHaveNoEmptyLevels) {
  EXPECT_TRUE(CheckBaseTopic("safepoint"));
  EXPECT_TRUE(
      CheckBaseTopic("home/k\xc3\xbc"
                     "che/safepoint"));
  EXPECT_EQ(CheckBaseTopic("/safepoint").error().message, "must not start or end with '/'");
  EXPECT_EQ(CheckBaseTopic("safepoint/").error().message, "must not start or end with '/'");
  EXPECT_EQ(CheckBaseTopic("a//b").error().message, "must not contain empty levels");
  EXPECT_EQ(CheckBaseTopic("a/+").error().message, "must not contain '+' or '#'");
  EXPECT_EQ(CheckBaseTopic("a\x01").error().message, "must not contain control characters");
}

TEST(MqttNames, MirrorExcludesMayHaveHashInAnyLevel) {
  EXPECT_EQ(CheckTopicFilter("a/#/b").error().message, "'#' must be the last level");
  EXPECT_TRUE(CheckTopicFilter("a/#/b", /*hash_in_any_level=*/true));
  EXPECT_EQ(CheckTopicFilter("a/b#", true).error().message, "'+' and '#' must be a whole level");
}

TEST(MqttNames, BrokerUrls) {
  struct Case {
    std::string url;
    std::string host, port, paho_uri;
    bool tls;
  };
  const std::vector<Case> good = {
      {"mqtt://localhost", "localhost", "1883", "tcp://localhost:1883", false},
      {"MQTT://broker:1884/", "broker", "1884", "tcp://broker:1884", false},
      {"tcp://10.0.0.2:1", "10.0.0.2", "1", "tcp://10.0.0.2:1", false},
      {"mqtts://ha.local", "ha.local", "8883", "ssl://ha.local:8883", true},
      {"ssl://[::1]:65535", "::1", "65535", "ssl://[::1]:65535", true},
      {"mqtt://[fe80::1]", "fe80::1", "1883", "tcp://[fe80::1]:1883", false},
  };
  for (const auto& c : good) {
    auto u = ParseBrokerUrl(c.url);
    ASSERT_TRUE(u) << c.url << ": " << u.error().message;
    EXPECT_EQ(u->host, c.host) << c.url;
    EXPECT_EQ(u->port, c.port) << c.url;
    EXPECT_EQ(u->paho_uri, c.paho_uri) << c.url;
    EXPECT_EQ(u->tls, c.tls) << c.url;
  }
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"localhost:1883", "has no scheme"},
      {"http://broker", "unsupported scheme 'http'"},
      {"ws://broker/mqtt", "MQTT over WebSocket is not supported"},
      {"wss://broker:443/mqtt", "MQTT over WebSocket is not supported"},
      {"mqtt://broker/path", "must be scheme://host[:port]"},
      {"mqtt://broker?x=1", "must be scheme://host[:port]"},
      {"mqtt://", "must be scheme://host[:port]"},
      {"mqtt://:1883", "has no host"},
      {"mqtt://[]:1883", "has no host"},
      {"mqtt://[::1", "unterminated IPv6 address"},
      {"mqtt://[::1]x", "must be scheme://host[:port]"},
      {"mqtt://broker:", "empty port"},
      {"mqtt://broker:0", "invalid port '0'"},
      {"mqtt://broker:65536", "invalid port '65536'"},
      {"mqtt://broker:18x3", "invalid port '18x3'"},
      {"mqtt://broker:000001883", "invalid port '000001883'"},
  };
  for (const auto& [url, why] : bad) {
    auto u = ParseBrokerUrl(url);
    ASSERT_FALSE(u) << url;
    EXPECT_EQ(u.error().code, ErrorCode::kBadInput);
    EXPECT_THAT(u.error().message, HasSubstr(why)) << url;
  }
  // Credentials are refused without being echoed.
  auto creds = ParseBrokerUrl("mqtt://user:hunter2@broker");
  ASSERT_FALSE(creds);
  EXPECT_THAT(creds.error().message, HasSubstr("must not contain credentials"));
  EXPECT_THAT(creds.error().message, Not(HasSubstr("hunter2")));
}

}  // namespace
}  // namespace safepoint::mqtt_names
