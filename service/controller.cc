#include "service/controller.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <ctime>
#include <filesystem>
#include <new>

#include "core/base/io.h"
#include "core/base/utf8.h"
#include "core/format/manifest.h"

namespace safepoint::service {

namespace {

using nlohmann::json;
using std::chrono::milliseconds;
using std::chrono::seconds;

constexpr std::string_view kHomeAssistantStatus = "homeassistant/status";

template <class... Ts>
struct Overloaded : Ts... {
  using Ts::operator()...;
};
template <class... Ts>
Overloaded(Ts...) -> Overloaded<Ts...>;

LifecycleOptions LifecycleOptionsFor(const config::Config& c) {
  LifecycleOptions o;
  o.confirm_timeout = std::chrono::duration_cast<seconds>(c.service.confirm_timeout);
  o.health_timeout = std::chrono::duration_cast<seconds>(c.service.health_timeout);
  o.update_timeout = std::chrono::duration_cast<seconds>(c.service.update_timeout);
  o.resolve_timeout = std::chrono::duration_cast<seconds>(c.service.resolve_timeout);
  o.auto_rollback = c.service.auto_rollback;
  o.auto_rollback_policy = c.rollback.on_conflict;
  o.format_time = LocalHumanTime;
  return o;
}

// JSON text of a payload. Text that came from a message may not be UTF-8; it is replaced
// rather than allowed to throw on the state thread.
std::string Dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

std::string Printable(std::string_view s, std::size_t max = 80) {
  std::string out;
  for (char c : s.substr(0, max)) {
    out += (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) ? '?' : c;
  }
  if (s.size() > max) out += "...";
  return out;
}

}  // namespace

std::string LocalHumanTime(std::chrono::system_clock::time_point t) {
  std::time_t tt = std::chrono::system_clock::to_time_t(t);
  std::tm tm{};
  localtime_r(&tt, &tm);
  char buf[64];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S %Z", &tm);
  return buf;
}

std::chrono::system_clock::time_point NextDailyAt(std::chrono::system_clock::time_point now,
                                                  std::chrono::minutes at) {
  std::time_t tt = std::chrono::system_clock::to_time_t(now);
  std::tm tm{};
  localtime_r(&tt, &tm);
  for (int day = 0; day < 3; ++day) {
    std::tm candidate = tm;
    candidate.tm_mday += day;
    candidate.tm_hour = static_cast<int>(at.count() / 60);
    candidate.tm_min = static_cast<int>(at.count() % 60);
    candidate.tm_sec = 0;
    candidate.tm_isdst = -1;  // let mktime apply the day's DST rule
    auto when = std::chrono::system_clock::from_time_t(std::mktime(&candidate));
    if (when > now) return when;
  }
  return now + std::chrono::hours(24);
}

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
      zigbee2mqtt_(mqtt_config_.zigbee2mqtt_base_topic, mqtt_config_.zigbee2mqtt_backup_timeout) {
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
  RefreshSafetyPoints();
  if (!lifecycle_.Snapshot().last_backup) Execute(lifecycle_.SetLastBackup(Newest()));
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
  Publish(Topic("availability"), "offline", true);
}

bool Controller::Submit(JobRunner::Job job) {
  if (pending_jobs_ > 0) return false;
  Enqueue(std::move(job));
  return true;
}

void Controller::Enqueue(JobRunner::Job job) {
  ++pending_jobs_;
  jobs_.Run([this, job = std::move(job)] {
    std::function<void()> done;
    try {
      done = job();
    } catch (const std::exception& e) {
      // The backend turns exceptions into errors; anything else still must not end the
      // service: the job is counted as an internal error and its slot is freed.
      done = [this, what = SanitizeUtf8(e.what())] {
        ++stats_.internal_errors;
        spdlog::error("internal error in an operation: {}", what);
      };
    }
    return std::function<void()>([this, done = std::move(done)] {
      --pending_jobs_;
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

std::string Controller::Topic(const std::string& suffix) const {
  return mqtt_config_.base_topic + "/" + suffix;
}

void Controller::Publish(const std::string& topic, const std::string& payload, bool retain, int qos) {
  if (auto st = transport_.Publish(topic, payload, qos, retain); !st) {
    ++stats_.publish_failures;
    spdlog::warn("publish to {} failed: {}", topic, st.error().message);
  }
}

bool Controller::RateLimitError() {
  // Token bucket of 100 tokens refilled at 50 per second, shared by error answers and the log
  // lines about invalid messages: an invalid message takes two (its log line and its answer), so
  // 50 of them are answered at once and 25 per second after that (docs/security.md).
  auto now = clock_.Monotonic();
  double elapsed = std::chrono::duration<double>(now - bucket_time_).count();
  bucket_time_ = now;
  bucket_tokens_ = std::min(100.0, bucket_tokens_ + elapsed * 50.0);
  if (bucket_tokens_ < 1.0) {
    ++stats_.responses_suppressed;
    return false;
  }
  bucket_tokens_ -= 1.0;
  return true;
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

void Controller::OnConnected() {
  published_.clear();  // the broker may have lost its retained messages
  Publish(Topic("availability"), "online", true);
  PublishDiscovery();
  Execute(std::vector<Action>{PublishStatus{lifecycle_.StatusJson()}});
}

discovery::DiscoveryState Controller::DiscoveryStateNow() const {
  discovery::DiscoveryState state;
  state.safety_points = safety_points_;
  state.selected = selected_;
  state.decision_pending = lifecycle_.state() == State::kAwaitingConfirmation;
  state.conflict_pending = lifecycle_.state() == State::kAwaitingConflictResolution;
  return state;
}

void Controller::PublishDiscovery() {
  if (!started_) return;
  Publish(discovery::DiscoveryTopic(discovery_options_),
          Dump(discovery::DeviceDiscovery(discovery_options_, DiscoveryStateNow())), true);
  PublishStateTopics();
}

void Controller::PublishStateTopics() {
  if (!started_) return;
  for (const auto& [topic, payload] :
       discovery::StateTopics(discovery_options_, DiscoveryStateNow())) {
    auto it = published_.find(topic);
    if (it != published_.end() && it->second == payload) continue;  // retained already
    Publish(topic, payload, true);
    published_[topic] = payload;
  }
}

void Controller::RefreshSafetyPoints() {
  auto list = backend_.List();
  if (!list) {
    spdlog::warn("cannot list safety points: {}", list.error().message);
    return;
  }
  std::vector<std::string> ids;
  for (auto it = list->rbegin(); it != list->rend(); ++it) ids.push_back(it->id);
  bool changed = ids != safety_points_;
  safety_points_ = std::move(ids);
  if (selected_ &&
      std::find(safety_points_.begin(), safety_points_.end(), *selected_) == safety_points_.end()) {
    selected_.reset();
  }
  if (!selected_ && !safety_points_.empty()) selected_ = safety_points_.front();
  if (changed) PublishDiscovery();
}

std::optional<BackupSummary> Controller::Newest() {
  auto list = backend_.List();
  if (!list) return std::nullopt;
  for (auto it = list->rbegin(); it != list->rend(); ++it) {
    if (it->manifest) return SummaryOf(*it->manifest);
  }
  return std::nullopt;
}

void Controller::Persist() {
  const std::string& path = config_.service.state_file;
  {
    std::error_code ec;
    auto parent = std::filesystem::path(path).parent_path();
    if (!parent.empty() && !std::filesystem::exists(parent, ec)) {
      std::filesystem::create_directories(parent, ec);
      std::filesystem::permissions(parent, std::filesystem::perms::owner_all, ec);
    }
  }
  const std::string tmp = path + ".tmp";
  std::string text = PersistedStateToJson(lifecycle_.Snapshot())
                         .dump(1, ' ', false, json::error_handler_t::replace) +
                     "\n";
  auto write = [&]() -> Status {
    (void)fs_.Remove(tmp);
    auto f = fs_.CreateFile(tmp, 0600);
    if (!f) return tl::unexpected(f.error());
    SP_RETURN_IF_ERROR(
        (*f)->Append({reinterpret_cast<const std::uint8_t*>(text.data()), text.size()}));
    SP_RETURN_IF_ERROR((*f)->Sync());
    SP_RETURN_IF_ERROR((*f)->Close());
    SP_RETURN_IF_ERROR(fs_.Rename(tmp, path));
    auto slash = path.rfind('/');
    return fs_.SyncDir(slash == std::string::npos ? "." : path.substr(0, slash));
  };
  if (auto st = write(); !st) {
    spdlog::error("cannot save the service state to {}: {}", path, st.error().message);
  }
}

void Controller::LoadPersisted() {
  // Never waits on a FIFO or reads a giant: the state file is a few hundred bytes.
  constexpr std::size_t kMaxStateFileBytes = 1 << 20;
  auto text = ReadFileBounded(config_.service.state_file, kMaxStateFileBytes);
  if (!text) {
    if (text.error().code != ErrorCode::kNotFound) {
      spdlog::error("service state: {}; starting idle", text.error().message);
    }
    return;
  }
  json j = json::parse(*text, nullptr, false);
  if (j.is_discarded()) {
    spdlog::error("service state {} is not valid JSON; starting idle", config_.service.state_file);
    return;
  }
  auto state = PersistedStateFromJson(j);
  if (!state) {
    spdlog::error("service state {}: {}; starting idle", config_.service.state_file,
                  state.error().message);
    return;
  }
  spdlog::info("resuming: state {}", StateName(state->state));
  Execute(lifecycle_.Restore(*state, clock_.Now()));
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
                   Enqueue([this, id] {
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
                   Enqueue([this, id, keep] {
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
  Enqueue([this, action, entities, live = std::move(live), progress = ProgressReporter()] {
    auto m = backend_.Backup(action.reason, action.update, progress, entities, live);
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
  Enqueue([this, action, progress = ProgressReporter()] {
    auto outcome = backend_.Rollback(action.backup_id, action.on_conflict, progress);
    return std::function<void()>([this, outcome] {
      Execute(lifecycle_.OnRollbackDone(outcome, clock_.Now()));
      RefreshSafetyPoints();
    });
  });
}

void Controller::RunHealthCheck(const std::string& backup_id) {
  auto now_snapshot = mirror_.Snapshot(clock_.Now());
  auto it = entity_snapshots_.find(backup_id);
  if (it != entity_snapshots_.end()) {
    // Reported through the queue: the actions that asked for the check finish first.
    auto unavailable = entities::UnavailableNow(it->second, now_snapshot);
    jobs_.Post([this, unavailable] {
      Execute(lifecycle_.OnHealthReport(unavailable, clock_.Now()));
    });
    return;
  }
  // After a restart the states at backup time come from the safety point itself.
  Enqueue([this, id = backup_id, now_snapshot] {
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
      },
      cmd->args);
}

bool Controller::Known(const std::string& id) const {
  return std::find(safety_points_.begin(), safety_points_.end(), id) != safety_points_.end();
}

void Controller::Rollback(const RollbackCommand& c) {
  std::optional<std::string> id = c.backup_id ? c.backup_id : selected_;
  if (!id) {
    Respond(command_name_, Error{ErrorCode::kBadInput, "no safety point selected"},
            json::object(), transaction_);
    return;
  }
  if (!Known(*id)) {
    RefreshSafetyPoints();
    if (!Known(*id)) {
      Respond(command_name_, Error{ErrorCode::kNotFound, "no safety point " + *id},
              json::object(), transaction_);
      return;
    }
  }
  Execute(lifecycle_.OnManualRollbackRequest(*id, c.on_conflict, clock_.Now()));
}

// The answer of `verify`: one result per safety point; the first failure is the error.
void Controller::Verify(const VerifyCommand& c) {
  std::vector<std::string> ids;
  if (c.backup_id) ids.push_back(*c.backup_id);
  const bool ok = Submit([this, ids, tx = transaction_, name = command_name_] {
    auto r = backend_.Verify(ids);
    return std::function<void()>([this, r, tx, name] {
      if (!r) {
        Respond(name, r.error(), json::object(), tx);
        return;
      }
      json results = json::array();
      std::optional<Error> first;
      for (const auto& v : *r) {
        if (v.error) {
          results.push_back({{"id", v.id},
                             {"ok", false},
                             {"error", ErrorCodeName(v.error->code)},
                             {"message", v.error->message}});
          if (!first) first = v.error;
        } else {
          results.push_back({{"id", v.id},
                             {"ok", true},
                             {"entries", v.report.entries},
                             {"bytes", v.report.bytes}});
        }
      }
      Respond(name, first, json{{"results", results}}, tx);
    });
  });
  if (!ok) {
    Respond(command_name_, Error{ErrorCode::kBusy, "another operation is running"},
            json::object(), transaction_);
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
  const bool ok = Submit([this, id = c.backup_id, tx = transaction_, name = command_name_] {
    auto st = backend_.Delete(id);
    return std::function<void()>([this, id, st, tx, name] {
      if (!st) {
        Respond(name, st.error(), json::object(), tx);
        return;
      }
      entity_snapshots_.erase(id);
      RefreshSafetyPoints();
      const auto& last = lifecycle_.Snapshot().last_backup;
      if (last && last->backup_id == id) Execute(lifecycle_.SetLastBackup(Newest()));
      Respond(name, std::nullopt, json{{"deleted", id}}, tx);
    });
  });
  if (!ok) {
    Respond(command_name_, Error{ErrorCode::kBusy, "another operation is running"},
            json::object(), transaction_);
  }
}

void Controller::List() {
  auto list = backend_.List();
  if (!list) {
    Respond(command_name_, list.error(), json::object(), transaction_);
    return;
  }
  json items = json::array();
  for (auto it = list->rbegin(); it != list->rend(); ++it) {
    json j = {{"id", it->id}};
    if (it->manifest) {
      j["created_at"] = it->manifest->created_at;
      j["reason"] = it->manifest->reason;
      j["files"] = it->manifest->FileCount();
      j["bytes"] = it->manifest->TotalBytes();
    } else {
      j["problem"] = it->problem;
    }
    items.push_back(std::move(j));
  }
  Respond(command_name_, std::nullopt, json{{"safety_points", items}}, transaction_);
}

void Controller::Select(const SelectCommand& c) {
  if (!Known(c.backup_id)) {
    Respond(command_name_, Error{ErrorCode::kNotFound, "no safety point " + c.backup_id},
            json::object(), transaction_);
    return;
  }
  selected_ = c.backup_id;
  PublishStateTopics();
  Respond(command_name_, std::nullopt, json{{"selected", c.backup_id}}, transaction_);
}

void Controller::CheckSchedule(TimePoint now) {
  const auto& daily = config_.service.schedule.daily_at;
  if (!daily) return;
  if (!next_scheduled_) {
    next_scheduled_ = NextDailyAt(now, *daily);
    return;
  }
  if (now < *next_scheduled_) return;
  if (lifecycle_.Busy() || WorkerBusy()) {
    *next_scheduled_ = now + std::chrono::minutes(1);  // postponed while another operation runs
    return;
  }
  next_scheduled_ = NextDailyAt(now, *daily);
  command_name_.clear();
  transaction_.reset();
  Execute(lifecycle_.OnManualBackupRequest(std::string("scheduled daily safety point"), now));
}

Controller::TimePoint Controller::NextWake(TimePoint now) const {
  TimePoint wake = now + seconds(60);
  if (const auto& d = lifecycle_.Snapshot().deadline; d && *d < wake) wake = *d;
  if (rediscover_at_ && *rediscover_at_ < wake) wake = *rediscover_at_;
  if (next_scheduled_ && *next_scheduled_ < wake) wake = *next_scheduled_;
  if (const auto d = zigbee2mqtt_.Deadline(); d && *d < wake) wake = *d;
  return std::max(wake, now + milliseconds(10));
}

}  // namespace safepoint::service
