#pragma once

// The update lifecycle as a pure state machine ("Sans-I/O"): every input is a message or event
// plus the current wall-clock time; every output is a list of actions for the driver to perform
// (publish, start a backup or rollback, persist). Nothing here touches a socket, a file, a thread
// or a clock, so every transition is unit-tested with plain time points.
//
//   idle -> backing_up -> awaiting_confirmation -(continue)-> updating -(result ok)-> health_check
//                              |  (cancel | deadline: delete the safety point)           |
//                              v                                            ok -> idle   | failure
//                             idle            idle <- ok - rolling_back <- RecordFingerprint +
//                                                              |  ^          StartRollback
//                                                    conflicts v  | overwrite | merge
//                                                 awaiting_conflict_resolution -(abort |
//                                                 deadline)-> idle
//   A failed rollback ends in `error` (not busy; the next operation leaves it).
//
// Action order within one returned list: `Persist` first whenever the state changed (the driver
// saves Snapshot() atomically before doing anything visible), then effects and messages in the
// order listed, then `PublishStatus`, then `Respond` (if a command caused the call).
//
// Thread-safety: none; one thread owns a Lifecycle.

#include <chrono>
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "core/base/result.h"
#include "core/base/time_text.h"
#include "core/format/manifest.h"
#include "service/commands.h"

namespace safepoint::service {

using safepoint::TimePoint;  // core/base/time_text.h

enum class State {
  kIdle,
  kBackingUp,
  kAwaitingConfirmation,
  kUpdating,
  kHealthCheck,
  kRollingBack,
  kAwaitingConflictResolution,
  kError,
};

// "idle", "backing_up", ... as in `<base>/status`.
[[nodiscard]] std::string_view StateName(State state);
[[nodiscard]] std::optional<State> ParseState(std::string_view name);
// All eight state names in declaration order (the HA status sensor's enum options).
[[nodiscard]] const std::vector<std::string_view>& StateNames();

// What the service is doing; `none` when idle or in error.
enum class Operation { kNone, kUpdate, kBackup, kRollback };
[[nodiscard]] std::string_view OperationName(Operation operation);  // "none", "update", ...

// Lifecycle events published on `<base>/event` (the HA event entity's event_types).
enum class EventType {
  kBackupCompleted,        // a manual or scheduled safety point is ready
  kBackupFailed,           // any safety point failed (an update is then cancelled)
  kConfirmationRequested,  // an update's safety point is ready: Continue or Cancel
  kUpdateContinued,
  kUpdateCancelled,
  kUpdateExpired,      // no decision before the deadline: counts as cancel
  kUpdateSucceeded,    // result ok and health check passed
  kUpdateFailed,       // result failure
  kUpdateTimedOut,     // no result within update_timeout; nothing is rolled back
  kHealthCheckFailed,  // result ok but Home Assistant or entities did not come back
  kRollbackStarted,
  kRollbackCompleted,
  kRollbackConflicts,  // stopped: files changed locally; Overwrite / Merge / Abort
  kRollbackAborted,
  kRollbackFailed,
  kUpdateChanges,      // after a successful result: the files the update changed, with line counts
  kRollbackRecovered,  // a rollback a crash interrupted was completed or reverted
};
[[nodiscard]] std::string_view EventTypeName(EventType type);
[[nodiscard]] const std::vector<std::string_view>& EventTypeNames();

struct LifecycleOptions {
  // How long a decision may take after the safety point is ready. Default 30 min.
  std::chrono::seconds confirm_timeout = std::chrono::minutes(30);
  // How long after a successful result Home Assistant has to be back online and the health
  // check to report. Default 10 min.
  std::chrono::seconds health_timeout = std::chrono::minutes(10);
  // How long conflicts wait for Overwrite / Merge / Abort; then abort. Default 30 min.
  std::chrono::seconds resolve_timeout = std::chrono::minutes(30);
  // How long an update may run without reporting a result; then the update is given up
  // (nothing rolled back: there is no evidence of failure). Zero: wait forever. Default 2 h.
  std::chrono::seconds update_timeout = std::chrono::hours(2);
  // Roll back automatically when an update or its health check fails. Default on.
  bool auto_rollback = true;
  // Conflict policy of the automatic rollback. Default abort (ask the user).
  ConflictPolicy auto_rollback_policy = ConflictPolicy::kAbort;
  // The "Encryption:" line of the backup summary.
  std::string encryption = "age (scrypt passphrase from secrets.yaml)";
  // Renders a time for humans (event messages). Default: "YYYY-MM-DD HH:MM:SS UTC". The driver
  // passes a local-time formatter ("2026-02-11 13:10:54 CET").
  std::function<std::string(TimePoint)> format_time;
};

// What the store reports about a finished safety point.
struct BackupSummary {
  std::string backup_id;
  TimePoint created;
  std::uint64_t file_count = 0;
  std::uint64_t total_bytes = 0;
  std::string path;  // where the payload is stored; only in event messages, never in status

  bool operator==(const BackupSummary&) const = default;
};

// How a rollback ended.
struct RollbackOutcome {
  enum class Kind { kOk, kConflicts, kFailed };
  Kind kind = Kind::kOk;
  std::uint64_t restored_files = 0;            // kOk
  std::optional<std::string> pre_rollback_id;  // kOk: the safety point that undoes it
  std::vector<std::string> conflicts;          // kConflicts: relative paths
  std::optional<Error> error;                  // kFailed

  [[nodiscard]] static RollbackOutcome Ok(std::uint64_t restored_files,
                                          std::optional<std::string> pre_rollback_id);
  [[nodiscard]] static RollbackOutcome Conflicts(std::vector<std::string> paths);
  [[nodiscard]] static RollbackOutcome Failed(Error error);
};

// ---- Actions ----

// Publish on `<base>/update/decision` (QoS 1, not retained): Payload().
struct PublishDecision {
  std::string update_id;
  Decision decision = Decision::kCancel;
  std::optional<std::string> backup_id;
  std::optional<std::string> error;  // why a request was refused (busy, backup failed, ...)
  // {update_id, decision, backup_id (string or null), error?}
  [[nodiscard]] nlohmann::json Payload() const;
};
// Make a safety point (asynchronously); report with OnBackupDone.
struct StartBackup {
  std::string reason;
  // The update the safety point is taken for, as its manifest stores it (none for a manual or
  // scheduled one).
  std::optional<manifest::UpdateRef> update;
};
// Delete a safety point (after Cancel or expiry).
struct DeleteBackup {
  std::string backup_id;
};
// Record the post-update fingerprint for this safety point (before a rollback touches files).
struct RecordFingerprint {
  std::string backup_id;
  // After a restart: keep a fingerprint recorded before the crash (the rollback may have
  // started from it); record one only when the crash came before it was written.
  bool keep_existing = false;
};
// Roll back to a safety point (asynchronously); report with OnRollbackDone.
struct StartRollback {
  std::string backup_id;
  ConflictPolicy on_conflict = ConflictPolicy::kAbort;
  // A rollback to this id interrupted by a crash is journaled; the backend's recovery completes
  // or reverts it before any rollback starts, so a resumed one needs no flag of its own.
};
// List the files changed since the update's safety point and publish them as the event
// `update_changes` (the driver does it on its worker; the lifecycle does not wait for it).
struct ReportChanges {
  std::string backup_id;
  std::string update_id;
  std::string target;
};
// Compare entity availability now with the safety point's; report with OnHealthReport.
struct RunHealthCheck {
  std::string backup_id;
};
// Publish on `<base>/event` (QoS 1, not retained): Payload().
struct PublishEvent {
  EventType type = EventType::kBackupCompleted;
  std::string message;  // human text, ready for a chat or notify bridge
  nlohmann::json data;  // machine-readable details
  TimePoint time;
  // {event_type, message, data, time}
  [[nodiscard]] nlohmann::json Payload() const;
};
// Publish `status` retained on `<base>/status`.
struct PublishStatus {
  nlohmann::json status;
};
// The state changed: save Snapshot() atomically before performing the actions that follow.
struct Persist {};
// The answer to the command that caused this call, for `<base>/response/<command>`. The driver
// answers on the topic of the command it is handling (e.g. `text`) and adds the transaction.
struct Respond {
  std::string command;
  std::optional<Error> error;  // std::nullopt: ok
  nlohmann::json data = nlohmann::json::object();
};

using Action =
    std::variant<PublishDecision, StartBackup, DeleteBackup, RecordFingerprint, StartRollback,
                 RunHealthCheck, ReportChanges, PublishEvent, PublishStatus, Persist, Respond>;

// A JSON rendering of an action ({"action": "<kind>", ...fields}) for logs and tests.
[[nodiscard]] nlohmann::json ActionToJson(const Action& action);
[[nodiscard]] nlohmann::json ActionsToJson(const std::vector<Action>& actions);

// ---- Persistence ----

// How often an interrupted backup or rollback is resumed after a crash before giving up.
inline constexpr int kMaxResumes = 1;

// Everything the lifecycle must remember across a restart (kill -9 included).
struct PersistedState {
  State state = State::kIdle;
  Operation operation = Operation::kNone;
  std::optional<UpdateRequest> update;             // operation kUpdate
  std::optional<std::string> backup_id;            // the safety point of the current operation
  std::string backup_reason;                       // operation kBackup
  std::optional<TimePoint> deadline;               // of the current waiting state
  std::optional<Decision> decision;                // once the update was decided
  ConflictPolicy policy = ConflictPolicy::kAbort;  // of the current rollback
  std::vector<std::string> conflicts;              // awaiting_conflict_resolution
  bool health_check_requested = false;             // health_check: RunHealthCheck was issued
  std::optional<int> progress;                     // 0..100 while backing up or rolling back
  // backing_up / rolling_back: how often this operation was resumed after a crash. Persisted
  // before resuming; an operation interrupted again after kMaxResumes resumes becomes `error`.
  int resumes = 0;
  std::optional<BackupSummary> last_backup;
  std::optional<BackupSummary> previous_last_backup;  // restored when last_backup is deleted
  std::optional<std::string> last_error;
  // The most recent finished update, so a repeated request is not given a second safety point.
  std::optional<std::string> last_update_id;
  std::optional<std::string> last_update_outcome;  // "cancelled", "succeeded", ...
};

// {version: 1, state, operation, update, backup_id, ...}; times as ISO 8601 UTC with ns.
[[nodiscard]] nlohmann::json PersistedStateToJson(const PersistedState& state);
// kCorrupt when a field is missing, has the wrong type, or the combination is impossible
// (e.g. awaiting_confirmation without a deadline).
[[nodiscard]] Result<PersistedState> PersistedStateFromJson(const nlohmann::json& json);

// Time formatting: core/base/time_text.h.

// ---- The state machine ----

class Lifecycle {
 public:
  explicit Lifecycle(LifecycleOptions options = {});

  // `<base>/update/request`. Starts a safety point when nothing else runs. A request for the
  // update in progress is answered with the current state (its decision again if one was made);
  // for a finished update, or while busy, with decision `cancel` and an error.
  [[nodiscard]] std::vector<Action> OnUpdateRequest(const UpdateRequest& request, TimePoint now);
  // The safety point started by StartBackup finished (or failed). Ignored in other states.
  [[nodiscard]] std::vector<Action> OnBackupDone(const Result<BackupSummary>& result,
                                                 TimePoint now);
  // Continue or Cancel (`decision` kExpired is refused). `source` names where it came from
  // ("button", "mqtt", "text", ...) for the event message. `update_id`, when given, must name
  // the pending update. Late or duplicate decisions get an error Respond; nothing changes.
  [[nodiscard]] std::vector<Action> OnDecision(Decision decision, std::string_view source,
                                               const std::optional<std::string>& update_id,
                                               TimePoint now);
  // `<base>/update/result`. Wrong state or unknown update: error Respond (command "update").
  [[nodiscard]] std::vector<Action> OnUpdateResult(const UpdateResult& result, TimePoint now);
  // `homeassistant/status` ("online" / "offline"; anything else is ignored).
  [[nodiscard]] std::vector<Action> OnHomeAssistantStatus(std::string_view payload, TimePoint now);
  // The result of RunHealthCheck: entities available in the safety point, unavailable now.
  [[nodiscard]] std::vector<Action> OnHealthReport(const std::vector<std::string>& unavailable,
                                                   TimePoint now);
  // The rollback started by StartRollback ended. Ignored in other states.
  [[nodiscard]] std::vector<Action> OnRollbackDone(const RollbackOutcome& outcome, TimePoint now);
  // Overwrite / Merge / Abort while conflicts wait.
  [[nodiscard]] std::vector<Action> OnResolve(ConflictPolicy action, TimePoint now);
  // Deadlines: a deadline at `d` fires for any now >= d.
  [[nodiscard]] std::vector<Action> OnTick(TimePoint now);
  // A manual (or scheduled) safety point. Busy: error Respond naming the current operation.
  [[nodiscard]] std::vector<Action> OnManualBackupRequest(const std::optional<std::string>& reason,
                                                          TimePoint now);
  // A manual rollback. REQUIRES: backup_id is a valid id (the driver checked it exists).
  [[nodiscard]] std::vector<Action> OnManualRollbackRequest(const std::string& backup_id,
                                                            ConflictPolicy on_conflict,
                                                            TimePoint now);
  // Progress (0..100) of the running backup or rollback; only PublishStatus, nothing persisted.
  [[nodiscard]] std::vector<Action> OnProgress(int percent, TimePoint now);
  // Seeds or refreshes the newest safety point (e.g. from the store at start-up).
  [[nodiscard]] std::vector<Action> SetLastBackup(std::optional<BackupSummary> summary);

  // After a restart: adopts `state` and returns what to do to resume it. A pending decision
  // keeps its original deadline (expired at once when it passed while down); an interrupted
  // backup is started again; an interrupted rollback is started again (recovery finishes the
  // journaled one first). Either is resumed at most kMaxResumes times (the count is persisted
  // first): interrupted once more, it fails as a backup or rollback failure would and the service
  // is left in `error` with a last_error saying so, never in a restart loop.
  [[nodiscard]] std::vector<Action> Restore(const PersistedState& state, TimePoint now);

  [[nodiscard]] const PersistedState& Snapshot() const { return current_; }
  [[nodiscard]] State state() const { return current_.state; }
  // True while an operation runs (every state but idle and error).
  [[nodiscard]] bool Busy() const;
  // Why a command is refused while an operation runs: "busy: update 'X' is in progress
  // (updating)".
  [[nodiscard]] std::string BusyMessage() const;
  // The `<base>/status` payload: {state, operation, progress, pending, last_backup, last_error}.
  [[nodiscard]] nlohmann::json StatusJson() const;

 private:
  void Reset(State state);
  void FinishUpdate(std::string outcome);
  [[nodiscard]] std::string FormatTime(TimePoint time) const;
  [[nodiscard]] std::string BackupSummaryText(const BackupSummary& summary) const;
  [[nodiscard]] PublishEvent Event(EventType type, std::string message, nlohmann::json data,
                                   TimePoint now) const;
  [[nodiscard]] PublishStatus StatusAction() const { return PublishStatus{StatusJson()}; }
  // The update failed (its result, or the health check): rolls back, or stops when automatic
  // rollback is off.
  [[nodiscard]] std::vector<Action> Failure(std::string reason, EventType type, nlohmann::json data,
                                            TimePoint now);
  // No decision within the confirmation timeout: the safety point is deleted.
  [[nodiscard]] std::vector<Action> Expire(TimePoint now);
  [[nodiscard]] std::vector<Action> AbortConflicts(const std::string& why, TimePoint now);
  // Restore of a backup or rollback that was already resumed kMaxResumes times.
  [[nodiscard]] std::vector<Action> GiveUpResuming(TimePoint now);

  LifecycleOptions options_;
  PersistedState current_;
  bool home_assistant_online_ = true;  // not persisted: unknown counts as online
};

}  // namespace safepoint::service
