#include "service/commands.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

#include "discovery/discovery.h"

namespace safepoint::service {
namespace {

using nlohmann::json;
using ::testing::HasSubstr;

// Asserts a kBadInput failure whose message contains `needle`.
template <typename T>
void ExpectBadInput(const Result<T>& result, const std::string& needle) {
  ASSERT_FALSE(result.has_value()) << "expected a failure mentioning: " << needle;
  EXPECT_EQ(result.error().code, ErrorCode::kBadInput);
  EXPECT_THAT(result.error().message, HasSubstr(needle));
}

// ---- update/request ----

TEST(UpdateRequest, ParsesAllFields) {
  auto r =
      ParseUpdateRequest(R"({"update_id":"ha-2026.2.1","target":"core","from_version":"2026.1.3",)"
                         R"("to_version":"2026.2.1","reason":"monthly"})");
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->update_id, "ha-2026.2.1");
  EXPECT_EQ(r->target, "core");
  EXPECT_EQ(r->from_version, "2026.1.3");
  EXPECT_EQ(r->to_version, "2026.2.1");
  EXPECT_EQ(r->reason, "monthly");
}

TEST(UpdateRequest, OptionalFieldsMayBeAbsentOrNull) {
  auto r = ParseUpdateRequest(R"({"update_id":"u1","target":"z2m","reason":null})");
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_FALSE(r->from_version);
  EXPECT_FALSE(r->to_version);
  EXPECT_FALSE(r->reason);
}

TEST(UpdateRequest, RejectsMissingAndWrongTypedFields) {
  ExpectBadInput(ParseUpdateRequest(R"({"target":"core"})"), "missing required field 'update_id'");
  ExpectBadInput(ParseUpdateRequest(R"({"update_id":"u1"})"), "missing required field 'target'");
  ExpectBadInput(ParseUpdateRequest(R"({"update_id":"","target":"core"})"), "must not be empty");
  ExpectBadInput(ParseUpdateRequest(R"({"update_id":7,"target":"core"})"),
                 "'update_id' must be a string, not number");
  ExpectBadInput(ParseUpdateRequest(R"({"update_id":"u","target":["core"]})"),
                 "'target' must be a string, not array");
  ExpectBadInput(ParseUpdateRequest(R"({"update_id":"u","target":"core","to":"x"})"),
                 "unknown field 'to'");
}

TEST(UpdateRequest, RejectsInvalidJsonAndNonObjects) {
  ExpectBadInput(ParseUpdateRequest(R"({"update_id":"u1",)"), "not valid JSON");
  ExpectBadInput(ParseUpdateRequest(R"(["u1","core"])"), "must be a JSON object");
  ExpectBadInput(ParseUpdateRequest("   "), "empty payload");
  ExpectBadInput(ParseUpdateRequest(std::string(20, '[') + std::string(20, ']')), "nested deeper");
}

// Issue 9, finding 12: a 513-byte update_id was reported as "longer than 512 bytes" although
// the limit is 128; every message that carries an update_id states the real limit.
TEST(UpdateRequest, LongUpdateIdReportsTheRealLimit) {
  const std::string id(513, 'u');
  const std::string expected = "'update_id' is longer than 128 bytes";
  for (const auto& error :
       {ParseUpdateRequest(R"({"update_id":")" + id + R"(","target":"core"})").error(),
        ParseUpdateResult(R"({"update_id":")" + id + R"(","success":true})").error(),
        ParseCommand("continue", R"({"update_id":")" + id + R"("})").error(),
        ParseCommand("cancel", R"({"update_id":")" + id + R"("})").error()}) {
    EXPECT_EQ(error.code, ErrorCode::kBadInput);
    EXPECT_EQ(error.message, expected);
  }
}

TEST(UpdateRequest, BoundsUpdateIdLengthAndCharacters) {
  const std::string max(kMaxUpdateIdLength, 'a');
  EXPECT_TRUE(ParseUpdateRequest(R"({"update_id":")" + max + R"(","target":"core"})"));
  ExpectBadInput(ParseUpdateRequest(R"({"update_id":")" + max + R"(a","target":"core"})"),
                 "'update_id' is longer than 128 bytes");
  ExpectBadInput(ParseUpdateRequest(R"({"update_id":"a\u0001b","target":"core"})"),
                 "control character");
  ExpectBadInput(ParseUpdateRequest(R"({"update_id":"caf\u00e9","target":"core"})"),
                 "printable ASCII");
  ExpectBadInput(ParseUpdateRequest(R"({"update_id":" u1","target":"core"})"),
                 "must not start or end with a space");
}

TEST(UpdateRequest, BoundsOtherStrings) {
  const std::string long_target(kMaxTargetLength + 1, 't');
  ExpectBadInput(ParseUpdateRequest(R"({"update_id":"u","target":")" + long_target + "\"}"),
                 "'target' is longer than 256 bytes");
  ExpectBadInput(ParseUpdateRequest(R"({"update_id":"u","target":"a\nb"})"),
                 "'target' contains a control character");
}

TEST(UpdateRequest, RejectsPayloadOverTheConfiguredLimit) {
  const std::string payload = R"({"update_id":"u1","target":"core"})";
  ParseOptions options;
  options.max_payload_bytes = payload.size();
  EXPECT_TRUE(ParseUpdateRequest(payload, options));
  options.max_payload_bytes = payload.size() - 1;
  ExpectBadInput(ParseUpdateRequest(payload, options), "exceeds the limit of 33 bytes");
  // The default is 64 KiB.
  const std::string big =
      R"({"update_id":"u1","target":"core","reason":")" + std::string(64 * 1024, 'r') + "\"}";
  ExpectBadInput(ParseUpdateRequest(big), "exceeds the limit of 65536 bytes");
}

// ---- update/result ----

TEST(UpdateResult, SuccessAndFailureForms) {
  auto ok = ParseUpdateResult(R"({"update_id":"u1","success":true})");
  ASSERT_TRUE(ok) << ok.error().message;
  EXPECT_FALSE(ok->Failed());

  auto zero = ParseUpdateResult(R"({"update_id":"u1","success":true,"exit_code":0})");
  ASSERT_TRUE(zero);
  EXPECT_FALSE(zero->Failed());

  auto failed = ParseUpdateResult(R"({"update_id":"u1","success":false,"detail":"boom\nline"})");
  ASSERT_TRUE(failed) << failed.error().message;
  EXPECT_TRUE(failed->Failed());
  EXPECT_EQ(failed->detail, "boom\nline");

  // A non-zero exit code is a failure even when success says true.
  auto exit_code = ParseUpdateResult(R"({"update_id":"u1","success":true,"exit_code":3})");
  ASSERT_TRUE(exit_code);
  EXPECT_TRUE(exit_code->Failed());
  EXPECT_EQ(exit_code->exit_code, 3);

  auto negative = ParseUpdateResult(R"({"update_id":"u1","success":true,"exit_code":-9})");
  ASSERT_TRUE(negative);
  EXPECT_EQ(negative->exit_code, -9);
  EXPECT_TRUE(negative->Failed());
}

TEST(UpdateResult, RejectsWrongTypes) {
  ExpectBadInput(ParseUpdateResult(R"({"update_id":"u1"})"), "missing required field 'success'");
  ExpectBadInput(ParseUpdateResult(R"({"update_id":"u1","success":"true"})"),
                 "'success' must be true or false, not string");
  ExpectBadInput(ParseUpdateResult(R"({"update_id":"u1","success":true,"exit_code":1.5})"),
                 "'exit_code' must be an integer");
  ExpectBadInput(ParseUpdateResult(R"({"update_id":"u1","success":true,"exit_code":99999999999})"),
                 "'exit_code' is out of range");
  ExpectBadInput(ParseUpdateResult(R"({"update_id":"u1","success":true,"extra":1})"),
                 "unknown field 'extra'");
}

// ---- ids ----

TEST(BackupId, AcceptsTheStoreFormat) {
  EXPECT_TRUE(IsValidBackupId("2026-02-11_13-10-54"));
  EXPECT_TRUE(IsValidBackupId("2026-02-11_13-10-54-2"));
  EXPECT_TRUE(IsValidBackupId("2026-02-11_13-10-54-999"));
  EXPECT_TRUE(IsValidBackupId("2024-02-29_00-00-00"));  // leap day
  EXPECT_TRUE(IsValidBackupId("2000-02-29_23-59-59"));
}

TEST(BackupId, RejectsEverythingElse) {
  for (const char* id : {"",
                         "../../etc",
                         "2026-02-11_13-10-54/..",
                         "2026-02-11_13-10-54-1",
                         "2026-02-11_13-10-54-0",
                         "2026-02-11_13-10-54-02",
                         "2026-02-11_13-10-54-1000",
                         "2026-02-11_13-10-54-",
                         "2026-02-11_13-10-54 ",
                         " 2026-02-11_13-10-54",
                         "2026-02-30_13-10-54",
                         "2023-02-29_13-10-54",
                         "1900-02-29_13-10-54",
                         "2026-13-11_13-10-54",
                         "2026-00-11_13-10-54",
                         "2026-02-00_13-10-54",
                         "2026-02-11_24-10-54",
                         "2026-02-11_13-60-54",
                         "2026-02-11_13-10-60",
                         "2026-02-11T13-10-54",
                         "2026-02-11_13:10:54",
                         "2026-2-11_13-10-54",
                         "+026-02-11_13-10-54",
                         "2026-02-11_13-10-5a",
                         "2026-02-11_13-10-54-2x"}) {
    EXPECT_FALSE(IsValidBackupId(id)) << id;
  }
  auto status = ValidateBackupId("../../etc");
  ASSERT_FALSE(status);
  EXPECT_EQ(status.error().code, ErrorCode::kBadInput);
  EXPECT_THAT(status.error().message, HasSubstr("invalid safety point id '../../etc'"));
}

// ---- commands ----

TEST(Command, BackupWithReasonAndTransaction) {
  auto c = ParseCommand("backup", R"({"reason":"before tinkering","transaction":"t-1"})");
  ASSERT_TRUE(c) << c.error().message;
  EXPECT_EQ(c->name, "backup");
  EXPECT_FALSE(c->pressed);
  EXPECT_EQ(c->transaction, json("t-1"));
  ASSERT_TRUE(std::holds_alternative<BackupCommand>(c->args));
  EXPECT_EQ(std::get<BackupCommand>(c->args).reason, "before tinkering");
}

TEST(Command, TransactionNumberIsEchoedAsGiven) {
  auto c = ParseCommand("list", R"({"transaction":42})");
  ASSERT_TRUE(c);
  EXPECT_EQ(c->transaction, json(42));
  auto f = ParseCommand("list", R"({"transaction":1.25})");
  ASSERT_TRUE(f);
  EXPECT_EQ(f->transaction, json(1.25));
  ExpectBadInput(ParseCommand("list", R"({"transaction":{"a":1}})"),
                 "'transaction' must be a string or a number, not object");
  ExpectBadInput(ParseCommand("list", R"({"transaction":")" + std::string(129, 'x') + "\"}"),
                 "'transaction' is longer than 128 bytes");
}

TEST(Command, BarePressFromHomeAssistantButtons) {
  for (const char* name : {"backup", "continue", "cancel", "rollback", "verify", "list"}) {
    auto c = ParseCommand(name, "PRESS");
    ASSERT_TRUE(c) << name << ": " << c.error().message;
    EXPECT_TRUE(c->pressed) << name;
    EXPECT_FALSE(c->transaction) << name;
  }
  auto rollback = ParseCommand("rollback", " PRESS\n");
  ASSERT_TRUE(rollback);
  // The driver substitutes the safety point selected in Home Assistant.
  EXPECT_FALSE(std::get<RollbackCommand>(rollback->args).backup_id);
  EXPECT_EQ(std::get<RollbackCommand>(rollback->args).on_conflict, ConflictPolicy::kAbort);
  EXPECT_FALSE(std::get<VerifyCommand>(ParseCommand("verify", "PRESS")->args).backup_id);

  ExpectBadInput(ParseCommand("resolve", "PRESS"), "resolve needs");
  ExpectBadInput(ParseCommand("delete", "PRESS"), "delete needs");
  ExpectBadInput(ParseCommand("select", "PRESS"), "select needs a safety point id");
  ExpectBadInput(ParseCommand("text", "PRESS"), "text needs a command");
}

TEST(Command, ContinueAndCancelTakeAnOptionalUpdateId) {
  auto c = ParseCommand("continue", R"({"update_id":"u1"})");
  ASSERT_TRUE(c);
  EXPECT_EQ(std::get<ContinueCommand>(c->args).update_id, "u1");
  auto x = ParseCommand("cancel", "{}");
  ASSERT_TRUE(x);
  EXPECT_FALSE(std::get<CancelCommand>(x->args).update_id);
  ExpectBadInput(ParseCommand("cancel", R"({"update_id":""})"), "1..128 characters");
  ExpectBadInput(ParseCommand("continue", R"({"update":"u1"})"), "unknown field 'update'");
}

TEST(Command, RollbackValidatesIdAndPolicy) {
  auto c = ParseCommand("rollback", R"({"backup_id":"2026-02-11_13-10-54","on_conflict":"merge"})");
  ASSERT_TRUE(c) << c.error().message;
  const auto& r = std::get<RollbackCommand>(c->args);
  EXPECT_EQ(r.backup_id, "2026-02-11_13-10-54");
  EXPECT_EQ(r.on_conflict, ConflictPolicy::kMerge);

  auto d = ParseCommand("rollback", R"({"backup_id":"2026-02-11_13-10-54-3"})");
  ASSERT_TRUE(d);
  EXPECT_EQ(std::get<RollbackCommand>(d->args).on_conflict, ConflictPolicy::kAbort);

  ExpectBadInput(ParseCommand("rollback", R"({"backup_id":"../../etc"})"),
                 "invalid safety point id '../../etc'");
  ExpectBadInput(ParseCommand("rollback", "{}"), "missing required field 'backup_id'");
  ExpectBadInput(
      ParseCommand("rollback", R"({"backup_id":"2026-02-11_13-10-54","on_conflict":"force"})"),
      "'on_conflict' must be abort, overwrite or merge, not 'force'");
}

TEST(Command, ResolveEachAction) {
  for (const auto& [text, policy] :
       {std::pair{"overwrite", ConflictPolicy::kOverwrite},
        std::pair{"merge", ConflictPolicy::kMerge}, std::pair{"abort", ConflictPolicy::kAbort}}) {
    auto c = ParseCommand("resolve", std::string(R"({"action":")") + text + "\"}");
    ASSERT_TRUE(c) << text;
    EXPECT_EQ(std::get<ResolveCommand>(c->args).action, policy);
  }
  ExpectBadInput(ParseCommand("resolve", "{}"), "missing required field 'action'");
  ExpectBadInput(ParseCommand("resolve", R"({"action":"OVERWRITE"})"), "'action' must be");
}

TEST(Command, VerifyOneOrAll) {
  auto one = ParseCommand("verify", R"({"backup_id":"2026-02-11_13-10-54"})");
  ASSERT_TRUE(one);
  EXPECT_EQ(std::get<VerifyCommand>(one->args).backup_id, "2026-02-11_13-10-54");
  auto all = ParseCommand("verify", R"({"all":true})");
  ASSERT_TRUE(all);
  EXPECT_FALSE(std::get<VerifyCommand>(all->args).backup_id);
  auto empty = ParseCommand("verify", "{}");
  ASSERT_TRUE(empty);
  EXPECT_FALSE(std::get<VerifyCommand>(empty->args).backup_id);
  ExpectBadInput(ParseCommand("verify", R"({"all":false})"), "'all' may only be true");
  ExpectBadInput(ParseCommand("verify", R"({"all":true,"backup_id":"2026-02-11_13-10-54"})"),
                 "not both");
}

TEST(Command, DeleteAndSelectNeedAValidId) {
  auto del = ParseCommand("delete", R"({"backup_id":"2026-02-11_13-10-54"})");
  ASSERT_TRUE(del);
  EXPECT_EQ(std::get<DeleteCommand>(del->args).backup_id, "2026-02-11_13-10-54");
  ExpectBadInput(ParseCommand("delete", R"({"backup_id":"2026-02-11_13-10-54/../x"})"),
                 "invalid safety point id");

  // HA's select publishes the bare option.
  auto sel = ParseCommand("select", "2026-02-11_13-10-54-2");
  ASSERT_TRUE(sel) << sel.error().message;
  EXPECT_EQ(std::get<SelectCommand>(sel->args).backup_id, "2026-02-11_13-10-54-2");
  auto quoted = ParseCommand("select", R"("2026-02-11_13-10-54")");
  ASSERT_TRUE(quoted);
  auto object = ParseCommand("select", R"({"backup_id":"2026-02-11_13-10-54","transaction":1})");
  ASSERT_TRUE(object);
  EXPECT_EQ(object->transaction, json(1));
  ExpectBadInput(ParseCommand("select", "None"), "invalid safety point id 'None'");
}

TEST(Command, TextAsObjectOrBareString) {
  auto object = ParseCommand(
      "text", R"({"text":"/rollback safety_point 2026-02-11_13-10-54","transaction":"abc"})");
  ASSERT_TRUE(object) << object.error().message;
  EXPECT_EQ(object->name, "text");
  EXPECT_EQ(object->transaction, json("abc"));
  ASSERT_TRUE(std::holds_alternative<RollbackCommand>(object->args));
  EXPECT_EQ(std::get<RollbackCommand>(object->args).backup_id, "2026-02-11_13-10-54");

  auto bare = ParseCommand("text", "/status");
  ASSERT_TRUE(bare);
  EXPECT_TRUE(std::holds_alternative<StatusCommand>(bare->args));

  auto quoted = ParseCommand("text", R"("/backup before the big update")");
  ASSERT_TRUE(quoted);
  EXPECT_EQ(std::get<BackupCommand>(quoted->args).reason, "before the big update");
}

TEST(TextCommand, ChatForms) {
  auto r = ParseTextCommand("  /rollback safety_point 2026-02-11_13-10-54 overwrite ");
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(std::get<RollbackCommand>(*r).on_conflict, ConflictPolicy::kOverwrite);

  auto short_form = ParseTextCommand("/rollback 2026-02-11_13-10-54-2");
  ASSERT_TRUE(short_form);
  EXPECT_EQ(std::get<RollbackCommand>(*short_form).backup_id, "2026-02-11_13-10-54-2");

  auto backup = ParseTextCommand("/backup");
  ASSERT_TRUE(backup);
  EXPECT_FALSE(std::get<BackupCommand>(*backup).reason);

  EXPECT_TRUE(std::holds_alternative<StatusCommand>(*ParseTextCommand("/status@home_bot")));
  EXPECT_TRUE(std::holds_alternative<ListCommand>(*ParseTextCommand("/list")));
  EXPECT_TRUE(std::holds_alternative<ContinueCommand>(*ParseTextCommand("/continue")));
  EXPECT_TRUE(std::holds_alternative<CancelCommand>(*ParseTextCommand("/cancel")));

  ExpectBadInput(ParseTextCommand("/rollback safety_point"), "usage: /rollback");
  ExpectBadInput(ParseTextCommand("/rollback safety_point ../../etc"),
                 "invalid safety point id '../../etc'");
  ExpectBadInput(ParseTextCommand("/rollback 2026-02-11_13-10-54 yes please"), "usage");
  ExpectBadInput(ParseTextCommand("/status now"), "/status takes no arguments");
  ExpectBadInput(ParseTextCommand("/shutdown"), "unknown text command '/shutdown'");
  ExpectBadInput(ParseTextCommand("   "), "empty text command");
  ExpectBadInput(ParseTextCommand("/backup a\x01"), "control character");
}

TEST(Command, RejectsUnknownNamesAndBadPayloads) {
  ExpectBadInput(ParseCommand("reboot", "{}"), "unknown command 'reboot'");
  ExpectBadInput(ParseCommand("list", ""), "empty payload");
  ExpectBadInput(ParseCommand("list", "[]"), "must be a JSON object");
  ExpectBadInput(ParseCommand("list", "{oops"), "not valid JSON");
  ExpectBadInput(ParseCommand("list", R"({"all":true})"), "unknown field 'all'");
  ExpectBadInput(ParseCommand("backup", R"({"reason":5})"), "'reason' must be a string");
  ParseOptions small;
  small.max_payload_bytes = 4;
  ExpectBadInput(ParseCommand("list", "{ }  ", small), "exceeds the limit of 4 bytes");
}

TEST(Command, TransactionCanBeRecoveredFromAnInvalidCommand) {
  const std::string payload = R"({"backup_id":"../../etc","transaction":"t9"})";
  ASSERT_FALSE(ParseCommand("rollback", payload));
  EXPECT_EQ(ExtractTransaction(payload), json("t9"));
  EXPECT_FALSE(ExtractTransaction("{broken"));
  EXPECT_FALSE(ExtractTransaction(R"({"transaction":[1]})"));
  EXPECT_FALSE(ExtractTransaction("PRESS"));
}

TEST(Command, EveryDocumentedNameParses) {
  EXPECT_THAT(CommandNames(),
              ::testing::UnorderedElementsAre("backup", "continue", "cancel", "rollback", "resolve",
                                              "verify", "delete", "list", "text", "select"));
}

// ---- responses and topics ----

TEST(Response, ZigbeeStyle) {
  EXPECT_EQ(OkResponse(json{{"state", "idle"}}, json("t1")),
            json::parse(R"({"status":"ok","data":{"state":"idle"},"transaction":"t1"})"));
  EXPECT_EQ(OkResponse(nullptr, std::nullopt), json::parse(R"({"status":"ok","data":{}})"));
  EXPECT_EQ(ErrorResponse(Error{ErrorCode::kBusy, "busy: a safety point is in progress"}, json(7)),
            json::parse(R"({"status":"error","data":{},"code":"busy",
                            "error":"busy: a safety point is in progress","transaction":7})"));
  EXPECT_EQ(Response(ResponseStatus::kError, json::object(), std::string("x")),
            json::parse(R"({"status":"error","data":{},"error":"x"})"));
}

TEST(Topics, NamesUnderTheBase) {
  const Topics topics("home/safepoint");
  EXPECT_EQ(topics.StatusTopic(), "home/safepoint/status");
  EXPECT_EQ(topics.DecisionTopic(), "home/safepoint/update/decision");
  EXPECT_EQ(topics.CommandFilter(), "home/safepoint/cmd/+");
  EXPECT_EQ(topics.ResponseTopic("text"), "home/safepoint/response/text");
  EXPECT_EQ(topics.CommandName("home/safepoint/cmd/continue"), "continue");
  EXPECT_FALSE(topics.CommandName("home/safepoint/cmd/"));
  EXPECT_FALSE(topics.CommandName("home/safepoint/cmd/a/b"));
  EXPECT_FALSE(topics.CommandName("safepoint/cmd/continue"));
  EXPECT_FALSE(topics.CommandName("home/safepoint/status"));
}

// What the Home Assistant entities publish must parse as the commands they stand for.
TEST(Command, DiscoveryButtonsAndSelectSendValidCommands) {
  discovery::DiscoveryState state;
  state.safety_points = {"2026-02-11_13-10-54"};
  const json cmps = discovery::DeviceDiscovery(discovery::Options{}, state).at("cmps");
  const Topics topics("safepoint");
  int buttons = 0;
  for (const auto& [key, component] : cmps.items()) {
    if (!component.contains("command_topic")) continue;
    const auto name = topics.CommandName(component.at("command_topic").get<std::string>());
    ASSERT_TRUE(name) << key;
    if (component.at("p") == "button") {
      ++buttons;
      auto command = ParseCommand(*name, component.at("payload_press").get<std::string>());
      EXPECT_TRUE(command) << key << ": " << command.error().message;
    } else {
      for (const auto& option : component.at("options")) {
        EXPECT_TRUE(ParseCommand(*name, option.get<std::string>())) << key;
      }
    }
  }
  EXPECT_EQ(buttons, 7);
  auto overwrite =
      ParseCommand("resolve", cmps.at("overwrite").at("payload_press").get<std::string>());
  ASSERT_TRUE(overwrite);
  EXPECT_EQ(std::get<ResolveCommand>(overwrite->args).action, ConflictPolicy::kOverwrite);
}

TEST(Zigbee2MqttBackup, OkAnswerDecodesTheZipExactly) {
  // base64 of "PK\x03\x04\x00\xff\x10zip!" (bytes 0x00 and 0xff included).
  auto r = ParseZigbee2MqttBackup(
      R"({"data":{"zip":"UEsDBAD/EHppcCE="},"status":"ok","transaction":"safepoint-42"})", 1024);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->transaction, "safepoint-42");
  ASSERT_TRUE(r->zip);
  EXPECT_EQ(*r->zip, std::string("PK\x03\x04\x00\xff\x10zip!", 11));
  EXPECT_FALSE(r->error);
}

TEST(Zigbee2MqttBackup, ErrorAnswerKeepsZigbee2MqttsTextPrintable) {
  auto r = ParseZigbee2MqttBackup(
      R"({"data":{},"status":"error","error":"Failed\nto \u001b[31mbackup","transaction":"t"})",
      1024);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->transaction, "t");
  EXPECT_FALSE(r->zip);
  EXPECT_EQ(r->error, "Failed?to ?[31mbackup");
  auto no_text = ParseZigbee2MqttBackup(R"({"status":"error"})", 1024);
  ASSERT_TRUE(no_text);
  EXPECT_EQ(no_text->transaction, "");
  EXPECT_EQ(no_text->error, "no error text");
}

TEST(Zigbee2MqttBackup, AnythingElseIsBadInput) {
  const std::pair<const char*, const char*> cases[] = {
      {"not json", "not a JSON object"},
      {R"([1,2])", "not a JSON object"},
      {R"({"data":{"zip":"UEsDBA=="}})", "no status"},
      {R"({"status":"maybe"})", "unknown status"},
      {R"({"status":"ok"})", "no data"},
      {R"({"status":"ok","data":{}})", "no data.zip"},
      {R"({"status":"ok","data":{"zip":7}})", "no data.zip"},
      {R"({"status":"ok","data":{"zip":"@@@@"}})", "data.zip is not base64"},
      {R"({"status":"ok","data":{"zip":"UEsDBA==trailing"}})", "data.zip is not base64"},
      {R"({"status":"ok","data":{"zip":"aGVsbG8="}})", "data.zip is not a zip archive"},
  };
  for (const auto& [payload, why] : cases) {
    auto r = ParseZigbee2MqttBackup(payload, 1024);
    ASSERT_FALSE(r) << payload;
    EXPECT_EQ(r.error().code, ErrorCode::kBadInput) << payload;
    EXPECT_EQ(r.error().message, std::string("Zigbee2MQTT backup response: ") + why) << payload;
  }
  auto deep = ParseZigbee2MqttBackup(std::string(500, '[') + std::string(500, ']'), 1024);
  ASSERT_FALSE(deep);
  EXPECT_EQ(deep.error().message, "Zigbee2MQTT backup response: nested too deeply");
  auto big = ParseZigbee2MqttBackup(std::string(2000, ' '), 1024);
  ASSERT_FALSE(big);
  EXPECT_EQ(big.error().message, "Zigbee2MQTT backup response: over 1024 bytes");
}

}  // namespace
}  // namespace safepoint::service
