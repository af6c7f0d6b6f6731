#include "service/lifecycle.h"

#include <algorithm>
#include <cstdint>
#include <string>
#include <utility>

#include "core/base/human.h"
#include "service/lifecycle_internal.h"

// The update lifecycle's state machine: every input and the time give the actions to run
// (lifecycle.h). This file: the update flow, from request to health check. Rollbacks, conflicts
// and resuming after a restart: lifecycle_rollback.cc. Names, actions as JSON, time text and the
// persisted state: lifecycle_data.cc.
namespace safepoint::service {
namespace {

using lifecycle_internal::BulletList;
using lifecycle_internal::UpdateRefOf;
using nlohmann::json;

// "2 h", "30 min", "45 s": a timeout as the messages name it.
std::string DurationText(std::chrono::seconds d) {
  if (d.count() % 3600 == 0 && d.count() >= 3600) return std::to_string(d.count() / 3600) + " h";
  if (d.count() % 60 == 0 && d.count() >= 60) return std::to_string(d.count() / 60) + " min";
  return std::to_string(d.count()) + " s";
}

}  // namespace

Lifecycle::Lifecycle(LifecycleOptions options) : options_(std::move(options)) {
  if (!options_.format_time) options_.format_time = FormatHumanUtcTime;
}

bool Lifecycle::Busy() const {
  return current_.state != State::kIdle && current_.state != State::kError;
}

std::string Lifecycle::FormatTime(TimePoint time) const { return options_.format_time(time); }

void Lifecycle::Reset(State state) {
  current_.state = state;
  current_.operation = Operation::kNone;
  current_.update.reset();
  current_.backup_id.reset();
  current_.backup_reason.clear();
  current_.deadline.reset();
  current_.decision.reset();
  current_.policy = ConflictPolicy::kAbort;
  current_.conflicts.clear();
  current_.health_check_requested = false;
  current_.progress.reset();
  current_.resumes = 0;
}

void Lifecycle::FinishUpdate(std::string outcome) {
  if (current_.operation != Operation::kUpdate || !current_.update) return;
  current_.last_update_id = current_.update->update_id;
  current_.last_update_outcome = std::move(outcome);
}

std::string Lifecycle::BusyMessage() const {
  std::string what;
  switch (current_.operation) {
    case Operation::kUpdate:
      what = "update '" + current_.update->update_id + "'";
      break;
    case Operation::kBackup:
      what = "a safety point";
      break;
    case Operation::kRollback:
      what = "a rollback to " + current_.backup_id.value_or("?");
      break;
    case Operation::kNone:
      what = "nothing";
      break;
  }
  return "busy: " + what + " is in progress (" + std::string(StateName(current_.state)) + ")";
}

std::string Lifecycle::BackupSummaryText(const BackupSummary& summary) const {
  return "Safety Point Backup Completed\n- Date: " + FormatTime(summary.created) +
         "\n- Files backed up: " + std::to_string(summary.file_count) + " (total ~" +
         HumanBytes(summary.total_bytes) + ")\n- Backup stored locally at: " + summary.path +
         "\n- Encryption: " + options_.encryption;
}

PublishEvent Lifecycle::Event(EventType type, std::string message, nlohmann::json data,
                              TimePoint now) const {
  return PublishEvent{type, std::move(message), std::move(data), now};
}

nlohmann::json Lifecycle::StatusJson() const {
  json pending = nullptr;
  if (current_.operation != Operation::kNone) {
    pending = json::object();
    if (current_.update) {
      pending["update_id"] = current_.update->update_id;
      pending["target"] = current_.update->target;
    }
    pending["backup_id"] = current_.backup_id ? json(*current_.backup_id) : json(nullptr);
    pending["deadline"] =
        current_.deadline ? json(FormatIsoTime(*current_.deadline)) : json(nullptr);
    if (current_.decision) pending["decision"] = DecisionName(*current_.decision);
    if (current_.state == State::kAwaitingConflictResolution)
      pending["conflicts"] = current_.conflicts;
  }
  json last_backup = nullptr;
  if (current_.last_backup) {
    last_backup = json{{"id", current_.last_backup->backup_id},
                       {"time", FormatIsoTime(current_.last_backup->created)},
                       {"files", current_.last_backup->file_count},
                       {"bytes", current_.last_backup->total_bytes}};
  }
  return json{{"state", StateName(current_.state)},
              {"operation", current_.operation == Operation::kNone
                                ? json(nullptr)
                                : json(OperationName(current_.operation))},
              {"progress", current_.progress ? json(*current_.progress) : json(nullptr)},
              {"pending", pending},
              {"last_backup", last_backup},
              {"last_error", current_.last_error ? json(*current_.last_error) : json(nullptr)}};
}

std::vector<Action> Lifecycle::OnUpdateRequest(const UpdateRequest& request, TimePoint now) {
  std::vector<Action> out;
  // The update in progress: answer with the current state, never a second safety point.
  if (current_.update && current_.update->update_id == request.update_id) {
    if (current_.decision) {
      out.emplace_back(
          PublishDecision{request.update_id, *current_.decision, current_.backup_id, std::nullopt});
    }
    out.emplace_back(StatusAction());
    return out;
  }
  if (current_.last_update_id == request.update_id) {
    out.emplace_back(PublishDecision{request.update_id, Decision::kCancel, std::nullopt,
                                     "update '" + request.update_id + "' was already handled (" +
                                         current_.last_update_outcome.value_or("finished") +
                                         "); use a new update_id"});
    return out;
  }
  if (Busy()) {
    out.emplace_back(
        PublishDecision{request.update_id, Decision::kCancel, std::nullopt, BusyMessage()});
    return out;
  }
  Reset(State::kBackingUp);
  current_.operation = Operation::kUpdate;
  current_.update = request;
  current_.progress = 0;
  std::string reason = request.reason.value_or("before update of " + request.target);
  if (!request.reason && (request.from_version || request.to_version)) {
    reason +=
        " (" + request.from_version.value_or("?") + " -> " + request.to_version.value_or("?") + ")";
  }
  current_.backup_reason = reason;
  (void)now;
  out.emplace_back(Persist{});
  out.emplace_back(StartBackup{std::move(reason), UpdateRefOf(request)});
  out.emplace_back(StatusAction());
  return out;
}

std::vector<Action> Lifecycle::OnBackupDone(const Result<BackupSummary>& result, TimePoint now) {
  std::vector<Action> out;
  if (current_.state != State::kBackingUp) return out;

  if (current_.operation == Operation::kUpdate) {
    const UpdateRequest update = *current_.update;
    if (!result) {
      const std::string why =
          "no safety point for update '" + update.update_id + "': " + result.error().message;
      current_.last_error = why;
      FinishUpdate("backup_failed");
      Reset(State::kIdle);
      out.emplace_back(Persist{});
      out.emplace_back(PublishDecision{update.update_id, Decision::kCancel, std::nullopt, why});
      out.emplace_back(
          Event(EventType::kBackupFailed,
                "Safety Point Backup Failed\n- Update: " + update.target + " (" + update.update_id +
                    ")\n- Error: " + result.error().message +
                    "\nThe update was cancelled: it never runs without a safety point.",
                json{{"update_id", update.update_id},
                     {"error", result.error().message},
                     {"code", ErrorCodeName(result.error().code)}},
                now));
      out.emplace_back(StatusAction());
      return out;
    }
    current_.previous_last_backup = current_.last_backup;
    current_.last_backup = *result;
    current_.backup_id = result->backup_id;
    current_.state = State::kAwaitingConfirmation;
    current_.deadline = now + options_.confirm_timeout;
    current_.progress.reset();
    out.emplace_back(Persist{});
    out.emplace_back(Event(EventType::kConfirmationRequested,
                           BackupSummaryText(*result) + "\n\nContinue or Cancel the update of " +
                               update.target + " before " + FormatTime(*current_.deadline) +
                               " (no answer counts as Cancel).",
                           json{{"update_id", update.update_id},
                                {"target", update.target},
                                {"backup_id", result->backup_id},
                                {"deadline", FormatIsoTime(*current_.deadline)},
                                {"files", result->file_count},
                                {"bytes", result->total_bytes}},
                           now));
    out.emplace_back(StatusAction());
    return out;
  }

  // A manual or scheduled safety point.
  const std::string reason = current_.backup_reason;
  if (!result) {
    current_.last_error = "safety point failed: " + result.error().message;
    Reset(State::kIdle);
    out.emplace_back(Persist{});
    out.emplace_back(Event(
        EventType::kBackupFailed,
        "Safety Point Backup Failed\n- Reason: " + reason + "\n- Error: " + result.error().message,
        json{{"reason", reason},
             {"error", result.error().message},
             {"code", ErrorCodeName(result.error().code)}},
        now));
    out.emplace_back(StatusAction());
    return out;
  }
  current_.previous_last_backup = current_.last_backup;
  current_.last_backup = *result;
  Reset(State::kIdle);
  out.emplace_back(Persist{});
  out.emplace_back(Event(EventType::kBackupCompleted, BackupSummaryText(*result),
                         json{{"backup_id", result->backup_id},
                              {"reason", reason},
                              {"files", result->file_count},
                              {"bytes", result->total_bytes},
                              {"time", FormatIsoTime(result->created)}},
                         now));
  out.emplace_back(StatusAction());
  return out;
}

std::vector<Action> Lifecycle::OnDecision(Decision decision, std::string_view source,
                                          const std::optional<std::string>& update_id,
                                          TimePoint now) {
  std::vector<Action> out;
  const std::string command(decision == Decision::kContinue ? "continue" : "cancel");
  if (decision == Decision::kExpired) {
    out.emplace_back(Respond{"cancel", Error{ErrorCode::kBadInput, "'expired' is not a decision"},
                             json::object()});
    return out;
  }
  if (current_.state != State::kAwaitingConfirmation) {
    std::string why = "no decision is pending (state: " + std::string(StateName(current_.state));
    if (current_.update) why += ", update '" + current_.update->update_id + "'";
    if (current_.decision)
      why += " already decided: " + std::string(DecisionName(*current_.decision));
    out.emplace_back(Respond{command, Error{ErrorCode::kBadInput, why + ")"}, json::object()});
    return out;
  }
  const UpdateRequest update = *current_.update;
  if (update_id && *update_id != update.update_id) {
    out.emplace_back(
        Respond{command,
                Error{ErrorCode::kNotFound, "no decision is pending for update '" + *update_id +
                                                "' (pending: '" + update.update_id + "')"},
                json::object()});
    return out;
  }
  const std::string backup_id = *current_.backup_id;
  const json data{{"update_id", update.update_id},
                  {"decision", DecisionName(decision)},
                  {"backup_id", backup_id}};
  if (decision == Decision::kContinue) {
    current_.decision = Decision::kContinue;
    current_.state = State::kUpdating;
    current_.deadline.reset();
    if (options_.update_timeout.count() > 0) current_.deadline = now + options_.update_timeout;
    out.emplace_back(Persist{});
    out.emplace_back(
        PublishDecision{update.update_id, Decision::kContinue, backup_id, std::nullopt});
    out.emplace_back(Event(
        EventType::kUpdateContinued,
        "Update of " + update.target + " continues (safety point " + backup_id +
            ", confirmed via " + std::string(source) + ").",
        json{{"update_id", update.update_id}, {"backup_id", backup_id}, {"source", source}}, now));
    out.emplace_back(StatusAction());
    out.emplace_back(Respond{command, std::nullopt, data});
    return out;
  }
  FinishUpdate("cancelled");
  if (current_.last_backup && current_.last_backup->backup_id == backup_id) {
    current_.last_backup = current_.previous_last_backup;
  }
  current_.previous_last_backup.reset();
  Reset(State::kIdle);
  out.emplace_back(Persist{});
  out.emplace_back(PublishDecision{update.update_id, Decision::kCancel, backup_id, std::nullopt});
  out.emplace_back(DeleteBackup{backup_id});
  out.emplace_back(Event(
      EventType::kUpdateCancelled,
      "Update of " + update.target + " cancelled via " + std::string(source) + "; safety point " +
          backup_id + " deleted. Nothing was changed.",
      json{{"update_id", update.update_id}, {"backup_id", backup_id}, {"source", source}}, now));
  out.emplace_back(StatusAction());
  out.emplace_back(Respond{command, std::nullopt, data});
  return out;
}

std::vector<Action> Lifecycle::Expire(TimePoint now) {
  std::vector<Action> out;
  const UpdateRequest update = *current_.update;
  const std::string backup_id = *current_.backup_id;
  FinishUpdate("expired");
  if (current_.last_backup && current_.last_backup->backup_id == backup_id) {
    current_.last_backup = current_.previous_last_backup;
  }
  current_.previous_last_backup.reset();
  Reset(State::kIdle);
  out.emplace_back(Persist{});
  out.emplace_back(PublishDecision{update.update_id, Decision::kExpired, backup_id, std::nullopt});
  out.emplace_back(DeleteBackup{backup_id});
  out.emplace_back(Event(EventType::kUpdateExpired,
                         "Update of " + update.target + " cancelled: no decision within " +
                             DurationText(options_.confirm_timeout) + "; safety point " +
                             backup_id + " deleted. Nothing was changed.",
                         json{{"update_id", update.update_id}, {"backup_id", backup_id}}, now));
  out.emplace_back(StatusAction());
  return out;
}

std::vector<Action> Lifecycle::OnUpdateResult(const UpdateResult& result, TimePoint now) {
  std::vector<Action> out;
  const bool ours = current_.update && current_.update->update_id == result.update_id;
  if (!ours || current_.state != State::kUpdating) {
    std::string why;
    if (!ours) {
      why = "no update '" + result.update_id + "' is in progress";
    } else if (current_.state == State::kBackingUp ||
               current_.state == State::kAwaitingConfirmation) {
      why = "update '" + result.update_id + "' was not released yet (" +
            std::string(StateName(current_.state)) + ")";
    } else {
      why = "the result of update '" + result.update_id + "' was already received (" +
            std::string(StateName(current_.state)) + ")";
    }
    out.emplace_back(Respond{"update", Error{ErrorCode::kBadInput, why}, json::object()});
    return out;
  }
  if (result.Failed()) {
    std::string reason = "update of " + current_.update->target + " failed";
    if (result.exit_code) reason += " (exit code " + std::to_string(*result.exit_code) + ")";
    if (result.detail) reason += ": " + *result.detail;
    json data{{"update_id", result.update_id}, {"backup_id", *current_.backup_id}};
    if (result.exit_code) data["exit_code"] = *result.exit_code;
    if (result.detail) data["detail"] = *result.detail;
    return Failure(std::move(reason), EventType::kUpdateFailed, std::move(data), now);
  }
  current_.state = State::kHealthCheck;
  current_.deadline = now + options_.health_timeout;
  current_.health_check_requested = home_assistant_online_;
  out.emplace_back(Persist{});
  if (current_.health_check_requested) out.emplace_back(RunHealthCheck{*current_.backup_id});
  out.emplace_back(
      ReportChanges{*current_.backup_id, current_.update->update_id, current_.update->target});
  out.emplace_back(StatusAction());
  return out;
}

std::vector<Action> Lifecycle::Failure(std::string reason, EventType type, nlohmann::json data,
                                       TimePoint now) {
  std::vector<Action> out;
  const std::string backup_id = *current_.backup_id;
  current_.last_error = reason;
  if (options_.auto_rollback) {
    current_.state = State::kRollingBack;
    current_.deadline.reset();
    current_.policy = options_.auto_rollback_policy;
    current_.conflicts.clear();
    current_.health_check_requested = false;
    current_.progress = 0;
    current_.resumes = 0;
    out.emplace_back(Persist{});
    out.emplace_back(Event(type, reason + "\nRolling back to safety point " + backup_id + ".",
                           std::move(data), now));
    out.emplace_back(RecordFingerprint{backup_id});
    out.emplace_back(StartRollback{backup_id, current_.policy});
    out.emplace_back(Event(EventType::kRollbackStarted,
                           "Rolling back to safety point " + backup_id + " (conflicts: " +
                               std::string(ConflictPolicyName(current_.policy)) + ").",
                           json{{"backup_id", backup_id},
                                {"on_conflict", ConflictPolicyName(current_.policy)},
                                {"update_id", current_.update->update_id}},
                           now));
    out.emplace_back(StatusAction());
    return out;
  }
  FinishUpdate("failed");
  Reset(State::kIdle);
  out.emplace_back(Persist{});
  out.emplace_back(Event(type,
                         reason +
                             "\nAutomatic rollback is off: roll back with /rollback safety_point " +
                             backup_id + ".",
                         std::move(data), now));
  out.emplace_back(RecordFingerprint{backup_id});
  out.emplace_back(StatusAction());
  return out;
}

std::vector<Action> Lifecycle::OnHomeAssistantStatus(std::string_view payload, TimePoint now) {
  std::vector<Action> out;
  (void)now;
  if (payload == "offline") {
    home_assistant_online_ = false;
    if (current_.state == State::kHealthCheck && current_.health_check_requested) {
      // Home Assistant restarts after all: wait for it and check again.
      current_.health_check_requested = false;
      out.emplace_back(Persist{});
      out.emplace_back(StatusAction());
    }
    return out;
  }
  if (payload != "online") return out;
  home_assistant_online_ = true;
  if (current_.state == State::kHealthCheck && !current_.health_check_requested) {
    current_.health_check_requested = true;
    out.emplace_back(Persist{});
    out.emplace_back(RunHealthCheck{*current_.backup_id});
    out.emplace_back(StatusAction());
  }
  return out;
}

std::vector<Action> Lifecycle::OnHealthReport(const std::vector<std::string>& unavailable,
                                              TimePoint now) {
  std::vector<Action> out;
  if (current_.state != State::kHealthCheck || !current_.health_check_requested) return out;
  const std::string backup_id = *current_.backup_id;
  const UpdateRequest update = *current_.update;
  if (unavailable.empty()) {
    FinishUpdate("succeeded");
    Reset(State::kIdle);
    out.emplace_back(Persist{});
    out.emplace_back(Event(EventType::kUpdateSucceeded,
                           "Update of " + update.target +
                               " succeeded and passed the health check. Safety point " + backup_id +
                               " is kept.",
                           json{{"update_id", update.update_id}, {"backup_id", backup_id}}, now));
    out.emplace_back(StatusAction());
    return out;
  }
  std::string reason = "health check after the update of " + update.target +
                       " failed: " + std::to_string(unavailable.size()) +
                       " entities unavailable since the safety point:";
  reason += BulletList(unavailable);
  return Failure(
      std::move(reason), EventType::kHealthCheckFailed,
      json{{"update_id", update.update_id}, {"backup_id", backup_id}, {"unavailable", unavailable}},
      now);
}

std::vector<Action> Lifecycle::OnTick(TimePoint now) {
  std::vector<Action> out;
  if (!current_.deadline || now < *current_.deadline) return out;
  switch (current_.state) {
    case State::kAwaitingConfirmation:
      return Expire(now);
    case State::kUpdating: {
      const UpdateRequest update = *current_.update;
      const std::string backup_id = *current_.backup_id;
      current_.last_error = "update '" + update.update_id + "' reported no result within " +
                            DurationText(options_.update_timeout);
      FinishUpdate("timed_out");
      Reset(State::kIdle);
      out.emplace_back(Persist{});
      out.emplace_back(Event(EventType::kUpdateTimedOut,
                             "Update of " + update.target + " reported no result within " +
                                 DurationText(options_.update_timeout) +
                                 ". Nothing was rolled back; safety point " + backup_id +
                                 " is kept.",
                             json{{"update_id", update.update_id}, {"backup_id", backup_id}}, now));
      out.emplace_back(StatusAction());
      break;
    }
    case State::kHealthCheck: {
      const std::string reason = current_.health_check_requested
                                     ? "health check after the update of " +
                                           current_.update->target + " did not report within " +
                                           DurationText(options_.health_timeout)
                                     : "Home Assistant did not come back online within " +
                                           DurationText(options_.health_timeout) +
                                           " after the update of " + current_.update->target;
      return Failure(reason, EventType::kHealthCheckFailed,
                     json{{"update_id", current_.update->update_id},
                          {"backup_id", *current_.backup_id},
                          {"unavailable", json::array()}},
                     now);
    }
    case State::kAwaitingConflictResolution:
      return AbortConflicts("no resolution within " + DurationText(options_.resolve_timeout), now);
    default:
      break;
  }
  return out;
}

std::vector<Action> Lifecycle::OnManualBackupRequest(const std::optional<std::string>& reason,
                                                     TimePoint now) {
  std::vector<Action> out;
  (void)now;
  if (Busy()) {
    out.emplace_back(Respond{"backup", Error{ErrorCode::kBusy, BusyMessage()}, json::object()});
    return out;
  }
  Reset(State::kBackingUp);
  current_.operation = Operation::kBackup;
  current_.backup_reason = reason.value_or("manual");
  current_.progress = 0;
  out.emplace_back(Persist{});
  out.emplace_back(StartBackup{current_.backup_reason, std::nullopt});
  out.emplace_back(StatusAction());
  out.emplace_back(
      Respond{"backup", std::nullopt,
              json{{"state", StateName(current_.state)}, {"reason", current_.backup_reason}}});
  return out;
}

std::vector<Action> Lifecycle::OnProgress(int percent, TimePoint now) {
  (void)now;
  if (current_.state != State::kBackingUp && current_.state != State::kRollingBack) return {};
  const int clamped = std::clamp(percent, 0, 100);
  if (current_.progress == clamped) return {};
  current_.progress = clamped;
  return {StatusAction()};
}

std::vector<Action> Lifecycle::SetLastBackup(std::optional<BackupSummary> summary) {
  if (current_.last_backup == summary) return {};
  current_.last_backup = std::move(summary);
  return {Persist{}, StatusAction()};
}

}  // namespace safepoint::service
