#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "core/config/config.h"
#include "core/sources/entities.h"

namespace safepoint::service {

// The entity mirror: the latest payload of every accepted topic (config mqtt.mirror), with its
// retained flag and receive time, within limits. Zigbee2MQTT does not retain device state by
// default, so this live mirror is what makes a safety point's state/entities.json complete.
// Not thread-safe: owned by the service's state thread.
//
// Memory: at most max_topics payloads of at most max_payload_bytes each, plus the topics (the
// broker bounds their length); nothing is parsed on the way in. A payload of 512 bytes or more
// is kept zstd-compressed when that saves an eighth (entities::KeepPayload), so typical JSON
// states take a fraction of that bound; payloads that do not compress can still reach it. A
// snapshot shares the payloads (a pointer per topic), so taking one copies no payload; a payload
// replaced while a backup writes a snapshot lives until that backup ends. docs/format-entities.md,
// "Limits".
class EntityMirror {
 public:
  explicit EntityMirror(config::MirrorConfig config) : config_(std::move(config)) {}

  // Offers a received message. Returns true when the mirror keeps it. An empty payload removes
  // the topic (that is how a retained state is cleared). Over-limit topics and payloads are
  // dropped and counted.
  bool Offer(const std::string& topic, const std::string& payload, bool retained,
             std::chrono::system_clock::time_point now);

  // The mirror as it is now (sharing the payloads).
  [[nodiscard]] entities::EntitySnapshot Snapshot(std::chrono::system_clock::time_point now) const;

  [[nodiscard]] std::size_t size() const { return topics_.size(); }
  [[nodiscard]] std::uint64_t dropped_topics() const { return dropped_topics_; }
  [[nodiscard]] std::uint64_t dropped_payloads() const { return dropped_payloads_; }

 private:
  struct Value {
    std::shared_ptr<const std::string> payload;  // entities::KeepPayload
    bool retained = false;
    std::chrono::system_clock::time_point received_at;
    bool compressed = false;
  };
  config::MirrorConfig config_;
  std::map<std::string, Value> topics_;
  std::uint64_t dropped_topics_ = 0;
  std::uint64_t dropped_payloads_ = 0;
  std::string last_dropped_payload_;  // "<topic> (<size> bytes)"
};

}  // namespace safepoint::service
