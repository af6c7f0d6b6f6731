#pragma once

#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/base/result.h"
#include "core/config/config.h"

// What a safety point takes from the machine: the file trees (ha_config, workspace), a slice of
// the environment and the tails of the agent logs. Entity states live in core/sources/entities.h.
namespace safepoint::sources {

// One file-system object selected for a safety point.
struct SourceEntry {
  enum class Kind { kFile, kSymlink, kDirectory };
  // "ha_config/<rel>" or "workspace/<rel>" ('/'-separated, no "." or ".." segments).
  std::string archive_path;
  // It was found at <root>/<rel> (store::SourcePath derives that; not kept here: at 100k files
  // that is 11 MB more while a rollback's load runs scrypt beside the walk).
  Kind kind = Kind::kFile;
  // Regular file: bytes at collection time; symlink: length of the target; directory: 0.
  std::uint64_t size = 0;
  // Permission bits (st_mode & 07777).
  std::uint32_t mode = 0;
  // Modification time, seconds since the epoch.
  std::int64_t mtime = 0;
  std::uint32_t uid = 0;
  std::uint32_t gid = 0;
  // Symlink only: the target exactly as readlink(2) returns it (never followed).
  std::string link_target;
};

struct Collection {
  // Depth-first, pre-order (a directory before its contents), names in each directory sorted
  // by byte value: the same tree always gives the same order. ha_config entries come first.
  std::vector<SourceEntry> entries;
  // Human-readable notes about what was skipped or is unusual (one line each, naming the path).
  std::vector<std::string> warnings;
};

// Walks paths.ha_config and paths.workspace and selects entries by the sources.* globs.
// - Paths are matched relative to their root. An entry is taken when an include pattern matches
//   it or one of its parent directories, and no exclude pattern (user's or builtin) matches it;
//   an excluded directory is not entered at all.
// - Directories: every included directory is an entry (so empty ones are recreated); a directory
//   that is not included itself is only entered when an include pattern could match below it.
// - Never follows a symlink (openat with O_NOFOLLOW, fstatat with AT_SYMLINK_NOFOLLOW); a root
//   path that is itself a symlink is followed, since the user configured it. Symlinks are
//   entries of kind kSymlink; one whose target leaves its root (absolute outside the root, or
//   ".." above it) is still stored as a link, with a warning.
// - Skipped with a warning: fifos, sockets, devices; regular files over max_file_size (naming
//   the size and the limit); a missing workspace root.
// Errors: missing or non-directory ha_config root -> kBadInput; a directory that cannot be read
// (naming it) -> kIo; nesting deeper than 256 levels -> kBadInput.
[[nodiscard]] Result<Collection> CollectFiles(const config::Config& config);

// Records the environment slice:
//   {"variables": {NAME: "value" | null},
//    "python_packages": [{"name": "...", "version": "..." | null, "site": "<dir>"}],
//    "warnings": ["..."]}
// Variables are those listed in sources.environment.variables (null when unset). Packages come
// from *.dist-info/METADATA and *.egg-info/PKG-INFO (or an *.egg-info file) in each configured
// site-packages directory, reading the Name:/Version: headers; when those are missing, from the
// directory name ("name-version.dist-info", "name-version[-pyX.Y].egg-info"). Sorted by
// lower-cased name, then version, then site. A missing site-packages directory is a warning.
// Errors: none besides kInternal for broken invariants; unreadable entries become warnings.
[[nodiscard]] Result<nlohmann::json> CaptureEnvironment(const config::Config& config);

// Default cap of a log tail in bytes (see TailLinesWithStats).
inline constexpr std::size_t kDefaultTailMaxBytes = 4u << 20;
// Block size TailLines reads backwards with.
inline constexpr std::size_t kTailBlockBytes = 64u << 10;

struct TailResult {
  // The last n lines, byte for byte as in the file (line endings kept, no final newline added).
  std::string text;
  // true when the lines were longer than the byte cap; text then holds the cap's last bytes.
  bool truncated = false;
  // I/O actually done: lets tests prove a huge file costs no more than a small one.
  std::uint64_t bytes_read = 0;
  std::uint64_t reads = 0;
};

// Returns the last `n` lines of a regular file, reading backwards from its end in
// kTailBlockBytes blocks, so the cost depends on the size of the tail, not of the file. A line
// ends at '\n' (a CRLF line keeps its '\r'); a final line without '\n' counts as a line; a
// final '\n' does not start another line. n == 0 or an empty file gives "". At most
// `max_bytes` are returned (truncated = true beyond). The file's size is taken once at open.
// Errors: missing file -> kNotFound; not a regular file -> kBadInput; other -> kIo.
[[nodiscard]] Result<TailResult> TailLinesWithStats(const std::string& path, std::size_t n,
                                                    std::size_t max_bytes = kDefaultTailMaxBytes);

// TailLinesWithStats(path, n).text.
[[nodiscard]] Result<std::string> TailLines(const std::string& path, std::size_t n);

struct LogTail {
  // The configured log path.
  std::string path;
  // Where to store it in a safety point: "logs/<file name>" (a "-2", "-3" before the extension
  // when two logs share a name).
  std::string archive_path;
  std::uint32_t lines = 0;
  std::string text;
  bool truncated = false;
};

struct LogCapture {
  std::vector<LogTail> logs;
  std::vector<std::string> warnings;
};

// Tails every sources.logs entry. A missing or unreadable log is skipped with a warning; never
// an error (the logs are a debugging aid, not configuration).
[[nodiscard]] Result<LogCapture> CaptureLogs(const config::Config& config);

}  // namespace safepoint::sources
