#include "core/base/mqtt_names.h"

#include <algorithm>
#include <cctype>
#include <cstdint>

#include "core/base/utf8.h"

namespace safepoint::mqtt_names {
namespace {

constexpr std::string_view kSchemes = "mqtt://, mqtts://, tcp:// or ssl://";

tl::unexpected<Error> Bad(std::string message) {
  return Fail(ErrorCode::kBadInput, std::move(message));
}

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

struct HostPort {
  std::string host;  // without IPv6 brackets
  std::string port;  // empty when not given
};

// The code points of well-formed UTF-8 `s`, one at a time.
template <typename Fn>
void ForEachCodePoint(std::string_view s, Fn fn) {
  for (std::size_t i = 0; i < s.size();) {
    const auto b = static_cast<unsigned char>(s[i]);
    const std::size_t n = b < 0x80 ? 1 : b < 0xE0 ? 2 : b < 0xF0 ? 3 : 4;
    std::uint32_t cp = n == 1 ? b : n == 2 ? (b & 0x1Fu) : n == 3 ? (b & 0x0Fu) : (b & 0x07u);
    for (std::size_t k = 1; k < n; ++k)
      cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3Fu);
    fn(cp);
    i += n;
  }
}

// The UTF-8 an MQTT broker accepts in a topic (MQTT 3.1.1 section 1.5.3, 5.0 section 1.5.4):
// well-formed, and, as Mosquitto enforces (it disconnects a client that sends otherwise), no
// control characters (U+0000..U+001F, U+007F..U+009F) and no noncharacters (U+FDD0..U+FDEF,
// U+xFFFE, U+xFFFF).
Status CheckMqttUtf8(std::string_view s) {
  if (!IsValidUtf8(s)) return Bad("must be valid UTF-8");
  bool control = false;
  bool noncharacter = false;
  ForEachCodePoint(s, [&](std::uint32_t cp) {
    control |= cp <= 0x1F || (cp >= 0x7F && cp <= 0x9F);
    noncharacter |= (cp >= 0xFDD0 && cp <= 0xFDEF) || (cp & 0xFFFEu) == 0xFFFEu;
  });
  if (control) return Bad("must not contain control characters");
  if (noncharacter) return Bad("must not contain Unicode noncharacters");
  return {};
}

// Splits "host[:port]" or "[v6][:port]".
Result<HostPort> SplitHostPort(std::string_view rest) {
  HostPort out;
  std::string_view port_text;
  bool has_port = false;
  if (rest.front() == '[') {
    const auto close = rest.find(']');
    if (close == std::string_view::npos) {
      return Bad("unterminated IPv6 address");
    }
    out.host = std::string(rest.substr(1, close - 1));
    if (close + 1 < rest.size()) {
      if (rest[close + 1] != ':') return Bad("must be scheme://host[:port]");
      port_text = rest.substr(close + 2);
      has_port = true;
    }
  } else {
    const auto colon = rest.find(':');
    out.host = std::string(rest.substr(0, colon));
    if (colon != std::string_view::npos) {
      port_text = rest.substr(colon + 1);
      has_port = true;
    }
  }
  if (has_port && port_text.empty()) return Bad("empty port");
  out.port = std::string(port_text);
  return out;
}

}  // namespace

Result<BrokerUrl> ParseBrokerUrl(std::string_view url) {
  const auto sep = url.find("://");
  if (sep == std::string_view::npos) {
    return Bad("has no scheme (expected " + std::string(kSchemes) + ")");
  }
  const std::string scheme = Lower(url.substr(0, sep));
  BrokerUrl out;
  if (scheme == "mqtt" || scheme == "tcp") {
    out.tls = false;
  } else if (scheme == "mqtts" || scheme == "ssl") {
    out.tls = true;
  } else {
    std::string why =
        "unsupported scheme '" + scheme + "' (expected " + std::string(kSchemes) + ")";
    if (scheme == "ws" || scheme == "wss") why += "; MQTT over WebSocket is not supported";
    return Bad(std::move(why));
  }
  std::string_view rest = url.substr(sep + 3);
  if (rest.find('@') != std::string_view::npos) {
    // Not echoed: the url may hold a password.
    return Bad("must not contain credentials; use mqtt.username and mqtt.password");
  }
  if (!rest.empty() && rest.back() == '/') rest.remove_suffix(1);
  if (rest.empty() || rest.find_first_of("/?# ") != std::string_view::npos) {
    return Bad("must be scheme://host[:port]");
  }
  auto host_port = SplitHostPort(rest);
  if (!host_port) return tl::unexpected(std::move(host_port.error()));
  out.host = std::move(host_port->host);
  std::string port = std::move(host_port->port);
  if (out.host.empty()) return Bad("has no host");
  if (port.empty()) port = out.tls ? "8883" : "1883";
  if (port.size() > 5 ||
      !std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; }) ||
      std::stoi(port) < 1 || std::stoi(port) > 65535) {
    return Bad("invalid port '" + port + "'");
  }
  out.port = port;
  const bool ipv6 = out.host.find(':') != std::string::npos;
  out.paho_uri = std::string(out.tls ? "ssl://" : "tcp://") + (ipv6 ? "[" : "") + out.host +
                 (ipv6 ? "]" : "") + ":" + out.port;
  return out;
}

std::string RedactedUrl(std::string_view url) {
  const auto sep = url.find("://");
  if (sep == std::string_view::npos) return std::string(url);
  const auto authority_end = url.find_first_of("/?#", sep + 3);
  const auto at = url.substr(0, authority_end).rfind('@');
  if (at == std::string_view::npos || at < sep) return std::string(url);
  return std::string(url.substr(0, sep + 3)) + "***" + std::string(url.substr(at));
}

Status CheckTopicName(std::string_view topic) {
  if (topic.empty()) return Bad("must not be empty");
  if (topic.size() > kMaxTopicBytes) {
    return Bad("longer than " + std::to_string(kMaxTopicBytes) + " bytes");
  }
  if (topic.find_first_of("+#") != std::string_view::npos) {
    return Bad("must not contain '+' or '#'");
  }
  return CheckMqttUtf8(topic);
}

Status CheckBaseTopic(std::string_view topic) {
  SP_RETURN_IF_ERROR(CheckTopicName(topic));
  if (topic.front() == '/' || topic.back() == '/') {
    return Bad("must not start or end with '/'");
  }
  if (topic.find("//") != std::string_view::npos) {
    return Bad("must not contain empty levels");
  }
  return {};
}

Status CheckTopicFilter(std::string_view filter, bool hash_in_any_level) {
  if (filter.empty()) return Bad("empty topic filter");
  if (filter.size() > kMaxTopicBytes) return Bad("topic filter too long");
  SP_RETURN_IF_ERROR(CheckMqttUtf8(filter));
  std::size_t start = 0;
  while (true) {
    const std::size_t slash = filter.find('/', start);
    const bool last = slash == std::string_view::npos;
    const std::string_view level =
        filter.substr(start, last ? std::string_view::npos : slash - start);
    if (level.find_first_of("+#") != std::string_view::npos && level.size() != 1) {
      return Bad("'+' and '#' must be a whole level");
    }
    if (level == "#" && !last && !hash_in_any_level) {
      return Bad("'#' must be the last level");
    }
    if (last) return {};
    start = slash + 1;
  }
}

}  // namespace safepoint::mqtt_names
