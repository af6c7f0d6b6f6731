#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "core/base/clock.h"
#include "core/base/fs.h"
#include "core/config/config.h"
#include "core/sources/snapshot.h"
#include "discovery/discovery.h"
#include "mqtt/client.h"
#include "service/backend.h"
#include "service/commands.h"
#include "service/lifecycle.h"
#include "service/mirror.h"
#include "service/retained_probe.h"

namespace safepoint::service {

// Counters of the service, logged at exit (the `stopping: ...` line).
struct DaemonStats {
  std::uint64_t messages = 0;
  std::uint64_t invalid_messages = 0;
  std::uint64_t retained_commands_ignored = 0;
  std::uint64_t responses_suppressed = 0;  // error responses over the rate limit
  std::uint64_t publish_failures = 0;
  std::uint64_t internal_errors = 0;  // exceptions caught on the state thread
};

// `safepoint serve`: drives the update lifecycle over MQTT.
//
// Threads: Paho's callback thread only enqueues (mqtt::Client); a pump thread moves client
// events into this daemon's queue; a worker thread runs the long operations (backup, rollback,
// verify, prune) one at a time and posts their results back; the state thread (Run) owns every
// piece of state: the Lifecycle, the entity mirror, discovery, the persisted state file.
class Daemon {
 public:
  Daemon(const config::Config& config, FileSystem& fs, const Clock& clock,
         std::unique_ptr<Backend> backend);
  ~Daemon();
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

  // Runs until `stop` becomes true; then finishes the running operation, publishes `offline`
  // and disconnects. Returns a process exit code.
  int Run(const std::atomic<bool>& stop);

  [[nodiscard]] const DaemonStats& stats() const { return stats_; }

 private:
  using TimePoint = std::chrono::system_clock::time_point;

  // Queue of closures run on the state thread.
  void Post(std::function<void()> fn);
  // Runs `job` on the worker thread when it is idle (false when not); the closure it returns is
  // posted back to the state thread. For commands outside the lifecycle (verify, delete).
  bool Submit(std::function<std::function<void()>()> job);
  // Like Submit, but queues behind running jobs. For the lifecycle's actions: it allows one
  // operation at a time, and the worker runs them in order, never refusing one.
  void Enqueue(std::function<std::function<void()>()> job);

  Status ConnectWithRetry(const std::atomic<bool>& stop);
  void OnConnected();
  void HandleEvent(const mqtt::Event& event);
  void HandleMessage(const mqtt::Message& message);
  void HandleCommand(const std::string& name, const mqtt::Message& message);
  // True when `message` must not act because it is a retained message: flagged retained (MQTT 5
  // Retain As Published, or sent on subscribing), or on MQTT 3.1.1 a live delivery whose topic
  // holds a retained copy with the same payload. Then it is ignored, cleared from the broker
  // and counted. When the check itself fails it answers on <base>/response/`command` and
  // returns true: a command is never acted on unchecked.
  bool StaleRetained(const mqtt::Message& message, const std::string& command);
  // Readies the MQTT 3.1.1 retained check when the connection uses 3.1.1.
  void SetUpRetainedCheck();
  void Execute(std::vector<Action> actions);
  void Execute(const Action& action);

  void StartBackup(const StartBackup& action);
  // Runs the backup on the worker with what was captured live.
  void RunBackup(const service::StartBackup& action, entities::EntitySnapshot entities,
                 snapshot::LiveState live);
  // Zigbee2MQTT's answer to our backup request, or the deadline passing without one.
  void HandleZigbee2MqttBackup(const mqtt::Message& message);
  void Zigbee2MqttBackupTimedOut();
  void StartRollback(const service::StartRollback& action);
  // Worker thread: applies the retention policy (after every new safety point), keeping the
  // safety point the lifecycle uses.
  Result<store::PruneReport> ApplyRetention();
  // State thread: logs what retention deleted and forgets their entity states.
  void ReportRetention(const Result<store::PruneReport>& report);
  void RunHealthCheck(const std::string& backup_id);
  void PublishDiscovery();
  void PublishStateTopics();
  void RefreshSafetyPoints();
  // The newest readable safety point, for the status and the last-backup sensors.
  std::optional<BackupSummary> Newest();
  void Persist();
  void LoadPersisted();
  void Respond(const std::string& command, const std::optional<Error>& error,
               const nlohmann::json& data, const std::optional<nlohmann::json>& transaction);
  void Publish(const std::string& topic, const std::string& payload, bool retain, int qos = 1);
  void CheckSchedule(TimePoint now);
  [[nodiscard]] TimePoint NextWake(TimePoint now) const;
  [[nodiscard]] std::string Topic(const std::string& suffix) const;
  [[nodiscard]] bool RateLimitError();

  const config::Config& config_;
  const config::MqttConfig mqtt_config_;
  FileSystem& fs_;
  const Clock& clock_;
  std::unique_ptr<Backend> backend_;
  std::unique_ptr<mqtt::Client> client_;
  std::unique_ptr<RetainedProbe> probe_;  // MQTT 3.1.1 only (see StaleRetained)
  // False until the persisted state and the store were read at start-up: nothing retained
  // (status, discovery, state topics) is published before, so no subscriber ever sees a state
  // the service has not computed (such as `safety_points {"count":0}`).
  bool started_ = false;
  Lifecycle lifecycle_;
  EntityMirror mirror_;
  discovery::Options discovery_options_;
  ParseOptions parse_options_;
  DaemonStats stats_;

  // State-thread data.
  std::vector<std::string> safety_points_;  // newest first
  std::optional<std::string> selected_;
  std::map<std::string, entities::EntitySnapshot> entity_snapshots_;  // by backup id
  std::optional<nlohmann::json> transaction_;     // of the command being handled
  std::string command_name_;                      // of the command being handled
  std::map<std::string, std::string> published_;  // retained state topics since connecting
  std::optional<TimePoint> rediscover_at_;
  std::optional<TimePoint> next_scheduled_;
  // A backup waiting for Zigbee2MQTT's own backup (mqtt.zigbee2mqtt_backup).
  struct Zigbee2MqttWait {
    service::StartBackup action;
    entities::EntitySnapshot entities;  // the mirror as it was at the request
    std::string transaction;
    TimePoint deadline;
  };
  std::optional<Zigbee2MqttWait> zigbee2mqtt_wait_;
  // The safety point the lifecycle uses (pending update, rollback); retention on the worker
  // never deletes it. Written by the state thread in Execute.
  std::mutex in_use_mu_;
  std::optional<std::string> in_use_;
  bool worker_busy_ = false;
  int pending_jobs_ = 0;  // state thread only
  std::mt19937 rng_{std::random_device{}()};
  std::chrono::steady_clock::time_point bucket_time_{};
  double bucket_tokens_ = 100;

  // The queue.
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_;

  // The worker.
  std::mutex worker_mu_;
  std::condition_variable worker_cv_;
  std::deque<std::function<std::function<void()>()>> jobs_;
  bool worker_stop_ = false;
  std::thread worker_;
  std::atomic<bool> pump_stop_{false};
  std::thread pump_;
};

// Next local wall-clock time at `minutes_after_midnight` strictly after `now`.
[[nodiscard]] std::chrono::system_clock::time_point NextDailyAt(
    std::chrono::system_clock::time_point now, std::chrono::minutes minutes_after_midnight);

// "2026-02-11 13:10:54 CET" in local time.
[[nodiscard]] std::string LocalHumanTime(std::chrono::system_clock::time_point t);

}  // namespace safepoint::service
