#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <iterator>
#include <stdexcept>
#include <utility>

#include "service/lifecycle.h"

// The lifecycle's data (lifecycle.h): the names of states, operations and events, actions as
// JSON, time text, and the persisted state with its checks. The state machine is lifecycle.cc.
namespace safepoint::service {
namespace {

using nlohmann::json;
using std::chrono::duration_cast;
using std::chrono::floor;
using std::chrono::nanoseconds;
using std::chrono::seconds;

constexpr int kPersistVersion = 1;

template <class... Ts>
struct Overloaded : Ts... {
  using Ts::operator()...;
};
template <class... Ts>
Overloaded(Ts...) -> Overloaded<Ts...>;

json OptionalString(const std::optional<std::string>& value) {
  return value ? json(*value) : json(nullptr);
}

json UpdateToJson(const UpdateRequest& update) {
  return json{{"update_id", update.update_id},
              {"target", update.target},
              {"from_version", OptionalString(update.from_version)},
              {"to_version", OptionalString(update.to_version)},
              {"reason", OptionalString(update.reason)}};
}

json SummaryToJson(const BackupSummary& summary) {
  return json{{"id", summary.backup_id},
              {"time", FormatExactTime(summary.created)},
              {"files", summary.file_count},
              {"bytes", summary.total_bytes},
              {"path", summary.path}};
}

// Reading the persisted state: every accessor throws std::runtime_error / json::exception on a
// missing or mistyped field; PersistedStateFromJson turns that into kCorrupt.
struct Reader {
  const json& j;

  [[nodiscard]] const json& At(const char* key) const {
    const auto it = j.find(key);
    if (it == j.end()) throw std::runtime_error(std::string("missing field '") + key + "'");
    return *it;
  }
  [[nodiscard]] std::string String(const char* key) const {
    const json& v = At(key);
    if (!v.is_string()) throw std::runtime_error(std::string("'") + key + "' is not a string");
    return v.get<std::string>();
  }
  [[nodiscard]] std::optional<std::string> OptString(const char* key) const {
    const auto it = j.find(key);
    if (it == j.end() || it->is_null()) return std::nullopt;
    if (!it->is_string()) throw std::runtime_error(std::string("'") + key + "' is not a string");
    return it->get<std::string>();
  }
  [[nodiscard]] std::uint64_t Unsigned(const char* key) const {
    const json& v = At(key);
    if (!v.is_number_unsigned()) {
      throw std::runtime_error(std::string("'") + key + "' is not an unsigned integer");
    }
    return v.get<std::uint64_t>();
  }
  [[nodiscard]] TimePoint Time(const char* key) const {
    auto time = ParseIsoTime(String(key));
    if (!time) throw std::runtime_error(std::string("'") + key + "': " + time.error().message);
    return *time;
  }
};

BackupSummary SummaryFromJson(const json& j) {
  if (!j.is_object()) throw std::runtime_error("a backup summary is not an object");
  const Reader r{j};
  BackupSummary summary;
  summary.backup_id = r.String("id");
  if (!IsValidBackupId(summary.backup_id)) throw std::runtime_error("invalid safety point id");
  summary.created = r.Time("time");
  summary.file_count = r.Unsigned("files");
  summary.total_bytes = r.Unsigned("bytes");
  summary.path = r.String("path");
  return summary;
}

std::optional<BackupSummary> OptSummary(const json& j, const char* key) {
  const auto it = j.find(key);
  if (it == j.end() || it->is_null()) return std::nullopt;
  return SummaryFromJson(*it);
}

std::optional<Operation> ParseOperation(std::string_view name) {
  for (Operation op :
       {Operation::kNone, Operation::kUpdate, Operation::kBackup, Operation::kRollback}) {
    if (OperationName(op) == name) return op;
  }
  return std::nullopt;
}

std::optional<Decision> ParseDecision(std::string_view name) {
  for (Decision d : {Decision::kContinue, Decision::kCancel, Decision::kExpired}) {
    if (DecisionName(d) == name) return d;
  }
  return std::nullopt;
}

Status CheckInvariants(const PersistedState& s) {
  const auto bad = [](const std::string& why) {
    return Fail(ErrorCode::kCorrupt, "inconsistent lifecycle state: " + why);
  };
  const bool idle_like = s.state == State::kIdle || s.state == State::kError;
  if (idle_like != (s.operation == Operation::kNone)) {
    return bad("state and operation disagree");
  }
  if ((s.operation == Operation::kUpdate) != s.update.has_value()) {
    return bad("an update operation needs its request");
  }
  switch (s.state) {
    case State::kIdle:
    case State::kError:
      break;
    case State::kBackingUp:
      if (s.operation == Operation::kRollback) return bad("backing_up during a rollback");
      break;
    case State::kAwaitingConfirmation:
      if (s.operation != Operation::kUpdate || !s.backup_id || !s.deadline) {
        return bad("awaiting_confirmation needs an update, a safety point and a deadline");
      }
      break;
    case State::kUpdating:
      if (s.operation != Operation::kUpdate || !s.backup_id) {
        return bad("updating needs an update and a safety point");
      }
      break;
    case State::kHealthCheck:
      if (s.operation != Operation::kUpdate || !s.backup_id || !s.deadline) {
        return bad("health_check needs an update, a safety point and a deadline");
      }
      break;
    case State::kRollingBack:
      if (s.operation == Operation::kBackup || !s.backup_id) {
        return bad("rolling_back needs a safety point");
      }
      break;
    case State::kAwaitingConflictResolution:
      if (s.operation == Operation::kBackup || !s.backup_id || !s.deadline) {
        return bad("awaiting_conflict_resolution needs a safety point and a deadline");
      }
      break;
  }
  return {};
}

}  // namespace

// ---- Names ----

std::string_view StateName(State state) {
  switch (state) {
    case State::kIdle:
      return "idle";
    case State::kBackingUp:
      return "backing_up";
    case State::kAwaitingConfirmation:
      return "awaiting_confirmation";
    case State::kUpdating:
      return "updating";
    case State::kHealthCheck:
      return "health_check";
    case State::kRollingBack:
      return "rolling_back";
    case State::kAwaitingConflictResolution:
      return "awaiting_conflict_resolution";
    case State::kError:
      return "error";
  }
  return "error";
}

const std::vector<std::string_view>& StateNames() {
  static const std::vector<std::string_view> names = {StateName(State::kIdle),
                                                      StateName(State::kBackingUp),
                                                      StateName(State::kAwaitingConfirmation),
                                                      StateName(State::kUpdating),
                                                      StateName(State::kHealthCheck),
                                                      StateName(State::kRollingBack),
                                                      StateName(State::kAwaitingConflictResolution),
                                                      StateName(State::kError)};
  return names;
}

std::optional<State> ParseState(std::string_view name) {
  for (State s : {State::kIdle, State::kBackingUp, State::kAwaitingConfirmation, State::kUpdating,
                  State::kHealthCheck, State::kRollingBack, State::kAwaitingConflictResolution,
                  State::kError}) {
    if (StateName(s) == name) return s;
  }
  return std::nullopt;
}

std::string_view OperationName(Operation operation) {
  switch (operation) {
    case Operation::kNone:
      return "none";
    case Operation::kUpdate:
      return "update";
    case Operation::kBackup:
      return "backup";
    case Operation::kRollback:
      return "rollback";
  }
  return "none";
}

std::string_view EventTypeName(EventType type) {
  switch (type) {
    case EventType::kBackupCompleted:
      return "backup_completed";
    case EventType::kBackupFailed:
      return "backup_failed";
    case EventType::kConfirmationRequested:
      return "confirmation_requested";
    case EventType::kUpdateContinued:
      return "update_continued";
    case EventType::kUpdateCancelled:
      return "update_cancelled";
    case EventType::kUpdateExpired:
      return "update_expired";
    case EventType::kUpdateSucceeded:
      return "update_succeeded";
    case EventType::kUpdateFailed:
      return "update_failed";
    case EventType::kUpdateTimedOut:
      return "update_timed_out";
    case EventType::kHealthCheckFailed:
      return "health_check_failed";
    case EventType::kRollbackStarted:
      return "rollback_started";
    case EventType::kRollbackCompleted:
      return "rollback_completed";
    case EventType::kRollbackConflicts:
      return "rollback_conflicts";
    case EventType::kRollbackAborted:
      return "rollback_aborted";
    case EventType::kRollbackFailed:
      return "rollback_failed";
    case EventType::kUpdateChanges:
      return "update_changes";
    case EventType::kRollbackRecovered:
      return "rollback_recovered";
  }
  return "backup_failed";
}

const std::vector<std::string_view>& EventTypeNames() {
  static const std::vector<std::string_view> names = [] {
    std::vector<std::string_view> list;
    for (int i = 0; i <= static_cast<int>(EventType::kRollbackRecovered); ++i) {
      list.push_back(EventTypeName(static_cast<EventType>(i)));
    }
    return list;
  }();
  return names;
}

// ---- Outcomes and actions ----

RollbackOutcome RollbackOutcome::Ok(std::uint64_t restored_files,
                                    std::optional<std::string> pre_rollback_id) {
  RollbackOutcome outcome;
  outcome.kind = Kind::kOk;
  outcome.restored_files = restored_files;
  outcome.pre_rollback_id = std::move(pre_rollback_id);
  return outcome;
}

RollbackOutcome RollbackOutcome::Conflicts(std::vector<std::string> paths) {
  RollbackOutcome outcome;
  outcome.kind = Kind::kConflicts;
  outcome.conflicts = std::move(paths);
  return outcome;
}

RollbackOutcome RollbackOutcome::Failed(Error error) {
  RollbackOutcome outcome;
  outcome.kind = Kind::kFailed;
  outcome.error = std::move(error);
  return outcome;
}

nlohmann::json PublishDecision::Payload() const {
  json payload{{"update_id", update_id},
               {"decision", DecisionName(decision)},
               {"backup_id", OptionalString(backup_id)}};
  if (error) payload["error"] = *error;
  return payload;
}

nlohmann::json PublishEvent::Payload() const {
  return json{{"event_type", EventTypeName(type)},
              {"message", message},
              {"data", data},
              {"time", FormatIsoTime(time)}};
}

nlohmann::json ActionToJson(const Action& action) {
  return std::visit(
      Overloaded{
          [](const PublishDecision& a) {
            return json{{"action", "publish_decision"}, {"payload", a.Payload()}};
          },
          [](const StartBackup& a) {
            json update = nullptr;
            if (a.update) {
              update = {{"update_id", a.update->update_id},
                        {"target", a.update->target},
                        {"from_version", a.update->from_version},
                        {"to_version", a.update->to_version}};
            }
            return json{{"action", "start_backup"}, {"reason", a.reason}, {"update", update}};
          },
          [](const DeleteBackup& a) {
            return json{{"action", "delete_backup"}, {"backup_id", a.backup_id}};
          },
          [](const RecordFingerprint& a) {
            return json{{"action", "record_fingerprint"},
                        {"backup_id", a.backup_id},
                        {"keep_existing", a.keep_existing}};
          },
          [](const StartRollback& a) {
            return json{{"action", "start_rollback"},
                        {"backup_id", a.backup_id},
                        {"on_conflict", ConflictPolicyName(a.on_conflict)}};
          },
          [](const RunHealthCheck& a) {
            return json{{"action", "run_health_check"}, {"backup_id", a.backup_id}};
          },
          [](const ReportChanges& a) {
            return json{{"action", "report_changes"},
                        {"backup_id", a.backup_id},
                        {"update_id", a.update_id},
                        {"target", a.target}};
          },
          [](const PublishEvent& a) {
            return json{{"action", "publish_event"}, {"payload", a.Payload()}};
          },
          [](const PublishStatus& a) {
            return json{{"action", "publish_status"}, {"status", a.status}};
          },
          [](const Persist&) {
            return json{{"action", "persist"}};
          },
          [](const Respond& a) {
            json out{{"action", "respond"}, {"command", a.command}, {"data", a.data}};
            if (a.error) {
              out["error"] = a.error->message;
              out["code"] = ErrorCodeName(a.error->code);
            }
            return out;
          },
      },
      action);
}

nlohmann::json ActionsToJson(const std::vector<Action>& actions) {
  json out = json::array();
  for (const auto& action : actions) out.emplace_back(ActionToJson(action));
  return out;
}

// ---- Persistence ----

nlohmann::json PersistedStateToJson(const PersistedState& s) {
  return json{
      {"version", kPersistVersion},
      {"state", StateName(s.state)},
      {"operation", OperationName(s.operation)},
      {"update", s.update ? UpdateToJson(*s.update) : json(nullptr)},
      {"backup_id", OptionalString(s.backup_id)},
      {"backup_reason", s.backup_reason},
      {"deadline", s.deadline ? json(FormatExactTime(*s.deadline)) : json(nullptr)},
      {"decision", s.decision ? json(DecisionName(*s.decision)) : json(nullptr)},
      {"policy", ConflictPolicyName(s.policy)},
      {"conflicts", s.conflicts},
      {"health_check_requested", s.health_check_requested},
      {"progress", s.progress ? json(*s.progress) : json(nullptr)},
      {"resumes", s.resumes},
      {"last_backup", s.last_backup ? SummaryToJson(*s.last_backup) : json(nullptr)},
      {"previous_last_backup",
       s.previous_last_backup ? SummaryToJson(*s.previous_last_backup) : json(nullptr)},
      {"last_error", OptionalString(s.last_error)},
      {"last_update_id", OptionalString(s.last_update_id)},
      {"last_update_outcome", OptionalString(s.last_update_outcome)},
  };
}

Result<PersistedState> PersistedStateFromJson(const nlohmann::json& j) {
  PersistedState s;
  try {
    if (!j.is_object()) throw std::runtime_error("not a JSON object");
    const Reader r{j};
    const json& version = r.At("version");
    if (!version.is_number_integer() || version.get<int>() != kPersistVersion) {
      throw std::runtime_error("unsupported version");
    }
    const auto state = ParseState(r.String("state"));
    if (!state) throw std::runtime_error("unknown state");
    s.state = *state;
    const auto operation = ParseOperation(r.String("operation"));
    if (!operation) throw std::runtime_error("unknown operation");
    s.operation = *operation;
    if (const auto it = j.find("update"); it != j.end() && !it->is_null()) {
      auto request = ParseUpdateRequest(it->dump());
      if (!request) throw std::runtime_error("update: " + request.error().message);
      s.update = std::move(*request);
    }
    s.backup_id = r.OptString("backup_id");
    if (s.backup_id && !IsValidBackupId(*s.backup_id)) {
      throw std::runtime_error("invalid backup_id");
    }
    s.backup_reason = r.String("backup_reason");
    if (r.OptString("deadline")) s.deadline = r.Time("deadline");
    if (const auto decision = r.OptString("decision")) {
      s.decision = ParseDecision(*decision);
      if (!s.decision) throw std::runtime_error("unknown decision");
    }
    const auto policy = ParseConflictPolicy(r.String("policy"));
    if (!policy) throw std::runtime_error("unknown policy");
    s.policy = *policy;
    const json& conflicts = r.At("conflicts");
    if (!conflicts.is_array()) throw std::runtime_error("'conflicts' is not an array");
    for (const auto& path : conflicts) {
      if (!path.is_string()) throw std::runtime_error("a conflict is not a string");
      s.conflicts.push_back(path.get<std::string>());
    }
    const json& requested = r.At("health_check_requested");
    if (!requested.is_boolean()) throw std::runtime_error("health_check_requested");
    s.health_check_requested = requested.get<bool>();
    if (const auto it = j.find("progress"); it != j.end() && !it->is_null()) {
      if (!it->is_number_integer()) throw std::runtime_error("'progress' is not an integer");
      s.progress = std::clamp(it->get<int>(), 0, 100);
    }
    // Absent in state files written before resumes were counted: not resumed yet.
    if (const auto it = j.find("resumes"); it != j.end() && !it->is_null()) {
      if (!it->is_number_integer() || it->get<std::int64_t>() < 0) {
        throw std::runtime_error("'resumes' is not a count");
      }
      s.resumes = static_cast<int>(std::min<std::int64_t>(it->get<std::int64_t>(), kMaxResumes));
    }
    s.last_backup = OptSummary(j, "last_backup");
    s.previous_last_backup = OptSummary(j, "previous_last_backup");
    s.last_error = r.OptString("last_error");
    s.last_update_id = r.OptString("last_update_id");
    s.last_update_outcome = r.OptString("last_update_outcome");
  } catch (const std::exception& e) {
    return Fail(ErrorCode::kCorrupt, std::string("lifecycle state: ") + e.what());
  }
  SP_RETURN_IF_ERROR(CheckInvariants(s));
  return s;
}
}  // namespace safepoint::service
