#pragma once

#include <cstddef>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

#include "core/diff/patch.h"

// What the service says about a content diff: the answer of the MQTT `diff` command (and the
// text command `/diff`) and the `update_changes` event. Both are bounded so they fit a message.
namespace safepoint::service {

// At most this many files are listed (the counts still cover all).
inline constexpr std::size_t kMaxDiffFilesListed = 100;
// A patch in an answer is cut (at a line end) beyond this many bytes.
inline constexpr std::size_t kMaxDiffPatchBytes = 32 * 1024;

// {backup_id, against: "live", unchanged, summary, files: [{path, change, type, binary, added,
//  removed, notes}] (at most kMaxDiffFilesListed), files_total, files_cut, message,
//  and with `path`: patch (unified diffs, secrets masked), patch_bytes, patch_cut}.
[[nodiscard]] nlohmann::json DiffAnswer(const diff::Report& report,
                                        const std::optional<std::string>& path);

// "<lead> 3 files: ha_config/.storage/core.config_entries (+12 -3), ha_config/x.png (binary),
// ..." naming at most `max_named` files, or "<lead> no file." when nothing changed; e.g. with
// the lead "The update of core changed".
[[nodiscard]] std::string ChangesMessage(const diff::Report& report, std::string_view lead,
                                         std::size_t max_named = 10);

// The listed files of `report` as DiffAnswer gives them, at most `max` of them.
[[nodiscard]] nlohmann::json ChangedFilesJson(const diff::Report& report, std::size_t max);

}  // namespace safepoint::service
