// The controller's inbound side: MQTT messages, commands and their answers.
#include <spdlog/spdlog.h>

#include <algorithm>

#include "core/base/utf8.h"
#include "service/controller.h"
#include "service/controller_internal.h"
#include "service/diff_answer.h"

namespace safepoint::service {

using controller_internal::Dump;
using controller_internal::kHomeAssistantStatus;
using controller_internal::Overloaded;
using controller_internal::Printable;
using nlohmann::json;
using std::chrono::milliseconds;

void Controller::HandleEvent(const mqtt::Event& event) {
  switch (event.kind) {
    case mqtt::Event::Kind::kConnected:
      spdlog::info("connected to the MQTT broker");
      OnConnected();
      break;
    case mqtt::Event::Kind::kConnectionLost:
      spdlog::warn("lost the MQTT connection ({}); reconnecting", event.detail);
      break;
    case mqtt::Event::Kind::kMessage:
      HandleMessage(event.message);
      break;
  }
}

void Controller::HandleMessage(const mqtt::Message& m) {
  ++stats_.messages;
  const auto now = clock_.Now();
  const std::string& base = mqtt_config_.base_topic;
  command_name_.clear();
  transaction_.reset();
  if (m.topic == kHomeAssistantStatus) {
    Execute(lifecycle_.OnHomeAssistantStatus(m.payload, now));
    if (m.payload == "online") {
      // Home Assistant restarted: re-announce after a short random delay (spreads the load of
      // every MQTT integration answering at once).
      rediscover_at_ = now + milliseconds(std::uniform_int_distribution<int>(500, 3000)(rng_));
    }
    return;
  }
  if (mqtt_config_.zigbee2mqtt_backup && m.topic == zigbee2mqtt_.ResponseTopic()) {
    auto answer = zigbee2mqtt_.OnResponse(m.payload, m.retained);
    if (answer.invalid) ++stats_.invalid_messages;
    if (!answer.ready) return;
    auto& ready = *answer.ready;
    if (ready.live.zigbee2mqtt_backup) {
      spdlog::info("Zigbee2MQTT backup received ({} bytes)", ready.live.zigbee2mqtt_backup->size());
    }
    for (const auto& w : ready.live.warnings) spdlog::warn("{}", w);
    RunBackup(ready.action, std::move(ready.entities), std::move(ready.live));
    return;
  }
  if (m.topic.size() > base.size() && m.topic.compare(0, base.size() + 1, base + "/") == 0) {
    const std::string rest = m.topic.substr(base.size() + 1);
    if (rest.starts_with("cmd/")) {
      HandleCommand(rest.substr(4), m);
      return;
    }
    if (rest == "update/request" || rest == "update/result") {
      HandleUpdateMessage(rest, m);
      return;
    }
    return;  // our own publications (status, event, responses...)
  }
  mirror_.Offer(m.topic, m.payload, m.retained, now);
}

void Controller::HandleUpdateMessage(const std::string& which, const mqtt::Message& m) {
  if (m.payload.empty()) return;  // what clearing a retained message looks like
  // A stale retained request or result must never start or judge an update.
  if (StaleRetained(m, "update")) return;
  const auto now = clock_.Now();
  command_name_ = "update";
  transaction_ = ExtractTransaction(m.payload, parse_options_);
  // An invalid message gets an error response on <base>/response/update and a log line naming
  // only its size and the error code (never its content).
  auto handle = [&](const auto& parsed, const char* what, auto&& apply) {
    if (!parsed) {
      ++stats_.invalid_messages;
      if (RateLimitError()) {
        spdlog::warn("invalid update {} ({} bytes): {}", what, m.payload.size(),
                     ErrorCodeName(parsed.error().code));
      }
      Respond("update", parsed.error(), json::object(), transaction_);
      return;
    }
    Execute(apply(*parsed));
  };
  if (which == "update/request") {
    handle(ParseUpdateRequest(m.payload, parse_options_), "request",
           [&](const UpdateRequest& r) { return lifecycle_.OnUpdateRequest(r, now); });
  } else {
    handle(ParseUpdateResult(m.payload, parse_options_), "result",
           [&](const UpdateResult& r) { return lifecycle_.OnUpdateResult(r, now); });
  }
}

void Controller::HandleCommand(const std::string& name, const mqtt::Message& m) {
  const auto now = clock_.Now();
  if (m.payload.empty()) return;  // what clearing a retained command looks like
  const bool known =
      std::find(CommandNames().begin(), CommandNames().end(), name) != CommandNames().end();
  if (StaleRetained(m, known ? name : "unknown")) return;
  command_name_ = known ? name : "unknown";
  transaction_ = ExtractTransaction(m.payload, parse_options_);
  auto cmd = ParseCommand(name, m.payload, parse_options_);
  if (!cmd) {
    ++stats_.invalid_messages;
    if (RateLimitError()) {
      // The payload is not quoted: it is the sender's, and may be large or hostile.
      spdlog::warn("invalid command on {} ({} bytes): {}", Printable(m.topic), m.payload.size(),
                   ErrorCodeName(cmd.error().code));
    }
    Respond(command_name_, cmd.error(), json::object(), transaction_);
    return;
  }
  transaction_ = cmd->transaction;
  const std::string source = cmd->pressed ? "button" : (name == "text" ? "text" : "mqtt");
  std::visit(
      Overloaded{
          [&](const BackupCommand& c) { Execute(lifecycle_.OnManualBackupRequest(c.reason, now)); },
          [&](const ContinueCommand& c) {
            Execute(lifecycle_.OnDecision(Decision::kContinue, source, c.update_id, now));
          },
          [&](const CancelCommand& c) {
            Execute(lifecycle_.OnDecision(Decision::kCancel, source, c.update_id, now));
          },
          [&](const RollbackCommand& c) { Rollback(c); },
          [&](const ResolveCommand& c) { Execute(lifecycle_.OnResolve(c.action, now)); },
          [&](const VerifyCommand& c) { Verify(c); },
          [&](const DeleteCommand& c) { Delete(c); },
          [&](const ListCommand&) { List(); },
          [&](const StatusCommand&) {
            Respond(command_name_, std::nullopt, lifecycle_.StatusJson(), transaction_);
          },
          [&](const SelectCommand& c) { Select(c); },
          [&](const DiffCommand& c) { Diff(c); },
      },
      cmd->args);
}

void Controller::Rollback(const RollbackCommand& c) {
  auto id = safety_points_.RollbackTarget(c.backup_id);
  if (!id) {
    Respond(command_name_, id.error(), json::object(), transaction_);
    return;
  }
  // Found by an MQTT campaign: `delete X` then at once `rollback X` started the rollback, and the
  // deletion queued before it then removed its safety point.
  if (deleting_.contains(*id)) {
    Respond(command_name_, Error{ErrorCode::kBusy, "safety point " + *id + " is being deleted"},
            json::object(), transaction_);
    return;
  }
  // A safety point taken since the list was last read (by hand, say) is looked for again.
  if (!safety_points_.Known(*id)) RefreshSafetyPoints();
  if (!safety_points_.Known(*id)) {
    Respond(command_name_, Error{ErrorCode::kNotFound, "no safety point " + *id}, json::object(),
            transaction_);
    return;
  }
  Execute(lifecycle_.OnManualRollbackRequest(*id, c.on_conflict.value_or(config_.rollback.on_conflict),
                                             clock_.Now()));
}

// The answer of `verify`: one result per safety point; the first failure is the error.
void Controller::Verify(const VerifyCommand& c) {
  std::vector<std::string> ids;
  if (c.backup_id) ids.push_back(*c.backup_id);
  const bool ok = Submit("a verify", [this, ids, tx = transaction_, name = command_name_] {
    auto r = backend_.Verify(ids);
    return std::function<void()>([this, r, tx, name] {
      if (!r) {
        Respond(name, r.error(), json::object(), tx);
        return;
      }
      const VerifyAnswer answer = VerifyAnswerOf(*r);
      Respond(name, answer.first_error, json{{"results", answer.results}}, tx);
    });
  });
  if (!ok) {
    Respond(command_name_, Error{ErrorCode::kBusy, WorkerBusyMessage()}, json::object(),
            transaction_);
  }
}

// The answer of `diff`: the per-file summary, and for one path the patch (bounded).
void Controller::Diff(const DiffCommand& c) {
  const bool ok = Submit("a diff", [this, c, tx = transaction_, name = command_name_] {
    auto r = backend_.ContentDiff(c.backup_id, c.path, /*hunks=*/c.path.has_value());
    return std::function<void()>([this, c, r, tx, name] {
      if (!r) {
        Respond(name, r.error(), json::object(), tx);
        return;
      }
      Respond(name, std::nullopt, DiffAnswer(*r, c.path), tx);
    });
  });
  if (!ok) {
    Respond(command_name_, Error{ErrorCode::kBusy, WorkerBusyMessage()}, json::object(),
            transaction_);
  }
}

void Controller::Delete(const DeleteCommand& c) {
  const auto& snap = lifecycle_.Snapshot();
  if (lifecycle_.Busy() && snap.backup_id && *snap.backup_id == c.backup_id) {
    Respond(command_name_,
            Error{ErrorCode::kBusy,
                  "safety point " + c.backup_id + " belongs to the operation in progress"},
            json::object(), transaction_);
    return;
  }
  deleting_.insert(c.backup_id);
  const bool ok = Submit("the deletion of safety point " + c.backup_id,
                         [this, id = c.backup_id, tx = transaction_, name = command_name_] {
    auto st = backend_.Delete(id);
    return std::function<void()>([this, id, st, tx, name] {
      deleting_.erase(deleting_.find(id));
      if (!st) {
        Respond(name, st.error(), json::object(), tx);
        return;
      }
      entity_snapshots_.erase(id);
      const auto& last = lifecycle_.Snapshot().last_backup;
      RefreshSafetyPoints(/*last_backup=*/last && last->backup_id == id);
      Respond(name, std::nullopt, json{{"deleted", id}}, tx);
    });
  });
  if (!ok) {
    deleting_.erase(deleting_.find(c.backup_id));
    Respond(command_name_, Error{ErrorCode::kBusy, WorkerBusyMessage()}, json::object(),
            transaction_);
  }
}

void Controller::List() {
  auto list = backend_.List();
  if (!list) {
    Respond(command_name_, list.error(), json::object(), transaction_);
    return;
  }
  json items = json::array();
  for (auto it = list->rbegin(); it != list->rend(); ++it) items.push_back(ListingJson(*it));
  Respond(command_name_, std::nullopt, json{{"safety_points", items}}, transaction_);
}

void Controller::Select(const SelectCommand& c) {
  if (auto st = safety_points_.Select(c.backup_id); !st) {
    Respond(command_name_, st.error(), json::object(), transaction_);
    return;
  }
  PublishStateTopics();
  Respond(command_name_, std::nullopt, json{{"selected", c.backup_id}}, transaction_);
}

bool Controller::StaleRetained(const mqtt::Message& m, const std::string& command) {
  bool retained = m.retained;
  if (!retained && retained_check_) {
    auto copy = retained_check_->Retained(m.topic);
    if (!copy) {
      spdlog::warn("not acting on {}: {}", Printable(m.topic), copy.error().message);
      Respond(command,
              Error{ErrorCode::kIo,
                    "not acted on: cannot check that it was not published retained (MQTT 3.1.1): " +
                        copy.error().message},
              json::object(), ExtractTransaction(m.payload, parse_options_));
      return true;
    }
    retained = copy->has_value() && **copy == m.payload;
  }
  if (!retained) return false;
  // A retained command is stale by definition: a Continue retained last week must never
  // approve today's update. Ignore it and clear it from the broker.
  ++stats_.retained_commands_ignored;
  (void)transport_.ClearRetained(m.topic);
  spdlog::warn("ignored a retained message on {}", Printable(m.topic));
  return true;
}

bool Controller::RateLimitError() {
  if (error_budget_.Take(clock_.Monotonic())) return true;
  ++stats_.responses_suppressed;
  return false;
}

void Controller::Respond(const std::string& command, const std::optional<Error>& error,
                         const json& data, const std::optional<json>& transaction) {
  if (error && !RateLimitError()) return;
  std::string text;
  if (error) {
    const std::string prefix = std::string(ErrorCodeName(error->code)) + ": ";
    text = error->message.starts_with(prefix) ? error->message : prefix + error->message;
  }
  json payload = error ? service::Response(ResponseStatus::kError, data, text, transaction)
                       : service::Response(ResponseStatus::kOk, data, std::nullopt, transaction);
  // A value that came from `!secret` never reaches the broker in a message (config::Redact).
  Publish(Topic("response/" + command), Dump(config::RedactJson(config_, payload)), false);
}

}  // namespace safepoint::service
