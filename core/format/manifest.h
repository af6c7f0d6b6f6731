#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/base/result.h"

namespace safepoint::manifest {

// Version of the manifest layout written by this build (docs/format.md). Format 1 (entries in the
// plaintext manifest.json) is still read.
inline constexpr int kFormatVersion = 2;
inline constexpr int kOldestFormatVersion = 1;
// Name of the authoritative manifest inside the tar; always its first entry.
inline constexpr std::string_view kInnerName = "MANIFEST.json";
// Name of the plaintext manifest beside the payload.
inline constexpr std::string_view kOuterName = "manifest.json";

enum class EntryType { kFile, kSymlink, kDirectory };

[[nodiscard]] std::string_view EntryTypeName(EntryType type);

// What pass 1 of a backup saw of a file it read stable: its identity and the nanosecond times the
// kernel changes on every write. Recorded only for a file that had been quiet for
// kStampQuietSeconds before the backup began, so that no later change can carry the same stamp
// (a change within the same timestamp tick as the last one before the backup would). diff and
// the rollback plan trust the recorded hash of a live file whose lstat(2) still shows this stamp
// instead of reading it again; any other file is hashed.
struct Stamp {
  std::uint64_t dev = 0;
  std::uint64_t ino = 0;
  std::int64_t mtime_ns = 0;  // since the epoch
  std::int64_t ctime_ns = 0;

  bool operator==(const Stamp&) const = default;
};

// How long a file must have been unchanged (mtime and ctime) before the backup began for its
// stamp to be recorded: more than any file system's timestamp granularity (FAT: 2 s).
inline constexpr std::int64_t kStampQuietSeconds = 3;

// One archived path. `path` is the archive path ("ha_config/configuration.yaml"); `sha256` and
// `size` describe file contents (empty/0 for links and directories); `link_target` is set for
// symlinks only; `stamp` (format 2, optional) for files pass 1 found quiet.
struct Entry {
  std::string path;
  EntryType type = EntryType::kFile;
  std::uint64_t size = 0;
  std::string sha256;
  std::uint32_t mode = 0;  // permission bits only (07777)
  std::int64_t mtime = 0;  // seconds since the epoch
  std::uint32_t uid = 0;
  std::uint32_t gid = 0;
  std::string link_target;
  std::optional<Stamp> stamp;  // files only, when recorded

  bool operator==(const Entry&) const = default;
};

// The update a safety point was taken for, when it was requested by the update flow.
struct UpdateRef {
  std::string update_id;
  std::string target;
  std::string from_version;
  std::string to_version;

  bool operator==(const UpdateRef&) const = default;
};

// The encrypted payload file beside manifest.json (outer manifest only).
struct Payload {
  std::string name;
  std::uint64_t size = 0;
  std::string sha256;

  bool operator==(const Payload&) const = default;
};

struct Kdf {
  std::string name = "scrypt";
  int work_factor = 18;
  int r = 8;
  int p = 1;

  bool operator==(const Kdf&) const = default;
};

// The description of one safety point. The inner manifest (MANIFEST.json in the tar) is written
// before the payload exists, so it has no `payload` and no `key_id`; everything else must be
// identical in both (CheckConsistent).
struct Manifest {
  int format = kFormatVersion;
  std::string id;
  std::string created_at;  // ISO-8601 local time with UTC offset
  std::int64_t created_unix = 0;
  std::string reason;
  std::optional<UpdateRef> update;
  std::string producer;  // "safepoint <version>"
  std::string encryption = "age-v1-scrypt";
  Kdf kdf;
  std::string key_id;              // outer only
  std::optional<Payload> payload;  // outer only
  std::optional<Payload> index;    // outer only, format 2: the encrypted entry list
  // False for a format 2 outer manifest as read from disk: `entries` and `warnings` are empty
  // (they live only inside the encryption) and the counts below stand in for them.
  bool entries_listed = true;
  std::uint64_t listed_files = 0;     // when !entries_listed
  std::uint64_t listed_bytes = 0;     // when !entries_listed
  std::uint64_t listed_entries = 0;   // when !entries_listed
  std::uint64_t listed_warnings = 0;  // when !entries_listed
  std::vector<Entry> entries;
  std::vector<std::string> warnings;

  [[nodiscard]] std::uint64_t TotalBytes() const;
  [[nodiscard]] std::size_t FileCount() const;
  [[nodiscard]] std::size_t EntryCount() const;
  [[nodiscard]] std::size_t WarningCount() const;
};

// Frees `m`'s entries and keeps their counts, so it answers FileCount, TotalBytes, EntryCount
// and WarningCount as before, like a format 2 manifest.json read from disk.
void DropEntries(Manifest& m);

// Serializes. `inner` (MANIFEST.json, and the encrypted index of format 2) omits `payload`,
// `index` and `key_id`. The outer manifest of format 2 holds only the summary: no entry, no
// warning text (docs/format.md).
[[nodiscard]] nlohmann::json ToJson(const Manifest& m, bool inner);
[[nodiscard]] std::string Serialize(const Manifest& m, bool inner);
// Parses and validates a manifest (types, id, entry paths, hashes). Errors: kUnsupported for a
// format version this build does not read; kCorrupt for anything else wrong.
[[nodiscard]] Result<Manifest> Parse(std::string_view text);
// kCorrupt naming the first difference unless `inner` and `outer` describe the same safety point.
[[nodiscard]] Status CheckConsistent(const Manifest& inner, const Manifest& outer);

// A safety point id: YYYY-MM-DD_HH-MM-SS with an optional -N suffix (2..999).
[[nodiscard]] bool IsValidId(std::string_view id);
// Validates an archive path: relative, '/'-separated, no empty, '.' or '..' components, no NUL,
// at most 4096 bytes (any other byte, backslash and invalid UTF-8 included, is part of a name),
// below one of the known top-level roots (or MANIFEST.json).
[[nodiscard]] Status CheckArchivePath(std::string_view path);
// A selection of archive paths (none: everything) that remembers which of its paths selected an
// entry: `extract` and `diff` name a path that matched nothing (a typo, most likely).
class PathSelection {
 public:
  explicit PathSelection(const std::vector<std::string>& paths);
  // `path` equals one of the paths or lies below one.
  [[nodiscard]] bool Selects(std::string_view path);
  // kNotFound naming the first path that selected nothing: "no entry of <where> matches 'x'".
  [[nodiscard]] Status AllMatched(const std::string& where) const;

 private:
  std::vector<std::string> paths_;
  std::vector<bool> matched_;
};

// The checks every reader of a safety point applies to its entry list (verify, show, diff,
// extract and rollback alike): each path passes CheckArchivePath, each link CheckLinkTarget, no
// path appears twice, no entry lies below an entry that is not a directory. kCorrupt naming the
// first offending entry.
[[nodiscard]] Status CheckEntries(const std::vector<Entry>& entries);
// For a symlink at archive path `path` with `target`: OK only when the target is relative and
// stays inside the link's top-level root (ha_config/ or workspace/).
[[nodiscard]] Status CheckLinkTarget(std::string_view path, std::string_view target);

}  // namespace safepoint::manifest
