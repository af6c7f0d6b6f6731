#include "service/zigbee2mqtt.h"

#include <nlohmann/json.hpp>

#include "core/config/config.h"
#include "service/commands.h"

namespace safepoint::service {

std::string Zigbee2MqttExchange::Begin(StartBackup action, entities::EntitySnapshot entities,
                                       std::string transaction, TimePoint now) {
  std::string payload =
      nlohmann::json{{"transaction", transaction}}.dump(-1, ' ', false,
                                                        nlohmann::json::error_handler_t::replace);
  wait_ = Wait{std::move(action), std::move(entities), std::move(transaction), now + timeout_};
  return payload;
}

Zigbee2MqttExchange::Ready Zigbee2MqttExchange::Abandon(const std::string& why) {
  snapshot::LiveState live;
  live.warnings.push_back("Zigbee2MQTT backup not included: " + why);
  return Finish(std::move(live));
}

Zigbee2MqttExchange::Answer Zigbee2MqttExchange::OnResponse(std::string_view payload,
                                                           bool retained) {
  if (!wait_ || retained) return {};  // not ours, or an old answer kept by the broker
  auto r = ParseZigbee2MqttBackup(payload, kMaxZigbee2MqttBackupBytes);
  if (r && r->transaction != wait_->transaction) return {};  // another client's
  if (!r) {
    // Malformed: ours only if it carries our transaction; otherwise keep waiting.
    ParseOptions options;
    options.max_payload_bytes = kMaxZigbee2MqttBackupBytes;
    const auto t = ExtractTransaction(payload, options);
    if (!t || !t->is_string() || t->get<std::string>() != wait_->transaction) {
      return {.ready = std::nullopt, .invalid = true};
    }
    snapshot::LiveState live;
    live.warnings.push_back("Zigbee2MQTT backup not included: " + r.error().message);
    return {.ready = Finish(std::move(live)), .invalid = true};
  }
  snapshot::LiveState live;
  if (r->error) {
    live.warnings.push_back("Zigbee2MQTT backup not included: Zigbee2MQTT answered: " + *r->error);
  } else {
    live.zigbee2mqtt_backup = std::move(r->zip);
  }
  return {.ready = Finish(std::move(live)), .invalid = false};
}

std::optional<Zigbee2MqttExchange::Ready> Zigbee2MqttExchange::OnTick(TimePoint now) {
  if (!wait_ || now < wait_->deadline) return std::nullopt;
  snapshot::LiveState live;
  live.warnings.push_back("Zigbee2MQTT backup not included: no answer on " + ResponseTopic() +
                          " within " + config::FormatDuration(timeout_));
  return Finish(std::move(live));
}

Zigbee2MqttExchange::Ready Zigbee2MqttExchange::Finish(snapshot::LiveState live) {
  Ready ready{std::move(wait_->action), std::move(wait_->entities), std::move(live)};
  wait_.reset();
  return ready;
}

}  // namespace safepoint::service
