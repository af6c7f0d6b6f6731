// Fuzzes every inbound MQTT payload parser: service::ParseCommand for each command name,
// ParseUpdateRequest, ParseUpdateResult, ParseTextCommand, ExtractTransaction,
// Topics::CommandName and ParseZigbee2MqttBackup.
//
// Input: byte 0 picks the parser (and for ParseCommand the name); the rest is the payload.
// Byte 0 = 16 (mod 17) is the id-validator comparison. The payload limit is the service's own
// (ParseOptions' default, the 64 KiB of docs/mqtt-api.md), and tests/fuzz/run.sh lets inputs grow
// past it, so both sides of the limit are reached.
// Invariants: errors are kBadInput with a short, printable message (they are published on
// `<base>/response/<name>` and logged); a parsed command's name is the one asked for; parsed
// ids and strings respect the documented bounds; a payload over the limit is always refused.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <type_traits>
#include <variant>

#include "core/format/manifest.h"
#include "service/commands.h"
#include "tests/fuzz/fuzz_util.h"

namespace safepoint::fuzz {
namespace {

// The longest error text a parser may produce: a fixed sentence plus 40-byte excerpts.
constexpr std::size_t kMaxMessage = 600;

void ExpectBadInput(const Error& error, std::string_view where) {
  ExpectCode(error, {ErrorCode::kBadInput}, where);
  ExpectPrintableMessage(error.message, kMaxMessage, where);
}

void CheckArgs(const service::CommandArgs& args) {
  std::visit(
      [](const auto& a) {
        using T = std::decay_t<decltype(a)>;
        if constexpr (std::is_same_v<T, service::RollbackCommand>) {
          if (a.backup_id && !service::IsValidBackupId(*a.backup_id)) {
            Violated("rollback accepted an invalid backup id");
          }
        } else if constexpr (std::is_same_v<T, service::VerifyCommand>) {
          if (a.backup_id && !service::IsValidBackupId(*a.backup_id)) {
            Violated("verify accepted an invalid backup id");
          }
        } else if constexpr (std::is_same_v<T, service::DeleteCommand> ||
                             std::is_same_v<T, service::SelectCommand>) {
          if (!service::IsValidBackupId(a.backup_id)) Violated("accepted an invalid backup id");
        } else if constexpr (std::is_same_v<T, service::ContinueCommand> ||
                             std::is_same_v<T, service::CancelCommand>) {
          if (a.update_id && !service::ValidateUpdateId(*a.update_id)) {
            Violated("accepted an invalid update id");
          }
        } else if constexpr (std::is_same_v<T, service::BackupCommand>) {
          if (a.reason && a.reason->size() > service::kMaxTextLength) {
            Violated("accepted an over-long reason");
          }
        }
      },
      args);
}

}  // namespace
}  // namespace safepoint::fuzz

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace safepoint;
  using namespace safepoint::fuzz;
  if (size < 1) return 0;
  const std::string_view payload(reinterpret_cast<const char*>(data) + 1, size - 1);
  const auto& names = service::CommandNames();
  const std::size_t pick = data[0] % (names.size() + 7);
  const service::ParseOptions options;  // the service's limit: 64 KiB
  const bool over_limit = payload.size() > options.max_payload_bytes;

  if (pick < names.size()) {
    auto c = service::ParseCommand(names[pick], payload, options);
    if (!c) {
      ExpectBadInput(c.error(), "ParseCommand");
      return 0;
    }
    if (over_limit) Violated("ParseCommand accepted a payload over the limit");
    if (c->name != names[pick]) Violated("ParseCommand returned another name");
    if (c->transaction && !c->transaction->is_string() && !c->transaction->is_number()) {
      Violated("transaction is neither a string nor a number");
    }
    if (c->transaction && c->transaction->is_string() &&
        c->transaction->get<std::string>().size() > service::kMaxTransactionLength) {
      Violated("over-long transaction accepted");
    }
    (void)service::OkResponse({}, c->transaction).dump();
    CheckArgs(c->args);
    return 0;
  }
  switch (pick - names.size()) {
    case 0: {
      auto r = service::ParseUpdateRequest(payload, options);
      if (!r) {
        ExpectBadInput(r.error(), "ParseUpdateRequest");
      } else {
        if (over_limit) Violated("request: accepted a payload over the limit");
        if (!service::ValidateUpdateId(r->update_id)) Violated("request: invalid update id");
        if (r->target.empty() || r->target.size() > service::kMaxTargetLength) {
          Violated("request: target out of bounds");
        }
        if ((r->from_version && r->from_version->size() > service::kMaxVersionLength) ||
            (r->to_version && r->to_version->size() > service::kMaxVersionLength) ||
            (r->reason && r->reason->size() > service::kMaxReasonLength)) {
          Violated("request: over-long optional field");
        }
      }
      break;
    }
    case 1: {
      auto r = service::ParseUpdateResult(payload, options);
      if (!r) {
        ExpectBadInput(r.error(), "ParseUpdateResult");
      } else {
        if (over_limit) Violated("result: accepted a payload over the limit");
        if (!service::ValidateUpdateId(r->update_id)) Violated("result: invalid update id");
        if (r->detail && r->detail->size() > service::kMaxDetailLength) {
          Violated("result: over-long detail");
        }
      }
      break;
    }
    case 2: {
      auto t = service::ParseTextCommand(payload);
      if (!t) {
        ExpectBadInput(t.error(), "ParseTextCommand");
      } else {
        CheckArgs(*t);
      }
      break;
    }
    case 3: {
      auto t = service::ExtractTransaction(payload, options);
      if (t && over_limit) Violated("transaction read from a payload over the limit");
      if (t && !t->is_string() && !t->is_number()) Violated("transaction of another type");
      break;
    }
    case 4: {
      const service::Topics topics;
      (void)topics.CommandName(payload);
      break;
    }
    case 5: {
      // The service allows 64 MiB for a Zigbee2MQTT backup; a small limit here reaches both
      // sides of it within the fuzzer's input sizes.
      auto z = service::ParseZigbee2MqttBackup(payload, 4096);
      if (!z) {
        ExpectBadInput(z.error(), "ParseZigbee2MqttBackup");
      } else {
        if (z->zip.has_value() == z->error.has_value()) Violated("zigbee2mqtt: zip xor error");
        if (z->zip && !z->zip->starts_with("PK")) Violated("zigbee2mqtt: not a zip accepted");
        if (z->error) ExpectPrintableMessage(*z->error, kMaxMessage, "zigbee2mqtt error text");
      }
      break;
    }
    default: {
      // The MQTT layer and the store validate ids with separate code; they must agree.
      if (service::IsValidBackupId(payload) != manifest::IsValidId(payload)) {
        Violated("service and manifest disagree on a safety point id");
      }
      break;
    }
  }
  return 0;
}
