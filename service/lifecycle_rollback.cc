#include <string>
#include <utility>

#include "core/base/human.h"
#include "service/lifecycle.h"
#include "service/lifecycle_internal.h"

// The lifecycle's rollbacks (automatic and by request), their conflicts and the resumption of an
// operation a restart interrupted. The update flow itself: lifecycle.cc.
namespace safepoint::service {
namespace {

using lifecycle_internal::BulletList;
using lifecycle_internal::UpdateRefOf;
using nlohmann::json;

}  // namespace

std::vector<Action> Lifecycle::OnRollbackDone(const RollbackOutcome& outcome, TimePoint now) {
  std::vector<Action> out;
  if (current_.state != State::kRollingBack) return out;
  const std::string backup_id = *current_.backup_id;
  json data{{"backup_id", backup_id}};
  if (current_.update) data["update_id"] = current_.update->update_id;

  switch (outcome.kind) {
    case RollbackOutcome::Kind::kOk: {
      FinishUpdate("rolled_back");
      Reset(State::kIdle);
      data["restored_files"] = outcome.restored_files;
      data["pre_rollback_id"] =
          outcome.pre_rollback_id ? json(*outcome.pre_rollback_id) : json(nullptr);
      std::string message = "Rollback to safety point " + backup_id +
                            " completed: " + std::to_string(outcome.restored_files) +
                            " files restored.";
      if (outcome.pre_rollback_id) {
        message += " Undo with /rollback safety_point " + *outcome.pre_rollback_id + ".";
      }
      out.emplace_back(Persist{});
      out.emplace_back(
          Event(EventType::kRollbackCompleted, std::move(message), std::move(data), now));
      out.emplace_back(StatusAction());
      return out;
    }
    case RollbackOutcome::Kind::kConflicts: {
      current_.state = State::kAwaitingConflictResolution;
      current_.conflicts = outcome.conflicts;
      current_.deadline = now + options_.resolve_timeout;
      current_.progress.reset();
      std::string message = "Rollback to safety point " + backup_id +
                            " stopped: " + std::to_string(outcome.conflicts.size()) +
                            " files changed locally since the safety point:";
      message += BulletList(outcome.conflicts);
      message += "\nChoose Overwrite, Merge or Abort before " + FormatTime(*current_.deadline) +
                 " (no answer counts as Abort).";
      data["conflicts"] = outcome.conflicts;
      data["deadline"] = FormatIsoTime(*current_.deadline);
      out.emplace_back(Persist{});
      out.emplace_back(
          Event(EventType::kRollbackConflicts, std::move(message), std::move(data), now));
      out.emplace_back(StatusAction());
      return out;
    }
    case RollbackOutcome::Kind::kFailed: {
      const Error error = outcome.error.value_or(Error{ErrorCode::kInternal, "unknown error"});
      current_.last_error = "rollback to " + backup_id + " failed: " + error.message;
      FinishUpdate("rollback_failed");
      Reset(State::kError);
      data["error"] = error.message;
      data["code"] = ErrorCodeName(error.code);
      out.emplace_back(Persist{});
      out.emplace_back(Event(EventType::kRollbackFailed,
                             "Rollback to safety point " + backup_id + " failed: " + error.message,
                             std::move(data), now));
      out.emplace_back(StatusAction());
      return out;
    }
  }
  return out;
}

std::vector<Action> Lifecycle::AbortConflicts(const std::string& why, TimePoint now) {
  std::vector<Action> out;
  const std::string backup_id = *current_.backup_id;
  const std::vector<std::string> conflicts = current_.conflicts;
  json data{{"backup_id", backup_id}, {"conflicts", conflicts}, {"reason", why}};
  if (current_.update) data["update_id"] = current_.update->update_id;
  current_.last_error = "rollback to " + backup_id + " aborted (" + why + "); " +
                        std::to_string(conflicts.size()) + " conflicting files left unchanged";
  FinishUpdate("rollback_aborted");
  Reset(State::kIdle);
  out.emplace_back(Persist{});
  out.emplace_back(Event(
      EventType::kRollbackAborted,
      "Rollback to safety point " + backup_id + " aborted (" + why + "). Nothing was changed.",
      std::move(data), now));
  out.emplace_back(StatusAction());
  return out;
}

std::vector<Action> Lifecycle::OnResolve(ConflictPolicy action, TimePoint now) {
  std::vector<Action> out;
  if (current_.state != State::kAwaitingConflictResolution) {
    out.emplace_back(
        Respond{"resolve",
                Error{ErrorCode::kBadInput, "no conflicts wait for a resolution (state: " +
                                                std::string(StateName(current_.state)) + ")"},
                json::object()});
    return out;
  }
  const json data{{"backup_id", *current_.backup_id}, {"action", ConflictPolicyName(action)}};
  if (action == ConflictPolicy::kAbort) {
    out = AbortConflicts("aborted by request", now);
    out.emplace_back(Respond{"resolve", std::nullopt, data});
    return out;
  }
  const std::string backup_id = *current_.backup_id;
  current_.state = State::kRollingBack;
  current_.policy = action;
  current_.conflicts.clear();
  current_.deadline.reset();
  current_.progress = 0;
  current_.resumes = 0;
  json event_data{{"backup_id", backup_id}, {"on_conflict", ConflictPolicyName(action)}};
  if (current_.update) event_data["update_id"] = current_.update->update_id;
  out.emplace_back(Persist{});
  out.emplace_back(StartRollback{backup_id, action});
  out.emplace_back(Event(EventType::kRollbackStarted,
                         "Rolling back to safety point " + backup_id +
                             " (conflicts: " + std::string(ConflictPolicyName(action)) + ").",
                         std::move(event_data), now));
  out.emplace_back(StatusAction());
  out.emplace_back(Respond{"resolve", std::nullopt, data});
  return out;
}

std::vector<Action> Lifecycle::OnManualRollbackRequest(const std::string& backup_id,
                                                       ConflictPolicy on_conflict, TimePoint now) {
  std::vector<Action> out;
  if (Busy()) {
    out.emplace_back(Respond{"rollback", Error{ErrorCode::kBusy, BusyMessage()}, json::object()});
    return out;
  }
  Reset(State::kRollingBack);
  current_.operation = Operation::kRollback;
  current_.backup_id = backup_id;
  current_.policy = on_conflict;
  current_.progress = 0;
  out.emplace_back(Persist{});
  out.emplace_back(StartRollback{backup_id, on_conflict});
  out.emplace_back(
      Event(EventType::kRollbackStarted,
            "Rolling back to safety point " + backup_id +
                " (conflicts: " + std::string(ConflictPolicyName(on_conflict)) + ").",
            json{{"backup_id", backup_id}, {"on_conflict", ConflictPolicyName(on_conflict)}}, now));
  out.emplace_back(StatusAction());
  out.emplace_back(Respond{"rollback", std::nullopt,
                           json{{"state", StateName(current_.state)},
                                {"backup_id", backup_id},
                                {"on_conflict", ConflictPolicyName(on_conflict)}}});
  return out;
}

std::vector<Action> Lifecycle::Restore(const PersistedState& state, TimePoint now) {
  current_ = state;
  home_assistant_online_ = true;
  // A deadline that passed while the service was down fires at once (with its original time).
  std::vector<Action> out = OnTick(now);
  if (!out.empty()) return out;
  switch (current_.state) {
    case State::kIdle:
    case State::kError:
    case State::kAwaitingConfirmation:
    case State::kAwaitingConflictResolution:
      break;
    case State::kBackingUp:
      if (current_.resumes >= kMaxResumes) return GiveUpResuming(now);
      // The interrupted safety point was discarded by the store's start-up cleanup. The resume
      // is counted and persisted before it starts: a crash during it is not resumed again.
      current_.progress = 0;
      ++current_.resumes;
      out.emplace_back(Persist{});
      out.emplace_back(StartBackup{
          current_.backup_reason,
          current_.update ? std::optional(UpdateRefOf(*current_.update)) : std::nullopt});
      break;
    case State::kUpdating:
      // The decision may have been lost with the process; publishing it again is harmless
      // (decisions are delivered at least once anyway).
      out.emplace_back(PublishDecision{current_.update->update_id, Decision::kContinue,
                                       current_.backup_id, std::nullopt});
      break;
    case State::kHealthCheck:
      if (!current_.health_check_requested) {
        current_.health_check_requested = true;
        out.emplace_back(Persist{});
      }
      out.emplace_back(RunHealthCheck{*current_.backup_id});
      break;
    case State::kRollingBack:
      if (current_.resumes >= kMaxResumes) return GiveUpResuming(now);
      ++current_.resumes;
      out.emplace_back(Persist{});
      // A failed update's rollback plans against the post-update fingerprint, recorded just
      // after rolling_back was persisted; a kill in between leaves none, and without it every
      // file the update changed would count as a conflict.
      if (current_.operation == Operation::kUpdate) {
        out.emplace_back(RecordFingerprint{*current_.backup_id, /*keep_existing=*/true});
      }
      out.emplace_back(StartRollback{*current_.backup_id, current_.policy});
      break;
  }
  out.emplace_back(StatusAction());
  return out;
}

std::vector<Action> Lifecycle::GiveUpResuming(TimePoint now) {
  const Error error{ErrorCode::kInternal,
                    "interrupted by a crash or kill again after it was resumed once; not retried "
                    "(see the service log of that run)"};
  if (current_.state == State::kRollingBack) {
    return OnRollbackDone(RollbackOutcome::Failed(error), now);
  }
  const std::string kind = current_.operation == Operation::kUpdate
                               ? "the safety point for the update"
                               : "the safety point";
  std::vector<Action> out = OnBackupDone(tl::unexpected(error), now);
  // A failed safety point leaves the service idle; one that keeps failing this way is an error.
  current_.state = State::kError;
  current_.last_error = kind + " was " + error.message;
  for (auto& action : out) {
    if (std::holds_alternative<PublishStatus>(action)) action = StatusAction();
  }
  return out;
}

}  // namespace safepoint::service
