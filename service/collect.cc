#include "service/collect.h"

#include <algorithm>

#include "mqtt/client.h"
#include "service/mirror.h"

namespace safepoint::service {

mqtt::ClientOptions ClientOptionsFor(const config::MqttConfig& m) {
  mqtt::ClientOptions o;
  o.url = m.url;
  o.client_id = m.client_id.empty() ? "safepoint-" + m.node_id : m.client_id;
  if (!m.username.empty()) o.username = m.username;
  if (m.password) o.password = Secret(std::string_view(*m.password));
  switch (m.protocol) {
    case config::MqttProtocol::kAuto:
      o.protocol = mqtt::kProtocolAuto;
      break;
    case config::MqttProtocol::kV311:
      o.protocol = 4;
      break;
    case config::MqttProtocol::kV5:
      o.protocol = 5;
      break;
  }
  o.keepalive = std::chrono::duration_cast<std::chrono::seconds>(m.keepalive);
  o.tls.ca_file = m.tls.ca_file;
  o.tls.cert_file = m.tls.cert_file;
  o.tls.key_file = m.tls.key_file;
  o.tls.verify = m.tls.verify;
  o.will_topic = m.base_topic + "/availability";
  o.will_payload = "offline";
  o.will_retain = true;
  return o;
}

Result<entities::EntitySnapshot> CollectRetainedStates(const config::Config& config,
                                                       const Clock& clock) {
  if (!config.mqtt) return Fail(ErrorCode::kBadInput, "no mqtt section in the configuration");
  const auto& m = *config.mqtt;
  mqtt::ClientOptions o = ClientOptionsFor(m);
  // A client id of its own, so it never kicks the running service off the broker; no will.
  o.client_id += "-collect";
  o.will_topic.clear();
  mqtt::Client client(std::move(o));
  const auto deadline = clock.Monotonic() + m.collect_wait;
  SP_RETURN_IF_ERROR(client.Connect(std::chrono::duration_cast<std::chrono::milliseconds>(
      std::max<std::chrono::milliseconds>(m.collect_wait, std::chrono::seconds(5)))));
  std::vector<std::pair<std::string, int>> filters;
  for (const auto& f : m.mirror.filters) filters.emplace_back(f, 0);
  SP_RETURN_IF_ERROR(client.Subscribe(filters));
  EntityMirror mirror(m.mirror);
  // Retained messages arrive right after subscribing; a pause means they are all here.
  constexpr auto kQuiet = std::chrono::milliseconds(300);
  while (clock.Monotonic() < deadline) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock.Monotonic());
    auto ev = client.WaitEvent(std::min(kQuiet, left));
    if (!ev) break;  // quiet
    if (ev->kind == mqtt::Event::Kind::kMessage && ev->message.retained) {
      mirror.Offer(ev->message.topic, ev->message.payload, true, clock.Now());
    }
  }
  client.Disconnect();
  auto snapshot = mirror.Snapshot(clock.Now());
  snapshot.source = "mqtt-retained";
  return snapshot;
}

}  // namespace safepoint::service
