#pragma once

// Helpers for tests that run the real `safepoint serve` binary against a real Mosquitto:
// an MQTT observer that records every message in arrival order, and a harness that owns one
// service's Home Assistant tree, configuration file and process.

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "mqtt/client.h"
#include "tests/testutil/mosquitto.h"
#include "tests/testutil/process.h"
#include "tests/testutil/testutil.h"

namespace safepoint::testing {

// One message as the observer received it.
struct Received {
  std::string topic;
  std::string payload;
  bool retained = false;
  std::chrono::steady_clock::time_point at;
  // The payload parsed as JSON (discarded when it is not JSON).
  [[nodiscard]] nlohmann::json Json() const;
};

// How the observer reaches the broker (TLS and credentials for the TLS tests).
struct ObserverOptions {
  std::optional<std::string> username;
  std::optional<std::string> password;
  std::string ca_file;
};

// An MQTT client (the product's mqtt::Client) that subscribes to `filters` and records every
// message with its arrival time. Waits are bounded. A cursor (an index into the record) makes
// order assertions simple: Next() only looks at messages after the cursor and moves it past the
// message it returns.
class Observer {
 public:
  Observer(const std::string& url, std::vector<std::string> filters, ObserverOptions options = {});
  ~Observer();
  Observer(const Observer&) = delete;
  Observer& operator=(const Observer&) = delete;

  // True when connected and subscribed (ADD_FAILURE otherwise).
  [[nodiscard]] bool ok() const { return ok_; }
  // Number of messages received so far: a cursor for "from now on".
  [[nodiscard]] std::size_t Mark();
  // The first message on `topic` after `*cursor` for which `pred` (on the parsed JSON, or on the
  // raw payload when `raw_pred` is given) holds, within `timeout`; moves `*cursor` past it.
  std::optional<Received> Next(const std::string& topic, std::size_t* cursor,
                               std::chrono::milliseconds timeout,
                               const std::function<bool(const nlohmann::json&)>& pred = {});
  std::optional<Received> NextRaw(const std::string& topic, std::size_t* cursor,
                                  std::chrono::milliseconds timeout,
                                  const std::function<bool(const std::string&)>& pred = {});
  // Every message on `topic` received after `from` (without waiting).
  [[nodiscard]] std::vector<Received> All(const std::string& topic, std::size_t from = 0);
  // Every message (any topic) after `from`.
  [[nodiscard]] std::vector<Received> Since(std::size_t from);
  // Waits until at least `count` messages matching `topic_prefix` arrived after `from`.
  bool WaitCount(const std::string& topic_prefix, std::size_t from, std::size_t count,
                 std::chrono::milliseconds timeout);
  // Publishes (QoS 1). Returns false (ADD_FAILURE) on an error.
  bool Publish(const std::string& topic, const std::string& payload, bool retain = false,
               int qos = 1);

 private:
  std::unique_ptr<mqtt::Client> client_;
  std::thread pump_;
  std::atomic<bool> stop_{false};
  bool ok_ = false;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Received> messages_;
};

// What goes into the service's configuration file besides the fixed parts.
struct ServeConfig {
  std::string url;
  std::string confirm_timeout = "10m";
  std::string health_timeout = "30s";
  // service.update_timeout and service.resolve_timeout; empty: not written (the defaults).
  std::string update_timeout;
  std::string resolve_timeout;
  bool auto_rollback = true;
  std::string on_conflict = "abort";
  // Lines appended under `mqtt:` (each indented by two spaces by the caller).
  std::string mqtt_extra;
  // Lines appended at the top level.
  std::string extra;
};

// One service under test: a temp dir with a small Home Assistant configuration tree
// (configuration.yaml, automations.yaml, scripts.yaml, .storage/core.entity_registry and
// secrets.yaml holding the backup passphrase and an MQTT password), the configuration file
// (scrypt work factor 15, no daily schedule) and the `safepoint serve` process.
class ServeHarness {
 public:
  static constexpr const char* kPassphrase = "serve test passphrase 41d9";
  static constexpr const char* kMqttPassword = "mqtt-pw-7f3a2c91e0";

  ServeHarness();
  ~ServeHarness();
  ServeHarness(const ServeHarness&) = delete;
  ServeHarness& operator=(const ServeHarness&) = delete;

  void WriteConfig(const ServeConfig& config);
  // Starts `safepoint --config FILE serve` (the previous process must be gone).
  void Start();
  // SIGKILL: the service vanishes mid-operation.
  void Kill();
  // SIGTERM and wait; returns the wait status (-1 on timeout).
  int Stop();
  [[nodiscard]] bool running() const { return process_ != nullptr; }
  [[nodiscard]] pid_t pid() const;
  // Everything the service printed (all runs).
  [[nodiscard]] std::string Output();
  // True when the process is alive and not a zombie.
  [[nodiscard]] bool Alive() const;

  [[nodiscard]] const std::string& ha() const { return ha_; }
  [[nodiscard]] const std::string& backups() const { return backups_; }
  [[nodiscard]] const std::string& config_file() const { return config_; }
  [[nodiscard]] std::string Sub(const std::string& rel) const { return dir_.Sub(rel); }

  // Every regular file below the HA tree: relative path -> content.
  [[nodiscard]] std::map<std::string, std::string> Tree() const;
  // Runs `safepoint --config FILE <args>`.
  ProcessResult Cli(const std::vector<std::string>& args) const;

 private:
  TempDir dir_;
  std::string ha_;
  std::string backups_;
  std::string config_;
  std::unique_ptr<SpawnedProcess> process_;
  std::string old_output_;
};

// Reads /proc/<pid>/stat: user + system CPU time in clock ticks and the resident set in bytes.
struct ProcStat {
  std::uint64_t cpu_ticks = 0;
  std::uint64_t rss_bytes = 0;
};
[[nodiscard]] std::optional<ProcStat> ReadProcStat(pid_t pid);

// Predicates on received payloads, for waits on a topic: the status `state`, the event type.
inline auto StateIs(const std::string& state) {
  return [state](const nlohmann::json& j) { return j.value("state", "") == state; };
}
inline auto EventIs(const std::string& type) {
  return [type](const nlohmann::json& j) { return j.value("event_type", "") == type; };
}

}  // namespace safepoint::testing
