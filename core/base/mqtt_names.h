#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "core/base/result.h"

// The one set of rules for MQTT broker URLs and topic names, used by the configuration (when it
// is loaded), the MQTT client (before it talks to Paho) and discovery: a value the configuration
// accepts is one the client can use.
namespace safepoint::mqtt_names {

// MQTT's limit on the length of a topic (and of a client id).
inline constexpr std::size_t kMaxTopicBytes = 65535;

// Where the broker is.
struct BrokerUrl {
  std::string host;  // without IPv6 brackets
  std::string port;  // 1883 or 8883 unless given
  bool tls = false;
  std::string paho_uri;  // tcp://host:port or ssl://host:port
};

// Parses "scheme://host[:port][/]" with scheme mqtt or tcp (plain) or mqtts or ssl (TLS), in
// any case; an IPv6 host is written in brackets. Refuses credentials in the URL (use the
// username and password options), paths and queries, and ports out of 1..65535. WebSocket URLs
// (ws, wss) are refused: the service speaks MQTT over TCP only. The error says what is wrong
// without quoting the URL; a caller that shows it shows RedactedUrl(url).
[[nodiscard]] Result<BrokerUrl> ParseBrokerUrl(std::string_view url);

// `url` with any user information ("user:password@") replaced by "***@", for messages.
[[nodiscard]] std::string RedactedUrl(std::string_view url);

// A topic to publish on: not empty, at most kMaxTopicBytes, no '+' or '#', and UTF-8 a broker
// accepts (well-formed, no control characters or noncharacters: Mosquitto disconnects a client
// that publishes on such a topic).
[[nodiscard]] Status CheckTopicName(std::string_view topic);

// A topic the service builds others below (base topic, discovery prefix, Zigbee2MQTT's base):
// a topic name without a leading or trailing '/' and without empty levels.
[[nodiscard]] Status CheckBaseTopic(std::string_view topic);

// A subscription filter: UTF-8 as for a topic name, '+' and '#' only as whole levels, '#' only
// last unless
// `hash_in_any_level` (the mirror's exclude patterns match '#' at any level).
[[nodiscard]] Status CheckTopicFilter(std::string_view filter, bool hash_in_any_level = false);

}  // namespace safepoint::mqtt_names
