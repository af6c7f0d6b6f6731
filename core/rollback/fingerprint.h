#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <cstdint>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <string_view>

#include "core/base/clock.h"
#include "core/base/fs.h"
#include "core/base/result.h"
#include "core/base/secret.h"
#include "core/config/config.h"
#include "core/format/manifest.h"
#include "core/store/store.h"

// Post-update fingerprints and the state of paths in the restored trees (docs/rollback.md).
namespace safepoint::rollback {

// What rollback compares about one path of the ha_config or workspace tree. No contents.
struct PathState {
  manifest::EntryType type = manifest::EntryType::kFile;
  std::uint64_t size = 0;   // files
  std::string sha256;       // files: lowercase hex
  std::uint32_t mode = 0;   // files and directories: permission bits (links: 0)
  std::string link_target;  // symlinks

  bool operator==(const PathState&) const = default;
};

// A path's owner. Not part of PathState, whose fields format 1 and 2 fingerprints record; a plan
// compares it beside the state (PlanEntry::current_owner), a format 3 fingerprint records it too.
struct Owner {
  std::uint32_t uid = 0;
  std::uint32_t gid = 0;

  bool operator==(const Owner&) const = default;
};

// The state of the restored trees right after an update: "<backup_dir>/<id>/fingerprint.json".
// A file whose current state equals its fingerprint was changed by the update, not by a person.
//
// For a format 2 safety point the file holds no path and no plaintext hash (docs/format.md):
// each path is HMAC-SHA-256(key, "path" 0 path) and its state HMAC-SHA-256(key, "state" 0 path 0
// state), under a key derived from the safety point's file key (Store::Load's fingerprint key),
// so a copy of the backup dir confirms no guess without one scrypt. Format 1 safety points keep
// the plaintext form (their manifest.json lists the same already).
struct Fingerprint {
  std::string id;                            // the safety point it belongs to
  std::string recorded_at;                   // ISO-8601 UTC
  std::map<std::string, PathState> paths;    // plaintext form: archive path -> state
  std::map<std::string, std::string> keyed;  // keyed form: path MAC -> state MAC (hex)
  bool is_keyed = false;
  // Keyed format 3: each state MAC covers the path's owner too, so an owner changed after the
  // update is a person's change (a conflict), not the update's. Format 2 recorded no owner.
  bool with_owners = false;
  std::shared_ptr<const Secret> key;  // keyed form: set by LoadFingerprint, needed by Matches

  // Whether `path` was recorded with state `state` (and, in format 3, owner `owner`; without
  // one such a fingerprint matches nothing).
  [[nodiscard]] bool Matches(const std::string& path, const PathState& state,
                             const std::optional<Owner>& owner = std::nullopt) const;
  [[nodiscard]] std::size_t size() const { return is_keyed ? keyed.size() : paths.size(); }
};

// File name of a fingerprint inside a safety point's directory.
inline constexpr std::string_view kFingerprintName = "fingerprint.json";

// The state of an entry of a safety point, in PathState terms.
[[nodiscard]] PathState StateOf(const manifest::Entry& entry);

// The absolute path of an archive path "ha_config/<rel>" or "workspace/<rel>" (the root itself
// for "ha_config"/"workspace"); std::nullopt for the other roots (state, environment, logs).
[[nodiscard]] std::optional<std::string> LocalPathOf(const config::Config& config,
                                                     std::string_view archive_path);

// lstat(2)s `abs_path` without following any symlink below `root` (every component between
// `root` and the final one must be a real directory) and describes it; files are hashed.
// std::nullopt when it (or a parent) does not exist or a parent is not a directory.
// Errors: kIo for an unreadable file.
[[nodiscard]] Result<std::optional<PathState>> ReadPathState(const std::string& root,
                                                             const std::string& rel);

// ReadPathState for many paths of one tree walk: a directory found real once is not lstat(2)ed
// again for each path below it (a diff of 100k files in 6-deep trees makes 100k, not 700k, calls).
// For one plan or fingerprint only: a directory replaced by a link after it was seen is caught
// when the change is applied, which reads every path again.
//
// Given the safety point's entry for the path (`recorded`), a regular file whose lstat(2) shows the
// entry's stamp (manifest::Stamp: device, inode, size, nanosecond mtime and ctime) is taken to
// hold the recorded contents and is not read.
class LiveTreeReader {
 public:
  // `owner` (optional) gets the path's owner when it exists.
  [[nodiscard]] Result<std::optional<PathState>> Read(const std::string& root,
                                                      const std::string& rel,
                                                      const manifest::Entry* recorded = nullptr,
                                                      Owner* owner = nullptr);

  // Regular files read and hashed, and files taken as recorded by their stamp, so far.
  [[nodiscard]] std::size_t files_hashed() const { return files_hashed_; }
  [[nodiscard]] std::size_t files_trusted() const { return files_trusted_; }
  // Adds the counts of a reader that read other paths of the same plan.
  void Count(const LiveTreeReader& other) {
    files_hashed_ += other.files_hashed_;
    files_trusted_ += other.files_trusted_;
  }

 private:
  std::set<std::string, std::less<>> real_dirs_;
  std::size_t files_hashed_ = 0;
  std::size_t files_trusted_ = 0;
};

// Whether lstat(2)'s `st` of a regular file shows the stamp `entry` recorded.
[[nodiscard]] bool StampHolds(const manifest::Entry& entry, const struct stat& st);

// SHA-256 (hex) of a regular file, opened without following a final symlink.
[[nodiscard]] Result<std::string> HashFile(const std::string& path);

// Hashes the current ha_config and workspace source set (the same selection a safety point
// takes: paths, type, mode, size, SHA-256 and link target; no contents) into
// <backup_dir>/<id>/fingerprint.json, atomically, replacing an older one. For a format 2 safety
// point the passphrase unwraps its file key (one scrypt) and the fingerprint is keyed.
// REQUIRES: the caller holds the exclusive store lock.
// Errors: as Store::Load (kBadInput/kNotFound for the id, kWrongPassphrase), collection errors,
// kIo/kNoSpace.
[[nodiscard]] Status RecordFingerprint(const config::Config& config, const store::Store& store,
                                       FileSystem& fs, const Clock& clock, const Secret& passphrase,
                                       const std::string& id);

// The fingerprint of safety point `id`, std::nullopt when none was recorded. `key` is the
// fingerprint key Store::Load gave for the safety point (empty for format 1).
// Errors: kBadInput for a malformed id, kCorrupt for an unreadable fingerprint.json or a keyed
// one without a key.
[[nodiscard]] Result<std::optional<Fingerprint>> LoadFingerprint(const store::Store& store,
                                                                 const std::string& id, Secret key);

// Whether safety point `id` has a fingerprint.json (not read). Errors: kBadInput for a malformed
// id, kIo when it cannot be told.
[[nodiscard]] Result<bool> FingerprintRecorded(const store::Store& store, const std::string& id);

[[nodiscard]] nlohmann::json ToJson(const Fingerprint& fingerprint);
[[nodiscard]] Result<Fingerprint> ParseFingerprint(std::string_view text);

}  // namespace safepoint::rollback
