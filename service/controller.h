#pragma once

#include <chrono>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "core/base/clock.h"
#include "core/base/fs.h"
#include "core/config/config.h"
#include "core/sources/snapshot.h"
#include "discovery/discovery.h"
#include "mqtt/transport.h"
#include "service/backend.h"
#include "service/commands.h"
#include "service/lifecycle.h"
#include "service/mirror.h"
#include "service/retained_probe.h"
#include "service/safety_points.h"
#include "service/schedule.h"
#include "service/zigbee2mqtt.h"

namespace safepoint::service {

// Counters of the service, logged at exit (the `stopping: ...` line).
struct DaemonStats {
  std::uint64_t messages = 0;
  std::uint64_t invalid_messages = 0;
  std::uint64_t retained_commands_ignored = 0;
  std::uint64_t responses_suppressed = 0;  // error responses over the rate limit
  std::uint64_t publish_failures = 0;
  std::uint64_t messages_dropped = 0;  // held while not connected, past the outbox's bound
  std::uint64_t internal_errors = 0;  // exceptions caught on the state thread
};

// Where the controller's long operations run and how their results come back.
class JobRunner {
 public:
  // A long operation: runs off the state thread and returns what to do with its result there.
  using Job = std::function<std::function<void()>()>;
  virtual ~JobRunner() = default;
  // Runs `job` after every job given before it, never on the state thread; the closure it
  // returns then runs on the state thread (through Controller::RunSafely).
  virtual void Run(Job job) = 0;
  // Runs `fn` on the state thread later (progress reports of a running job).
  virtual void Post(std::function<void()> fn) = 0;
};

// What `safepoint serve` decides, on the state thread: the update lifecycle, the MQTT commands
// and their responses, discovery and the state topics, the entity mirror, the Zigbee2MQTT
// exchange, the daily schedule and the persisted state file. It owns no thread and never sleeps:
// Daemon feeds it events, ticks and job results; the tests (tests/service/daemon_test.cc) do
// the same with a fake transport, a fake backend, a fake clock and a job runner of their own.
//
// Threading: every method runs on one thread (the state thread), except the retention filter,
// which reads `in_use_` under its mutex from the job that applies retention.
class Controller {
 public:
  using TimePoint = std::chrono::system_clock::time_point;
  using RetainedCheckFactory = std::function<std::unique_ptr<RetainedCheck>()>;

  // `retained_check` makes the MQTT 3.1.1 retained check (called once, after connecting with
  // protocol 4). Every reference must outlive the controller.
  Controller(const config::Config& config, FileSystem& fs, const Clock& clock, Backend& backend,
             mqtt::Transport& transport, JobRunner& jobs, RetainedCheckFactory retained_check);
  Controller(const Controller&) = delete;
  Controller& operator=(const Controller&) = delete;

  // Before connecting: checks the discovery options and completes or reverts a rollback a crash
  // interrupted. Fails only for options the service cannot run with.
  [[nodiscard]] Status Prepare();
  // Once connected: readies the retained check, subscribes, reads the persisted state and the
  // store. Nothing retained is published before this.
  void Start();
  // One event of the transport.
  void HandleEvent(const mqtt::Event& event);
  // Deadlines, the Zigbee2MQTT wait, re-announcing discovery and the schedule, at clock Now().
  void Tick();
  // When Tick has something to do next (at most a minute from `now`).
  [[nodiscard]] TimePoint NextWake(TimePoint now) const;
  // Runs `fn` (an event's or a job's closure): an exception it throws is logged and counted,
  // and the command being handled, if any, gets an internal-error response.
  void RunSafely(const std::function<void()>& fn);
  // True while a job is queued or running.
  [[nodiscard]] bool WorkerBusy() const { return pending_jobs_ > 0; }
  // Logs the counters and publishes `offline` on <base>/availability.
  void Stop();
  // What the service subscribes to (Start subscribes).
  [[nodiscard]] std::vector<std::pair<std::string, int>> Subscriptions() const;

  [[nodiscard]] const DaemonStats& stats() const { return stats_; }
  [[nodiscard]] const Lifecycle& lifecycle() const { return lifecycle_; }

 private:
  // Runs `job` when no job is pending (false when one is). For the commands outside the
  // lifecycle (verify, delete). `what` names it in a busy answer ("a verify").
  bool Submit(std::string what, JobRunner::Job job);
  // Queues `job` behind the pending ones, never refusing. For the lifecycle's actions: it
  // allows one operation at a time, and the runner keeps their order.
  void Enqueue(std::string what, JobRunner::Job job);
  // The answer to a command refused because the worker is busy: names what it does.
  [[nodiscard]] std::string WorkerBusyMessage() const;
  // A progress callback for a job: posts the lifecycle's progress every 5 %.
  store::ProgressFn ProgressReporter();

  void OnConnected();
  void HandleMessage(const mqtt::Message& message);
  void HandleUpdateMessage(const std::string& which, const mqtt::Message& message);
  void HandleCommand(const std::string& name, const mqtt::Message& message);
  void Rollback(const RollbackCommand& command);
  void Verify(const VerifyCommand& command);
  void Delete(const DeleteCommand& command);
  void List();
  void Diff(const DiffCommand& command);
  void ReportChanges(const service::ReportChanges& action);
  // The event `rollback_recovered` for what recovery did (nothing when `actions` is empty).
  void ReportRecovery(const std::vector<std::string>& actions);
  void Select(const SelectCommand& command);
  // True when `message` must not act because it is a retained message: flagged retained (MQTT 5
  // Retain As Published, or sent on subscribing), or on MQTT 3.1.1 a live delivery whose topic
  // holds a retained copy with the same payload. Then it is ignored, cleared from the broker
  // and counted. When the check itself fails it answers on <base>/response/`command` and
  // returns true: a command is never acted on unchecked.
  bool StaleRetained(const mqtt::Message& message, const std::string& command);
  void Execute(std::vector<Action> actions);
  void Execute(const Action& action);

  void StartBackup(const StartBackup& action);
  // Runs the backup on the worker with what was captured live.
  void RunBackup(const service::StartBackup& action, entities::EntitySnapshot entities,
                 snapshot::LiveState live);
  void StartRollback(const service::StartRollback& action);
  // Worker thread: applies the retention policy (after every new safety point), keeping the
  // safety point the lifecycle uses.
  Result<store::PruneReport> ApplyRetention();
  // State thread: logs what retention deleted and forgets their entity states.
  void ReportRetention(const Result<store::PruneReport>& report);
  void RunHealthCheck(const std::string& backup_id);
  void PublishDiscovery();
  void PublishStateTopics();
  [[nodiscard]] discovery::DiscoveryState DiscoveryStateNow() const;
  [[nodiscard]] BackupSummary SummaryOf(const manifest::Manifest& m) const;
  // Lists the store once and updates the rollback select's options from it; with
  // `last_backup`, also sets last_backup (the status and the last-backup sensors) to the newest
  // readable safety point, none when there is none. Nothing changes when the store cannot be
  // listed (a mount not ready yet is not "no safety points").
  void RefreshSafetyPoints(bool last_backup = false);
  void Persist();
  void LoadPersisted();
  void Respond(const std::string& command, const std::optional<Error>& error,
               const nlohmann::json& data, const std::optional<nlohmann::json>& transaction);
  // Publishes; a message that is not retained and cannot be sent now (no connection) is held,
  // with whatever is published after it, until it can be (each later Publish and every connect
  // try again, in order). Retained topics are published again on every connect instead.
  void Publish(const std::string& topic, const std::string& payload, bool retain, int qos = 1);
  void Hold(const std::string& topic, const std::string& payload, int qos);
  // Sends held messages until one fails (it stays first).
  void FlushOutbox(bool log_failure);
  void CheckSchedule(TimePoint now);
  [[nodiscard]] std::string Topic(const std::string& suffix) const;
  [[nodiscard]] bool RateLimitError();

  const config::Config& config_;
  const config::MqttConfig mqtt_config_;
  FileSystem& fs_;
  const Clock& clock_;
  Backend& backend_;
  mqtt::Transport& transport_;
  JobRunner& jobs_;
  RetainedCheckFactory make_retained_check_;
  std::unique_ptr<RetainedCheck> retained_check_;  // MQTT 3.1.1 only (see StaleRetained)
  // False until the persisted state and the store were read at start-up: nothing retained
  // (status, discovery, state topics) is published before, so no subscriber ever sees a state
  // the service has not computed (such as `safety_points {"count":0}`).
  bool started_ = false;
  std::vector<std::string> recovered_at_start_;  // Prepare's recovery, reported by OnConnected
  Lifecycle lifecycle_;
  EntityMirror mirror_;
  discovery::Options discovery_options_;
  ParseOptions parse_options_;
  DaemonStats stats_;

  SafetyPointChoice safety_points_;
  std::map<std::string, entities::EntitySnapshot> entity_snapshots_;  // by backup id
  // Safety points with a deletion accepted and not yet done: a rollback to one is refused.
  std::multiset<std::string> deleting_;
  std::optional<nlohmann::json> transaction_;     // of the command being handled
  std::string command_name_;                      // of the command being handled
  std::map<std::string, std::string> published_;  // retained state topics since connecting
  std::optional<TimePoint> rediscover_at_;
  Zigbee2MqttExchange zigbee2mqtt_;
  // The safety point the lifecycle uses (pending update, rollback); retention on the worker
  // never deletes it. Written by the state thread in Execute.
  std::mutex in_use_mu_;
  std::optional<std::string> in_use_;
  int pending_jobs_ = 0;
  // What each queued or running job does, oldest (the running one) first.
  std::deque<std::string> job_names_;
  std::mt19937 rng_{std::random_device{}()};
  DailySchedule schedule_;
  // Messages held while not connected (Publish), oldest first: at most kOutboxMessages and
  // kOutboxBytes (topics and payloads); past that the oldest are dropped with an error each.
  struct Held {
    std::string topic;
    std::string payload;
    int qos = 1;
  };
  static constexpr std::size_t kOutboxMessages = 256;
  static constexpr std::size_t kOutboxBytes = 2u << 20;
  std::deque<Held> outbox_;
  std::size_t outbox_bytes_ = 0;
  // Shared by error answers and the log lines about invalid messages: an invalid message takes
  // two (its log line and its answer), so 50 of them are answered at once and 25 per second
  // after that (docs/security.md).
  TokenBucket error_budget_{100, 50};
};

}  // namespace safepoint::service
