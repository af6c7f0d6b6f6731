#include "service/commands.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <type_traits>
#include <variant>
#include <vector>

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

// Found by a test campaign: a reason is one line without control characters, C1 controls and
// U+2028/U+2029 included, here as for `safepoint backup --reason` (one rule: payload::CheckText).
TEST(Command, BackupReasonRefusesC1ControlsAndLineSeparators) {
  for (const std::string escaped : {"\\u0085", "\\u009b", "\\u0080"}) {
    const auto c = ParseCommand("backup", R"({"reason":"a)" + escaped + R"(b"})");
    ASSERT_FALSE(c) << escaped;
    EXPECT_EQ(c.error().code, ErrorCode::kBadInput);
    EXPECT_EQ(c.error().message, "'reason' contains a control character");
  }
  for (const std::string escaped : {"\\u2028", "\\u2029"}) {
    const auto c = ParseCommand("backup", R"({"reason":"a)" + escaped + R"(b"})");
    ASSERT_FALSE(c) << escaped;
    EXPECT_EQ(c.error().code, ErrorCode::kBadInput);
    EXPECT_EQ(c.error().message, "'reason' contains a line or paragraph separator");
  }
  ExpectBadInput(ParseTextCommand("/backup nel\xc2\x85here"),
                 "'text' contains a control character");
  // Their neighbours stay allowed: U+00E9, U+00A0, U+2027.
  const auto fine = ParseCommand("backup", R"({"reason":"caf\u00e9\u00a0\u2027"})");
  ASSERT_TRUE(fine) << fine.error().message;
  EXPECT_EQ(std::get<BackupCommand>(fine->args).reason, "caf\u00e9\u00a0\u2027");
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
  // And the configuration's rollback.on_conflict.
  EXPECT_FALSE(std::get<RollbackCommand>(rollback->args).on_conflict);
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

// `diff` and `/diff`: an id, and optionally a path relative to the backed-up trees (any
// script, spaces allowed); absolute paths, "..", control characters and a bare PRESS are refused.
TEST(Command, DiffTakesAnIdAndARelativePath) {
  auto c =
      ParseCommand("diff", R"({"backup_id":"2026-02-11_13-10-54","path":"packages/küche 💡.yaml"})");
  ASSERT_TRUE(c) << c.error().message;
  const auto& d = std::get<DiffCommand>(c->args);
  EXPECT_EQ(d.backup_id, "2026-02-11_13-10-54");
  EXPECT_EQ(d.path, "packages/küche 💡.yaml");
  c = ParseCommand("diff", R"({"backup_id":"2026-02-11_13-10-54"})");
  ASSERT_TRUE(c);
  EXPECT_FALSE(std::get<DiffCommand>(c->args).path.has_value());
  auto t = ParseTextCommand("/diff 2026-02-11_13-10-54 ha_config/my file.yaml");
  ASSERT_TRUE(t) << t.error().message;
  EXPECT_EQ(std::get<DiffCommand>(*t).path, "ha_config/my file.yaml");
  // As users type it: "." components and repeated slashes are dropped when the diff runs.
  for (const char* typed : {"./packages/x.yaml", "ha_config//packages/x.yaml", "packages/", "./"}) {
    SCOPED_TRACE(typed);
    c = ParseCommand("diff", json{{"backup_id", "2026-02-11_13-10-54"}, {"path", typed}}.dump());
    ASSERT_TRUE(c) << c.error().message;
    EXPECT_EQ(std::get<DiffCommand>(c->args).path, typed);
  }
  for (const char* bad : {"/etc/passwd", "..", "../x", "a/../b", "a/..", "", "/"}) {
    SCOPED_TRACE(bad);
    ExpectBadInput(
        ParseCommand("diff", json{{"backup_id", "2026-02-11_13-10-54"}, {"path", bad}}.dump()),
        "'path'");
  }
  ExpectBadInput(
      ParseCommand("diff", json{{"backup_id", "2026-02-11_13-10-54"}, {"path", "a\nb"}}.dump()),
      "path");
  ExpectBadInput(ParseCommand("diff", R"({"path":"x"})"), "backup_id");
  ExpectBadInput(ParseCommand("diff", "PRESS"), "diff needs");
  ExpectBadInput(ParseTextCommand("/diff"), "usage: /diff <backup_id> [path]");
  ExpectBadInput(ParseTextCommand("/diff ../../etc"), "invalid safety point id");
  ExpectBadInput(ParseTextCommand("/diff 2026-02-11_13-10-54 /etc/shadow"), "'path'");
}

TEST(Command, RollbackValidatesIdAndPolicy) {
  auto c = ParseCommand("rollback", R"({"backup_id":"2026-02-11_13-10-54","on_conflict":"merge"})");
  ASSERT_TRUE(c) << c.error().message;
  const auto& r = std::get<RollbackCommand>(c->args);
  EXPECT_EQ(r.backup_id, "2026-02-11_13-10-54");
  EXPECT_EQ(r.on_conflict, ConflictPolicy::kMerge);

  auto d = ParseCommand("rollback", R"({"backup_id":"2026-02-11_13-10-54-3"})");
  ASSERT_TRUE(d);
  EXPECT_FALSE(std::get<RollbackCommand>(d->args).on_conflict);

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
  // Well formed, but no double holds the number: said so, not "invalid JSON".
  ExpectBadInput(ParseCommand("backup", R"({"transaction":1e400})"),
                 "payload holds a number out of range: '{\"transaction\":1e400}'");
  ExpectBadInput(ParseCommand("backup", R"({"reason":"x","transaction":-1e400})"),
                 "number out of range");
  ExpectBadInput(ParseCommand("list", R"({"all":true})"), "unknown field 'all'");
  ExpectBadInput(ParseCommand("backup", R"({"reason":5})"), "'reason' must be a string");
  ParseOptions small;
  small.max_payload_bytes = 4;
  ExpectBadInput(ParseCommand("list", "{ }  ", small), "exceeds the limit of 4 bytes");
}

// Found by an MQTT campaign: the JSON reader stops at a NUL byte, so a valid object followed by
// a NUL and garbage was acted on (a delete, an update result starting a rollback); and a bare
// text command that is not UTF-8 took a safety point with U+FFFD in its reason.
TEST(Command, ANulByteOrTextThatIsNotUtf8IsBadInput) {
  using namespace std::string_literals;
  const std::string tail = "\0\xff\xfe this is not JSON {{{"s;
  ExpectBadInput(ParseCommand("delete", R"({"backup_id":"2026-12-02_09-00-00"})" + tail),
                 "payload is not valid JSON: it holds a NUL byte");
  ExpectBadInput(ParseUpdateResult(R"({"update_id":"u1","success":false})" + tail),
                 "payload is not valid JSON: it holds a NUL byte");
  ExpectBadInput(ParseCommand("text", "/backup before \xff\xfe update"),
                 "payload is not UTF-8 text");
  ExpectBadInput(ParseCommand("text", "/backup a"s + '\0' + "b"), "payload is not UTF-8 text");
  auto z2m = ParseZigbee2MqttBackup(R"({"status":"ok","data":{"zip":""}})" + tail, 1024);
  ASSERT_FALSE(z2m);
  EXPECT_EQ(z2m.error().message, "Zigbee2MQTT backup response: not valid JSON (a NUL byte)");
  // A NUL spelled as JSON spells it is read, and the field's own check has the last word.
  ExpectBadInput(ParseCommand("list", R"({"transaction":"a\u0000b"})"),
                 "'transaction' contains a control character");
}

TEST(Command, TransactionCanBeRecoveredFromAnInvalidCommand) {
  const std::string payload = R"({"backup_id":"../../etc","transaction":"t9"})";
  ASSERT_FALSE(ParseCommand("rollback", payload));
  EXPECT_EQ(ExtractTransaction(payload), json("t9"));
  EXPECT_FALSE(ExtractTransaction("{broken"));
  EXPECT_FALSE(ExtractTransaction(R"({"transaction":[1]})"));
  EXPECT_FALSE(ExtractTransaction("PRESS"));
}

// ---- docs/mqtt-api.md, read and parsed ----

constexpr char kDocId[] = "2026-02-11_13-10-54";
constexpr char kDocString[] = "before tinkering";

// The section of `doc` from the line `heading` to the next heading of the same or a higher level.
std::string Section(const std::string& doc, const std::string& heading) {
  const std::size_t start = doc.find("\n" + heading + "\n");
  if (start == std::string::npos) return "";
  const std::size_t level = heading.find(' ');
  std::size_t end = start + 1;
  for (;;) {
    end = doc.find('\n', end + 1);
    if (end == std::string::npos) return doc.substr(start + 1);
    const std::size_t hashes = doc.find_first_not_of('#', end + 1) - (end + 1);
    if (hashes > 0 && hashes <= level && doc[end + 1 + hashes] == ' ') break;
  }
  return doc.substr(start + 1, end - start);
}

// The cells of a markdown table row (`\|` inside a cell is a literal bar).
std::vector<std::string> Cells(const std::string& line) {
  std::vector<std::string> cells;
  std::string cell;
  for (std::size_t i = 1; i < line.size(); ++i) {
    if (line[i] == '\\' && i + 1 < line.size() && line[i + 1] == '|') {
      cell += '|';
      ++i;
    } else if (line[i] == '|') {
      const auto b = cell.find_first_not_of(' ');
      const auto e = cell.find_last_not_of(' ');
      cells.push_back(b == std::string::npos ? "" : cell.substr(b, e - b + 1));
      cell.clear();
    } else {
      cell += line[i];
    }
  }
  return cells;
}

// The body rows of the first table in `section` (header and separator dropped).
std::vector<std::vector<std::string>> TableRows(const std::string& section) {
  std::vector<std::vector<std::string>> rows;
  std::istringstream in(section);
  std::string line;
  int seen = 0;
  while (std::getline(in, line)) {
    if (!line.starts_with("|")) {
      if (seen > 0) break;
      continue;
    }
    if (++seen > 2) rows.push_back(Cells(line));
  }
  return rows;
}

// The `code spans` of a cell, in order.
std::vector<std::string> CodeSpans(const std::string& cell) {
  std::vector<std::string> spans;
  for (std::size_t open = cell.find('`'); open != std::string::npos;) {
    const std::size_t close = cell.find('`', open + 1);
    if (close == std::string::npos) break;
    spans.push_back(cell.substr(open + 1, close - open - 1));
    open = cell.find('`', close + 1);
  }
  return spans;
}

// Every concrete JSON payload a documented payload template stands for: `id` is a safety point
// id, `string` a string, `"a"|"b"` each choice, and an optional field (`"name"?:`) both absent
// and present.
std::vector<json> Expand(const std::string& tmpl, const std::string& sample_string) {
  std::vector<json> out = {json::object()};
  const std::string body = tmpl.substr(1, tmpl.size() - 2);
  std::istringstream fields(body);
  std::string field;
  while (std::getline(fields, field, ',')) {
    const std::size_t q1 = field.find('"');
    const std::size_t q2 = field.find('"', q1 + 1);
    if (q1 == std::string::npos || q2 == std::string::npos) continue;  // `{}`
    const std::string name = field.substr(q1 + 1, q2 - q1 - 1);
    const bool optional = field[q2 + 1] == '?';
    std::string value = field.substr(field.find(':', q2) + 1);
    value = value.substr(value.find_first_not_of(' '));
    std::vector<json> choices;
    if (value == "id") {
      choices.emplace_back(kDocId);
    } else if (value.starts_with("string")) {
      choices.emplace_back(sample_string);
    } else if (value.starts_with("\"")) {
      std::istringstream alternatives(value);
      std::string alternative;
      while (std::getline(alternatives, alternative, '|')) {
        choices.push_back(json::parse(alternative));
      }
    } else {
      choices.push_back(json::parse(value));
    }
    std::vector<json> next;
    for (const auto& partial : out) {
      if (optional) next.push_back(partial);
      for (const auto& choice : choices) {
        json with = partial;
        with[name] = choice;
        next.push_back(with);
      }
    }
    out = std::move(next);
  }
  return out;
}

// A parsed command as {"command": <name>, <its arguments>}: the form the expectations below
// are written in.
json Describe(const CommandArgs& args) {
  json out;
  std::visit(
      [&](const auto& a) {
        using T = std::decay_t<decltype(a)>;
        if constexpr (std::is_same_v<T, BackupCommand>) {
          out["command"] = "backup";
          if (a.reason) out["reason"] = *a.reason;
        } else if constexpr (std::is_same_v<T, ContinueCommand>) {
          out["command"] = "continue";
          if (a.update_id) out["update_id"] = *a.update_id;
        } else if constexpr (std::is_same_v<T, CancelCommand>) {
          out["command"] = "cancel";
          if (a.update_id) out["update_id"] = *a.update_id;
        } else if constexpr (std::is_same_v<T, RollbackCommand>) {
          out["command"] = "rollback";
          if (a.backup_id) out["backup_id"] = *a.backup_id;
          if (a.on_conflict) out["on_conflict"] = ConflictPolicyName(*a.on_conflict);
        } else if constexpr (std::is_same_v<T, ResolveCommand>) {
          out["command"] = "resolve";
          out["action"] = ConflictPolicyName(a.action);
        } else if constexpr (std::is_same_v<T, VerifyCommand>) {
          out["command"] = "verify";
          if (a.backup_id) out["backup_id"] = *a.backup_id;
        } else if constexpr (std::is_same_v<T, DeleteCommand>) {
          out["command"] = "delete";
          out["backup_id"] = a.backup_id;
        } else if constexpr (std::is_same_v<T, ListCommand>) {
          out["command"] = "list";
        } else if constexpr (std::is_same_v<T, StatusCommand>) {
          out["command"] = "status";
        } else if constexpr (std::is_same_v<T, DiffCommand>) {
          out["command"] = "diff";
          out["backup_id"] = a.backup_id;
          if (a.path) out["path"] = *a.path;
        } else {
          static_assert(std::is_same_v<T, SelectCommand>);
          out["command"] = "select";
          out["backup_id"] = a.backup_id;
        }
      },
      args);
  return out;
}

// What the documented JSON payload of command `name` must parse to: its fields (without
// `transaction`), `all: true` meaning no id, and no `on_conflict` when none is given (the
// configuration's then). `text` payloads are described by DocumentedText.
json DocumentedJson(const std::string& name, json payload) {
  payload.erase("transaction");
  payload.erase("all");
  payload["command"] = name;
  return payload;
}

// What a documented text form must parse to, from the "Text commands" table: `/rollback
// [safety_point] <id> [policy]`, `/backup [reason...]` (the rest of the line), and the bare verbs.
json DocumentedText(const std::string& text, const std::string& same_as) {
  std::istringstream in(text);
  std::vector<std::string> words;
  for (std::string w; in >> w;) words.push_back(w);
  json out = {{"command", same_as}};
  if (same_as == "rollback") {
    std::size_t next = words.size() > 1 && words[1] == "safety_point" ? 2 : 1;
    out["backup_id"] = words.at(next);
    if (next + 1 < words.size()) out["on_conflict"] = words[next + 1];
  } else if (same_as == "backup" && words.size() > 1) {
    out["reason"] = text.substr(text.find(' ') + 1);
  } else if (same_as == "diff") {
    out["backup_id"] = words.at(1);
    if (words.size() > 2) out["path"] = text.substr(text.find(' ', text.find(' ') + 1) + 1);
  }
  return out;
}

class DocumentedCommands : public ::testing::Test {
 protected:
  void SetUp() override {
    std::ifstream in(std::string(SAFEPOINT_SOURCE_DIR) + "/docs/mqtt-api.md");
    ASSERT_TRUE(in.good()) << "cannot read docs/mqtt-api.md";
    std::ostringstream ss;
    ss << in.rdbuf();
    doc_ = ss.str();
    commands_ = Section(doc_, "## Commands");
    ASSERT_FALSE(commands_.empty()) << "no '## Commands' section";
  }

  // Every documented text form, expanded: (text, the command it stands for).
  std::vector<std::pair<std::string, std::string>> Texts() const {
    std::vector<std::pair<std::string, std::string>> out;
    for (const auto& row : TableRows(Section(commands_, "### Text commands"))) {
      const auto forms = CodeSpans(row.at(0));
      auto same_as = CodeSpans(row.at(1));
      if (same_as.empty() && row.at(1).find("status") != std::string::npos) {
        same_as = {"status"};
      }
      EXPECT_FALSE(forms.empty() || same_as.empty()) << row.at(0);
      for (std::size_t i = 0; i < forms.size(); ++i) {
        const std::string command = same_as.size() == forms.size() ? same_as[i] : same_as.at(0);
        // `<backup_id>` is an id; `[a|b]` is nothing or each choice; `[reason...]` nothing or
        // words.
        std::vector<std::string> texts = {""};
        std::istringstream words(forms[i]);
        for (std::string w; words >> w;) {
          std::vector<std::string> choices;
          if (w == "<backup_id>") {
            choices = {kDocId};
          } else if (w.starts_with("[") && w.ends_with("...]")) {
            choices = {"", kDocString};
          } else if (w.starts_with("[")) {
            choices = {""};
            std::istringstream alternatives(w.substr(1, w.size() - 2));
            for (std::string a; std::getline(alternatives, a, '|');) choices.push_back(a);
          } else {
            choices = {w};
          }
          std::vector<std::string> next;
          for (const auto& t : texts) {
            for (const auto& c : choices)
              next.push_back(c.empty() ? t : t.empty() ? c : t + " " + c);
          }
          texts = std::move(next);
        }
        for (const auto& t : texts) out.emplace_back(t, command);
      }
    }
    return out;
  }

  std::string doc_;
  std::string commands_;
};

// The command table of docs/mqtt-api.md names exactly the commands the parser knows, and every
// documented payload form, bare PRESS and example parses to the documented command.
TEST_F(DocumentedCommands, EveryDocumentedNameAndPayloadParsesAsDocumented) {
  const auto rows = TableRows(commands_);
  std::set<std::string> documented;
  int payloads = 0;
  for (const auto& row : rows) {
    ASSERT_EQ(row.size(), 4u) << "a command row has name, payload, PRESS and effect";
    const auto name_spans = CodeSpans(row[0]);
    ASSERT_EQ(name_spans.size(), 1u) << row[0];
    const std::string name = name_spans[0];
    documented.insert(name);
    SCOPED_TRACE("command " + name);

    // The JSON payload column: each `{...}` template, expanded; "the bare id/text" forms.
    for (const auto& tmpl : CodeSpans(row[1])) {
      ASSERT_TRUE(tmpl.starts_with("{") && tmpl.ends_with("}")) << tmpl;
      for (const auto& payload : Expand(tmpl, kDocString)) {
        if (name == "text") continue;  // texts are checked from their own table below
        auto c = ParseCommand(name, payload.dump());
        ASSERT_TRUE(c) << payload.dump() << ": " << c.error().message;
        EXPECT_EQ(c->name, name);
        EXPECT_FALSE(c->pressed);
        EXPECT_EQ(Describe(c->args), DocumentedJson(name, payload)) << payload.dump();
        ++payloads;
      }
    }
    if (row[1].find("the bare id") != std::string::npos) {
      auto c = ParseCommand(name, kDocId);
      ASSERT_TRUE(c) << c.error().message;
      EXPECT_EQ(Describe(c->args), DocumentedJson(name, {{"backup_id", kDocId}}));
      ++payloads;
    }

    // The bare PRESS column: `—` is refused as bad input; anything else is the command without
    // arguments (the service fills in the documented defaults).
    auto pressed = ParseCommand(name, "PRESS");
    if (row[2].starts_with("—")) {
      ASSERT_FALSE(pressed) << "PRESS is documented as refused";
      EXPECT_EQ(pressed.error().code, ErrorCode::kBadInput);
    } else {
      ASSERT_TRUE(pressed) << pressed.error().message;
      EXPECT_TRUE(pressed->pressed);
      EXPECT_EQ(Describe(pressed->args), DocumentedJson(name, json::object()));
    }
  }
  EXPECT_EQ(payloads, 22);  // grows when the table documents more forms

  // Documented == known, both ways; an undocumented name is refused as unknown.
  std::set<std::string> known;
  for (const auto n : CommandNames()) known.insert(std::string(n));
  EXPECT_EQ(documented, known);
  auto unknown = ParseCommand("status", "{}");
  ASSERT_FALSE(unknown);
  EXPECT_EQ(unknown.error().code, ErrorCode::kBadInput);
  EXPECT_EQ(unknown.error().message, "unknown command 'status'");

  // Text commands: bare, as {"text": ...}, and through ParseTextCommand.
  const auto texts = Texts();
  EXPECT_EQ(texts.size(), 16u);
  for (const auto& [text, same_as] : texts) {
    SCOPED_TRACE("text '" + text + "'");
    const json want = DocumentedText(text, same_as);
    auto bare = ParseCommand("text", text);
    ASSERT_TRUE(bare) << bare.error().message;
    EXPECT_EQ(bare->name, "text");
    EXPECT_EQ(Describe(bare->args), want);
    auto wrapped = ParseCommand("text", json{{"text", text}}.dump());
    ASSERT_TRUE(wrapped) << wrapped.error().message;
    EXPECT_EQ(Describe(wrapped->args), want);
    auto direct = ParseTextCommand(text);
    ASSERT_TRUE(direct) << direct.error().message;
    EXPECT_EQ(Describe(*direct), want);
  }

  // The examples: every `mosquitto_pub -t safepoint/cmd/<name> -m <payload>`.
  std::string examples = Section(commands_, "### Examples");
  for (std::size_t at; (at = examples.find("\\\n")) != std::string::npos;) {
    examples.replace(at, examples.find_first_not_of(' ', at + 2) - at, "");
  }
  std::istringstream lines(examples);
  int published = 0;
  for (std::string line; std::getline(lines, line);) {
    if (!line.starts_with("mosquitto_pub ")) continue;
    SCOPED_TRACE(line);
    const std::string topic_flag = "-t safepoint/cmd/";
    const std::size_t t = line.find(topic_flag);
    ASSERT_NE(t, std::string::npos);
    const std::size_t name_start = t + topic_flag.size();
    const std::string name = line.substr(name_start, line.find(' ', name_start) - name_start);
    const std::size_t m = line.find(" -m ");
    ASSERT_NE(m, std::string::npos);
    std::string payload = line.substr(m + 4);
    if (payload.starts_with("'")) payload = payload.substr(1, payload.rfind('\'') - 1);
    auto c = ParseCommand(name, payload);
    ASSERT_TRUE(c) << c.error().message;
    EXPECT_EQ(c->name, name);
    if (payload == "PRESS") {
      EXPECT_TRUE(c->pressed);
      EXPECT_EQ(Describe(c->args), DocumentedJson(name, json::object()));
    } else if (name == "text") {
      EXPECT_EQ(Describe(c->args), DocumentedText(payload, "rollback"));
    } else {
      const json j = json::parse(payload);
      EXPECT_EQ(Describe(c->args), DocumentedJson(name, j));
      ASSERT_TRUE(c->transaction.has_value());
      EXPECT_EQ(*c->transaction, j.at("transaction"));
    }
    ++published;
  }
  EXPECT_EQ(published, 5);
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
