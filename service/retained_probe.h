#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

#include "core/base/result.h"
#include "mqtt/client.h"

namespace safepoint::service {

// Whether a topic holds a retained message right now (see RetainedProbe; the daemon's tests use
// a fake).
class RetainedCheck {
 public:
  virtual ~RetainedCheck() = default;
  // The payload retained on `topic` (std::nullopt when none); kIo when it cannot be known.
  [[nodiscard]] virtual Result<std::optional<std::string>> Retained(const std::string& topic) = 0;
};

// Asks the broker whether a topic holds a retained message right now. With MQTT 3.1.1 the
// broker clears the retain flag when it forwards a message to a client that is already
// subscribed, so a command published retained while the service is connected arrives looking
// live; the service asks this probe before acting on a command (docs/mqtt-api.md, "Retained
// commands").
//
// How: a second connection (client id `<client_id>-probe`, no will, always MQTT 3.1.1)
// subscribes to the topic (a new subscription, or a repeated identical one, makes the broker
// send the topic's retained message with the retain flag set) and to a marker topic of its own,
// then publishes a marker with a fresh nonce. The broker queues the retained message while it
// handles the SUBSCRIBE, before the marker the probe publishes after the SUBACK, and delivers
// one client's messages in order: when the marker comes back, every retained message has been
// seen. No sleep decides anything; `timeout` only bounds a broker that does not answer.
//
// Threading: one owner thread (the daemon's state thread). Blocking: one broker round trip
// (plus the first connect).
class RetainedProbe final : public RetainedCheck {
 public:
  // `marker_topic`: a topic nobody else uses (e.g. `<base>/probe/<client_id>`); the probe needs
  // to publish and subscribe to it.
  RetainedProbe(mqtt::ClientOptions options, std::string marker_topic,
                std::chrono::milliseconds timeout);

  // The payload retained on `topic` (std::nullopt when none). kIo when the broker cannot be
  // reached or the marker does not come back within the timeout.
  [[nodiscard]] Result<std::optional<std::string>> Retained(const std::string& topic) override;

 private:
  // Waits for the marker `nonce`; returns the payload retained on `topic` seen before it.
  Result<std::optional<std::string>> Collect(const std::string& topic, const std::string& nonce);

  mqtt::Client client_;
  std::string marker_topic_;
  std::chrono::milliseconds timeout_;
  std::uint64_t instance_;  // random, so markers of an earlier process never match
  std::uint64_t probes_ = 0;
};

// The options of the probe connection derived from the service's: its own client id, no will,
// MQTT 3.1.1, a small queue.
[[nodiscard]] mqtt::ClientOptions ProbeClientOptions(mqtt::ClientOptions service_options);

}  // namespace safepoint::service
