#pragma once

// Parsing and validation of every inbound MQTT payload, and building of outbound responses.
// Pure: no I/O, no clock. docs/mqtt-api.md is the specification these functions implement.
//
// Every parser returns Result<T>; malformed input yields ErrorCode::kBadInput with a message that
// names the offending field and never echoes more than a short, sanitized excerpt of the payload.
// Nothing here throws: nlohmann::json exceptions are caught inside.

#include <cstddef>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "core/base/conflict_policy.h"
#include "core/base/result.h"

namespace safepoint::service {

// Limits applied to inbound payloads.
struct ParseOptions {
  // A payload longer than this is rejected before it is parsed. Default 64 KiB.
  std::size_t max_payload_bytes = 64 * 1024;
};

// Bounds of individual fields, in bytes.
inline constexpr std::size_t kMaxUpdateIdLength = 128;
inline constexpr std::size_t kMaxTargetLength = 256;
inline constexpr std::size_t kMaxVersionLength = 64;
inline constexpr std::size_t kMaxReasonLength = 256;
inline constexpr std::size_t kMaxDetailLength = 4096;
inline constexpr std::size_t kMaxTextLength = 512;
inline constexpr std::size_t kMaxTransactionLength = 128;
inline constexpr std::size_t kMaxDiffPathLength = 1024;

// The answer to an update request.
enum class Decision { kContinue, kCancel, kExpired };

[[nodiscard]] std::string_view DecisionName(Decision decision);

// `<base>/update/request`: an automation asks for a safety point before an update.
struct UpdateRequest {
  std::string update_id;  // 1..128 printable ASCII characters
  std::string target;     // what is updated, e.g. "core" or "zigbee2mqtt"; 1..256 bytes
  std::optional<std::string> from_version;
  std::optional<std::string> to_version;
  std::optional<std::string> reason;
};

// `<base>/update/result`: the automation reports how the update went.
struct UpdateResult {
  std::string update_id;
  bool success = false;
  std::optional<int> exit_code;
  std::optional<std::string> detail;

  // A failure is `success: false` or a non-zero exit code (even with `success: true`).
  [[nodiscard]] bool Failed() const { return !success || (exit_code && *exit_code != 0); }
};

[[nodiscard]] Result<UpdateRequest> ParseUpdateRequest(std::string_view payload,
                                                       const ParseOptions& options = {});
[[nodiscard]] Result<UpdateResult> ParseUpdateResult(std::string_view payload,
                                                     const ParseOptions& options = {});

// ---- Commands on `<base>/cmd/<name>` ----

struct BackupCommand {
  std::optional<std::string> reason;
};
struct ContinueCommand {
  std::optional<std::string> update_id;  // when present it must name the pending update
};
struct CancelCommand {
  std::optional<std::string> update_id;
};
struct RollbackCommand {
  // Absent after a bare PRESS (the HA "Roll back" button): the driver uses the safety point
  // selected in the HA select entity.
  std::optional<std::string> backup_id;
  // Absent: the configuration's rollback.on_conflict, as for the CLI and automatic rollbacks.
  std::optional<ConflictPolicy> on_conflict;
};
struct ResolveCommand {
  ConflictPolicy action = ConflictPolicy::kAbort;  // overwrite | merge | abort
};
struct VerifyCommand {
  std::optional<std::string> backup_id;  // absent: verify all safety points
};
struct DeleteCommand {
  std::string backup_id;
};
struct ListCommand {};
// What changed in the files since a safety point: the per-file summary, and for one path the
// patch (bounded).
struct DiffCommand {
  std::string backup_id;
  std::optional<std::string> path;  // relative, no ".." (archive form or below ha_config)
};
struct StatusCommand {};  // only via text "/status"
struct SelectCommand {    // the HA select entity: choose the safety point "Roll back" uses
  std::string backup_id;
};

using CommandArgs =
    std::variant<BackupCommand, ContinueCommand, CancelCommand, RollbackCommand, ResolveCommand,
                 VerifyCommand, DeleteCommand, ListCommand, StatusCommand, SelectCommand,
                 DiffCommand>;

// A parsed command. `name` is the topic's command name (responses go to
// `<base>/response/<name>`); for `text` the args hold the command the text stands for.
struct Command {
  std::string name;
  CommandArgs args;
  std::optional<nlohmann::json> transaction;  // string or number, echoed back as given
  bool pressed = false;                       // the payload was a bare `PRESS`
};

// The names accepted on `<base>/cmd/<name>`.
[[nodiscard]] const std::vector<std::string_view>& CommandNames();

// Parses the payload of `<base>/cmd/<name>`. Accepts a JSON object, a bare `PRESS` (HA
// buttons), and for `text` and `select` also a bare string. Unknown names, unknown fields,
// wrong types, over-long strings and invalid ids are kBadInput.
// An empty payload is kBadInput too; the driver should drop empty messages without a response,
// since that is what clearing a retained command looks like.
[[nodiscard]] Result<Command> ParseCommand(std::string_view name, std::string_view payload,
                                           const ParseOptions& options = {});

// Parses the chat form: "/rollback safety_point <id> [abort|overwrite|merge]", "/rollback <id>",
// "/diff <id> [path]",
// "/backup [reason]", "/status", "/list", "/continue", "/cancel".
[[nodiscard]] Result<CommandArgs> ParseTextCommand(std::string_view text);

// Zigbee2MQTT's answer on `<z2m base>/bridge/response/backup`:
//   {"data": {"zip": "<base64>"}, "status": "ok", "transaction": "..."}
//   {"data": {}, "status": "error", "error": "...", "transaction": "..."}
struct Zigbee2MqttBackup {
  std::string transaction;           // empty when absent or not a string
  std::optional<std::string> zip;    // the decoded zip, when status is "ok"
  std::optional<std::string> error;  // Zigbee2MQTT's error text, when status is "error"
};
// kBadInput for anything else (not JSON, no status, a zip that is not base64 or not a zip,
// a payload over `max_bytes`).
[[nodiscard]] Result<Zigbee2MqttBackup> ParseZigbee2MqttBackup(std::string_view payload,
                                                               std::size_t max_bytes);

// Best effort: the `transaction` of a payload that may otherwise be invalid, so an error
// response can still echo it. std::nullopt when absent, not a string/number, or unparsable.
[[nodiscard]] std::optional<nlohmann::json> ExtractTransaction(std::string_view payload,
                                                               const ParseOptions& options = {});

// ---- Validation helpers ----

// A safety point id: exactly `YYYY-MM-DD_HH-MM-SS` (a real calendar date and time of day),
// optionally followed by `-N` with N in 2..999 written without leading zeros.
[[nodiscard]] bool IsValidBackupId(std::string_view id);
[[nodiscard]] Status ValidateBackupId(std::string_view id);
// 1..128 printable ASCII characters (0x20..0x7e), no leading or trailing space.
[[nodiscard]] Status ValidateUpdateId(std::string_view id);

// ---- Responses, Zigbee2MQTT style ----

enum class ResponseStatus { kOk, kError };

// {status: "ok"|"error", data: <data or {}>, error?: <message>, transaction?: <as given>}.
[[nodiscard]] nlohmann::json Response(
    ResponseStatus status, const nlohmann::json& data = nlohmann::json::object(),
    const std::optional<std::string>& error = std::nullopt,
    const std::optional<nlohmann::json>& transaction = std::nullopt);
// Response(kOk, data, -, transaction).
[[nodiscard]] nlohmann::json OkResponse(const nlohmann::json& data,
                                        const std::optional<nlohmann::json>& transaction);
// Response(kError, {}, error.message, transaction) plus `code`: ErrorCodeName(error.code).
[[nodiscard]] nlohmann::json ErrorResponse(const Error& error,
                                           const std::optional<nlohmann::json>& transaction);

// ---- Topics ----

// The topic names of the MQTT contract under one base topic (default "safepoint").
class Topics {
 public:
  explicit Topics(std::string base = "safepoint") : base_(std::move(base)) {}
  [[nodiscard]] const std::string& base() const { return base_; }
  [[nodiscard]] std::string AvailabilityTopic() const { return base_ + "/availability"; }
  [[nodiscard]] std::string StatusTopic() const { return base_ + "/status"; }
  [[nodiscard]] std::string EventTopic() const { return base_ + "/event"; }
  [[nodiscard]] std::string RequestTopic() const { return base_ + "/update/request"; }
  [[nodiscard]] std::string DecisionTopic() const { return base_ + "/update/decision"; }
  [[nodiscard]] std::string ResultTopic() const { return base_ + "/update/result"; }
  [[nodiscard]] std::string CommandFilter() const { return base_ + "/cmd/+"; }
  [[nodiscard]] std::string CommandTopic(std::string_view name) const {
    return base_ + "/cmd/" + std::string(name);
  }
  [[nodiscard]] std::string ResponseTopic(std::string_view name) const {
    return base_ + "/response/" + std::string(name);
  }
  // The command name of `<base>/cmd/<name>`; std::nullopt for any other topic. The name is
  // returned as is (ParseCommand rejects unknown names).
  [[nodiscard]] std::optional<std::string> CommandName(std::string_view topic) const;

 private:
  std::string base_;
};

}  // namespace safepoint::service
