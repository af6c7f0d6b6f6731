#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

#include "core/sources/entities.h"
#include "core/sources/snapshot.h"
#include "service/lifecycle.h"

namespace safepoint::service {

// The exchange with Zigbee2MQTT's own backup (mqtt.zigbee2mqtt_backup): before a safety point,
// ask `<z2m base>/bridge/request/backup` with a transaction of ours, then take the safety point
// with its answer (the zip), or without it when the answer is an error or the deadline passes.
// Pure: it publishes and logs nothing; the controller does what it returns.
class Zigbee2MqttExchange {
 public:
  using TimePoint = std::chrono::system_clock::time_point;

  // The safety point to take now, with what came of the exchange in `live` (the zip, or a
  // warning saying why it is missing).
  struct Ready {
    StartBackup action;
    entities::EntitySnapshot entities;  // the mirror as it was at the request
    snapshot::LiveState live;
  };
  // What a message on the response topic meant.
  struct Answer {
    std::optional<Ready> ready;  // it was the answer to our request
    bool invalid = false;        // malformed (counted as an invalid message)
  };

  Zigbee2MqttExchange(std::string base_topic, std::chrono::milliseconds timeout)
      : base_topic_(std::move(base_topic)), timeout_(timeout) {}

  [[nodiscard]] std::string RequestTopic() const { return base_topic_ + "/bridge/request/backup"; }
  [[nodiscard]] std::string ResponseTopic() const {
    return base_topic_ + "/bridge/response/backup";
  }
  [[nodiscard]] bool Waiting() const { return wait_.has_value(); }
  [[nodiscard]] std::optional<TimePoint> Deadline() const {
    return wait_ ? std::optional(wait_->deadline) : std::nullopt;
  }

  // Starts waiting for an answer to `transaction`; returns the request's payload.
  // REQUIRES: !Waiting().
  [[nodiscard]] std::string Begin(StartBackup action, entities::EntitySnapshot entities,
                                  std::string transaction, TimePoint now);
  // The request could not be sent (`why`): the safety point is taken without the zip.
  [[nodiscard]] Ready Abandon(const std::string& why);
  // A message on ResponseTopic(). Answers of other clients and retained ones are ignored.
  [[nodiscard]] Answer OnResponse(std::string_view payload, bool retained);
  // The safety point without the zip once the deadline has passed.
  [[nodiscard]] std::optional<Ready> OnTick(TimePoint now);

 private:
  struct Wait {
    StartBackup action;
    entities::EntitySnapshot entities;
    std::string transaction;
    TimePoint deadline;
  };
  Ready Finish(snapshot::LiveState live);

  std::string base_topic_;
  std::chrono::milliseconds timeout_;
  std::optional<Wait> wait_;
};

// The largest answer taken: Zigbee2MQTT's backup (coordinator backup, database, configuration)
// as base64 in JSON.
inline constexpr std::size_t kMaxZigbee2MqttBackupBytes = 64u << 20;

}  // namespace safepoint::service
