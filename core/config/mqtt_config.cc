// The `mqtt:` section: broker URL, topics, TLS files, the mirror and Zigbee2MQTT settings.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <filesystem>
#include <initializer_list>
#include <set>
#include <string_view>
#include <utility>

#include "core/base/glob.h"
#include "core/base/io.h"
#include "core/base/mqtt_names.h"
#include "core/base/utf8.h"
#include "core/config/config.h"
#include "core/config/reader.h"

namespace safepoint::config::internal {

namespace {

Result<std::string> GetReadableFile(const Ctx& c, const Item& item) {
  auto p = GetPath(c, item);
  if (!p) return tl::unexpected(p.error());
  if (::access(p->c_str(), R_OK) != 0) {
    const int err = errno;
    const std::string shown = item.node.Tag() == "!secret" ? "(value from !secret)" : *p;
    return Bad(c, item.mark, item.key, "cannot read " + shown + ": " + std::strerror(err));
  }
  return p;
}

// mqtt.protocol: auto, 3.1.1 or 5.
Result<MqttProtocol> ParseProtocol(const Ctx& c, const Item& item) {
  auto p = GetStr(c, item);
  if (!p) return tl::unexpected(p.error());
  if (p->value == "auto") return MqttProtocol::kAuto;
  if (p->value == "3.1.1" || p->value == "311") return MqttProtocol::kV311;
  if (p->value == "5" || p->value == "5.0") return MqttProtocol::kV5;
  return Bad(c, item.mark, item.key, "expected auto, \"3.1.1\" or 5, got " + p->Show());
}

// mqtt.tls, which needs an mqtts, ssl or wss url.
Status ParseMqttTls(const Ctx& c, const Section& s, MqttConfig& m) {
  auto tls = Section::Open(c, s.Sub("tls"), {"ca_file", "cert_file", "key_file", "verify"});
  if (!tls) return tl::unexpected(tls.error());
  if (const Item* i = tls->Get("ca_file"))
    SP_RETURN_IF_ERROR(Assign(m.tls.ca_file, GetReadableFile(c, *i)));
  if (const Item* i = tls->Get("cert_file"))
    SP_RETURN_IF_ERROR(Assign(m.tls.cert_file, GetReadableFile(c, *i)));
  if (const Item* i = tls->Get("key_file"))
    SP_RETURN_IF_ERROR(Assign(m.tls.key_file, GetReadableFile(c, *i)));
  if (const Item* i = tls->Get("verify")) SP_RETURN_IF_ERROR(Assign(m.tls.verify, GetBool(c, *i)));
  if (m.tls.cert_file.empty() != m.tls.key_file.empty()) {
    const Item sub = s.Sub("tls");
    return Bad(c, sub.mark, sub.key, "cert_file and key_file must be set together");
  }
  if (const Item* i = s.Get("tls"); i != nullptr && !MqttUsesTls(m)) {
    return Bad(c, i->mark, i->key, "tls is set but mqtt.url does not use mqtts or ssl");
  }
  return {};
}

// mqtt.mirror: the topics kept in a safety point.
Status ParseMirror(const Ctx& c, const Item& item, MirrorConfig& mirror) {
  auto section = Section::Open(c, item, {"filters", "exclude", "max_topics", "max_payload_bytes"});
  if (!section) return tl::unexpected(section.error());
  for (const char* name : {"filters", "exclude"}) {
    const Item* i = section->Get(name);
    if (i == nullptr) continue;
    const bool extended = std::string_view(name) == "exclude";
    auto items = GetList(c, *i);
    if (!items) return tl::unexpected(items.error());
    std::vector<std::string> list;
    for (const Item& e : *items) {
      auto f = GetStr(c, e);
      if (!f) return tl::unexpected(f.error());
      if (auto st = mqtt_names::CheckTopicFilter(f->value, extended); !st) {
        return Bad(c, e.mark, e.key, f->Show() + ": " + st.error().message);
      }
      list.push_back(std::move(f->value));
    }
    (extended ? mirror.exclude : mirror.filters) = std::move(list);
  }
  if (const Item* i = section->Get("max_topics")) {
    SP_RETURN_IF_ERROR(Assign(mirror.max_topics, GetInt(c, *i, 1, 10'000'000)));
  }
  if (const Item* i = section->Get("max_payload_bytes")) {
    SP_RETURN_IF_ERROR(Assign(mirror.max_payload_bytes, GetSize(c, *i, 1, 16ull << 20)));
  }
  return {};
}

}  // namespace

Status ParseMqtt(const Ctx& c, const Item& item, MqttConfig& m) {
  auto s =
      Section::Open(c, item,
                    {"url", "client_id", "username", "password", "protocol", "keepalive", "tls",
                     "base_topic", "discovery_prefix", "node_id", "mirror", "collect_wait",
                     "zigbee2mqtt_backup", "zigbee2mqtt_base_topic", "zigbee2mqtt_backup_timeout"});
  if (!s) return tl::unexpected(s.error());
  if (const Item* i = s->Get("url")) {
    auto u = GetStr(c, *i);
    if (!u) return tl::unexpected(u.error());
    if (auto url = mqtt_names::ParseBrokerUrl(u->value); !url) {
      // Never echoes a password written into the url.
      const std::string shown =
          u->secret ? u->Show() : "'" + mqtt_names::RedactedUrl(u->value) + "'";
      return Bad(c, i->mark, i->key, "bad url " + shown + ": " + url.error().message);
    }
    m.url = u->value;
  }
  if (const Item* i = s->Get("node_id")) {
    SP_RETURN_IF_ERROR(Assign(m.node_id, GetString(c, *i)));
    const bool ok =
        !m.node_id.empty() && std::all_of(m.node_id.begin(), m.node_id.end(), [](char ch) {
          return std::isalnum(static_cast<unsigned char>(ch)) || ch == '_' || ch == '-';
        });
    if (!ok) return Bad(c, i->mark, i->key, "must match [a-zA-Z0-9_-]+");
  }
  m.client_id = "safepoint-" + m.node_id;
  if (const Item* i = s->Get("client_id")) {
    SP_RETURN_IF_ERROR(Assign(m.client_id, GetString(c, *i)));
    if (m.client_id.empty() || m.client_id.size() > 65535) {
      return Bad(c, i->mark, i->key, "must be 1..65535 characters");
    }
  }
  if (const Item* i = s->Get("username")) SP_RETURN_IF_ERROR(Assign(m.username, GetString(c, *i)));
  if (const Item* i = s->Get("password")) {
    auto p = GetString(c, *i);
    if (!p) return tl::unexpected(p.error());
    m.password = std::move(*p);
  }
  if (const Item* i = s->Get("protocol"))
    SP_RETURN_IF_ERROR(Assign(m.protocol, ParseProtocol(c, *i)));
  if (const Item* i = s->Get("keepalive")) {
    SP_RETURN_IF_ERROR(Assign(
        m.keepalive, GetDuration(c, *i, std::chrono::seconds(1), std::chrono::seconds(65535))));
  }
  SP_RETURN_IF_ERROR(ParseMqttTls(c, *s, m));
  for (const auto& [name, field] :
       {std::pair<const char*, std::string*>{"base_topic", &m.base_topic},
        {"discovery_prefix", &m.discovery_prefix},
        {"zigbee2mqtt_base_topic", &m.zigbee2mqtt_base_topic}}) {
    if (const Item* i = s->Get(name)) {
      auto t = GetString(c, *i);
      if (!t) return tl::unexpected(t.error());
      if (auto st = mqtt_names::CheckBaseTopic(*t); !st) {
        return Bad(c, i->mark, i->key, st.error().message);
      }
      *field = *t;
    }
  }
  SP_RETURN_IF_ERROR(ParseMirror(c, s->Sub("mirror"), m.mirror));
  if (const Item* i = s->Get("collect_wait")) {
    SP_RETURN_IF_ERROR(
        Assign(m.collect_wait, GetDuration(c, *i, milliseconds(0), std::chrono::hours(1))));
  }
  if (const Item* i = s->Get("zigbee2mqtt_backup")) {
    SP_RETURN_IF_ERROR(Assign(m.zigbee2mqtt_backup, GetBool(c, *i)));
  }
  if (const Item* i = s->Get("zigbee2mqtt_backup_timeout")) {
    SP_RETURN_IF_ERROR(
        Assign(m.zigbee2mqtt_backup_timeout,
               GetDuration(c, *i, std::chrono::seconds(1), std::chrono::minutes(10))));
  }
  return {};
}

}  // namespace safepoint::config::internal
