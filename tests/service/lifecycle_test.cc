#include "service/lifecycle.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <vector>

#include "discovery/discovery.h"

namespace safepoint::service {
namespace {

using nlohmann::json;
using std::chrono::hours;
using std::chrono::minutes;
using std::chrono::nanoseconds;
using std::chrono::seconds;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

// 2026-02-11 12:10:54 UTC; tests pass time points, there is no clock.
const TimePoint kT0 =
    std::chrono::sys_days{std::chrono::year{2026} / 2 / 11} + hours(12) + minutes(10) + seconds(54);
constexpr char kId[] = "2026-02-11_13-10-54";
constexpr char kPath[] = "/backup/2026-02-11_13-10-54/state_2026-02-11_13-10-54_0123456789ab.enc";

UpdateRequest Request(const std::string& update_id = "u1") {
  return UpdateRequest{update_id, "core", "2026.1.3", "2026.2.1", std::nullopt};
}

BackupSummary Summary(const std::string& id = kId, TimePoint created = kT0 + seconds(10)) {
  return BackupSummary{id, created, 12, 2'300'000, kPath};
}

UpdateResult Outcome(bool success, std::optional<int> exit_code = std::nullopt,
                     std::optional<std::string> detail = std::nullopt) {
  return UpdateResult{"u1", success, exit_code, std::move(detail)};
}

// The action kinds, in order.
std::vector<std::string> Kinds(const std::vector<Action>& actions) {
  std::vector<std::string> kinds;
  for (const auto& action : actions)
    kinds.push_back(ActionToJson(action)["action"].get<std::string>());
  return kinds;
}

// The one action of type T; fails the test when there is none or more than one.
template <typename T>
T Only(const std::vector<Action>& actions) {
  const T* found = nullptr;
  int count = 0;
  for (const auto& action : actions) {
    if (const T* a = std::get_if<T>(&action)) {
      found = a;
      ++count;
    }
  }
  EXPECT_EQ(count, 1) << ActionsToJson(actions).dump(2);
  return found ? *found : T{};
}

// The events of a list of actions, as published.
std::vector<json> Events(const std::vector<Action>& actions) {
  std::vector<json> events;
  for (const auto& action : actions) {
    if (const auto* e = std::get_if<PublishEvent>(&action)) events.push_back(e->Payload());
  }
  return events;
}

class LifecycleTest : public ::testing::Test {
 protected:
  // idle -> backing_up -> awaiting_confirmation (deadline kT0 + 10 s + 30 min).
  void ToAwaitingConfirmation(Lifecycle& lc) {
    (void)lc.OnUpdateRequest(Request(), kT0);
    (void)lc.OnBackupDone(Summary(), kT0 + seconds(10));
    ASSERT_EQ(lc.state(), State::kAwaitingConfirmation);
  }
  void ToUpdating(Lifecycle& lc) {
    ToAwaitingConfirmation(lc);
    (void)lc.OnDecision(Decision::kContinue, "button", std::nullopt, kT0 + minutes(1));
    ASSERT_EQ(lc.state(), State::kUpdating);
  }
  void ToRollingBack(Lifecycle& lc) {
    ToUpdating(lc);
    (void)lc.OnUpdateResult(Outcome(false, 1), kT0 + minutes(5));
    ASSERT_EQ(lc.state(), State::kRollingBack);
  }
  void ToConflicts(Lifecycle& lc) {
    ToRollingBack(lc);
    (void)lc.OnRollbackDone(RollbackOutcome::Conflicts({"configuration.yaml", "automations.yaml"}),
                            kT0 + minutes(6));
    ASSERT_EQ(lc.state(), State::kAwaitingConflictResolution);
  }

  const TimePoint confirm_deadline_ = kT0 + seconds(10) + minutes(30);
};

// ---- Happy path ----

TEST_F(LifecycleTest, RequestStartsASafetyPoint) {
  Lifecycle lc;
  const auto actions = lc.OnUpdateRequest(Request(), kT0);
  EXPECT_EQ(ActionsToJson(actions), json::parse(R"j([
    {"action": "persist"},
    {"action": "start_backup", "reason": "before update of core (2026.1.3 -> 2026.2.1)",
     "update": {"update_id": "u1", "target": "core", "from_version": "2026.1.3",
                "to_version": "2026.2.1"}},
    {"action": "publish_status", "status": {
      "state": "backing_up", "operation": "update", "progress": 0,
      "pending": {"update_id": "u1", "target": "core", "backup_id": null, "deadline": null},
      "last_backup": null, "last_error": null}}
  ])j"));
  EXPECT_TRUE(lc.Busy());
}

TEST_F(LifecycleTest, RequestReasonIsUsedAsBackupReason) {
  Lifecycle lc;
  UpdateRequest request = Request();
  request.reason = "HACS: mushroom 4.0";
  EXPECT_EQ(Only<StartBackup>(lc.OnUpdateRequest(request, kT0)).reason, "HACS: mushroom 4.0");
}

TEST_F(LifecycleTest, BackupDonePublishesTheSeedSummaryAndWaitsForADecision) {
  Lifecycle lc;
  (void)lc.OnUpdateRequest(Request(), kT0);
  const auto actions = lc.OnBackupDone(Summary(), kT0 + seconds(10));
  EXPECT_THAT(Kinds(actions), ElementsAre("persist", "publish_event", "publish_status"));
  EXPECT_EQ(Events(actions).at(0), json::parse(R"j({
    "event_type": "confirmation_requested",
    "message": "Safety Point Backup Completed\n- Date: 2026-02-11 12:11:04 UTC\n- Files backed up: 12 (total ~2.3 MB)\n- Backup stored locally at: /backup/2026-02-11_13-10-54/state_2026-02-11_13-10-54_0123456789ab.enc\n- Encryption: age (scrypt passphrase from secrets.yaml)\n\nContinue or Cancel the update of core before 2026-02-11 12:41:04 UTC (no answer counts as Cancel).",
    "data": {"update_id": "u1", "target": "core", "backup_id": "2026-02-11_13-10-54",
             "deadline": "2026-02-11T12:41:04+00:00", "files": 12, "bytes": 2300000},
    "time": "2026-02-11T12:11:04+00:00"})j"));
  EXPECT_EQ(Only<PublishStatus>(actions).status, json::parse(R"j({
    "state": "awaiting_confirmation", "operation": "update", "progress": null,
    "pending": {"update_id": "u1", "target": "core", "backup_id": "2026-02-11_13-10-54",
                "deadline": "2026-02-11T12:41:04+00:00"},
    "last_backup": {"id": "2026-02-11_13-10-54", "time": "2026-02-11T12:11:04+00:00",
                    "files": 12, "bytes": 2300000},
    "last_error": null})j"));
  EXPECT_EQ(lc.Snapshot().deadline, confirm_deadline_);
}

TEST_F(LifecycleTest, SummaryUsesTheDriversLocalTimeFormat) {
  LifecycleOptions options;
  options.format_time = [](TimePoint t) {
    return t == kT0 + seconds(10) ? std::string("2026-02-11 13:11:04 CET") : std::string("later");
  };
  Lifecycle lc(options);
  (void)lc.OnUpdateRequest(Request(), kT0);
  BackupSummary small = Summary();
  small.total_bytes = 512;
  const auto event = Events(lc.OnBackupDone(small, kT0 + seconds(10))).at(0);
  EXPECT_THAT(event["message"].get<std::string>(),
              HasSubstr("- Date: 2026-02-11 13:11:04 CET\n- Files backed up: 12 (total ~512 B)"));
}

TEST_F(LifecycleTest, ContinueReleasesTheUpdate) {
  Lifecycle lc;
  ToAwaitingConfirmation(lc);
  const auto actions = lc.OnDecision(Decision::kContinue, "button", std::nullopt, kT0 + minutes(1));
  EXPECT_THAT(Kinds(actions), ElementsAre("persist", "publish_decision", "publish_event",
                                          "publish_status", "respond"));
  EXPECT_EQ(Only<PublishDecision>(actions).Payload(),
            json::parse(R"j({"update_id":"u1","decision":"continue",
                            "backup_id":"2026-02-11_13-10-54"})j"));
  EXPECT_EQ(Events(actions).at(0)["event_type"], "update_continued");
  EXPECT_EQ(Events(actions).at(0)["message"],
            "Update of core continues (safety point 2026-02-11_13-10-54, confirmed via button).");
  const Respond respond = Only<Respond>(actions);
  EXPECT_EQ(respond.command, "continue");
  EXPECT_FALSE(respond.error);
  EXPECT_EQ(respond.data, json::parse(R"j({"update_id":"u1","decision":"continue",
                                          "backup_id":"2026-02-11_13-10-54"})j"));
  EXPECT_EQ(lc.state(), State::kUpdating);
  EXPECT_EQ(lc.Snapshot().deadline, kT0 + minutes(1) + hours(2));  // update_timeout
}

TEST_F(LifecycleTest, ContinueWithTheMatchingUpdateIdIsAccepted) {
  Lifecycle lc;
  ToAwaitingConfirmation(lc);
  (void)lc.OnDecision(Decision::kContinue, "mqtt", std::string("u1"), kT0 + minutes(1));
  EXPECT_EQ(lc.state(), State::kUpdating);
}

TEST_F(LifecycleTest, CancelDeletesTheSafetyPoint) {
  Lifecycle lc;
  ToAwaitingConfirmation(lc);
  const auto actions = lc.OnDecision(Decision::kCancel, "text", std::nullopt, kT0 + minutes(2));
  EXPECT_THAT(Kinds(actions), ElementsAre("persist", "publish_decision", "delete_backup",
                                          "publish_event", "publish_status", "respond"));
  EXPECT_EQ(Only<PublishDecision>(actions).Payload(),
            json::parse(R"j({"update_id":"u1","decision":"cancel",
                            "backup_id":"2026-02-11_13-10-54"})j"));
  EXPECT_EQ(Only<DeleteBackup>(actions).backup_id, kId);
  EXPECT_EQ(Events(actions).at(0)["event_type"], "update_cancelled");
  EXPECT_EQ(lc.state(), State::kIdle);
  EXPECT_FALSE(lc.Busy());
  // The deleted safety point is no longer the last one.
  EXPECT_EQ(Only<PublishStatus>(actions).status["last_backup"], nullptr);
  EXPECT_EQ(lc.Snapshot().last_update_outcome, "cancelled");
}

TEST_F(LifecycleTest, CancelRestoresThePreviousLastBackup) {
  Lifecycle lc;
  const BackupSummary older = Summary("2026-02-10_04-00-00", kT0 - hours(30));
  (void)lc.SetLastBackup(older);
  ToAwaitingConfirmation(lc);
  (void)lc.OnDecision(Decision::kCancel, "button", std::nullopt, kT0 + minutes(2));
  EXPECT_EQ(lc.Snapshot().last_backup, older);
}

// ---- Deadline ----

TEST_F(LifecycleTest, NoDecisionExpiresExactlyAtTheDeadline) {
  Lifecycle lc;
  ToAwaitingConfirmation(lc);
  EXPECT_TRUE(lc.OnTick(confirm_deadline_ - nanoseconds(1)).empty());
  EXPECT_EQ(lc.state(), State::kAwaitingConfirmation);

  const auto actions = lc.OnTick(confirm_deadline_);
  EXPECT_THAT(Kinds(actions), ElementsAre("persist", "publish_decision", "delete_backup",
                                          "publish_event", "publish_status"));
  EXPECT_EQ(Only<PublishDecision>(actions).Payload(),
            json::parse(R"j({"update_id":"u1","decision":"expired",
                            "backup_id":"2026-02-11_13-10-54"})j"));
  EXPECT_EQ(Only<DeleteBackup>(actions).backup_id, kId);
  EXPECT_EQ(Events(actions).at(0)["event_type"], "update_expired");
  EXPECT_EQ(Events(actions).at(0)["message"],
            "Update of core cancelled: no decision within 30 min; safety point "
            "2026-02-11_13-10-54 deleted. Nothing was changed.");
  EXPECT_EQ(lc.state(), State::kIdle);
  EXPECT_TRUE(lc.OnTick(confirm_deadline_ + hours(1)).empty());
}

TEST_F(LifecycleTest, DecisionAfterExpiryIsLate) {
  Lifecycle lc;
  ToAwaitingConfirmation(lc);
  (void)lc.OnTick(confirm_deadline_);
  const auto actions =
      lc.OnDecision(Decision::kContinue, "button", std::nullopt, confirm_deadline_ + seconds(1));
  EXPECT_THAT(Kinds(actions), ElementsAre("respond"));
  const Respond respond = Only<Respond>(actions);
  ASSERT_TRUE(respond.error);
  EXPECT_EQ(respond.error->code, ErrorCode::kBadInput);
  EXPECT_EQ(respond.error->message, "no decision is pending (state: idle)");
}

// ---- Late, duplicate, wrong decisions ----

TEST_F(LifecycleTest, DuplicateDecisionIsRefusedAndChangesNothing) {
  Lifecycle lc;
  ToUpdating(lc);
  const json before = PersistedStateToJson(lc.Snapshot());
  for (Decision d : {Decision::kContinue, Decision::kCancel}) {
    const auto actions = lc.OnDecision(d, "button", std::nullopt, kT0 + minutes(3));
    ASSERT_THAT(Kinds(actions), ElementsAre("respond"));
    const Respond respond = Only<Respond>(actions);
    EXPECT_EQ(respond.command, d == Decision::kContinue ? "continue" : "cancel");
    ASSERT_TRUE(respond.error);
    EXPECT_EQ(respond.error->message,
              "no decision is pending (state: updating, update 'u1' already decided: continue)");
  }
  EXPECT_EQ(PersistedStateToJson(lc.Snapshot()), before);
}

TEST_F(LifecycleTest, DecisionForAnotherUpdateIsRefused) {
  Lifecycle lc;
  ToAwaitingConfirmation(lc);
  const auto actions =
      lc.OnDecision(Decision::kContinue, "mqtt", std::string("u2"), kT0 + minutes(1));
  const Respond respond = Only<Respond>(actions);
  ASSERT_TRUE(respond.error);
  EXPECT_EQ(respond.error->code, ErrorCode::kNotFound);
  EXPECT_EQ(respond.error->message, "no decision is pending for update 'u2' (pending: 'u1')");
  EXPECT_EQ(lc.state(), State::kAwaitingConfirmation);
}

TEST_F(LifecycleTest, DecisionWhileBackingUpIsRefused) {
  Lifecycle lc;
  (void)lc.OnUpdateRequest(Request(), kT0);
  const Respond respond =
      Only<Respond>(lc.OnDecision(Decision::kContinue, "button", std::nullopt, kT0));
  ASSERT_TRUE(respond.error);
  EXPECT_EQ(respond.error->message, "no decision is pending (state: backing_up, update 'u1')");
  EXPECT_EQ(lc.state(), State::kBackingUp);
}

TEST_F(LifecycleTest, ExpiredIsNotADecisionAnyoneCanSend) {
  Lifecycle lc;
  ToAwaitingConfirmation(lc);
  const Respond respond =
      Only<Respond>(lc.OnDecision(Decision::kExpired, "mqtt", std::nullopt, kT0));
  ASSERT_TRUE(respond.error);
  EXPECT_EQ(lc.state(), State::kAwaitingConfirmation);
}

// ---- Repeated requests and busy ----

TEST_F(LifecycleTest, RepeatedRequestIsAnsweredWithTheCurrentState) {
  Lifecycle lc;
  (void)lc.OnUpdateRequest(Request(), kT0);
  // Still backing up: status only, no second safety point.
  EXPECT_THAT(Kinds(lc.OnUpdateRequest(Request(), kT0 + seconds(1))),
              ElementsAre("publish_status"));
  (void)lc.OnBackupDone(Summary(), kT0 + seconds(10));
  EXPECT_THAT(Kinds(lc.OnUpdateRequest(Request(), kT0 + seconds(11))),
              ElementsAre("publish_status"));
  (void)lc.OnDecision(Decision::kContinue, "button", std::nullopt, kT0 + minutes(1));
  // Decided: the decision again (the automation may have missed it).
  const auto actions = lc.OnUpdateRequest(Request(), kT0 + minutes(2));
  EXPECT_THAT(Kinds(actions), ElementsAre("publish_decision", "publish_status"));
  EXPECT_EQ(Only<PublishDecision>(actions).Payload(),
            json::parse(R"j({"update_id":"u1","decision":"continue",
                            "backup_id":"2026-02-11_13-10-54"})j"));
  EXPECT_EQ(lc.state(), State::kUpdating);
}

TEST_F(LifecycleTest, RequestForAFinishedUpdateIsCancelledWithoutASafetyPoint) {
  Lifecycle lc;
  ToAwaitingConfirmation(lc);
  (void)lc.OnDecision(Decision::kCancel, "button", std::nullopt, kT0 + minutes(1));
  const auto actions = lc.OnUpdateRequest(Request(), kT0 + minutes(2));
  EXPECT_THAT(Kinds(actions), ElementsAre("publish_decision"));
  EXPECT_EQ(Only<PublishDecision>(actions).Payload(), json::parse(R"j({
    "update_id":"u1","decision":"cancel","backup_id":null,
    "error":"update 'u1' was already handled (cancelled); use a new update_id"})j"));
  EXPECT_EQ(lc.state(), State::kIdle);
  // A new update id works.
  EXPECT_THAT(Kinds(lc.OnUpdateRequest(Request("u2"), kT0 + minutes(3))),
              ElementsAre("persist", "start_backup", "publish_status"));
}

TEST_F(LifecycleTest, RequestWhileBusyIsCancelledNamingTheCurrentOperation) {
  Lifecycle lc;
  (void)lc.OnManualBackupRequest(std::string("nightly"), kT0);
  const auto actions = lc.OnUpdateRequest(Request("u2"), kT0 + seconds(1));
  EXPECT_EQ(ActionsToJson(actions), json::parse(R"j([{"action":"publish_decision","payload":{
    "update_id":"u2","decision":"cancel","backup_id":null,
    "error":"busy: a safety point is in progress (backing_up)"}}])j"));
  EXPECT_EQ(lc.Snapshot().operation, Operation::kBackup);
}

TEST_F(LifecycleTest, ManualOperationsAreBusyDuringAnUpdate) {
  Lifecycle lc;
  ToAwaitingConfirmation(lc);
  const auto backup = lc.OnManualBackupRequest(std::nullopt, kT0 + minutes(1));
  EXPECT_EQ(ActionsToJson(backup), json::parse(R"j([{"action":"respond","command":"backup",
    "data":{},"code":"busy",
    "error":"busy: update 'u1' is in progress (awaiting_confirmation)"}])j"));
  const Respond rollback =
      Only<Respond>(lc.OnManualRollbackRequest("2026-02-01_04-00-00", ConflictPolicy::kAbort, kT0));
  ASSERT_TRUE(rollback.error);
  EXPECT_EQ(rollback.command, "rollback");
  EXPECT_EQ(rollback.error->code, ErrorCode::kBusy);
  EXPECT_EQ(lc.state(), State::kAwaitingConfirmation);
}

// ---- Backup failure ----

TEST_F(LifecycleTest, BackupFailureCancelsTheUpdate) {
  Lifecycle lc;
  (void)lc.OnUpdateRequest(Request(), kT0);
  const auto actions = lc.OnBackupDone(Fail(ErrorCode::kNoSpace, "disk full"), kT0 + seconds(3));
  EXPECT_THAT(Kinds(actions),
              ElementsAre("persist", "publish_decision", "publish_event", "publish_status"));
  EXPECT_EQ(Only<PublishDecision>(actions).Payload(), json::parse(R"j({
    "update_id":"u1","decision":"cancel","backup_id":null,
    "error":"no safety point for update 'u1': disk full"})j"));
  const json event = Events(actions).at(0);
  EXPECT_EQ(event["event_type"], "backup_failed");
  EXPECT_EQ(event["data"], json::parse(R"j({"update_id":"u1","error":"disk full",
                                           "code":"no_space"})j"));
  EXPECT_EQ(lc.state(), State::kIdle);
  EXPECT_EQ(lc.Snapshot().last_error, "no safety point for update 'u1': disk full");
}

TEST_F(LifecycleTest, StaleBackupDoneIsIgnored) {
  Lifecycle lc;
  EXPECT_TRUE(lc.OnBackupDone(Summary(), kT0).empty());
  EXPECT_EQ(lc.state(), State::kIdle);
}

// ---- Result and health check ----

TEST_F(LifecycleTest, SuccessWithHomeAssistantOnlineRunsTheHealthCheckAtOnce) {
  Lifecycle lc;
  ToUpdating(lc);
  const auto actions = lc.OnUpdateResult(Outcome(true, 0), kT0 + minutes(5));
  EXPECT_EQ(ActionsToJson(actions)[1],
            json::parse(R"j({"action":"run_health_check","backup_id":"2026-02-11_13-10-54"})j"));
  EXPECT_THAT(Kinds(actions),
              ElementsAre("persist", "run_health_check", "report_changes", "publish_status"));
  EXPECT_EQ(lc.state(), State::kHealthCheck);
  EXPECT_EQ(lc.Snapshot().deadline, kT0 + minutes(15));

  const auto done = lc.OnHealthReport({}, kT0 + minutes(6));
  EXPECT_THAT(Kinds(done), ElementsAre("persist", "publish_event", "publish_status"));
  EXPECT_EQ(Events(done).at(0)["event_type"], "update_succeeded");
  EXPECT_EQ(Events(done).at(0)["message"],
            "Update of core succeeded and passed the health check. Safety point "
            "2026-02-11_13-10-54 is kept.");
  EXPECT_EQ(lc.state(), State::kIdle);
  EXPECT_EQ(lc.Snapshot().last_update_outcome, "succeeded");
}

TEST_F(LifecycleTest, HealthCheckWaitsForHomeAssistantToComeBackOnline) {
  Lifecycle lc;
  ToUpdating(lc);
  EXPECT_TRUE(lc.OnHomeAssistantStatus("offline", kT0 + minutes(2)).empty());
  const auto result = lc.OnUpdateResult(Outcome(true), kT0 + minutes(4));
  EXPECT_THAT(Kinds(result), ElementsAre("persist", "report_changes", "publish_status"));
  EXPECT_TRUE(lc.OnHealthReport({}, kT0 + minutes(5)).empty());  // not requested yet
  EXPECT_EQ(lc.state(), State::kHealthCheck);

  const auto online = lc.OnHomeAssistantStatus("online", kT0 + minutes(6));
  EXPECT_THAT(Kinds(online), ElementsAre("persist", "run_health_check", "publish_status"));
  (void)lc.OnHealthReport({}, kT0 + minutes(7));
  EXPECT_EQ(lc.state(), State::kIdle);
}

TEST_F(LifecycleTest, HomeAssistantRestartingAfterTheCheckStartedChecksAgain) {
  Lifecycle lc;
  ToUpdating(lc);
  (void)lc.OnUpdateResult(Outcome(true), kT0 + minutes(4));
  EXPECT_THAT(Kinds(lc.OnHomeAssistantStatus("offline", kT0 + minutes(5))),
              ElementsAre("persist", "publish_status"));
  // The report of the first check is stale now.
  EXPECT_TRUE(lc.OnHealthReport({"light.kitchen"}, kT0 + minutes(5)).empty());
  EXPECT_THAT(Kinds(lc.OnHomeAssistantStatus("online", kT0 + minutes(6))),
              ElementsAre("persist", "run_health_check", "publish_status"));
  (void)lc.OnHealthReport({}, kT0 + minutes(7));
  EXPECT_EQ(lc.state(), State::kIdle);
}

TEST_F(LifecycleTest, HomeAssistantStayingOfflineFailsTheUpdateAtTheHealthDeadline) {
  Lifecycle lc;
  ToUpdating(lc);
  (void)lc.OnHomeAssistantStatus("offline", kT0 + minutes(2));
  (void)lc.OnUpdateResult(Outcome(true), kT0 + minutes(4));
  EXPECT_TRUE(lc.OnTick(kT0 + minutes(14) - nanoseconds(1)).empty());
  const auto actions = lc.OnTick(kT0 + minutes(14));
  EXPECT_THAT(Kinds(actions), ElementsAre("persist", "publish_event", "record_fingerprint",
                                          "start_rollback", "publish_event", "publish_status"));
  const auto events = Events(actions);
  EXPECT_EQ(events.at(0)["event_type"], "health_check_failed");
  EXPECT_EQ(events.at(0)["message"],
            "Home Assistant did not come back online within 10 min after the update of core\n"
            "Rolling back to safety point 2026-02-11_13-10-54.");
  EXPECT_EQ(events.at(1)["event_type"], "rollback_started");
  EXPECT_EQ(lc.state(), State::kRollingBack);
}

TEST_F(LifecycleTest, HealthCheckThatNeverReportsFailsAtTheDeadline) {
  Lifecycle lc;
  ToUpdating(lc);
  (void)lc.OnUpdateResult(Outcome(true), kT0 + minutes(4));
  const auto events = Events(lc.OnTick(kT0 + minutes(14)));
  EXPECT_EQ(events.at(0)["message"],
            "health check after the update of core did not report within 10 min\n"
            "Rolling back to safety point 2026-02-11_13-10-54.");
}

TEST_F(LifecycleTest, EntitiesUnavailableSinceTheSafetyPointFailTheHealthCheck) {
  Lifecycle lc;
  ToUpdating(lc);
  (void)lc.OnUpdateResult(Outcome(true), kT0 + minutes(4));
  const auto actions =
      lc.OnHealthReport({"light.kitchen", "sensor.boiler_temperature"}, kT0 + minutes(5));
  EXPECT_EQ(ActionsToJson(actions), json::parse(R"j([
    {"action":"persist"},
    {"action":"publish_event","payload":{"event_type":"health_check_failed",
      "message":"health check after the update of core failed: 2 entities unavailable since the safety point:\n- light.kitchen\n- sensor.boiler_temperature\nRolling back to safety point 2026-02-11_13-10-54.",
      "data":{"update_id":"u1","backup_id":"2026-02-11_13-10-54",
              "unavailable":["light.kitchen","sensor.boiler_temperature"]},
      "time":"2026-02-11T12:15:54+00:00"}},
    {"action":"record_fingerprint","backup_id":"2026-02-11_13-10-54","keep_existing":false},
    {"action":"start_rollback","backup_id":"2026-02-11_13-10-54","on_conflict":"abort"},
    {"action":"publish_event","payload":{"event_type":"rollback_started",
      "message":"Rolling back to safety point 2026-02-11_13-10-54 (conflicts: abort).",
      "data":{"backup_id":"2026-02-11_13-10-54","on_conflict":"abort","update_id":"u1"},
      "time":"2026-02-11T12:15:54+00:00"}},
    {"action":"publish_status","status":{"state":"rolling_back","operation":"update",
      "progress":0,
      "pending":{"update_id":"u1","target":"core","backup_id":"2026-02-11_13-10-54",
                 "deadline":null,"decision":"continue"},
      "last_backup":{"id":"2026-02-11_13-10-54","time":"2026-02-11T12:11:04+00:00",
                     "files":12,"bytes":2300000},
      "last_error":"health check after the update of core failed: 2 entities unavailable since the safety point:\n- light.kitchen\n- sensor.boiler_temperature"}}
  ])j"));
}

// ---- Failure and rollback ----

TEST_F(LifecycleTest, FailedResultRecordsTheFingerprintAndRollsBack) {
  Lifecycle lc;
  ToUpdating(lc);
  const auto actions =
      lc.OnUpdateResult(Outcome(true, 2, std::string("migration error")), kT0 + minutes(5));
  EXPECT_THAT(Kinds(actions), ElementsAre("persist", "publish_event", "record_fingerprint",
                                          "start_rollback", "publish_event", "publish_status"));
  const auto events = Events(actions);
  EXPECT_EQ(events.at(0)["event_type"], "update_failed");
  EXPECT_EQ(events.at(0)["message"],
            "update of core failed (exit code 2): migration error\n"
            "Rolling back to safety point 2026-02-11_13-10-54.");
  EXPECT_EQ(events.at(0)["data"], json::parse(R"j({"update_id":"u1",
    "backup_id":"2026-02-11_13-10-54","exit_code":2,"detail":"migration error"})j"));
  EXPECT_EQ(Only<RecordFingerprint>(actions).backup_id, kId);
  const StartRollback start = Only<StartRollback>(actions);
  EXPECT_EQ(start.backup_id, kId);
  EXPECT_EQ(start.on_conflict, ConflictPolicy::kAbort);

  const auto done =
      lc.OnRollbackDone(RollbackOutcome::Ok(7, "2026-02-11_12-20-00"), kT0 + minutes(8));
  EXPECT_THAT(Kinds(done), ElementsAre("persist", "publish_event", "publish_status"));
  EXPECT_EQ(Events(done).at(0), json::parse(R"j({"event_type":"rollback_completed",
    "message":"Rollback to safety point 2026-02-11_13-10-54 completed: 7 files restored. Undo with /rollback safety_point 2026-02-11_12-20-00.",
    "data":{"backup_id":"2026-02-11_13-10-54","update_id":"u1","restored_files":7,
            "pre_rollback_id":"2026-02-11_12-20-00"},
    "time":"2026-02-11T12:18:54+00:00"})j"));
  EXPECT_EQ(lc.state(), State::kIdle);
  EXPECT_EQ(lc.Snapshot().last_update_outcome, "rolled_back");
}

TEST_F(LifecycleTest, AutoRollbackOffReportsAndGoesIdle) {
  LifecycleOptions options;
  options.auto_rollback = false;
  Lifecycle lc(options);
  ToUpdating(lc);
  const auto actions = lc.OnUpdateResult(Outcome(false), kT0 + minutes(5));
  EXPECT_THAT(Kinds(actions),
              ElementsAre("persist", "publish_event", "record_fingerprint", "publish_status"));
  EXPECT_EQ(Events(actions).at(0)["message"],
            "update of core failed\nAutomatic rollback is off: roll back with "
            "/rollback safety_point 2026-02-11_13-10-54.");
  EXPECT_EQ(lc.state(), State::kIdle);
  EXPECT_EQ(lc.Snapshot().last_error, "update of core failed");
  EXPECT_EQ(lc.Snapshot().last_update_outcome, "failed");
}

TEST_F(LifecycleTest, AutoRollbackUsesTheConfiguredPolicy) {
  LifecycleOptions options;
  options.auto_rollback_policy = ConflictPolicy::kMerge;
  Lifecycle lc(options);
  ToUpdating(lc);
  EXPECT_EQ(Only<StartRollback>(lc.OnUpdateResult(Outcome(false), kT0)).on_conflict,
            ConflictPolicy::kMerge);
}

TEST_F(LifecycleTest, ResultInTheWrongStateIsAnError) {
  Lifecycle lc;
  const Respond unknown = Only<Respond>(lc.OnUpdateResult(Outcome(true), kT0));
  EXPECT_EQ(unknown.command, "update");
  ASSERT_TRUE(unknown.error);
  EXPECT_EQ(unknown.error->message, "no update 'u1' is in progress");

  ToAwaitingConfirmation(lc);
  const Respond early = Only<Respond>(lc.OnUpdateResult(Outcome(false), kT0 + minutes(1)));
  ASSERT_TRUE(early.error);
  EXPECT_EQ(early.error->message, "update 'u1' was not released yet (awaiting_confirmation)");
  EXPECT_EQ(lc.state(), State::kAwaitingConfirmation);

  (void)lc.OnDecision(Decision::kContinue, "button", std::nullopt, kT0 + minutes(1));
  (void)lc.OnUpdateResult(Outcome(true), kT0 + minutes(2));
  const Respond twice = Only<Respond>(lc.OnUpdateResult(Outcome(false), kT0 + minutes(3)));
  ASSERT_TRUE(twice.error);
  EXPECT_EQ(twice.error->message, "the result of update 'u1' was already received (health_check)");
  EXPECT_EQ(lc.state(), State::kHealthCheck);
}

TEST_F(LifecycleTest, UpdateWithoutAResultTimesOutWithoutRollingBack) {
  Lifecycle lc;
  ToUpdating(lc);
  const TimePoint deadline = kT0 + minutes(1) + hours(2);
  EXPECT_TRUE(lc.OnTick(deadline - nanoseconds(1)).empty());
  const auto actions = lc.OnTick(deadline);
  EXPECT_THAT(Kinds(actions), ElementsAre("persist", "publish_event", "publish_status"));
  EXPECT_EQ(Events(actions).at(0)["event_type"], "update_timed_out");
  EXPECT_EQ(lc.state(), State::kIdle);
}

TEST_F(LifecycleTest, RollbackConflictsWaitForAResolution) {
  Lifecycle lc;
  ToRollingBack(lc);
  const auto actions = lc.OnRollbackDone(
      RollbackOutcome::Conflicts({"configuration.yaml", "automations.yaml"}), kT0 + minutes(6));
  EXPECT_THAT(Kinds(actions), ElementsAre("persist", "publish_event", "publish_status"));
  const json event = Events(actions).at(0);
  EXPECT_EQ(event["event_type"], "rollback_conflicts");
  EXPECT_EQ(event["message"],
            "Rollback to safety point 2026-02-11_13-10-54 stopped: 2 files changed locally since "
            "the safety point:\n- configuration.yaml\n- automations.yaml\nChoose Overwrite, "
            "Merge or Abort before 2026-02-11 12:46:54 UTC (no answer counts as Abort).");
  EXPECT_EQ(Only<PublishStatus>(actions).status["pending"], json::parse(R"j({
    "update_id":"u1","target":"core","backup_id":"2026-02-11_13-10-54",
    "deadline":"2026-02-11T12:46:54+00:00","decision":"continue",
    "conflicts":["configuration.yaml","automations.yaml"]})j"));
  EXPECT_EQ(lc.state(), State::kAwaitingConflictResolution);
}

TEST_F(LifecycleTest, ResolveOverwriteAndMergeRollBackWithThatPolicy) {
  for (ConflictPolicy policy : {ConflictPolicy::kOverwrite, ConflictPolicy::kMerge}) {
    Lifecycle lc;
    ToConflicts(lc);
    const auto actions = lc.OnResolve(policy, kT0 + minutes(7));
    EXPECT_THAT(Kinds(actions), ElementsAre("persist", "start_rollback", "publish_event",
                                            "publish_status", "respond"));
    const StartRollback start = Only<StartRollback>(actions);
    EXPECT_EQ(start.backup_id, kId);
    EXPECT_EQ(start.on_conflict, policy);
    const Respond respond = Only<Respond>(actions);
    EXPECT_EQ(respond.command, "resolve");
    EXPECT_FALSE(respond.error);
    EXPECT_EQ(lc.state(), State::kRollingBack);
    EXPECT_TRUE(lc.Snapshot().conflicts.empty());

    (void)lc.OnRollbackDone(RollbackOutcome::Ok(9, std::nullopt), kT0 + minutes(8));
    EXPECT_EQ(lc.state(), State::kIdle);
  }
}

TEST_F(LifecycleTest, ResolveAbortLeavesTheFilesAlone) {
  Lifecycle lc;
  ToConflicts(lc);
  const auto actions = lc.OnResolve(ConflictPolicy::kAbort, kT0 + minutes(7));
  EXPECT_THAT(Kinds(actions), ElementsAre("persist", "publish_event", "publish_status", "respond"));
  EXPECT_EQ(Events(actions).at(0)["event_type"], "rollback_aborted");
  EXPECT_EQ(Events(actions).at(0)["message"],
            "Rollback to safety point 2026-02-11_13-10-54 aborted (aborted by request). "
            "Nothing was changed.");
  EXPECT_EQ(lc.state(), State::kIdle);
  EXPECT_EQ(lc.Snapshot().last_error,
            "rollback to 2026-02-11_13-10-54 aborted (aborted by request); 2 conflicting files "
            "left unchanged");
}

TEST_F(LifecycleTest, NoResolutionBeforeTheDeadlineAborts) {
  Lifecycle lc;
  ToConflicts(lc);
  const TimePoint deadline = kT0 + minutes(6) + minutes(30);
  EXPECT_TRUE(lc.OnTick(deadline - nanoseconds(1)).empty());
  const auto actions = lc.OnTick(deadline);
  EXPECT_EQ(Events(actions).at(0)["data"]["reason"], "no resolution within 30 min");
  EXPECT_EQ(lc.state(), State::kIdle);
  // Too late now.
  const Respond late = Only<Respond>(lc.OnResolve(ConflictPolicy::kOverwrite, deadline));
  ASSERT_TRUE(late.error);
  EXPECT_EQ(late.error->message, "no conflicts wait for a resolution (state: idle)");
}

TEST_F(LifecycleTest, FailedRollbackEndsInErrorWhichIsNotBusy) {
  Lifecycle lc;
  ToRollingBack(lc);
  const auto actions = lc.OnRollbackDone(
      RollbackOutcome::Failed(Error{ErrorCode::kWrongPassphrase, "wrong passphrase"}),
      kT0 + minutes(6));
  EXPECT_THAT(Kinds(actions), ElementsAre("persist", "publish_event", "publish_status"));
  EXPECT_EQ(Events(actions).at(0)["event_type"], "rollback_failed");
  EXPECT_EQ(Events(actions).at(0)["data"]["code"], "wrong_passphrase");
  EXPECT_EQ(lc.state(), State::kError);
  EXPECT_EQ(Only<PublishStatus>(actions).status["last_error"],
            "rollback to 2026-02-11_13-10-54 failed: wrong passphrase");
  EXPECT_FALSE(lc.Busy());
  // The next operation leaves the error state.
  (void)lc.OnManualBackupRequest(std::nullopt, kT0 + minutes(7));
  EXPECT_EQ(lc.state(), State::kBackingUp);
}

// ---- Manual operations ----

TEST_F(LifecycleTest, ManualBackup) {
  Lifecycle lc;
  const auto start = lc.OnManualBackupRequest(std::string("before tinkering"), kT0);
  EXPECT_EQ(ActionsToJson(start)[1], json::parse(R"j({"action":"start_backup",
    "reason":"before tinkering","update":null})j"));
  EXPECT_EQ(Only<Respond>(start).data,
            json::parse(R"j({"state":"backing_up","reason":"before tinkering"})j"));
  EXPECT_THAT(Kinds(lc.OnProgress(40, kT0 + seconds(2))), ElementsAre("publish_status"));
  EXPECT_EQ(lc.StatusJson()["progress"], 40);
  EXPECT_TRUE(lc.OnProgress(40, kT0 + seconds(3)).empty());  // unchanged

  const auto done = lc.OnBackupDone(Summary(), kT0 + seconds(10));
  EXPECT_THAT(Kinds(done), ElementsAre("persist", "publish_event", "publish_status"));
  const json event = Events(done).at(0);
  EXPECT_EQ(event["event_type"], "backup_completed");
  EXPECT_EQ(event["message"],
            "Safety Point Backup Completed\n- Date: 2026-02-11 12:11:04 UTC\n- Files backed up: "
            "12 (total ~2.3 MB)\n- Backup stored locally at: " +
                std::string(kPath) + "\n- Encryption: age (scrypt passphrase from secrets.yaml)");
  EXPECT_EQ(lc.state(), State::kIdle);
  EXPECT_EQ(lc.Snapshot().last_backup, Summary());
  EXPECT_EQ(Only<PublishStatus>(done).status["progress"], nullptr);
}

TEST_F(LifecycleTest, ManualBackupFailure) {
  Lifecycle lc;
  (void)lc.OnManualBackupRequest(std::nullopt, kT0);
  const auto actions = lc.OnBackupDone(Fail(ErrorCode::kIo, "read error"), kT0);
  EXPECT_EQ(Events(actions).at(0)["event_type"], "backup_failed");
  EXPECT_EQ(lc.Snapshot().last_error, "safety point failed: read error");
  EXPECT_EQ(lc.state(), State::kIdle);
}

TEST_F(LifecycleTest, ManualRollbackWithConflictsAndOneOperationAtATime) {
  Lifecycle lc;
  const auto start = lc.OnManualRollbackRequest("2026-02-01_04-00-00", ConflictPolicy::kAbort, kT0);
  EXPECT_THAT(Kinds(start), ElementsAre("persist", "start_rollback", "publish_event",
                                        "publish_status", "respond"));
  EXPECT_EQ(Only<PublishStatus>(start).status["operation"], "rollback");
  EXPECT_FALSE(Only<Respond>(start).error);

  const Respond busy = Only<Respond>(lc.OnManualBackupRequest(std::nullopt, kT0));
  ASSERT_TRUE(busy.error);
  EXPECT_EQ(busy.error->message,
            "busy: a rollback to 2026-02-01_04-00-00 is in progress (rolling_back)");

  (void)lc.OnRollbackDone(RollbackOutcome::Conflicts({"secrets.yaml"}), kT0 + minutes(1));
  EXPECT_EQ(lc.state(), State::kAwaitingConflictResolution);
  const auto resolved = lc.OnResolve(ConflictPolicy::kMerge, kT0 + minutes(2));
  EXPECT_EQ(ActionsToJson(resolved)[1], json::parse(R"j({"action":"start_rollback",
    "backup_id":"2026-02-01_04-00-00","on_conflict":"merge"})j"));
  (void)lc.OnRollbackDone(RollbackOutcome::Ok(1, std::nullopt), kT0 + minutes(3));
  EXPECT_EQ(lc.state(), State::kIdle);
  EXPECT_FALSE(lc.Snapshot().last_update_id);  // not an update
}

TEST_F(LifecycleTest, IgnoresUnrelatedInputs) {
  Lifecycle lc;
  EXPECT_TRUE(lc.OnHomeAssistantStatus("online", kT0).empty());
  EXPECT_TRUE(lc.OnHomeAssistantStatus("restarting", kT0).empty());
  EXPECT_TRUE(lc.OnHealthReport({}, kT0).empty());
  EXPECT_TRUE(lc.OnRollbackDone(RollbackOutcome::Ok(1, std::nullopt), kT0).empty());
  EXPECT_TRUE(lc.OnTick(kT0 + hours(100)).empty());
  EXPECT_TRUE(lc.OnProgress(50, kT0).empty());
  EXPECT_EQ(lc.state(), State::kIdle);
}

// ---- Persistence and restart ----

TEST_F(LifecycleTest, PendingDecisionSurvivesARestartWithItsOriginalDeadline) {
  Lifecycle before;
  ToAwaitingConfirmation(before);
  const std::string saved = PersistedStateToJson(before.Snapshot()).dump();

  auto state = PersistedStateFromJson(json::parse(saved));
  ASSERT_TRUE(state) << state.error().message;
  Lifecycle after;
  const auto actions = after.Restore(*state, kT0 + minutes(20));
  EXPECT_THAT(Kinds(actions), ElementsAre("publish_status"));
  EXPECT_EQ(after.state(), State::kAwaitingConfirmation);
  EXPECT_EQ(after.Snapshot().deadline, confirm_deadline_);
  EXPECT_EQ(after.StatusJson(), before.StatusJson());

  EXPECT_TRUE(after.OnTick(confirm_deadline_ - nanoseconds(1)).empty());
  EXPECT_EQ(Only<PublishDecision>(after.OnTick(confirm_deadline_)).decision, Decision::kExpired);
}

TEST_F(LifecycleTest, DecisionStillWorksAfterARestart) {
  Lifecycle before;
  ToAwaitingConfirmation(before);
  Lifecycle after;
  (void)after.Restore(*PersistedStateFromJson(PersistedStateToJson(before.Snapshot())),
                      kT0 + minutes(20));
  const auto actions =
      after.OnDecision(Decision::kContinue, "button", std::nullopt, kT0 + minutes(21));
  EXPECT_EQ(Only<PublishDecision>(actions).Payload()["decision"], "continue");
}

TEST_F(LifecycleTest, DeadlinePassedWhileDownExpiresOnRestore) {
  Lifecycle before;
  ToAwaitingConfirmation(before);
  Lifecycle after;
  const auto actions = after.Restore(before.Snapshot(), confirm_deadline_ + hours(3));
  EXPECT_THAT(Kinds(actions), ElementsAre("persist", "publish_decision", "delete_backup",
                                          "publish_event", "publish_status"));
  EXPECT_EQ(Only<PublishDecision>(actions).decision, Decision::kExpired);
  EXPECT_EQ(after.state(), State::kIdle);
}

TEST_F(LifecycleTest, InterruptedRollbackIsResumedAfterARestart) {
  Lifecycle before;
  ToRollingBack(before);
  Lifecycle after;
  const auto actions = after.Restore(
      *PersistedStateFromJson(PersistedStateToJson(before.Snapshot())), kT0 + minutes(30));
  // The fingerprint is recorded first unless the crash came after it: a kill between persisting
  // rolling_back and writing fingerprint.json made every file the update changed a conflict.
  EXPECT_EQ(ActionsToJson(actions)[1], json::parse(R"j({"action":"record_fingerprint",
    "backup_id":"2026-02-11_13-10-54","keep_existing":true})j"));
  EXPECT_EQ(ActionsToJson(actions)[2], json::parse(R"j({"action":"start_rollback",
    "backup_id":"2026-02-11_13-10-54","on_conflict":"abort"})j"));
  EXPECT_THAT(Kinds(actions),
              ElementsAre("persist", "record_fingerprint", "start_rollback", "publish_status"));
  EXPECT_EQ(after.Snapshot().resumes, 1);
  (void)after.OnRollbackDone(RollbackOutcome::Ok(3, std::nullopt), kT0 + minutes(31));
  EXPECT_EQ(after.state(), State::kIdle);
  EXPECT_EQ(after.Snapshot().last_update_outcome, "rolled_back");
}

TEST_F(LifecycleTest, InterruptedBackupStartsAgainAfterARestart) {
  Lifecycle before;
  (void)before.OnUpdateRequest(Request(), kT0);
  Lifecycle after;
  const auto actions = after.Restore(before.Snapshot(), kT0 + minutes(1));
  EXPECT_THAT(Kinds(actions), ElementsAre("persist", "start_backup", "publish_status"));
  EXPECT_EQ(ActionsToJson(actions)[1], json::parse(R"j({"action":"start_backup",
    "reason":"before update of core (2026.1.3 -> 2026.2.1)","update":{"update_id":"u1",
    "target":"core","from_version":"2026.1.3","to_version":"2026.2.1"}})j"));
}

// Issue 9: a persisted operation interrupted by a crash is resumed at most once. The resume is
// counted in the state persisted before it starts (the "persist" action comes first).
TEST_F(LifecycleTest, InterruptedOperationIsResumedAtMostOnceResumeIsPersistedFirst) {
  Lifecycle before;
  (void)before.OnManualBackupRequest(std::string("nightly"), kT0);
  Lifecycle after;
  const auto actions = after.Restore(before.Snapshot(), kT0 + minutes(1));
  EXPECT_THAT(Kinds(actions), ElementsAre("persist", "start_backup", "publish_status"));
  EXPECT_EQ(after.Snapshot().resumes, 1);
  EXPECT_EQ(PersistedStateToJson(after.Snapshot())["resumes"], 1);
  // The resumed safety point finishes: the count is gone with the operation.
  (void)after.OnBackupDone(Summary(), kT0 + minutes(2));
  EXPECT_EQ(after.Snapshot().resumes, 0);
}

TEST_F(LifecycleTest, InterruptedBackupAlreadyResumedBecomesAnErrorNotARestartLoop) {
  Lifecycle before;
  (void)before.OnManualBackupRequest(std::string("nightly"), kT0);
  json saved = PersistedStateToJson(before.Snapshot());
  saved["resumes"] = 1;  // the state file of a service that crashed during the resume
  auto state = PersistedStateFromJson(saved);
  ASSERT_TRUE(state) << state.error().message;
  Lifecycle after;
  const auto actions = after.Restore(*state, kT0 + minutes(1));
  EXPECT_THAT(Kinds(actions), ElementsAre("persist", "publish_event", "publish_status"));
  EXPECT_EQ(after.state(), State::kError);
  const std::string expected =
      "the safety point was interrupted by a crash or kill again after it was resumed once; "
      "not retried (see the service log of that run)";
  EXPECT_EQ(after.Snapshot().last_error, expected);
  EXPECT_EQ(Only<PublishStatus>(actions).status["state"], "error");
  EXPECT_EQ(Only<PublishStatus>(actions).status["last_error"], expected);
  EXPECT_EQ(Events(actions).at(0)["event_type"], "backup_failed");
  // Nothing is retried, now or on the next restart.
  Lifecycle again;
  EXPECT_THAT(Kinds(again.Restore(after.Snapshot(), kT0 + minutes(2))),
              ElementsAre("publish_status"));
  EXPECT_EQ(again.state(), State::kError);
}

TEST_F(LifecycleTest, InterruptedUpdateBackupAlreadyResumedCancelsTheUpdate) {
  Lifecycle before;
  (void)before.OnUpdateRequest(Request(), kT0);
  PersistedState state = before.Snapshot();
  state.resumes = 1;
  Lifecycle after;
  const auto actions = after.Restore(state, kT0 + minutes(1));
  EXPECT_EQ(after.state(), State::kError);
  const auto decision = Only<PublishDecision>(actions).Payload();
  EXPECT_EQ(decision["update_id"], "u1");
  EXPECT_EQ(decision["decision"], "cancel");
  EXPECT_EQ(after.Snapshot().last_error,
            "the safety point for the update was interrupted by a crash or kill again after it "
            "was resumed once; not retried (see the service log of that run)");
}

TEST_F(LifecycleTest, InterruptedRollbackAlreadyResumedBecomesAnError) {
  Lifecycle before;
  ToRollingBack(before);
  PersistedState state = before.Snapshot();
  state.resumes = 1;
  Lifecycle after;
  const auto actions = after.Restore(state, kT0 + minutes(30));
  EXPECT_THAT(Kinds(actions), ElementsAre("persist", "publish_event", "publish_status"));
  EXPECT_EQ(after.state(), State::kError);
  EXPECT_EQ(after.Snapshot().last_error,
            "rollback to 2026-02-11_13-10-54 failed: interrupted by a crash or kill again after "
            "it was resumed once; not retried (see the service log of that run)");
  EXPECT_EQ(Events(actions).at(0)["event_type"], "rollback_failed");
}

TEST_F(LifecycleTest, UpdatingRepublishesTheDecisionAfterARestart) {
  Lifecycle before;
  ToUpdating(before);
  Lifecycle after;
  const auto actions = after.Restore(before.Snapshot(), kT0 + minutes(3));
  EXPECT_THAT(Kinds(actions), ElementsAre("publish_decision", "publish_status"));
  EXPECT_EQ(Only<PublishDecision>(actions).decision, Decision::kContinue);
}

TEST_F(LifecycleTest, HealthCheckRunsAgainAfterARestart) {
  Lifecycle before;
  ToUpdating(before);
  (void)before.OnHomeAssistantStatus("offline", kT0);
  (void)before.OnUpdateResult(Outcome(true), kT0 + minutes(4));
  Lifecycle after;
  EXPECT_THAT(Kinds(after.Restore(before.Snapshot(), kT0 + minutes(5))),
              ElementsAre("persist", "run_health_check", "publish_status"));
}

TEST_F(LifecycleTest, ConflictsSurviveARestart) {
  Lifecycle before;
  ToConflicts(before);
  Lifecycle after;
  EXPECT_THAT(Kinds(after.Restore(*PersistedStateFromJson(PersistedStateToJson(before.Snapshot())),
                                  kT0 + minutes(7))),
              ElementsAre("publish_status"));
  EXPECT_EQ(after.Snapshot().conflicts,
            (std::vector<std::string>{"configuration.yaml", "automations.yaml"}));
  EXPECT_EQ(Only<StartRollback>(after.OnResolve(ConflictPolicy::kOverwrite, kT0 + minutes(8)))
                .on_conflict,
            ConflictPolicy::kOverwrite);
}

TEST(PersistedState, RoundTripsExactly) {
  PersistedState s;
  s.state = State::kAwaitingConflictResolution;
  s.operation = Operation::kUpdate;
  s.update = UpdateRequest{"u9", "zigbee2mqtt", std::nullopt, "2.0.0", "firmware"};
  s.backup_id = "2026-02-11_13-10-54-2";
  s.backup_reason = "firmware";
  s.deadline = kT0 + nanoseconds(123456789);
  s.decision = Decision::kContinue;
  s.policy = ConflictPolicy::kMerge;
  s.conflicts = {"a.yaml", "b/c.yaml"};
  s.progress = 12;
  s.last_backup = Summary("2026-02-11_13-10-54-2", kT0 + nanoseconds(1));
  s.previous_last_backup = Summary("2026-02-10_04-00-00", kT0 - hours(30));
  s.last_error = "x";
  s.last_update_id = "u8";
  s.last_update_outcome = "succeeded";

  const json j = PersistedStateToJson(s);
  EXPECT_EQ(j["deadline"], "2026-02-11T12:10:54.123456789Z");
  EXPECT_EQ(j["version"], 1);
  auto back = PersistedStateFromJson(json::parse(j.dump()));
  ASSERT_TRUE(back) << back.error().message;
  EXPECT_EQ(PersistedStateToJson(*back), j);
  EXPECT_EQ(back->deadline, s.deadline);
  EXPECT_EQ(back->last_backup, s.last_backup);
  EXPECT_EQ(back->update->to_version, "2.0.0");
}

TEST(PersistedState, RejectsCorruptOrInconsistentState) {
  const auto expect_corrupt = [](const json& j, const std::string& needle) {
    auto r = PersistedStateFromJson(j);
    ASSERT_FALSE(r) << j.dump();
    EXPECT_EQ(r.error().code, ErrorCode::kCorrupt);
    EXPECT_THAT(r.error().message, HasSubstr(needle));
  };
  const json good = PersistedStateToJson(PersistedState{});
  ASSERT_TRUE(PersistedStateFromJson(good));

  expect_corrupt(json::array(), "not a JSON object");
  json j = good;
  j["version"] = 2;
  expect_corrupt(j, "unsupported version");
  j = good;
  j["state"] = "sleeping";
  expect_corrupt(j, "unknown state");
  j = good;
  j.erase("conflicts");
  expect_corrupt(j, "missing field 'conflicts'");
  j = good;
  j["backup_id"] = "../../etc";
  expect_corrupt(j, "invalid backup_id");
  j = good;
  j["deadline"] = "tomorrow";
  expect_corrupt(j, "not an ISO 8601 UTC time");
  j = good;
  j["state"] = "awaiting_confirmation";
  j["operation"] = "update";
  j["update"] = json{{"update_id", "u1"}, {"target", "core"}};
  j["backup_id"] = "2026-02-11_13-10-54";
  expect_corrupt(j, "awaiting_confirmation needs");
  j = good;
  j["operation"] = "backup";
  expect_corrupt(j, "state and operation disagree");
}

// ---- Names and time ----

TEST(Names, MatchTheHomeAssistantDiscovery) {
  EXPECT_EQ(StateNames(), discovery::StatusOptions());
  EXPECT_EQ(EventTypeNames(), discovery::EventTypes());
  EXPECT_EQ(StateNames().size(), 8u);
  for (std::string_view name : StateNames()) {
    ASSERT_TRUE(ParseState(name)) << name;
    EXPECT_EQ(StateName(*ParseState(name)), name);
  }
}

TEST(Time, FormatsAndParses) {
  EXPECT_EQ(FormatIsoTime(kT0 + nanoseconds(999999999)), "2026-02-11T12:10:54+00:00");
  EXPECT_EQ(FormatExactTime(kT0), "2026-02-11T12:10:54Z");
  EXPECT_EQ(FormatExactTime(kT0 + nanoseconds(5)), "2026-02-11T12:10:54.000000005Z");
  EXPECT_EQ(ParseIsoTime("2026-02-11T12:10:54+00:00"), kT0);
  EXPECT_EQ(ParseIsoTime("2026-02-11T12:10:54.5Z"), kT0 + std::chrono::milliseconds(500));
  EXPECT_TRUE(ParseIsoTime("1678-01-01T00:00:00Z"));
  EXPECT_TRUE(ParseIsoTime("2261-12-31T23:59:59Z"));
  for (const char* bad : {"2026-02-11 12:10:54Z", "2026-02-30T12:10:54Z", "2026-02-11T12:10:54",
                          "2026-02-11T12:10:54+01:00", "2026-02-11T12:10:54.Z",
                          "2026-02-11T12:10:54.1234567890Z", "2026-02-11T24:00:00Z",
                          // Outside 64-bit nanoseconds (1677-09-21 .. 2262-04-11): refused,
                          // never wrapped.
                          "0584-01-01T00:00:00Z", "1677-12-31T23:59:59Z", "2262-01-01T00:00:00Z",
                          "9999-12-31T23:59:59Z"}) {
    EXPECT_FALSE(ParseIsoTime(bad)) << bad;
  }
}

TEST(EventPayload, CarriesTheEventTypeHomeAssistantNeeds) {
  const PublishEvent e{EventType::kRollbackConflicts, "m", json{{"k", 1}}, kT0};
  EXPECT_EQ(e.Payload(), json::parse(R"j({"event_type":"rollback_conflicts","message":"m",
                                         "data":{"k":1},"time":"2026-02-11T12:10:54+00:00"})j"));
}

}  // namespace
}  // namespace safepoint::service
