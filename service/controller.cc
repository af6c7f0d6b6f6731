#include "service/controller.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <ctime>
#include <filesystem>
#include <new>

#include "core/base/io.h"
#include "core/base/time_text.h"
#include "core/base/utf8.h"
#include "core/format/manifest.h"
#include "service/controller_internal.h"
#include "service/diff_answer.h"

namespace safepoint::service {

namespace {

using nlohmann::json;
using std::chrono::milliseconds;
using std::chrono::seconds;

using controller_internal::Dump;
using controller_internal::kHomeAssistantStatus;
using controller_internal::Overloaded;

LifecycleOptions LifecycleOptionsFor(const config::Config& c) {
  LifecycleOptions o;
  o.confirm_timeout = std::chrono::duration_cast<seconds>(c.service.confirm_timeout);
  o.health_timeout = std::chrono::duration_cast<seconds>(c.service.health_timeout);
  o.update_timeout = std::chrono::duration_cast<seconds>(c.service.update_timeout);
  o.resolve_timeout = std::chrono::duration_cast<seconds>(c.service.resolve_timeout);
  o.auto_rollback = c.service.auto_rollback;
  o.auto_rollback_policy = c.rollback.on_conflict;
  o.format_time = FormatLocalHumanTime;
  return o;
}

}  // namespace

Controller::Controller(const config::Config& config, FileSystem& fs, const Clock& clock,
                       Backend& backend, mqtt::Transport& transport, JobRunner& jobs,
                       RetainedCheckFactory retained_check)
    : config_(config),
      mqtt_config_(*config.mqtt),
      fs_(fs),
      clock_(clock),
      backend_(backend),
      transport_(transport),
      jobs_(jobs),
      make_retained_check_(std::move(retained_check)),
      lifecycle_(LifecycleOptionsFor(config)),
      mirror_(config.mqtt->mirror),
      zigbee2mqtt_(mqtt_config_.zigbee2mqtt_base_topic, mqtt_config_.zigbee2mqtt_backup_timeout),
      schedule_(config.service.schedule.daily_at) {
  discovery_options_.base_topic = mqtt_config_.base_topic;
  discovery_options_.discovery_prefix = mqtt_config_.discovery_prefix;
  discovery_options_.node_id = mqtt_config_.node_id;
  discovery_options_.sw_version = std::string(kVersion);
  parse_options_.max_payload_bytes = 64 * 1024;
}

Status Controller::Prepare() {
  SP_RETURN_IF_ERROR(discovery::ValidateOptions(discovery_options_));
  if (auto st = backend_.RecoverInterrupted(); !st) {
    spdlog::error("recovering an interrupted rollback failed: {}", st.error().message);
  }
  // Reported at the first connect (OnConnected), after availability and the status.
  recovered_at_start_ = backend_.TakeRecoveryNotes();
  return {};
}

std::vector<std::pair<std::string, int>> Controller::Subscriptions() const {
  std::vector<std::pair<std::string, int>> filters = {{Topic("cmd/+"), 1},
                                                      {Topic("update/request"), 1},
                                                      {Topic("update/result"), 1},
                                                      {std::string(kHomeAssistantStatus), 1}};
  for (const auto& f : mqtt_config_.mirror.filters) filters.emplace_back(f, 0);
  if (mqtt_config_.zigbee2mqtt_backup) filters.emplace_back(zigbee2mqtt_.ResponseTopic(), 1);
  return filters;
}

void Controller::Start() {
  if (transport_.protocol() == 5) {
    spdlog::info(
        "MQTT 5: command topics use Retain As Published; a retained command is "
        "recognised by its flag");
  } else if (!retained_check_) {
    retained_check_ = make_retained_check_();
    spdlog::info("MQTT 3.1.1: every command is checked for a retained copy before it acts");
  }
  if (auto st = transport_.Subscribe(Subscriptions()); !st) {
    spdlog::error("subscribe failed: {}", st.error().message);
  }
  LoadPersisted();
  // The store decides last_backup, not the state file: the CLI may have taken or rolled back
  // (a new pre-rollback point) or deleted safety points while the service was stopped.
  RefreshSafetyPoints(/*last_backup=*/true);
  started_ = true;
  spdlog::info("safepoint {} serving on {} (base topic {})", kVersion, mqtt_config_.url,
               mqtt_config_.base_topic);
}

void Controller::RunSafely(const std::function<void()>& fn) {
  // Each closure starts with no command in hand; HandleCommand sets one.
  command_name_.clear();
  transaction_.reset();
  try {
    fn();
  } catch (const std::exception& e) {
    // A broken invariant (or memory running out) must not take the service down with every
    // pending decision. A command being handled gets an error response.
    ++stats_.internal_errors;
    const bool oom = dynamic_cast<const std::bad_alloc*>(&e) != nullptr;
    const std::string what = oom ? "out of memory" : SanitizeUtf8(e.what());
    spdlog::error("internal error while handling an event: {}", what);
    if (!command_name_.empty()) {
      try {
        Respond(command_name_, Error{ErrorCode::kInternal, "internal error: " + what},
                json::object(), transaction_);
      } catch (const std::exception&) {
        // Not even the response fits: the log line above stays.
      }
    }
  }
  command_name_.clear();
  transaction_.reset();
}

void Controller::Tick() {
  const auto now = clock_.Now();
  command_name_.clear();
  transaction_.reset();
  Execute(lifecycle_.OnTick(now));
  if (auto ready = zigbee2mqtt_.OnTick(now)) {
    for (const auto& w : ready->live.warnings) spdlog::warn("{}", w);
    RunBackup(ready->action, std::move(ready->entities), std::move(ready->live));
  }
  if (rediscover_at_ && now >= *rediscover_at_) {
    rediscover_at_.reset();
    PublishDiscovery();
    Execute(std::vector<Action>{PublishStatus{lifecycle_.StatusJson()}});
  }
  CheckSchedule(now);
}

void Controller::Stop() {
  spdlog::info("stopping: {} messages, {} invalid, {} retained commands ignored", stats_.messages,
               stats_.invalid_messages, stats_.retained_commands_ignored);
  FlushOutbox(/*log_failure=*/false);
  if (!outbox_.empty()) {
    spdlog::warn("{} messages held while not connected were never sent (the first to {})",
                 outbox_.size(), outbox_.front().topic);
  }
  Publish(Topic("availability"), "offline", true);
}

bool Controller::Submit(std::string what, JobRunner::Job job) {
  if (pending_jobs_ > 0) return false;
  Enqueue(std::move(what), std::move(job));
  return true;
}

std::string Controller::WorkerBusyMessage() const {
  // The lifecycle's operation says the most (an update's id, its state); else the job that runs.
  if (lifecycle_.Busy()) return lifecycle_.BusyMessage();
  return "busy: " + (job_names_.empty() ? std::string("another operation") : job_names_.front()) +
         " is in progress";
}

void Controller::Enqueue(std::string what, JobRunner::Job job) {
  ++pending_jobs_;
  job_names_.push_back(std::move(what));
  jobs_.Run([this, job = std::move(job)] {
    std::function<void()> done;
    std::vector<std::string> recovered;
    try {
      done = job();
      recovered = backend_.TakeRecoveryNotes();  // still on the worker, as every backend call
    } catch (const std::exception& e) {
      // The backend turns exceptions into errors; anything else still must not end the
      // service: the job is counted as an internal error and its slot is freed.
      done = [this, what = SanitizeUtf8(e.what())] {
        ++stats_.internal_errors;
        spdlog::error("internal error in an operation: {}", what);
      };
    }
    return std::function<void()>([this, done = std::move(done), recovered = std::move(recovered)] {
      --pending_jobs_;
      job_names_.pop_front();  // the runner runs jobs in the order they were queued
      ReportRecovery(recovered);  // before the job's own result: it happened first
      done();
    });
  });
}

store::ProgressFn Controller::ProgressReporter() {
  return [this, last = -1](std::uint64_t done, std::uint64_t total) mutable {
    const int pct = total == 0 ? 100 : static_cast<int>(done * 100 / total);
    if (pct / 5 == last / 5) return;
    last = pct;
    jobs_.Post([this, pct] { Execute(lifecycle_.OnProgress(pct, clock_.Now())); });
  };
}

void Controller::Execute(std::vector<Action> actions) {
  {
    // What retention on the worker must keep: the lifecycle has already moved to its new state.
    std::lock_guard lock(in_use_mu_);
    in_use_ = lifecycle_.Busy() ? lifecycle_.Snapshot().backup_id : std::nullopt;
  }
  for (const auto& a : actions) Execute(a);
}

void Controller::Execute(const Action& action) {
  std::visit(Overloaded{
                 [&](const PublishDecision& a) {
                   Publish(Topic("update/decision"), Dump(a.Payload()), false);
                 },
                 [&](const service::StartBackup& a) { StartBackup(a); },
                 [&](const DeleteBackup& a) {
                   // Queued, never refused: a request that follows at once waits for it.
                   std::string id = a.backup_id;
                   Enqueue("the deletion of safety point " + id, [this, id] {
                     auto st = backend_.Delete(id);
                     return std::function<void()>([this, id, st] {
                       if (!st)
                         spdlog::error("cannot delete safety point {}: {}", id, st.error().message);
                       entity_snapshots_.erase(id);
                       RefreshSafetyPoints();
                     });
                   });
                 },
                 [&](const service::RecordFingerprint& a) {
                   // Runs before the rollback the lifecycle starts next (the worker is sequential).
                   std::string id = a.backup_id;
                   const bool keep = a.keep_existing;
                   Enqueue("recording the fingerprint of " + id, [this, id, keep] {
                     auto st = backend_.RecordFingerprint(id, keep);
                     return std::function<void()>([id, st] {
                       if (!st) {
                         spdlog::warn("cannot record the post-update fingerprint of {}: {}", id,
                                      st.error().message);
                       }
                     });
                   });
                 },
                 [&](const service::StartRollback& a) { StartRollback(a); },
                 [&](const service::RunHealthCheck& a) { RunHealthCheck(a.backup_id); },
                 [&](const service::ReportChanges& a) { ReportChanges(a); },
                 [&](const PublishEvent& a) {
                   Publish(Topic("event"), Dump(config::RedactJson(config_, a.Payload())), false);
                 },
                 [&](const PublishStatus&) {
                   if (!started_) return;  // OnConnected publishes the status read at start-up
                   // Always the state as it is now: the list may have moved on since the
                   // action was made (e.g. a health report handled while running it).
                   Publish(Topic("status"),
                           Dump(config::RedactJson(config_, lifecycle_.StatusJson())), true);
                   PublishStateTopics();
                 },
                 [&](const service::Persist&) { Persist(); },
                 [&](const service::Respond& a) {
                   // Responses belong to the command being handled; others carry their own name.
                   const std::string& name = command_name_.empty() ? a.command : command_name_;
                   Respond(name, a.error, a.data, transaction_);
                 },
             },
             action);
}

void Controller::ReportRecovery(const std::vector<std::string>& actions) {
  if (actions.empty()) return;
  std::string message = "An interrupted rollback was recovered: ";
  for (std::size_t i = 0; i < actions.size(); ++i) message += (i ? "; " : "") + actions[i];
  Execute(Action(
      PublishEvent{EventType::kRollbackRecovered, message, {{"actions", actions}}, clock_.Now()}));
}

// The files an update changed, as the event `update_changes`: queued on the worker behind what
// it does (never refused), so a rollback the health check starts next waits for it.
void Controller::ReportChanges(const service::ReportChanges& action) {
  Enqueue("the report of the update's changes", [this, action] {
    auto report = backend_.ContentDiff(action.backup_id, std::nullopt, /*hunks=*/false);
    return std::function<void()>([this, action, report] {
      json data = {{"update_id", action.update_id},
                   {"backup_id", action.backup_id},
                   {"target", action.target}};
      std::string message;
      const std::string lead = "The update of " + action.target + " changed";
      if (report) {
        data["summary"] = diff::ToJson(*report, false)["summary"];
        data["files"] = ChangedFilesJson(*report, kMaxDiffFilesListed);
        data["files_total"] = report->files.size();
        data["files_cut"] = report->files.size() > kMaxDiffFilesListed;
        message = ChangesMessage(*report, lead);
      } else {
        spdlog::warn("cannot list the files update {} changed: {}", action.update_id,
                     report.error().message);
        data["error"] = report.error().message;
        message = "The files the update of " + action.target +
                  " changed cannot be listed: " + report.error().message;
      }
      Execute(Action(PublishEvent{EventType::kUpdateChanges, message, data, clock_.Now()}));
    });
  });
}

void Controller::StartBackup(const service::StartBackup& action) {
  const auto now = clock_.Now();
  auto entities = mirror_.Snapshot(now);
  if (!mqtt_config_.zigbee2mqtt_backup || zigbee2mqtt_.Waiting()) {
    RunBackup(action, std::move(entities), {});
    return;
  }
  // Zigbee2MQTT's own backup first (its coordinator backup and database); the safety point
  // follows its answer, or the deadline.
  std::string transaction =
      "safepoint-" +
      std::to_string(std::uniform_int_distribution<std::uint64_t>(1, 1'000'000'000'000)(rng_));
  const std::string payload = zigbee2mqtt_.Begin(action, std::move(entities), transaction, now);
  if (auto st = transport_.Publish(zigbee2mqtt_.RequestTopic(), payload, 1, false); !st) {
    ++stats_.publish_failures;
    auto ready = zigbee2mqtt_.Abandon("cannot publish the request (" + st.error().message + ")");
    RunBackup(ready.action, std::move(ready.entities), std::move(ready.live));
    return;
  }
  spdlog::info("asked Zigbee2MQTT for its backup (transaction {})", transaction);
}

void Controller::RunBackup(const service::StartBackup& action, entities::EntitySnapshot entities,
                           snapshot::LiveState live) {
  // Queued behind what the worker still does (the deletion of a cancelled safety point, a
  // verify): the lifecycle already allows one operation at a time.
  Enqueue("a safety point", [this, action, entities, live = std::move(live),
                             progress = ProgressReporter()] {
    auto m = backend_.Backup(action.reason, action.update, progress, entities, live);
    // Only the counts are reported: the entries go before retention may verify (scrypt again).
    if (m) manifest::DropEntries(*m);
    // Retention in the same job, before the result is reported: when the lifecycle announces
    // the safety point, the store is unlocked again and the list is final.
    std::optional<Result<store::PruneReport>> pruned;
    if (m) pruned = ApplyRetention();
    return std::function<void()>([this, m, entities, pruned] {
      if (pruned) ReportRetention(*pruned);
      Result<BackupSummary> result = tl::unexpected(Error{ErrorCode::kInternal, ""});
      if (m) {
        result = SummaryOf(*m);
        // Only the health check after an update compares against these states; keep the
        // newest update's alone (a restarted service reads them from the safety point).
        entity_snapshots_.clear();
        if (m->update) entity_snapshots_[m->id] = entities::AvailabilityOnly(entities);
        RefreshSafetyPoints();
      } else {
        spdlog::error("safety point failed: {}", m.error().message);
        result = tl::unexpected(m.error());
      }
      Execute(lifecycle_.OnBackupDone(result, clock_.Now()));
    });
  });
}

BackupSummary Controller::SummaryOf(const manifest::Manifest& m) const {
  BackupSummary s;
  s.backup_id = m.id;
  s.created = TimePoint(seconds(m.created_unix));
  s.file_count = m.FileCount();
  s.total_bytes = m.TotalBytes();
  if (m.payload) s.path = config_.paths.backup_dir + "/" + m.id + "/" + m.payload->name;
  return s;
}

Result<store::PruneReport> Controller::ApplyRetention() {
  return backend_.Prune([this](const std::string& id) {
    std::lock_guard lock(in_use_mu_);
    return in_use_ && *in_use_ == id;
  });
}

void Controller::ReportRetention(const Result<store::PruneReport>& report) {
  if (!report) {
    spdlog::warn("retention failed: {}", report.error().message);
    return;
  }
  for (const auto& id : report->deleted) {
    spdlog::info("retention deleted safety point {}", id);
    entity_snapshots_.erase(id);
  }
}

void Controller::StartRollback(const service::StartRollback& action) {
  // Queued behind a fingerprint job when one is pending; the lifecycle allows one rollback.
  Enqueue("a rollback to " + action.backup_id, [this, action, progress = ProgressReporter()] {
    auto outcome = backend_.Rollback(action.backup_id, action.on_conflict, progress);
    return std::function<void()>([this, outcome] {
      Execute(lifecycle_.OnRollbackDone(outcome, clock_.Now()));
      // A rollback takes a pre-rollback safety point first: the newest one now.
      RefreshSafetyPoints(/*last_backup=*/true);
    });
  });
}

void Controller::RunHealthCheck(const std::string& backup_id) {
  auto now_snapshot = mirror_.Snapshot(clock_.Now());
  auto it = entity_snapshots_.find(backup_id);
  if (it != entity_snapshots_.end()) {
    // Reported through the queue: the actions that asked for the check finish first.
    auto unavailable = entities::UnavailableNow(it->second, now_snapshot);
    jobs_.Post(
        [this, unavailable] { Execute(lifecycle_.OnHealthReport(unavailable, clock_.Now())); });
    return;
  }
  // After a restart the states at backup time come from the safety point itself.
  Enqueue("the health check", [this, id = backup_id, now_snapshot] {
    auto before = backend_.EntitiesOf(id);
    return std::function<void()>([this, before, now_snapshot] {
      std::vector<std::string> unavailable;
      if (before) {
        unavailable = entities::UnavailableNow(*before, now_snapshot);
      } else {
        spdlog::warn("health check without entity states: {}", before.error().message);
      }
      Execute(lifecycle_.OnHealthReport(unavailable, clock_.Now()));
    });
  });
}

void Controller::CheckSchedule(TimePoint now) {
  if (!schedule_.Due(now, lifecycle_.Busy() || WorkerBusy())) return;
  command_name_.clear();
  transaction_.reset();
  Execute(lifecycle_.OnManualBackupRequest(std::string("scheduled daily safety point"), now));
}

Controller::TimePoint Controller::NextWake(TimePoint now) const {
  TimePoint wake = now + seconds(60);
  if (const auto& d = lifecycle_.Snapshot().deadline; d && *d < wake) wake = *d;
  if (rediscover_at_ && *rediscover_at_ < wake) wake = *rediscover_at_;
  if (const auto d = schedule_.next(); d && *d < wake) wake = *d;
  if (const auto d = zigbee2mqtt_.Deadline(); d && *d < wake) wake = *d;
  return std::max(wake, now + milliseconds(10));
}

}  // namespace safepoint::service
