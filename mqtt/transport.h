#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/base/result.h"

namespace safepoint::mqtt {

// One received application message.
struct Message {
  std::string topic;
  std::string payload;
  bool retained = false;  // delivered from the broker's retained store
  int qos = 0;
};

// What the owner thread receives from WaitEvent().
struct Event {
  enum class Kind {
    kConnected,       // a connection is up and every remembered filter is subscribed again
    kConnectionLost,  // the connection dropped; reconnecting in the background
    kMessage,         // `message` holds a received message
  };
  Kind kind = Kind::kMessage;
  Message message;     // kMessage only
  std::string detail;  // human-readable cause for connection events; never a secret
};

// What the service needs of an MQTT connection: mqtt::Client is the real one, the daemon's tests
// use an in-process fake. The contract of every method is mqtt::Client's (client.h).
class Transport {
 public:
  virtual ~Transport() = default;
  [[nodiscard]] virtual Status Connect(std::chrono::milliseconds timeout) = 0;
  [[nodiscard]] virtual Status Subscribe(
      const std::vector<std::pair<std::string, int>>& filters) = 0;
  [[nodiscard]] virtual Status Publish(const std::string& topic, std::string_view payload, int qos,
                                       bool retain) = 0;
  [[nodiscard]] virtual Status ClearRetained(const std::string& topic) = 0;
  [[nodiscard]] virtual std::optional<Event> WaitEvent(std::chrono::milliseconds timeout) = 0;
  // 4 (MQTT 3.1.1) or 5.
  [[nodiscard]] virtual int protocol() const = 0;
  virtual void Disconnect() = 0;
};

}  // namespace safepoint::mqtt
