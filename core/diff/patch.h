#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "core/diff/mask.h"
#include "core/diff/unified.h"
#include "core/format/manifest.h"

// Content diffs between two versions of the backed-up trees (a safety point and the live tree,
// or two safety points): per file the change, added/removed line counts and unified hunks with
// every secret masked (mask.h). docs/cli.md (`safepoint diff --patch`) shows the output.
namespace safepoint::diff {

// Bounds of a content diff.
struct Options {
  std::size_t context = 3;                      // lines of context around each change
  std::uint64_t max_file_bytes = 8'000'000;    // larger files are named, not compared
  std::uint64_t max_total_bytes = 64'000'000;  // contents held at once (both sides)
  bool hunks = true;                            // false: counts only (no hunk text kept)
};

// One side of a compared path.
struct Side {
  bool present = false;
  manifest::EntryType type = manifest::EntryType::kFile;
  std::uint64_t size = 0;
  std::uint32_t mode = 0;
  // uid and gid, when they are compared (a diff against the live trees run as root, which a
  // rollback sets back); nullopt otherwise.
  std::optional<std::pair<std::uint32_t, std::uint32_t>> owner;
  std::string link_target;
  // The file's bytes; nullopt when not read (too large, over the budget, not a file).
  std::optional<std::string> content;
  // Why a file's content could not be read, when it was wanted ("cannot read it: ...").
  std::string unread;
};

enum class FileChange { kModified, kAdded, kDeleted };
[[nodiscard]] std::string_view FileChangeName(FileChange change);  // "modified", ...

struct FileDiff {
  std::string path;  // archive path
  FileChange change = FileChange::kModified;
  std::string type;  // "file", "dir", "symlink" (of the newer side when present)
  bool binary = false;
  std::uint64_t old_size = 0;
  std::uint64_t new_size = 0;
  std::size_t added = 0;
  std::size_t removed = 0;
  // Why there are no hunks, or what else changed: "binary, 12.0 kB -> 12.4 kB",
  // "mode 0644 -> 0600", "owner 1000:1000 -> 0:0", "only masked values differ",
  // "too large to compare (...)".
  std::vector<std::string> notes;
  std::vector<Hunk> hunks;
};

// Compares the two sides of `path` (at least one present). Contents are masked with `masker`
// before they are compared; a side whose content was not read gets a note, not a guess.
[[nodiscard]] FileDiff DiffFile(const std::string& path, const Side& before, const Side& after,
                                const Masker& masker, const Options& options);

struct Report {
  std::string old_label;  // the safety point id
  std::string new_label;  // "live" or the second safety point id
  std::vector<FileDiff> files;
  std::size_t unchanged = 0;
  std::vector<std::string> warnings;
};

// The whole report as unified diffs: for each text file "--- <old>/<path>" (or /dev/null),
// "+++ <new>/<path>" and its hunks; other changes as one line "<path>: <notes>".
[[nodiscard]] std::string RenderPatch(const Report& report);
// One line per changed path: "modified ha_config/configuration.yaml (+12 -3)", then a total.
[[nodiscard]] std::string RenderSummary(const Report& report);
// {old, new, unchanged, summary: {modified, added, deleted, lines_added, lines_removed},
//  files: [{path, change, type, binary, old_size, new_size, added, removed, notes,
//           hunks?: [{old_start, old_count, new_start, new_count, header, lines}]}], warnings}
[[nodiscard]] nlohmann::json ToJson(const Report& report, bool with_hunks);
// The unified diff of one file (what RenderPatch prints for it).
[[nodiscard]] std::string RenderFile(const Report& report, const FileDiff& file);

}  // namespace safepoint::diff
