#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/base/result.h"
#include "core/base/secret.h"
#include "mqtt/transport.h"

namespace safepoint::mqtt {

// How to reach and talk to the broker. Defaults are what a Home Assistant Mosquitto add-on
// expects; every field is used as given (validation happens in Connect()).
struct ClientOptions {
  // Broker address: mqtt:// or tcp:// (plain), mqtts:// or ssl:// (TLS); port defaults to the
  // scheme's (1883 / 8883). Appears in error messages; must not embed credentials.
  std::string url;
  // Client identifier; must be unique on the broker (a second connection with the same id
  // takes the session over and disconnects the first one).
  std::string client_id;
  std::optional<std::string> username;
  // Kept in sodium_malloc memory by us. Paho copies it into ordinary heap memory for the
  // duration of each connect attempt; it never appears in a log line or an error message.
  std::optional<Secret> password;
  // MQTT protocol version: 4 (3.1.1), 5, or kProtocolAuto: 5, and 3.1.1 when the broker refuses
  // version 5 as unsupported (the choice is made at the first successful Connect and kept; see
  // protocol()).
  int protocol = 4;
  // MQTT 5 only: the filters (as passed to Subscribe) subscribed with Retain As Published, so a
  // message its sender published retained arrives with `retained` set also when the broker
  // delivers it live. (Otherwise, and always on 3.1.1, the broker clears the flag on live
  // delivery; Message::retained is then only set for messages sent because of a subscription.)
  std::vector<std::string> retain_as_published;
  std::chrono::seconds keepalive{60};

  // TLS, used for mqtts:// and ssl:// urls only. Empty ca_file means the system trust store.
  // cert_file/key_file: client certificate authentication (both or neither).
  // verify: check the server certificate chain and that its name matches the url's host.
  struct Tls {
    std::string ca_file;
    std::string cert_file;
    std::string key_file;
    bool verify = true;
  } tls;

  // Last will: published by the broker when the connection ends without a DISCONNECT.
  // Empty will_topic means no will. QoS 1.
  std::string will_topic;
  std::string will_payload = "offline";
  bool will_retain = true;

  // Automatic reconnect after a lost connection: exponential backoff starting at
  // reconnect_min, doubling up to reconnect_max, each delay randomized within [d/2, d]
  // (never below reconnect_min).
  std::chrono::milliseconds reconnect_min{500};
  std::chrono::milliseconds reconnect_max{std::chrono::seconds(30)};

  // At most this many message events wait in the event queue; when full, the oldest message
  // event is dropped and counted (see Client::dropped()). Connection events are never dropped.
  std::size_t max_queue = 100000;

  // At most this many published messages wait to be sent; beyond that Publish fails (kIo).
  std::size_t max_pending_publishes = 65535;

  // Bound on each blocking broker round trip (subscribe acknowledgement, disconnect) and on
  // each reconnect attempt.
  std::chrono::milliseconds operation_timeout{std::chrono::seconds(10)};
};

// ClientOptions::protocol: MQTT 5 where the broker offers it, else 3.1.1.
inline constexpr int kProtocolAuto = 0;

// Delay before reconnect attempt `attempt` (0-based): d = min * 2^attempt capped at max, then
// scaled into [d/2, d] by `unit` in [0, 1) (the jitter), never below min. Pure; exposed for tests.
[[nodiscard]] std::chrono::milliseconds ReconnectDelay(int attempt, std::chrono::milliseconds min,
                                                       std::chrono::milliseconds max, double unit);

// An MQTT connection that keeps itself up. The one place in the product that uses Paho.
//
// Threading: Paho's callback thread only enqueues events into a bounded queue; a single owner
// thread takes them with WaitEvent(). Subscribe/Publish/ClearRetained/connected/dropped may be
// called from any thread. Connect and Disconnect must not run concurrently with each other.
//
// Connection lifecycle:
//  - Connect() opens a clean session, subscribes every filter remembered so far and queues a
//    kConnected event (the first one, too, so the owner can publish availability, discovery and
//    status in one place).
//  - When the connection drops, a kConnectionLost event is queued and a background thread
//    reconnects with backoff; on success it resubscribes all remembered filters and then
//    queues kConnected.
//  - Disconnect() ends the session cleanly (the broker does not publish the will) and stops
//    reconnecting. It publishes nothing itself.
//
// Errors: all failures are returned as Error values; Paho exceptions never escape. Network,
// TLS and broker refusals are kIo, authentication refusals kBadInput, invalid arguments
// kBadInput. Messages name the broker url and the reason, never the password.
class Client final : public Transport {
 public:
  explicit Client(ClientOptions options);
  // Safe at any time: disconnects cleanly when connected, stops the reconnect thread.
  ~Client() override;
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // Connects within `timeout` (a fresh clean session). Already connected: no-op. Succeeds once
  // the broker accepted the session; from then on the client keeps it up by itself. When the
  // broker cannot be reached or refuses, nothing retries in the background: call Connect again.
  [[nodiscard]] Status Connect(std::chrono::milliseconds timeout) override;

  // Subscribes to (filter, qos) pairs and remembers them for every later reconnect. When not
  // connected the filters are only remembered and subscribed at the next connection. A filter
  // the broker refuses is forgotten and reported. Waits at most operation_timeout.
  [[nodiscard]] Status Subscribe(const std::vector<std::pair<std::string, int>>& filters) override;

  // Queues one message for sending without waiting for the broker. Fails with kIo when not
  // connected (nothing is buffered across a disconnect) and kBadInput for an invalid topic
  // (empty, wildcards, NUL) or qos.
  [[nodiscard]] Status Publish(const std::string& topic, std::string_view payload, int qos,
                               bool retain) override;

  // Removes the retained message of `topic` (publishes an empty retained message, QoS 1).
  [[nodiscard]] Status ClearRetained(const std::string& topic) override;

  // Takes the next event, waiting at most `timeout`; std::nullopt when none arrived in time.
  // REQUIRES: called from a single owner thread.
  [[nodiscard]] std::optional<Event> WaitEvent(std::chrono::milliseconds timeout) override;

  // Message events dropped because the queue was full, since construction.
  [[nodiscard]] std::uint64_t dropped() const;
  [[nodiscard]] bool connected() const;
  // The protocol version in use: 4 or 5 (with kProtocolAuto, 5 until a broker refused it).
  [[nodiscard]] int protocol() const override;

  // Ends the session cleanly (no will) and stops reconnecting. Idempotent.
  void Disconnect() override;

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace safepoint::mqtt
