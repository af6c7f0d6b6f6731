#include "service/commands.h"

#include <sodium.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <set>
#include <utility>

#include "core/base/utf8.h"
#include "core/rollback/content_diff.h"
#include "core/rollback/path_args.h"
#include "service/payload.h"

namespace safepoint::service {
namespace {

using nlohmann::json;

using payload::CheckNesting;
using payload::CheckSize;
using payload::CheckText;
using payload::Excerpt;
using payload::Fields;
using payload::ParseJson;
using payload::ParseObject;
using payload::TextKind;
using payload::Trim;
using payload::TypeName;

constexpr std::string_view kPress = "PRESS";

Result<std::optional<json>> ReadTransaction(const json& object) {
  const auto it = object.find("transaction");
  if (it == object.end() || it->is_null()) return std::optional<json>();
  if (it->is_string()) {
    SP_RETURN_IF_ERROR(CheckText("transaction", it->get_ref<const std::string&>(),
                                 kMaxTransactionLength, TextKind::kLine));
    return std::optional<json>(*it);
  }
  if (it->is_number()) return std::optional<json>(*it);
  return Fail(ErrorCode::kBadInput,
              "'transaction' must be a string or a number, not " + std::string(TypeName(*it)));
}

Result<std::optional<std::string>> OptionalBackupId(const Fields& fields) {
  auto id = fields.OptionalString("backup_id", kMaxTextLength);
  if (!id) return tl::unexpected(std::move(id.error()));
  if (id->has_value()) SP_RETURN_IF_ERROR(ValidateBackupId(**id));
  return std::move(*id);
}

Result<std::string> RequiredBackupId(const Fields& fields) {
  auto id = fields.RequiredString("backup_id", kMaxTextLength);
  if (!id) return tl::unexpected(std::move(id.error()));
  SP_RETURN_IF_ERROR(ValidateBackupId(*id));
  return std::move(*id);
}

Result<std::optional<std::string>> OptionalUpdateId(const Fields& fields) {
  auto id = fields.OptionalString("update_id", kMaxUpdateIdLength);
  if (!id) return tl::unexpected(std::move(id.error()));
  if (id->has_value()) SP_RETURN_IF_ERROR(ValidateUpdateId(**id));
  return std::move(*id);
}

// The policy under `key`; nullopt when it is absent and not `required`.
Result<std::optional<ConflictPolicy>> PolicyField(const Fields& fields, std::string_view key,
                                                  bool required) {
  auto name = fields.OptionalString(key, 16);
  if (!name) return tl::unexpected(std::move(name.error()));
  if (!name->has_value()) {
    if (required) {
      return Fail(ErrorCode::kBadInput,
                  "missing required field '" + std::string(key) + "' (overwrite, merge or abort)");
    }
    return std::nullopt;
  }
  const auto policy = ParseConflictPolicy(**name);
  if (!policy) {
    return Fail(ErrorCode::kBadInput, "'" + std::string(key) + "' must be abort, overwrite or " +
                                          "merge, not '" + Excerpt(**name) + "'");
  }
  return *policy;
}

// A path of the `diff` command: one line, relative to the backed-up trees, no "..", not empty
// (rollback::ArchivePathsOf without a configuration, which the diff applies again with it).
Status CheckDiffPath(std::string_view path) {
  SP_RETURN_IF_ERROR(CheckText("path", path, kMaxDiffPathLength, TextKind::kLine));
  if (!rollback::ArchivePathsOf({std::string(path)})) {
    return Fail(ErrorCode::kBadInput,
                "'path' must be relative to the backed-up trees, without '..' (e.g. "
                "\"configuration.yaml\" or \"ha_config/.storage/core.config_entries\")");
  }
  return {};
}

// The arguments of a bare PRESS, or an error for commands that need arguments.
Result<CommandArgs> PressArgs(std::string_view name) {
  if (name == "backup") return CommandArgs(BackupCommand{});
  if (name == "continue") return CommandArgs(ContinueCommand{});
  if (name == "cancel") return CommandArgs(CancelCommand{});
  if (name == "rollback") return CommandArgs(RollbackCommand{});
  if (name == "verify") return CommandArgs(VerifyCommand{});
  if (name == "list") return CommandArgs(ListCommand{});
  if (name == "resolve") {
    return Fail(ErrorCode::kBadInput, R"(resolve needs {"action": "overwrite|merge|abort"})");
  }
  if (name == "delete") return Fail(ErrorCode::kBadInput, R"(delete needs {"backup_id": ...})");
  if (name == "diff") return Fail(ErrorCode::kBadInput, R"(diff needs {"backup_id": ...})");
  if (name == "select") return Fail(ErrorCode::kBadInput, "select needs a safety point id");
  return Fail(ErrorCode::kBadInput, "text needs a command such as \"/status\"");
}

// The arguments of a JSON object payload for command `name`.
Result<CommandArgs> ObjectArgs(std::string_view name, const json& object) {
  if (name == "backup") {
    Fields fields(object, {"reason", "transaction"});
    SP_RETURN_IF_ERROR(fields.CheckNoUnknown());
    auto reason = fields.OptionalString("reason", kMaxReasonLength);
    if (!reason) return tl::unexpected(std::move(reason.error()));
    return CommandArgs(BackupCommand{std::move(*reason)});
  }
  if (name == "continue" || name == "cancel") {
    Fields fields(object, {"update_id", "transaction"});
    SP_RETURN_IF_ERROR(fields.CheckNoUnknown());
    auto update_id = OptionalUpdateId(fields);
    if (!update_id) return tl::unexpected(std::move(update_id.error()));
    if (name == "continue") return CommandArgs(ContinueCommand{std::move(*update_id)});
    return CommandArgs(CancelCommand{std::move(*update_id)});
  }
  if (name == "rollback") {
    Fields fields(object, {"backup_id", "on_conflict", "transaction"});
    SP_RETURN_IF_ERROR(fields.CheckNoUnknown());
    auto id = RequiredBackupId(fields);
    if (!id) return tl::unexpected(std::move(id.error()));
    auto policy = PolicyField(fields, "on_conflict", /*required=*/false);
    if (!policy) return tl::unexpected(std::move(policy.error()));
    return CommandArgs(RollbackCommand{std::move(*id), *policy});
  }
  if (name == "resolve") {
    Fields fields(object, {"action", "transaction"});
    SP_RETURN_IF_ERROR(fields.CheckNoUnknown());
    auto policy = PolicyField(fields, "action", /*required=*/true);
    if (!policy) return tl::unexpected(std::move(policy.error()));
    return CommandArgs(ResolveCommand{**policy});
  }
  if (name == "verify") {
    Fields fields(object, {"backup_id", "all", "transaction"});
    SP_RETURN_IF_ERROR(fields.CheckNoUnknown());
    auto id = OptionalBackupId(fields);
    if (!id) return tl::unexpected(std::move(id.error()));
    if (fields.Has("all")) {
      auto all = fields.RequiredBool("all");
      if (!all) return tl::unexpected(std::move(all.error()));
      if (!*all) return Fail(ErrorCode::kBadInput, "'all' may only be true");
      if (id->has_value()) {
        return Fail(ErrorCode::kBadInput, "give either 'backup_id' or 'all', not both");
      }
    }
    return CommandArgs(VerifyCommand{std::move(*id)});
  }
  if (name == "delete" || name == "select") {
    Fields fields(object, {"backup_id", "transaction"});
    SP_RETURN_IF_ERROR(fields.CheckNoUnknown());
    auto id = RequiredBackupId(fields);
    if (!id) return tl::unexpected(std::move(id.error()));
    if (name == "delete") return CommandArgs(DeleteCommand{std::move(*id)});
    return CommandArgs(SelectCommand{std::move(*id)});
  }
  if (name == "diff") {
    Fields fields(object, {"backup_id", "path", "transaction"});
    SP_RETURN_IF_ERROR(fields.CheckNoUnknown());
    auto id = RequiredBackupId(fields);
    if (!id) return tl::unexpected(std::move(id.error()));
    auto path = fields.OptionalString("path", kMaxDiffPathLength);
    if (!path) return tl::unexpected(std::move(path.error()));
    if (*path) SP_RETURN_IF_ERROR(CheckDiffPath(**path));
    return CommandArgs(DiffCommand{std::move(*id), std::move(*path)});
  }
  if (name == "list") {
    Fields fields(object, {"transaction"});
    SP_RETURN_IF_ERROR(fields.CheckNoUnknown());
    return CommandArgs(ListCommand{});
  }
  // text
  Fields fields(object, {"text", "transaction"});
  SP_RETURN_IF_ERROR(fields.CheckNoUnknown());
  auto text = fields.RequiredString("text", kMaxTextLength);
  if (!text) return tl::unexpected(std::move(text.error()));
  return ParseTextCommand(*text);
}

bool IsLeapYear(int year) { return (year % 4 == 0 && year % 100 != 0) || year % 400 == 0; }

int DaysInMonth(int year, int month) {
  constexpr std::array<int, 12> kDays = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  if (month == 2 && IsLeapYear(year)) return 29;
  return kDays[static_cast<std::size_t>(month - 1)];
}

bool IsDigit(char c) { return c >= '0' && c <= '9'; }

// The value of `count` decimal digits at `pos`, or -1 when any is not a digit.
int Digits(std::string_view s, std::size_t pos, std::size_t count) {
  int value = 0;
  for (std::size_t i = pos; i < pos + count; ++i) {
    if (!IsDigit(s[i])) return -1;
    value = value * 10 + (s[i] - '0');
  }
  return value;
}

std::vector<std::string_view> SplitWords(std::string_view text) {
  std::vector<std::string_view> words;
  std::size_t i = 0;
  while (i < text.size()) {
    while (i < text.size() && (text[i] == ' ' || text[i] == '\t')) ++i;
    const std::size_t start = i;
    while (i < text.size() && text[i] != ' ' && text[i] != '\t') ++i;
    if (i > start) words.push_back(text.substr(start, i - start));
  }
  return words;
}

}  // namespace

std::string_view DecisionName(Decision decision) {
  switch (decision) {
    case Decision::kContinue:
      return "continue";
    case Decision::kCancel:
      return "cancel";
    case Decision::kExpired:
      return "expired";
  }
  return "cancel";
}

bool IsValidBackupId(std::string_view id) {
  // YYYY-MM-DD_HH-MM-SS
  // 0123456789012345678
  constexpr std::size_t kBaseLength = 19;
  if (id.size() < kBaseLength) return false;
  if (id[4] != '-' || id[7] != '-' || id[10] != '_' || id[13] != '-' || id[16] != '-') {
    return false;
  }
  const int year = Digits(id, 0, 4);
  const int month = Digits(id, 5, 2);
  const int day = Digits(id, 8, 2);
  const int hour = Digits(id, 11, 2);
  const int minute = Digits(id, 14, 2);
  const int second = Digits(id, 17, 2);
  if (year < 0 || month < 1 || month > 12 || day < 1 || day > DaysInMonth(year, month) ||
      hour < 0 || hour > 23 || minute < 0 || minute > 59 || second < 0 || second > 59) {
    return false;
  }
  if (id.size() == kBaseLength) return true;
  // Clash suffix: -N, N in 2..999 without leading zeros.
  const std::string_view suffix = id.substr(kBaseLength);
  if (suffix.size() < 2 || suffix.size() > 4 || suffix[0] != '-' || suffix[1] == '0') {
    return false;
  }
  const int n = Digits(suffix, 1, suffix.size() - 1);
  return n >= 2 && n <= 999;
}

Status ValidateBackupId(std::string_view id) {
  if (IsValidBackupId(id)) return {};
  return Fail(ErrorCode::kBadInput, "invalid safety point id '" + Excerpt(id) +
                                        "' (expected YYYY-MM-DD_HH-MM-SS, optionally -N)");
}

Status ValidateUpdateId(std::string_view id) {
  if (id.empty() || id.size() > kMaxUpdateIdLength) {
    return Fail(ErrorCode::kBadInput,
                "'update_id' must be 1.." + std::to_string(kMaxUpdateIdLength) + " characters");
  }
  for (char c : id) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u > 0x7e) {
      return Fail(ErrorCode::kBadInput, "'update_id' must be printable ASCII");
    }
  }
  if (id.front() == ' ' || id.back() == ' ') {
    return Fail(ErrorCode::kBadInput, "'update_id' must not start or end with a space");
  }
  return {};
}

Result<UpdateRequest> ParseUpdateRequest(std::string_view payload, const ParseOptions& options) {
  SP_RETURN_IF_ERROR(CheckSize(payload, options.max_payload_bytes));
  auto object = ParseObject(payload);
  if (!object) return tl::unexpected(std::move(object.error()));
  Fields fields(*object, {"update_id", "target", "from_version", "to_version", "reason"});
  SP_RETURN_IF_ERROR(fields.CheckNoUnknown());

  UpdateRequest request;
  auto update_id = fields.RequiredString("update_id", kMaxUpdateIdLength);
  if (!update_id) return tl::unexpected(std::move(update_id.error()));
  SP_RETURN_IF_ERROR(ValidateUpdateId(*update_id));
  request.update_id = std::move(*update_id);

  auto target = fields.RequiredString("target", kMaxTargetLength);
  if (!target) return tl::unexpected(std::move(target.error()));
  request.target = std::move(*target);

  auto from = fields.OptionalString("from_version", kMaxVersionLength);
  if (!from) return tl::unexpected(std::move(from.error()));
  request.from_version = std::move(*from);
  auto to = fields.OptionalString("to_version", kMaxVersionLength);
  if (!to) return tl::unexpected(std::move(to.error()));
  request.to_version = std::move(*to);
  auto reason = fields.OptionalString("reason", kMaxReasonLength);
  if (!reason) return tl::unexpected(std::move(reason.error()));
  request.reason = std::move(*reason);
  return request;
}

Result<Zigbee2MqttBackup> ParseZigbee2MqttBackup(std::string_view payload, std::size_t max_bytes) {
  auto bad = [](const std::string& what) {
    return Fail(ErrorCode::kBadInput, "Zigbee2MQTT backup response: " + what);
  };
  if (payload.size() > max_bytes) {
    return bad("over " + std::to_string(max_bytes) + " bytes");
  }
  if (!CheckNesting(payload)) return bad("nested too deeply");
  if (payload.find('\0') != std::string_view::npos) return bad("not valid JSON (a NUL byte)");
  const json j = json::parse(payload.begin(), payload.end(), nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return bad("not a JSON object");
  Zigbee2MqttBackup out;
  if (auto t = j.find("transaction"); t != j.end() && t->is_string()) {
    out.transaction = t->get<std::string>();
  }
  const auto status = j.find("status");
  if (status == j.end() || !status->is_string()) return bad("no status");
  if (*status == "error") {
    const auto e = j.find("error");
    std::string text = e != j.end() && e->is_string() ? e->get<std::string>().substr(0, 500)
                                                      : std::string("no error text");
    // It goes into a log line and the safety point's warnings: printable ASCII only.
    for (char& ch : text) {
      const auto u = static_cast<unsigned char>(ch);
      if (u < 0x20 || u >= 0x7f) ch = '?';
    }
    out.error = std::move(text);
    return out;
  }
  if (*status != "ok") return bad("unknown status");
  const auto data = j.find("data");
  if (data == j.end() || !data->is_object()) return bad("no data");
  const auto zip = data->find("zip");
  if (zip == data->end() || !zip->is_string()) return bad("no data.zip");
  const auto& b64 = zip->get_ref<const std::string&>();
  std::string bin(b64.size() / 4 * 3 + 3, '\0');
  std::size_t bin_len = 0;
  const char* end = nullptr;
  if (sodium_base642bin(reinterpret_cast<unsigned char*>(bin.data()), bin.size(), b64.data(),
                        b64.size(), "\r\n", &bin_len, &end, sodium_base64_VARIANT_ORIGINAL) != 0 ||
      end != b64.data() + b64.size()) {
    return bad("data.zip is not base64");
  }
  bin.resize(bin_len);
  // Every zip starts with a local file header, or is an empty archive (end of central directory).
  if (!bin.starts_with(std::string_view("PK\x03\x04", 4)) &&
      !bin.starts_with(std::string_view("PK\x05\x06", 4))) {
    return bad("data.zip is not a zip archive");
  }
  out.zip = std::move(bin);
  return out;
}

Result<UpdateResult> ParseUpdateResult(std::string_view payload, const ParseOptions& options) {
  SP_RETURN_IF_ERROR(CheckSize(payload, options.max_payload_bytes));
  auto object = ParseObject(payload);
  if (!object) return tl::unexpected(std::move(object.error()));
  Fields fields(*object, {"update_id", "success", "exit_code", "detail"});
  SP_RETURN_IF_ERROR(fields.CheckNoUnknown());

  UpdateResult result;
  auto update_id = fields.RequiredString("update_id", kMaxUpdateIdLength);
  if (!update_id) return tl::unexpected(std::move(update_id.error()));
  SP_RETURN_IF_ERROR(ValidateUpdateId(*update_id));
  result.update_id = std::move(*update_id);

  auto success = fields.RequiredBool("success");
  if (!success) return tl::unexpected(std::move(success.error()));
  result.success = *success;

  auto exit_code = fields.OptionalInt("exit_code");
  if (!exit_code) return tl::unexpected(std::move(exit_code.error()));
  result.exit_code = *exit_code;

  auto detail = fields.OptionalString("detail", kMaxDetailLength, TextKind::kMultiline);
  if (!detail) return tl::unexpected(std::move(detail.error()));
  result.detail = std::move(*detail);
  return result;
}

const std::vector<std::string_view>& CommandNames() {
  static const std::vector<std::string_view> names = {"backup",  "continue", "cancel", "rollback",
                                                      "resolve", "verify",   "delete", "list",
                                                      "text",    "select",   "diff"};
  return names;
}

Result<CommandArgs> ParseTextCommand(std::string_view text) {
  SP_RETURN_IF_ERROR(CheckText("text", text, kMaxTextLength, TextKind::kLine));
  const std::string_view trimmed = Trim(text);
  auto words = SplitWords(trimmed);
  if (words.empty()) return Fail(ErrorCode::kBadInput, "empty text command");
  std::string_view verb = words[0];
  // Chat clients may address a bot: "/status@my_bot".
  if (const auto at = verb.find('@'); at != std::string_view::npos) verb = verb.substr(0, at);
  const std::size_t args = words.size() - 1;
  const auto no_args = [&](CommandArgs parsed) -> Result<CommandArgs> {
    if (args != 0) {
      return Fail(ErrorCode::kBadInput, std::string(verb) + " takes no arguments");
    }
    return parsed;
  };

  if (verb == "/status") return no_args(StatusCommand{});
  if (verb == "/list") return no_args(ListCommand{});
  if (verb == "/continue") return no_args(ContinueCommand{});
  if (verb == "/cancel") return no_args(CancelCommand{});
  if (verb == "/backup") {
    BackupCommand backup;
    if (args > 0) {
      const auto start = static_cast<std::size_t>(words[1].data() - trimmed.data());
      std::string reason(trimmed.substr(start));
      SP_RETURN_IF_ERROR(CheckText("reason", reason, kMaxReasonLength, TextKind::kLine));
      backup.reason = std::move(reason);
    }
    return CommandArgs(std::move(backup));
  }
  if (verb == "/rollback") {
    // "/rollback safety_point <id> [policy]" (the chat form) or "/rollback <id> [policy]".
    std::size_t next = 1;
    if (args >= 1 && words[1] == "safety_point") next = 2;
    if (next >= words.size()) {
      return Fail(ErrorCode::kBadInput, "usage: /rollback safety_point <backup_id>");
    }
    RollbackCommand rollback;
    SP_RETURN_IF_ERROR(ValidateBackupId(words[next]));
    rollback.backup_id = std::string(words[next]);
    if (next + 1 < words.size()) {
      const auto policy = ParseConflictPolicy(words[next + 1]);
      if (!policy || next + 2 < words.size()) {
        return Fail(ErrorCode::kBadInput,
                    "usage: /rollback safety_point <backup_id> [abort|overwrite|merge]");
      }
      rollback.on_conflict = *policy;
    }
    return CommandArgs(std::move(rollback));
  }
  if (verb == "/diff") {
    // "/diff <id> [path]": the path is the rest of the text (it may hold spaces).
    if (args == 0) return Fail(ErrorCode::kBadInput, "usage: /diff <backup_id> [path]");
    SP_RETURN_IF_ERROR(ValidateBackupId(words[1]));
    DiffCommand diff{std::string(words[1]), std::nullopt};
    if (args > 1) {
      const auto start = static_cast<std::size_t>(words[2].data() - trimmed.data());
      diff.path = std::string(trimmed.substr(start));
      SP_RETURN_IF_ERROR(CheckDiffPath(*diff.path));
    }
    return CommandArgs(std::move(diff));
  }
  return Fail(ErrorCode::kBadInput,
              "unknown text command '" + Excerpt(verb) +
                  "' (known: /rollback, /backup, /status, /list, /continue, /cancel, /diff)");
}

Result<Command> ParseCommand(std::string_view name, std::string_view payload,
                             const ParseOptions& options) {
  const auto& names = CommandNames();
  if (std::find(names.begin(), names.end(), name) == names.end()) {
    return Fail(ErrorCode::kBadInput, "unknown command '" + Excerpt(name) + "'");
  }
  SP_RETURN_IF_ERROR(CheckSize(payload, options.max_payload_bytes));
  Command command;
  command.name = std::string(name);
  const std::string_view trimmed = Trim(payload);

  if (trimmed == kPress) {
    auto args = PressArgs(name);
    if (!args) return tl::unexpected(std::move(args.error()));
    command.args = std::move(*args);
    command.pressed = true;
    return command;
  }

  const bool takes_bare_string = name == "text" || name == "select";
  if (takes_bare_string && trimmed.front() != '{') {
    std::string value;
    if (trimmed.front() == '"') {
      auto doc = ParseJson(trimmed);
      if (!doc) return tl::unexpected(std::move(doc.error()));
      if (!doc->is_string()) return Fail(ErrorCode::kBadInput, "payload must be a string");
      value = doc->get<std::string>();
    } else {
      value = std::string(trimmed);
      if (!IsValidUtf8(value) || value.find('\0') != std::string::npos) {
        return Fail(ErrorCode::kBadInput, "payload is not UTF-8 text");
      }
    }
    if (name == "text") {
      auto args = ParseTextCommand(value);
      if (!args) return tl::unexpected(std::move(args.error()));
      command.args = std::move(*args);
    } else {
      SP_RETURN_IF_ERROR(ValidateBackupId(value));
      command.args = SelectCommand{std::move(value)};
    }
    return command;
  }

  auto object = ParseObject(trimmed);
  if (!object) return tl::unexpected(std::move(object.error()));
  auto transaction = ReadTransaction(*object);
  if (!transaction) return tl::unexpected(std::move(transaction.error()));
  command.transaction = std::move(*transaction);
  auto args = ObjectArgs(name, *object);
  if (!args) return tl::unexpected(std::move(args.error()));
  command.args = std::move(*args);
  return command;
}

std::optional<nlohmann::json> ExtractTransaction(std::string_view payload,
                                                 const ParseOptions& options) {
  if (payload.size() > options.max_payload_bytes || !CheckNesting(payload) ||
      payload.find('\0') != std::string_view::npos) {
    return std::nullopt;
  }
  const json doc = json::parse(payload.begin(), payload.end(), nullptr, false);
  if (doc.is_discarded() || !doc.is_object()) return std::nullopt;
  auto transaction = ReadTransaction(doc);
  if (!transaction) return std::nullopt;
  return *transaction;
}

nlohmann::json Response(ResponseStatus status, const nlohmann::json& data,
                        const std::optional<std::string>& error,
                        const std::optional<nlohmann::json>& transaction) {
  json out = json::object();
  out["status"] = status == ResponseStatus::kOk ? "ok" : "error";
  out["data"] = data.is_null() ? json::object() : data;
  if (error) out["error"] = *error;
  if (transaction) out["transaction"] = *transaction;
  return out;
}

nlohmann::json OkResponse(const nlohmann::json& data,
                          const std::optional<nlohmann::json>& transaction) {
  return Response(ResponseStatus::kOk, data, std::nullopt, transaction);
}

nlohmann::json ErrorResponse(const Error& error, const std::optional<nlohmann::json>& transaction) {
  json out = Response(ResponseStatus::kError, json::object(), error.message, transaction);
  out["code"] = std::string(ErrorCodeName(error.code));
  return out;
}

std::optional<std::string> Topics::CommandName(std::string_view topic) const {
  const std::string prefix = base_ + "/cmd/";
  if (topic.size() <= prefix.size() || topic.substr(0, prefix.size()) != prefix) {
    return std::nullopt;
  }
  const std::string_view name = topic.substr(prefix.size());
  if (name.find('/') != std::string_view::npos) return std::nullopt;
  return std::string(name);
}

}  // namespace safepoint::service
