// The service's decisions in process: the Controller driven by a fake transport, a fake backend,
// a job runner of the test's own and FakeClock. No broker, no thread, no sleep: every test says
// exactly which messages arrive, when the worker's jobs run and how much time passes, and checks
// what was published. The broker tests (serve_test.cc and others) keep covering the wire.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <deque>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/base/fs.h"
#include "core/config/config.h"
#include "service/controller.h"
#include "tests/testutil/testutil.h"

namespace safepoint::service {
namespace {

using nlohmann::json;
using std::chrono::milliseconds;
using std::chrono::minutes;
using std::chrono::seconds;
using ::testing::ElementsAre;
using ::testing::IsEmpty;
using ::testing::SizeIs;

struct Published {
  std::string topic;
  std::string payload;
  int qos = 0;
  bool retain = false;
};

class FakeTransport final : public mqtt::Transport {
 public:
  Status Connect(milliseconds) override { return {}; }
  Status Subscribe(const std::vector<std::pair<std::string, int>>& filters) override {
    subscribed.insert(subscribed.end(), filters.begin(), filters.end());
    return {};
  }
  Status Publish(const std::string& topic, std::string_view payload, int qos,
                 bool retain) override {
    if (fail_publishing) return Fail(fail_code, "not connected");
    published.push_back({topic, std::string(payload), qos, retain});
    return {};
  }
  Status ClearRetained(const std::string& topic) override {
    cleared.push_back(topic);
    return {};
  }
  std::optional<mqtt::Event> WaitEvent(milliseconds) override { return std::nullopt; }
  int protocol() const override { return protocol_version; }
  void Disconnect() override { disconnected = true; }

  // The payloads published on `topic`, oldest first.
  std::vector<std::string> On(const std::string& topic) const {
    std::vector<std::string> out;
    for (const auto& p : published) {
      if (p.topic == topic) out.push_back(p.payload);
    }
    return out;
  }
  // The last payload on `topic` ("" when none).
  std::string LastText(const std::string& topic) const {
    auto all = On(topic);
    return all.empty() ? "" : all.back();
  }
  // The last payload on `topic` as JSON (null when none).
  json Last(const std::string& topic) const {
    auto all = On(topic);
    return all.empty() ? json() : json::parse(all.back());
  }
  // The `event_type`s published on <base>/event, oldest first.
  std::vector<std::string> Events() const {
    std::vector<std::string> out;
    for (const auto& p : On("sp/event")) out.push_back(json::parse(p)["event_type"]);
    return out;
  }

  std::vector<Published> published;
  std::vector<std::pair<std::string, int>> subscribed;
  std::vector<std::string> cleared;
  int protocol_version = 5;
  bool fail_publishing = false;
  ErrorCode fail_code = ErrorCode::kIo;  // of a failed publish
  bool disconnected = false;
};

class FakeBackend final : public Backend {
 public:
  explicit FakeBackend(const Clock& clock) : clock_(clock) {}

  Result<manifest::Manifest> Backup(const std::string& reason,
                                    const std::optional<manifest::UpdateRef>& update,
                                    const store::ProgressFn& progress,
                                    const entities::EntitySnapshot& entities,
                                    const snapshot::LiveState& live) override {
    ++backups;
    last_live = live;
    last_entities = entities;
    if (progress) {
      progress(50, 100);
      progress(100, 100);
    }
    if (backup_error) return tl::unexpected(*backup_error);
    manifest::Manifest m = NewPoint(reason);
    m.update = update;
    points.push_back(m);
    stored_entities[m.id] = entities;
    return m;
  }
  Status Delete(const std::string& id) override {
    deleted.push_back(id);
    auto it = Find(id);
    if (it == points.end()) return Fail(ErrorCode::kNotFound, "no safety point " + id);
    points.erase(it);
    return {};
  }
  Result<std::vector<store::Listing>> List() override {
    ++lists;
    if (list_error) return tl::unexpected(*list_error);
    std::vector<store::Listing> out;
    for (const auto& m : points) out.push_back({m.id, "/backups/" + m.id, m, ""});
    return out;
  }
  Result<std::vector<Operations::VerifyResult>> Verify(
      const std::vector<std::string>& ids) override {
    std::vector<Operations::VerifyResult> out;
    for (const auto& m : points) {
      if (!ids.empty() && m.id != ids.front()) continue;
      Operations::VerifyResult v;
      v.id = m.id;
      if (m.id == corrupt) {
        v.error = Error{ErrorCode::kCorrupt, "payload hash mismatch"};
      } else {
        v.report = {m.id, 4, 1000};
      }
      out.push_back(v);
    }
    if (!ids.empty() && out.empty()) return Fail(ErrorCode::kNotFound, "no safety point " + ids[0]);
    return out;
  }
  Result<store::PruneReport> Prune(std::function<bool(const std::string&)> in_use) override {
    store::PruneReport report;
    while (points.size() > keep_last) {
      auto victim = std::find_if(points.begin(), points.end(),
                                 [&](const manifest::Manifest& m) { return !in_use(m.id); });
      if (victim == points.end()) break;
      report.deleted.push_back(victim->id);
      points.erase(victim);
    }
    return report;
  }
  Status RecordFingerprint(const std::string& id, bool keep_existing) override {
    fingerprints.push_back(id + (keep_existing ? " keep" : ""));
    return {};
  }
  RollbackOutcome Rollback(const std::string& id, ConflictPolicy policy,
                           const store::ProgressFn& progress) override {
    rollbacks.push_back(id + " " + std::string(ConflictPolicyName(policy)));
    if (progress) progress(1, 1);
    if (!conflicts.empty() && policy == ConflictPolicy::kAbort) {
      return RollbackOutcome::Conflicts(conflicts);
    }
    // As the real one: the files as they were before are a new safety point, the newest.
    manifest::Manifest pre = NewPoint("pre-rollback to " + id);
    points.push_back(pre);
    return RollbackOutcome::Ok(3, pre.id);
  }
  Result<entities::EntitySnapshot> EntitiesOf(const std::string& id) override {
    auto it = stored_entities.find(id);
    if (it == stored_entities.end()) return Fail(ErrorCode::kNotFound, "no safety point " + id);
    return it->second;
  }
  Status RecoverInterrupted() override {
    ++recoveries;
    return {};
  }
  std::vector<std::string> TakeRecoveryNotes() override {
    return std::exchange(recovery_notes, {});
  }
  // Two changed files; with `hunks`, a one-line change of configuration.yaml.
  Result<diff::Report> ContentDiff(const std::string& id, const std::optional<std::string>& path,
                                   bool hunks) override {
    diffs.push_back(id + (path ? " " + *path : "") + (hunks ? " hunks" : ""));
    if (Find(id) == points.end()) return Fail(ErrorCode::kNotFound, "no safety point " + id);
    diff::Report r;
    r.old_label = id;
    r.new_label = "live";
    r.unchanged = 7;
    diff::FileDiff config;
    config.path = "ha_config/configuration.yaml";
    config.type = "file";
    config.added = 1;
    config.removed = 1;
    if (hunks) config.hunks.push_back({1, 1, 1, 1, {"-name: Home", "+name: Zuhause"}});
    diff::FileDiff png;
    png.path = "ha_config/www/plan.png";
    png.type = "file";
    png.binary = true;
    png.notes = {"binary, 7 B -> 8 B"};
    r.files = {config, png};
    return r;
  }

  // The next safety point's manifest: ids count up by the second from 10:00:01.
  manifest::Manifest NewPoint(const std::string& reason) {
    manifest::Manifest m;
    m.created_unix = std::chrono::system_clock::to_time_t(clock_.Now());
    m.id = "2026-12-02_10-00-" + std::string(next_ < 10 ? "0" : "") + std::to_string(next_);
    ++next_;
    m.created_at = "2026-12-02T10:00:00+00:00";
    m.reason = reason;
    m.payload = manifest::Payload{"payload.tar.zst.age", 1000, std::string(64, 'a')};
    m.entries_listed = false;
    m.listed_files = 3;
    m.listed_bytes = 1000;
    return m;
  }

  std::vector<manifest::Manifest>::iterator Find(const std::string& id) {
    return std::find_if(points.begin(), points.end(),
                        [&](const manifest::Manifest& m) { return m.id == id; });
  }

  std::vector<manifest::Manifest> points;  // oldest first
  std::map<std::string, entities::EntitySnapshot> stored_entities;
  std::optional<Error> backup_error;
  std::optional<Error> list_error;
  std::string corrupt;
  std::size_t keep_last = 100;
  std::vector<std::string> conflicts;
  int backups = 0;
  int lists = 0;
  int recoveries = 0;
  std::vector<std::string> recovery_notes;  // what the next TakeRecoveryNotes returns
  snapshot::LiveState last_live;
  entities::EntitySnapshot last_entities;
  std::vector<std::string> deleted, fingerprints, rollbacks, diffs;

 private:
  const Clock& clock_;
  int next_ = 1;
};

// The worker of the test: jobs wait until the test runs them, in order, like the service's
// worker thread; what they post and what they return runs through the controller afterwards.
class ManualJobs final : public JobRunner {
 public:
  void Run(Job job) override { jobs_.push_back(std::move(job)); }
  void Post(std::function<void()> fn) override { posted_.push_back(std::move(fn)); }

  [[nodiscard]] std::size_t pending() const { return jobs_.size(); }
  // Runs what is posted, then the next job, and so on until nothing is left.
  void Drain(Controller& c) {
    while (!posted_.empty() || !jobs_.empty()) {
      RunPosted(c);
      if (jobs_.empty()) break;
      auto job = std::move(jobs_.front());
      jobs_.pop_front();
      posted_.push_back(job());
    }
    RunPosted(c);
  }
  void RunPosted(Controller& c) {
    while (!posted_.empty()) {
      auto fn = std::move(posted_.front());
      posted_.pop_front();
      c.RunSafely(fn);
    }
  }

 private:
  std::deque<Job> jobs_;
  std::deque<std::function<void()>> posted_;
};

class FakeRetainedCheck final : public RetainedCheck {
 public:
  explicit FakeRetainedCheck(std::map<std::string, std::string>* retained) : retained_(retained) {}
  Result<std::optional<std::string>> Retained(const std::string& topic) override {
    if (retained_->count("!fail")) return Fail(ErrorCode::kIo, "no answer from the broker");
    auto it = retained_->find(topic);
    if (it == retained_->end()) return std::optional<std::string>();
    return std::optional<std::string>(it->second);
  }

 private:
  std::map<std::string, std::string>* retained_;
};

class DaemonTest : public ::testing::Test {
 protected:
  // Builds the controller with `extra` appended to the configuration (YAML at top level, or
  // under mqtt: with `mqtt_extra`).
  void Make(const std::string& mqtt_extra = "", const std::string& service_extra = "") {
    std::filesystem::create_directories(dir_.Sub("ha"));
    std::string yaml = "paths:\n  ha_config: " + dir_.Sub("ha") + "\n  backup_dir: " +
                       dir_.Sub("backups") +
                       "\nsources:\n  logs: []\nmqtt:\n  url: mqtt://127.0.0.1:1883\n"
                       "  base_topic: sp\n" +
                       mqtt_extra +
                       "service:\n  confirm_timeout: 10m\n  health_timeout: 2m\n"
                       "  update_timeout: 1h\n  state_file: " +
                       dir_.path() + "/state.json\n" + service_extra;
    auto c = config::ParseConfig(yaml, dir_.path() + "/safepoint.yaml");
    ASSERT_TRUE(c) << c.error().message;
    config_ = std::make_unique<config::Config>(std::move(*c));
    controller_ = std::make_unique<Controller>(
        *config_, fs_, clock_, backend_, transport_, jobs_,
        [this] { return std::make_unique<FakeRetainedCheck>(&retained_); });
    ASSERT_TRUE(controller_->Prepare());
    controller_->Start();
    Deliver(mqtt::Event{mqtt::Event::Kind::kConnected, {}, ""});
  }

  void Deliver(const mqtt::Event& e) {
    controller_->RunSafely([&] { controller_->HandleEvent(e); });
  }
  void Message(const std::string& topic, const std::string& payload, bool retained = false) {
    Deliver(mqtt::Event{mqtt::Event::Kind::kMessage, {topic, payload, retained, 1}, ""});
  }
  void Command(const std::string& name, const json& payload) {
    Message("sp/cmd/" + name, payload.dump());
  }
  void Work() { jobs_.Drain(*controller_); }
  void Advance(milliseconds d) {
    clock_.Advance(d);
    controller_->RunSafely([&] { controller_->Tick(); });
  }
  std::string State() const { return transport_.Last("sp/status")["state"]; }
  json Response(const std::string& name) const { return transport_.Last("sp/response/" + name); }
  void Request(const std::string& id = "u1") {
    Message("sp/update/request",
            json{{"update_id", id}, {"target", "core"}, {"from_version", "2026.1"},
                 {"to_version", "2026.2"}}
                .dump());
  }
  // An update request answered by its safety point: awaiting_confirmation.
  void RequestAndBackUp(const std::string& id = "u1") {
    Request(id);
    Work();
    ASSERT_EQ(State(), "awaiting_confirmation");
  }

  testing::TempDir dir_;
  PosixFileSystem fs_;
  testing::FakeClock clock_;
  FakeBackend backend_{clock_};
  FakeTransport transport_;
  ManualJobs jobs_;
  std::map<std::string, std::string> retained_;
  std::unique_ptr<config::Config> config_;
  std::unique_ptr<Controller> controller_;
};

// ---- Start-up ----

TEST_F(DaemonTest, StartSubscribesAnnouncesAndPublishesTheStatusOnceConnected) {
  Make();
  EXPECT_EQ(backend_.recoveries, 1);
  EXPECT_THAT(transport_.subscribed,
              ElementsAre(std::pair<std::string, int>{"sp/cmd/+", 1},
                          std::pair<std::string, int>{"sp/update/request", 1},
                          std::pair<std::string, int>{"sp/update/result", 1},
                          std::pair<std::string, int>{"homeassistant/status", 1},
                          std::pair<std::string, int>{"zigbee2mqtt/#", 0}));
  EXPECT_THAT(transport_.On("sp/availability"), ElementsAre("online"));
  EXPECT_EQ(transport_.On("homeassistant/device/safepoint/config").size(), 1u);
  EXPECT_EQ(State(), "idle");
  EXPECT_EQ(transport_.Last("sp/safety_points"), json::parse(R"({"count":0,"ids":[],
    "selected":null})"));
  for (const auto& p : transport_.published) {  // all retained, so a new subscriber sees them
    EXPECT_TRUE(p.retain) << p.topic;
  }
  controller_->Stop();
  EXPECT_THAT(transport_.On("sp/availability"), ElementsAre("online", "offline"));
}

TEST_F(DaemonTest, ABrokenStateFileStartsIdleAndAValidOneIsResumed) {
  testing::WriteFile(dir_.path() + "/state.json", "{not json");
  Make();
  EXPECT_EQ(State(), "idle");
  RequestAndBackUp();
  // A second service on the same state file resumes the pending decision.
  auto second = std::make_unique<Controller>(
      *config_, fs_, clock_, backend_, transport_, jobs_,
      [this] { return std::make_unique<FakeRetainedCheck>(&retained_); });
  ASSERT_TRUE(second->Prepare());
  second->Start();
  second->RunSafely([&] { second->HandleEvent({mqtt::Event::Kind::kConnected, {}, ""}); });
  EXPECT_EQ(State(), "awaiting_confirmation");
  EXPECT_EQ(second->lifecycle().Snapshot().update->update_id, "u1");
}

// Recovery finishes a rollback a crash interrupted at the service's start and at the start of
// any operation that writes (a CLI rollback killed while the service runs). Before, only the
// log said so; now an event does, before the operation's own result.
TEST_F(DaemonTest, WhatRecoveryDidIsAnEventAtStartAndBeforeTheOperationThatRanIt) {
  const std::string reverted =
      "reverted the interrupted rollback 2026-12-02_09-00-00-r1 to 2026-12-01_10-00-00: the "
      "trees are as they were before it";
  backend_.recovery_notes = {reverted};
  Make();
  auto events = transport_.On("sp/event");
  ASSERT_EQ(events.size(), 1u);
  json e = json::parse(events[0]);
  EXPECT_EQ(e["event_type"], "rollback_recovered");
  EXPECT_EQ(e["message"], "An interrupted rollback was recovered: " + reverted);
  EXPECT_EQ(e["data"], json({{"actions", {reverted}}}));
  // Once Home Assistant sees the service online (a review found it sent before, while the
  // retained availability still said offline after the crash).
  std::size_t online = 0, event = 0;
  for (std::size_t i = 0; i < transport_.published.size(); ++i) {
    if (transport_.published[i].topic == "sp/availability" && !online) online = i + 1;
    if (transport_.published[i].topic == "sp/event" && !event) event = i + 1;
  }
  EXPECT_LT(online, event);
  EXPECT_GT(online, 0u);
  const std::string completed =
      "completed the interrupted rollback 2026-12-02_09-30-00-r2 to 2026-12-01_10-00-00 (undo: "
      "safepoint rollback 2026-12-02_09-29-58)";
  backend_.recovery_notes = {completed, "restart core: ok"};
  Command("backup", json::object());
  Work();
  EXPECT_THAT(transport_.Events(),
              ElementsAre("rollback_recovered", "rollback_recovered", "backup_completed"));
  e = json::parse(transport_.On("sp/event")[1]);
  EXPECT_EQ(e["message"],
            "An interrupted rollback was recovered: " + completed + "; restart core: ok");
  EXPECT_EQ(e["data"], json({{"actions", {completed, "restart core: ok"}}}));
  // Nothing recovered, no event.
  Command("backup", json::object());
  Work();
  EXPECT_THAT(transport_.Events(), ElementsAre("rollback_recovered", "rollback_recovered",
                                               "backup_completed", "backup_completed"));
}

// Found by a review: after a rollback `status.last_backup` stayed on the safety point before it,
// though the rollback's pre-rollback safety point is the newest; and a restart kept whatever the
// state file said, so points the CLI made while the service was stopped never showed there.
TEST_F(DaemonTest, LastBackupIsTheNewestSafetyPointAfterARollbackAndAfterARestart) {
  Make();
  Command("backup", json::object());
  Work();
  Command("backup", json::object());
  Work();
  EXPECT_EQ(transport_.Last("sp/status")["last_backup"]["id"], "2026-12-02_10-00-02");
  const int lists_before = backend_.lists;
  Command("rollback", {{"backup_id", "2026-12-02_10-00-01"}});
  Work();
  EXPECT_EQ(State(), "idle");
  EXPECT_EQ(transport_.Last("sp/safety_points")["ids"][0], "2026-12-02_10-00-03");
  EXPECT_EQ(transport_.Last("sp/status")["last_backup"]["id"], "2026-12-02_10-00-03");
  EXPECT_EQ(backend_.lists - lists_before, 1) << "one listing serves the select and last_backup";
  // A new controller on the same store, as after a restart of the service.
  auto restart = [this] {
    auto next = std::make_unique<Controller>(
        *config_, fs_, clock_, backend_, transport_, jobs_,
        [this] { return std::make_unique<FakeRetainedCheck>(&retained_); });
    EXPECT_TRUE(next->Prepare());
    const int lists_at_start = backend_.lists;
    next->Start();
    next->RunSafely([&] { next->HandleEvent({mqtt::Event::Kind::kConnected, {}, ""}); });
    EXPECT_EQ(backend_.lists - lists_at_start, 1);
    return next;
  };
  // Stopped; a CLI rollback adds its pre-rollback point; the next start reports it.
  controller_->Stop();
  backend_.points.push_back(backend_.NewPoint("pre-rollback by the CLI"));
  auto second = restart();
  EXPECT_EQ(transport_.Last("sp/status")["last_backup"]["id"], "2026-12-02_10-00-04");
  EXPECT_EQ(transport_.Last("sp/safety_points")["ids"][0], "2026-12-02_10-00-04");
  // A store that cannot be listed at the next start (a mount not ready) is not "no safety
  // point": the state file's last_backup stands.
  second->Stop();
  backend_.list_error = Error{ErrorCode::kIo, "open /backups: Input/output error"};
  auto third = restart();
  EXPECT_EQ(transport_.Last("sp/status")["last_backup"]["id"], "2026-12-02_10-00-04");
}

// ---- The update flow ----

TEST_F(DaemonTest, UpdateFlowRequestBackupContinueSuccessHealthyIdle) {
  Make();
  Request();
  EXPECT_EQ(State(), "backing_up");
  EXPECT_EQ(jobs_.pending(), 1u);
  Work();
  ASSERT_EQ(backend_.points.size(), 1u);
  const auto& m = backend_.points[0];
  // The action carried the whole update: the manifest records target and versions.
  ASSERT_TRUE(m.update);
  EXPECT_EQ(*m.update, (manifest::UpdateRef{"u1", "core", "2026.1", "2026.2"}));
  EXPECT_EQ(m.reason, "before update of core (2026.1 -> 2026.2)");
  EXPECT_EQ(State(), "awaiting_confirmation");
  EXPECT_EQ(transport_.LastText("sp/availability/decision"), "online");
  EXPECT_THAT(transport_.Events(), ElementsAre("confirmation_requested"));

  Command("continue", json::object());
  EXPECT_EQ(transport_.Last("sp/update/decision"),
            json::parse(R"({"update_id":"u1","decision":"continue",
                            "backup_id":"2026-12-02_10-00-01"})"));
  EXPECT_EQ(Response("continue")["status"], "ok");
  EXPECT_EQ(State(), "updating");

  Message("sp/update/result", R"({"update_id":"u1","success":true})");
  Work();  // the health check compares the entities kept at backup time with now
  EXPECT_EQ(State(), "idle");
  EXPECT_THAT(transport_.Events(), ElementsAre("confirmation_requested", "update_continued",
                                               "update_succeeded", "update_changes"));
  EXPECT_THAT(backend_.rollbacks, IsEmpty());
  // What the update changed, from the update's safety point, counts only.
  EXPECT_THAT(backend_.diffs, ElementsAre("2026-12-02_10-00-01"));
  const json changes = json::parse(transport_.On("sp/event").back());
  EXPECT_EQ(changes["message"],
            "The update of core changed 2 files: ha_config/configuration.yaml (+1 -1), "
            "ha_config/www/plan.png (binary).");
  EXPECT_EQ(changes["data"]["update_id"], "u1");
  EXPECT_EQ(changes["data"]["backup_id"], "2026-12-02_10-00-01");
  EXPECT_EQ(changes["data"]["target"], "core");
  EXPECT_EQ(changes["data"]["files_total"], 2);
  EXPECT_EQ(changes["data"]["files"][0],
            json::parse(R"({"path":"ha_config/configuration.yaml","change":"modified",
                            "type":"file","binary":false,"added":1,"removed":1,"notes":[]})"));
  EXPECT_EQ(changes["data"]["summary"]["lines_added"], 1);
  // Progress was reported on the way (50 % and 100 %).
  bool saw_progress = false;
  for (const auto& p : transport_.On("sp/status")) {
    if (json::parse(p)["progress"] == 50) saw_progress = true;
  }
  EXPECT_TRUE(saw_progress);
}

TEST_F(DaemonTest, AFailedUpdateRecordsTheFingerprintAndRollsBack) {
  Make();
  RequestAndBackUp();
  Command("continue", {{"update_id", "u1"}});
  Message("sp/update/result", R"({"update_id":"u1","success":false,"exit_code":3})");
  EXPECT_EQ(State(), "rolling_back");
  Work();
  EXPECT_THAT(backend_.fingerprints, ElementsAre("2026-12-02_10-00-01"));
  EXPECT_THAT(backend_.rollbacks, ElementsAre("2026-12-02_10-00-01 abort"));
  EXPECT_EQ(State(), "idle");
  EXPECT_EQ(transport_.Events().back(), "rollback_completed");
}

TEST_F(DaemonTest, UnavailableEntitiesAfterTheUpdateFailTheHealthCheck) {
  Make();
  Message("zigbee2mqtt/lamp", R"({"state":"ON"})");
  Message("zigbee2mqtt/lamp/availability", "online");
  RequestAndBackUp();
  Command("continue", json::object());
  Message("zigbee2mqtt/lamp/availability", "offline");
  Message("sp/update/result", R"({"update_id":"u1","success":true})");
  Work();
  EXPECT_THAT(transport_.Events(), ::testing::Contains("health_check_failed"));
  EXPECT_THAT(backend_.rollbacks, ElementsAre("2026-12-02_10-00-01 abort"));
}

TEST_F(DaemonTest, CancelDeletesTheSafetyPointAndTheNextRequestIsNotRefused) {
  Make();
  RequestAndBackUp();
  Command("cancel", json::object());
  EXPECT_EQ(transport_.Last("sp/update/decision")["decision"], "cancel");
  EXPECT_EQ(State(), "idle");
  // The deletion is queued; a request right now waits behind it instead of being refused.
  Request("u2");
  EXPECT_EQ(jobs_.pending(), 2u);
  Work();
  EXPECT_THAT(backend_.deleted, ElementsAre("2026-12-02_10-00-01"));
  EXPECT_EQ(State(), "awaiting_confirmation");
  EXPECT_EQ(controller_->lifecycle().Snapshot().update->update_id, "u2");
}

TEST_F(DaemonTest, NoDecisionBeforeTheDeadlineExpiresAndDeletesTheSafetyPoint) {
  Make();
  RequestAndBackUp();
  EXPECT_EQ(controller_->NextWake(clock_.Now()), clock_.Now() + seconds(60));
  Advance(minutes(9));
  EXPECT_EQ(State(), "awaiting_confirmation");
  EXPECT_EQ(controller_->NextWake(clock_.Now()), clock_.Now() + minutes(1));
  Advance(minutes(1));
  EXPECT_EQ(transport_.Last("sp/update/decision")["decision"], "expired");
  Work();
  EXPECT_THAT(backend_.deleted, ElementsAre("2026-12-02_10-00-01"));
  EXPECT_THAT(backend_.points, IsEmpty());
  EXPECT_EQ(State(), "idle");
}

TEST_F(DaemonTest, AFailedBackupCancelsTheUpdateWithTheReason) {
  Make();
  backend_.backup_error = Error{ErrorCode::kIo, "disk full"};
  Request();
  Work();
  const json d = transport_.Last("sp/update/decision");
  EXPECT_EQ(d["decision"], "cancel");
  EXPECT_THAT(d["error"].get<std::string>(), ::testing::HasSubstr("disk full"));
  EXPECT_EQ(State(), "idle");
}

// ---- Every command ----

TEST_F(DaemonTest, BackupCommandTakesASafetyPointAndEchoesTheTransaction) {
  Make();
  Command("backup", {{"reason", "before tinkering"}, {"transaction", 7}});
  EXPECT_EQ(Response("backup"), json::parse(R"({"status":"ok","transaction":7,
    "data":{"state":"backing_up","reason":"before tinkering"}})"));
  Work();
  ASSERT_EQ(backend_.points.size(), 1u);
  EXPECT_EQ(backend_.points[0].reason, "before tinkering");
  EXPECT_FALSE(backend_.points[0].update);
  EXPECT_EQ(transport_.Last("sp/safety_points")["ids"], json::array({"2026-12-02_10-00-01"}));
  EXPECT_EQ(transport_.Last("sp/safety_points")["selected"], "2026-12-02_10-00-01");
}

TEST_F(DaemonTest, RollbackButtonUsesTheSelectedSafetyPointAndTheCommandTheGivenOne) {
  Make();
  Message("sp/cmd/rollback", "PRESS");  // the Home Assistant button, nothing selected yet
  EXPECT_EQ(Response("rollback")["error"], "bad_input: no safety point selected");
  Command("rollback", {{"backup_id", "2026-01-01_00-00-00"}});
  EXPECT_EQ(Response("rollback")["error"], "not_found: no safety point 2026-01-01_00-00-00");

  Command("backup", json::object());
  Work();
  Command("backup", json::object());
  Work();
  Command("select", {{"backup_id", "2026-12-02_10-00-01"}});
  Message("sp/cmd/rollback", "PRESS");
  EXPECT_EQ(Response("rollback")["status"], "ok");
  EXPECT_EQ(State(), "rolling_back");
  Work();
  EXPECT_EQ(State(), "idle");
  Command("rollback", {{"backup_id", "2026-12-02_10-00-02"}, {"on_conflict", "overwrite"}});
  Work();
  EXPECT_THAT(backend_.rollbacks, ElementsAre("2026-12-02_10-00-01 abort",
                                              "2026-12-02_10-00-02 overwrite"));
  EXPECT_EQ(transport_.Events().back(), "rollback_completed");
}

// Before: the first safety point listed stayed selected as if the user had chosen it,
// so a press after the backup before an update went back to an older safety point.
TEST_F(DaemonTest, TheRollbackButtonTakesTheNewestSafetyPointUntilTheUserChooses) {
  Make();
  Command("backup", json::object());
  Work();
  Command("backup", json::object());
  Work();
  EXPECT_EQ(transport_.Last("sp/safety_points")["selected"], "2026-12-02_10-00-02");
  Message("sp/cmd/rollback", "PRESS");
  Work();
  // The rollback's pre-rollback point (10-00-03) is the newest now, but not the default: a
  // second press repeats the rollback instead of undoing it.
  EXPECT_EQ(transport_.Last("sp/safety_points")["ids"][0], "2026-12-02_10-00-03");
  EXPECT_EQ(transport_.Last("sp/safety_points")["selected"], "2026-12-02_10-00-02");
  Command("select", {{"backup_id", "2026-12-02_10-00-01"}});
  Command("backup", json::object());
  Work();
  // The user's choice stays while it exists.
  EXPECT_EQ(transport_.Last("sp/safety_points")["selected"], "2026-12-02_10-00-01");
  Message("sp/cmd/rollback", "PRESS");
  Work();
  EXPECT_THAT(backend_.rollbacks,
              ElementsAre("2026-12-02_10-00-02 abort", "2026-12-02_10-00-01 abort"));
}

// Found by a review: a rollback over MQTT without `on_conflict` (the HA button's PRESS) used
// `abort` whatever rollback.on_conflict said, unlike the CLI and the automatic rollback.
TEST_F(DaemonTest, AManualRollbackWithoutAPolicyTakesTheConfiguredOne) {
  Make("", "rollback:\n  on_conflict: merge\n");
  Command("backup", json::object());
  Work();
  Message("sp/cmd/rollback", "PRESS");
  Work();
  Command("rollback", {{"backup_id", "2026-12-02_10-00-01"}});
  Work();
  Command("rollback", {{"backup_id", "2026-12-02_10-00-01"}, {"on_conflict", "abort"}});
  Work();
  EXPECT_THAT(backend_.rollbacks,
              ElementsAre("2026-12-02_10-00-01 merge", "2026-12-02_10-00-01 merge",
                          "2026-12-02_10-00-01 abort"));
}

TEST_F(DaemonTest, ConflictsWaitForResolveAndOverwriteFinishesTheRollback) {
  Make();
  backend_.conflicts = {"configuration.yaml"};
  Command("backup", json::object());
  Work();
  Command("rollback", {{"backup_id", "2026-12-02_10-00-01"}});
  Work();
  EXPECT_EQ(State(), "awaiting_conflict_resolution");
  EXPECT_EQ(transport_.LastText("sp/availability/conflict"), "online");
  EXPECT_EQ(transport_.Last("sp/status")["pending"]["conflicts"],
            json::array({"configuration.yaml"}));
  Command("resolve", {{"action", "overwrite"}});
  Work();
  EXPECT_THAT(backend_.rollbacks,
              ElementsAre("2026-12-02_10-00-01 abort", "2026-12-02_10-00-01 overwrite"));
  EXPECT_EQ(State(), "idle");
  EXPECT_EQ(transport_.LastText("sp/availability/conflict"), "offline");
}

TEST_F(DaemonTest, VerifyReportsEachSafetyPointAndIsRefusedWhileAJobRuns) {
  Make();
  Command("backup", json::object());
  Work();
  Command("backup", json::object());
  Work();
  backend_.corrupt = "2026-12-02_10-00-02";
  Command("verify", json::object());
  EXPECT_EQ(Response("verify"), json());  // answered when the job is done
  // A command refused meanwhile is told what runs (mqtt-api.md, "busy").
  Command("diff", {{"backup_id", "2026-12-02_10-00-01"}});
  EXPECT_EQ(Response("diff")["error"], "busy: a verify is in progress");
  Work();
  EXPECT_EQ(Response("verify"), json::parse(R"({"status":"error",
    "error":"corrupt: payload hash mismatch",
    "data":{"results":[{"id":"2026-12-02_10-00-01","ok":true,"entries":4,"bytes":1000},
                       {"id":"2026-12-02_10-00-02","ok":false,"error":"corrupt",
                        "message":"payload hash mismatch"}]}})"));

  Command("backup", json::object());  // its job is pending
  Command("verify", {{"backup_id", "2026-12-02_10-00-01"}});
  EXPECT_EQ(Response("verify")["error"], "busy: a safety point is in progress (backing_up)");
  Work();
}

// `diff`: the per-file summary; with a path also the patch; the text form `/diff <id> [path]`
// answers the same on response/text; unknown ids and a busy worker are errors.
TEST_F(DaemonTest, DiffAnswersTheSummaryAndForOnePathThePatch) {
  Make();
  Command("backup", json::object());
  Work();
  Command("diff", {{"backup_id", "2026-12-02_10-00-01"}, {"transaction", 5}});
  EXPECT_EQ(Response("diff"), json());  // answered when the job is done
  Work();
  json r = Response("diff");
  EXPECT_EQ(r["status"], "ok");
  EXPECT_EQ(r["transaction"], 5);
  EXPECT_EQ(r["data"]["backup_id"], "2026-12-02_10-00-01");
  EXPECT_EQ(r["data"]["against"], "live");
  EXPECT_EQ(r["data"]["unchanged"], 7);
  EXPECT_EQ(r["data"]["files_total"], 2);
  EXPECT_EQ(r["data"]["files_cut"], false);
  EXPECT_EQ(r["data"]["files"][1]["notes"], json({"binary, 7 B -> 8 B"}));
  EXPECT_EQ(r["data"]["message"],
            "Changed since safety point 2026-12-02_10-00-01: 2 files: ha_config/configuration.yaml "
            "(+1 -1), ha_config/www/plan.png (binary).");
  EXPECT_FALSE(r["data"].contains("patch"));

  Command("text", json("/diff 2026-12-02_10-00-01 configuration.yaml"));
  Work();
  r = Response("text");
  EXPECT_EQ(r["status"], "ok");
  EXPECT_EQ(r["data"]["patch"],
            "--- 2026-12-02_10-00-01/ha_config/configuration.yaml\n"
            "+++ live/ha_config/configuration.yaml\n@@ -1 +1 @@\n-name: Home\n+name: Zuhause\n"
            "ha_config/www/plan.png: binary, 7 B -> 8 B\n");
  EXPECT_EQ(r["data"]["patch_cut"], false);
  EXPECT_THAT(backend_.diffs, ElementsAre("2026-12-02_10-00-01",
                                          "2026-12-02_10-00-01 configuration.yaml hunks"));

  Command("diff", {{"backup_id", "2026-12-02_10-00-09"}});
  Work();
  EXPECT_EQ(Response("diff")["error"], "not_found: no safety point 2026-12-02_10-00-09");
  Command("diff", {{"backup_id", "2026-12-02_10-00-01"}, {"path", "../etc/passwd"}});
  EXPECT_EQ(Response("diff")["status"], "error");
  EXPECT_TRUE(Response("diff")["error"].get<std::string>().starts_with("bad_input: 'path'"));
  Command("backup", json::object());  // its job is pending
  Command("diff", {{"backup_id", "2026-12-02_10-00-01"}});
  EXPECT_EQ(Response("diff")["error"], "busy: a safety point is in progress (backing_up)");
  Work();
}

TEST_F(DaemonTest, DeleteRemovesASafetyPointButNeverThePendingUpdates) {
  Make();
  Command("backup", json::object());
  Work();
  RequestAndBackUp();
  Command("delete", {{"backup_id", "2026-12-02_10-00-02"}});
  EXPECT_EQ(Response("delete")["error"],
            "busy: safety point 2026-12-02_10-00-02 belongs to the operation in progress");
  Command("delete", {{"backup_id", "2026-12-02_10-00-01"}, {"transaction", "t"}});
  Work();
  EXPECT_EQ(Response("delete"),
            json::parse(R"({"status":"ok","transaction":"t",
                            "data":{"deleted":"2026-12-02_10-00-01"}})"));
  EXPECT_EQ(transport_.Last("sp/safety_points")["ids"], json::array({"2026-12-02_10-00-02"}));
  Command("delete", {{"backup_id", "2026-12-02_10-00-01"}});
  Work();
  EXPECT_EQ(Response("delete")["error"], "not_found: no safety point 2026-12-02_10-00-01");
}

// Found by an MQTT campaign: `delete X` then at once `rollback X` started the rollback, the
// deletion queued before it removed X, and the rollback failed (status `error`).
TEST_F(DaemonTest, ARollbackToASafetyPointBeingDeletedIsRefused) {
  Make();
  Command("backup", json::object());
  Work();
  Command("delete", {{"backup_id", "2026-12-02_10-00-01"}});
  Command("rollback", {{"backup_id", "2026-12-02_10-00-01"}, {"transaction", "r"}});
  EXPECT_EQ(Response("rollback"), json::parse(R"({"status":"error","transaction":"r","data":{},
                            "error":"busy: safety point 2026-12-02_10-00-01 is being deleted"})"));
  Work();
  EXPECT_EQ(Response("delete")["data"]["deleted"], "2026-12-02_10-00-01");
  EXPECT_EQ(State(), "idle");
  Command("rollback", {{"backup_id", "2026-12-02_10-00-01"}});
  EXPECT_EQ(Response("rollback")["error"], "not_found: no safety point 2026-12-02_10-00-01");
}

TEST_F(DaemonTest, ListStatusAndSelect) {
  Make();
  Command("backup", {{"reason", "one"}});
  Work();
  Command("backup", {{"reason", "two"}});
  Work();
  Command("list", json::object());
  const json items = Response("list")["data"]["safety_points"];
  ASSERT_THAT(items, SizeIs(2));
  EXPECT_EQ(items[0]["id"], "2026-12-02_10-00-02");  // newest first
  EXPECT_EQ(items[0]["reason"], "two");
  EXPECT_EQ(items[1]["files"], 3);
  EXPECT_EQ(items[1]["bytes"], 1000);
  EXPECT_EQ(items[1]["update"], nullptr);  // the same items as `safepoint list --json`
  EXPECT_TRUE(items[1].contains("payload_bytes"));

  Message("sp/cmd/text", "/status");
  EXPECT_EQ(Response("text")["data"]["state"], "idle");
  EXPECT_EQ(Response("text")["data"]["last_backup"]["id"], "2026-12-02_10-00-02");

  Command("select", {{"backup_id", "2026-12-02_10-00-01"}});
  EXPECT_EQ(Response("select")["data"], json::parse(R"({"selected":"2026-12-02_10-00-01"})"));
  EXPECT_EQ(transport_.Last("sp/safety_points")["selected"], "2026-12-02_10-00-01");
  Command("select", {{"backup_id", "2026-12-02_09-00-00"}});
  EXPECT_EQ(Response("select")["error"], "not_found: no safety point 2026-12-02_09-00-00");
  EXPECT_EQ(transport_.Last("sp/safety_points")["selected"], "2026-12-02_10-00-01");
}

TEST_F(DaemonTest, TextCommandsAnswerOnTheTextTopic) {
  Make();
  Message("sp/cmd/text", "/backup from the chat");
  EXPECT_EQ(Response("text")["status"], "ok");
  Work();
  ASSERT_EQ(backend_.points.size(), 1u);
  EXPECT_EQ(backend_.points[0].reason, "from the chat");
  Message("sp/cmd/text", "/status");
  EXPECT_EQ(Response("text")["data"]["state"], "idle");
}

TEST_F(DaemonTest, InvalidAndUnknownCommandsGetAnErrorAndChangeNothing) {
  Make();
  const auto before = transport_.published.size();
  Message("sp/cmd/backup", "{not json");
  EXPECT_EQ(Response("backup")["status"], "error");
  Message("sp/cmd/format_disk", "{}");
  EXPECT_EQ(Response("unknown")["status"], "error");
  Message("sp/update/request", R"({"update_id":"u1"})");  // no target
  EXPECT_EQ(Response("update")["status"], "error");
  EXPECT_EQ(controller_->stats().invalid_messages, 3u);
  EXPECT_EQ(transport_.published.size(), before + 3);  // the three answers, nothing else
  EXPECT_EQ(backend_.backups, 0);
  EXPECT_EQ(jobs_.pending(), 0u);
}

TEST_F(DaemonTest, ErrorAnswersAreRateLimited) {
  Make();
  for (int i = 0; i < 200; ++i) Message("sp/cmd/backup", "{not json");
  // 100 tokens, two per invalid message (its log line and its answer): 50 answers at once.
  EXPECT_EQ(transport_.On("sp/response/backup").size(), 50u);
  // Each of the other 150 is refused twice: its log line and its answer.
  EXPECT_EQ(controller_->stats().responses_suppressed, 300u);
  clock_.Advance(seconds(1));  // refills 50 tokens
  for (int i = 0; i < 100; ++i) Message("sp/cmd/backup", "{not json");
  EXPECT_EQ(transport_.On("sp/response/backup").size(), 75u);
}

// ---- Retained messages ----

TEST_F(DaemonTest, ARetainedCommandIsIgnoredAndCleared) {
  Make();
  Message("sp/cmd/backup", "{}", /*retained=*/true);
  Message("sp/update/request", R"({"update_id":"u1","target":"core"})", /*retained=*/true);
  EXPECT_EQ(jobs_.pending(), 0u);
  EXPECT_THAT(transport_.cleared, ElementsAre("sp/cmd/backup", "sp/update/request"));
  EXPECT_EQ(controller_->stats().retained_commands_ignored, 2u);
}

TEST_F(DaemonTest, OnMqtt311ALiveCopyOfARetainedCommandIsIgnored) {
  transport_.protocol_version = 4;
  Make();
  retained_["sp/cmd/backup"] = R"({"reason":"old"})";
  Message("sp/cmd/backup", R"({"reason":"old"})");
  EXPECT_EQ(jobs_.pending(), 0u);
  EXPECT_THAT(transport_.cleared, ElementsAre("sp/cmd/backup"));
  Message("sp/cmd/backup", R"({"reason":"new"})");  // another payload: live
  EXPECT_EQ(jobs_.pending(), 1u);
  Work();
  retained_["!fail"] = "";
  Message("sp/cmd/backup", R"({"reason":"unchecked"})");
  EXPECT_THAT(Response("backup")["error"].get<std::string>(),
              ::testing::HasSubstr("cannot check that it was not published retained"));
  EXPECT_EQ(backend_.backups, 1);
}

// ---- Zigbee2MQTT ----

class DaemonZigbee2MqttTest : public DaemonTest {
 protected:
  void SetUp() override {
    Make("  zigbee2mqtt_backup: true\n  zigbee2mqtt_backup_timeout: 20s\n");
  }
  std::string Transaction() const {
    return transport_.Last("zigbee2mqtt/bridge/request/backup")["transaction"];
  }
  static std::string Answer(const std::string& transaction) {
    // "PK\x05\x06" + 18 zero bytes: an empty zip, base64.
    return json{{"data", {{"zip", "UEsFBgAAAAAAAAAAAAAAAAAAAAAAAA=="}}},
                {"status", "ok"},
                {"transaction", transaction}}
        .dump();
  }
};

TEST_F(DaemonZigbee2MqttTest, TheSafetyPointWaitsForTheAnswerAndStoresTheZip) {
  EXPECT_THAT(transport_.subscribed,
              ::testing::Contains(std::pair<std::string, int>{
                  "zigbee2mqtt/bridge/response/backup", 1}));
  Request();
  EXPECT_EQ(jobs_.pending(), 0u);  // waiting for Zigbee2MQTT
  const std::string tx = Transaction();
  EXPECT_THAT(tx, ::testing::StartsWith("safepoint-"));
  EXPECT_EQ(controller_->NextWake(clock_.Now()), clock_.Now() + seconds(20));
  // Another client's answer, a retained old one and a malformed one without our transaction
  // change nothing.
  Message("zigbee2mqtt/bridge/response/backup", Answer("someone-else"));
  Message("zigbee2mqtt/bridge/response/backup", Answer(tx), /*retained=*/true);
  Message("zigbee2mqtt/bridge/response/backup", "{garbage");
  EXPECT_EQ(jobs_.pending(), 0u);
  EXPECT_EQ(controller_->stats().invalid_messages, 1u);
  Message("zigbee2mqtt/bridge/response/backup", Answer(tx));
  Work();
  ASSERT_TRUE(backend_.last_live.zigbee2mqtt_backup);
  EXPECT_EQ(*backend_.last_live.zigbee2mqtt_backup, std::string("PK\x05\x06", 4) +
                                                        std::string(18, '\0'));
  EXPECT_THAT(backend_.last_live.warnings, IsEmpty());
  EXPECT_EQ(State(), "awaiting_confirmation");
}

TEST_F(DaemonZigbee2MqttTest, NoAnswerWithinTheTimeoutIsAWarningNotAFailure) {
  Request();
  Advance(seconds(19));
  EXPECT_EQ(jobs_.pending(), 0u);
  Advance(seconds(1));
  ASSERT_EQ(jobs_.pending(), 1u);
  Work();
  EXPECT_FALSE(backend_.last_live.zigbee2mqtt_backup);
  EXPECT_THAT(backend_.last_live.warnings,
              ElementsAre("Zigbee2MQTT backup not included: no answer on "
                          "zigbee2mqtt/bridge/response/backup within 20s"));
  EXPECT_EQ(State(), "awaiting_confirmation");
}

TEST_F(DaemonZigbee2MqttTest, AnErrorAnswerOrAnUnpublishableRequestIsAWarning) {
  Request();
  Message("zigbee2mqtt/bridge/response/backup",
          json{{"data", json::object()},
               {"status", "error"},
               {"error", "coordinator busy"},
               {"transaction", Transaction()}}
              .dump());
  Work();
  EXPECT_THAT(backend_.last_live.warnings,
              ElementsAre("Zigbee2MQTT backup not included: Zigbee2MQTT answered: "
                          "coordinator busy"));
  Command("cancel", json::object());
  Work();

  transport_.fail_publishing = true;
  Command("backup", json::object());
  ASSERT_EQ(jobs_.pending(), 1u);
  Work();
  EXPECT_THAT(backend_.last_live.warnings,
              ElementsAre("Zigbee2MQTT backup not included: cannot publish the request "
                          "(not connected)"));
}

// ---- Schedule, re-announce ----

TEST_F(DaemonTest, TheDailyScheduleTakesASafetyPointAtItsTimeAndWaitsForABusyWorker) {
  Make("", "  schedule:\n    daily_at: \"03:30\"\n");
  const auto first = NextDailyAt(clock_.Now(), minutes(3 * 60 + 30));
  Advance(seconds(0));
  EXPECT_EQ(controller_->NextWake(clock_.Now()),
            std::min(clock_.Now() + seconds(60), first));
  clock_.Set(first - seconds(1));
  Advance(seconds(0));
  EXPECT_EQ(backend_.backups, 0);
  // A verify keeps the worker busy when the time comes: postponed by a minute.
  Command("verify", json::object());
  Advance(seconds(1));
  EXPECT_EQ(State(), "idle");
  Work();
  Advance(seconds(59));
  EXPECT_EQ(backend_.backups, 0);
  Advance(seconds(1));
  Work();
  ASSERT_EQ(backend_.backups, 1);
  EXPECT_EQ(backend_.points[0].reason, "scheduled daily safety point");
  EXPECT_EQ(controller_->NextWake(clock_.Now()), clock_.Now() + seconds(60));
}

TEST_F(DaemonTest, RetentionAfterABackupNeverDeletesThePendingUpdatesSafetyPoint) {
  Make();
  backend_.keep_last = 1;
  Command("backup", json::object());
  Work();
  RequestAndBackUp();  // retention keeps the newest: the update's
  EXPECT_EQ(backend_.points.size(), 1u);
  EXPECT_EQ(backend_.points[0].id, "2026-12-02_10-00-02");
  EXPECT_EQ(transport_.Last("sp/safety_points")["ids"], json::array({"2026-12-02_10-00-02"}));
}

TEST_F(DaemonTest, HomeAssistantComingBackOnlineGetsDiscoveryAgainAfterADelay) {
  Make();
  const auto announced = transport_.On("homeassistant/device/safepoint/config").size();
  Message("homeassistant/status", "online");
  EXPECT_LE(controller_->NextWake(clock_.Now()), clock_.Now() + seconds(3));
  Advance(milliseconds(400));
  EXPECT_EQ(transport_.On("homeassistant/device/safepoint/config").size(), announced);
  Advance(milliseconds(2600));
  EXPECT_EQ(transport_.On("homeassistant/device/safepoint/config").size(), announced + 1);
}

TEST_F(DaemonTest, AReconnectRepublishesTheRetainedStateTopics) {
  Make();
  const auto before = transport_.On("sp/safety_points").size();
  Deliver(mqtt::Event{mqtt::Event::Kind::kConnectionLost, {}, "gone"});
  Deliver(mqtt::Event{mqtt::Event::Kind::kConnected, {}, ""});
  EXPECT_EQ(transport_.On("sp/safety_points").size(), before + 1);
  EXPECT_THAT(transport_.On("sp/availability"), ElementsAre("online", "online"));
}

// Found by a campaign that killed the broker at random moments: answers, events and decisions
// that fell due while the connection was down were dropped with a log line (an expired decision,
// a rollback_completed event, a list answer). They are now held and sent, in order, once
// connected: after the retained state on a reconnect, or before the next message.
TEST_F(DaemonTest, WhatFallsDueWhileDisconnectedIsSentInOrderOnceConnected) {
  Make();
  Deliver(mqtt::Event{mqtt::Event::Kind::kConnectionLost, {}, "gone"});
  transport_.fail_publishing = true;
  Command("list", {{"transaction", "t1"}});
  Command("backup", {{"transaction", "t2"}});
  Work();
  transport_.fail_publishing = false;
  const std::size_t at = transport_.published.size();
  Deliver(mqtt::Event{mqtt::Event::Kind::kConnected, {}, ""});
  std::vector<std::string> after;
  for (std::size_t i = at; i < transport_.published.size(); ++i) {
    const auto& p = transport_.published[i];
    if (!p.retain) after.push_back(p.topic + " " + json::parse(p.payload).value("event_type", ""));
  }
  EXPECT_EQ(transport_.published[at].topic, "sp/availability");  // the retained state first
  // The backup's answer comes when it was accepted (before the job ran), then its event.
  EXPECT_THAT(after,
              ElementsAre("sp/response/list ", "sp/response/backup ", "sp/event backup_completed"));
  EXPECT_EQ(transport_.Last("sp/response/list")["transaction"], "t1");
  EXPECT_EQ(transport_.Last("sp/response/backup")["transaction"], "t2");
  // Sent once: a second connect sends nothing held.
  const std::size_t held_sent = transport_.published.size();
  Deliver(mqtt::Event{mqtt::Event::Kind::kConnected, {}, ""});
  for (std::size_t i = held_sent; i < transport_.published.size(); ++i) {
    EXPECT_TRUE(transport_.published[i].retain) << transport_.published[i].topic;
  }

  // A failure without a reconnect event: the next message sends what is held first.
  transport_.fail_publishing = true;
  Command("list", {{"transaction", "t3"}});
  transport_.fail_publishing = false;
  Command("list", {{"transaction", "t4"}});
  auto lists = transport_.On("sp/response/list");
  ASSERT_GE(lists.size(), 2u);
  EXPECT_EQ(json::parse(lists[lists.size() - 2])["transaction"], "t3");
  EXPECT_EQ(json::parse(lists.back())["transaction"], "t4");

  // Bounded: past 256 held messages the oldest go, each counted.
  transport_.fail_publishing = true;
  for (int i = 0; i < 300; ++i) Command("list", {{"transaction", i}});
  transport_.fail_publishing = false;
  const std::size_t before_flood = transport_.On("sp/response/list").size();
  Deliver(mqtt::Event{mqtt::Event::Kind::kConnected, {}, ""});
  lists = transport_.On("sp/response/list");
  ASSERT_EQ(lists.size() - before_flood, 256u);
  EXPECT_EQ(json::parse(lists[before_flood])["transaction"], 44);
  EXPECT_EQ(json::parse(lists.back())["transaction"], 299);
  EXPECT_EQ(controller_->stats().messages_dropped, 44u);

  // What the broker would never take (too large, a bad topic) is not held.
  transport_.fail_publishing = true;
  transport_.fail_code = ErrorCode::kBadInput;
  Command("list", {{"transaction", "refused"}});
  transport_.fail_publishing = false;
  Command("list", {{"transaction", "next"}});
  EXPECT_EQ(transport_.Last("sp/response/list")["transaction"], "next");
  EXPECT_NE(json::parse(transport_.On("sp/response/list").rbegin()[1])["transaction"], "refused");
}

TEST_F(DaemonTest, AnExceptionInAJobIsCountedAndTheServiceGoesOn) {
  Make();
  controller_->RunSafely([] { throw std::runtime_error("broken invariant"); });
  EXPECT_EQ(controller_->stats().internal_errors, 1u);
  Command("backup", json::object());
  Work();
  EXPECT_EQ(backend_.points.size(), 1u);
}

}  // namespace
}  // namespace safepoint::service
