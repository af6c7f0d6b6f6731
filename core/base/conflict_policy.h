#pragma once

#include <optional>
#include <string_view>

namespace safepoint {

// What a rollback does with files changed locally since the safety point (docs/rollback.md):
// stop and change nothing, restore over them, or keep them and write the safety point's version
// beside. One type for the configuration, the CLI, MQTT commands and the rollback engine.
enum class ConflictPolicy { kAbort, kOverwrite, kMerge };

// "abort", "overwrite" or "merge": the word the configuration, the CLI and MQTT use.
[[nodiscard]] const char* ConflictPolicyName(ConflictPolicy policy);
// The policy a word names; nullopt for any other word.
[[nodiscard]] std::optional<ConflictPolicy> ParseConflictPolicy(std::string_view name);

}  // namespace safepoint
