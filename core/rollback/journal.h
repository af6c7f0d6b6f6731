#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "core/base/result.h"

// The rollback journal: <backup_dir>/.rollbacks/<rollback-id>/journal.json, rewritten atomically
// (temp, fsync, rename, fsync dir) at each phase change. docs/rollback.md describes the format.
//
// Every operation is idempotent and can tell whether it already happened, so recovery after a
// crash replays the whole list from the start instead of tracking per-step progress.
namespace safepoint::rollback::journal {

inline constexpr int kFormat = 1;
inline constexpr std::string_view kFileName = "journal.json";

enum class OpKind {
  kMoveAside,  // rename <root>/<path> into <record>/moved/<path> (done when that exists)
  kMakeDir,    // mkdir <root>/<path> (done when it is a directory)
  kPlaceFile,  // rename <record>/staging/<staged> onto <root>/<path> (or copy when cross-device)
  kPlaceLink,  // symlink at a temp name, renamed onto <root>/<path>
  kSetAttrs,   // chmod (and lchown as root) of a restored directory; runs children first
};

struct Op {
  OpKind kind = OpKind::kPlaceFile;
  std::string path;         // archive path of the destination or of what is moved aside
  std::string staged;       // kPlaceFile: file name in the staging directory
  std::string sha256;       // kPlaceFile: expected content
  std::uint64_t size = 0;   // kPlaceFile
  std::string link_target;  // kPlaceLink
  std::uint32_t mode = 0;   // kPlaceFile, kMakeDir, kSetAttrs
  std::uint32_t uid = 0;    // kPlaceFile, kPlaceLink, kSetAttrs (applied when running as root)
  std::uint32_t gid = 0;
  std::int64_t mtime = 0;  // kPlaceFile

  bool operator==(const Op&) const = default;
};

enum class Phase {
  kApplying,   // the pre-rollback safety point exists; ops are being applied -> complete them
  kReverting,  // applying failed; the tree is being restored from the pre-rollback safety point
  kDone,       // every op applied and synced
  kReverted,   // the tree is back to the pre-rollback safety point
};

[[nodiscard]] std::string_view PhaseName(Phase phase);

struct Journal {
  std::string rollback_id;
  std::string id;               // the safety point rolled back to
  std::string pre_rollback_id;  // the safety point taken just before
  std::string policy;           // abort | overwrite | merge
  Phase phase = Phase::kApplying;
  std::string created_at;  // ISO-8601 UTC
  // The roots as configured when the rollback ran (recovery uses these, not today's config).
  std::string ha_config_root;
  std::string workspace_root;
  // Whether staged files are renamed into place (same file system) or copied.
  bool rename_ha_config = true;
  bool rename_workspace = true;
  std::vector<std::string> changed_roots;  // "ha_config" / "workspace"
  std::vector<Op> ops;
  std::string error;        // why it was reverted (phase kReverting/kReverted)
  int revert_attempts = 0;  // how many reverts were started

  bool operator==(const Journal&) const = default;
};

[[nodiscard]] nlohmann::json ToJson(const Journal& journal);
// Errors: kCorrupt naming what is wrong (unknown phase/op, bad path, missing field).
[[nodiscard]] Result<Journal> Parse(std::string_view text);

}  // namespace safepoint::rollback::journal
