#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/base/clock.h"
#include "core/base/fs.h"
#include "core/base/io.h"
#include "core/base/result.h"
#include "core/base/secret.h"
#include "core/format/age.h"
#include "core/format/archive.h"
#include "core/format/manifest.h"

namespace safepoint::store {

// HKDF info of the key that keys a format 2 safety point's fingerprint.json.
inline constexpr std::string_view kFingerprintKeyInfo = "safepoint fingerprint";

// Where and how safety points are stored.
struct Options {
  std::string backup_dir;    // created 0700 when missing; refused when it is a symlink
  int work_factor = 18;      // scrypt log2(N) for new safety points (15..22)
  int max_work_factor = 22;  // readers refuse payloads above this before deriving
  int zstd_level = 3;
  int zstd_workers = 2;  // zstd compression threads beside the archiving thread
  std::string producer = "safepoint";
};

// Retention policy of `prune` (docs/configuration.md).
struct Retention {
  int keep_last = 10;                 // the newest N are kept
  int keep_daily = 7;                 // the newest safety point of each of the last N days with any
  std::uint64_t max_total_bytes = 0;  // 0: no limit; otherwise oldest beyond the limit go
  // Safety points in use elsewhere (a pending update, a rollback): never deleted. Asked right
  // before each deletion, so a use that starts while Prune runs is seen. Unset: none.
  std::function<bool(const std::string& id)> in_use;
};

// One thing to archive: either a file/link/dir on disk (abs_path) or generated content.
struct InputEntry {
  archive::EntryHeader header;  // path, type, mode, mtime, owner, link target
  // Files on disk: read at backup time. Empty for a file found below one of the request's
  // `roots`, whose path follows from its archive path (SourcePath): one string less per file
  // of a tree while scrypt holds its memory.
  std::string abs_path;
  std::optional<std::string> content;  // generated entries (state, environment, logs)
};

// A directory a tree of the request was collected from, and its top-level archive name.
struct SourceRoot {
  std::string name;  // "ha_config"
  std::string dir;   // "/config"
};

struct BackupRequest {
  std::string reason;
  std::optional<manifest::UpdateRef> update;
  std::vector<InputEntry> entries;
  std::vector<std::string> warnings;  // from source collection; kept in the manifest
  std::vector<SourceRoot> roots;
};

// Where a file on disk of `request` is read from: its abs_path, or the directory of the root
// its archive path lies in joined with the rest of that path. Empty when neither is known.
[[nodiscard]] std::string SourcePath(const BackupRequest& request, const InputEntry& entry);

// Called with (bytes archived so far, total bytes); from the calling thread.
using ProgressFn = std::function<void(std::uint64_t, std::uint64_t)>;

// A listed safety point. `manifest` is empty when manifest.json cannot be read (then `problem`
// says why); such a directory is still listed so it can be inspected and deleted.
struct Listing {
  std::string id;
  std::string dir;
  std::optional<manifest::Manifest> manifest;
  std::string problem;
};

struct VerifyReport {
  std::string id;
  std::size_t entries = 0;
  std::uint64_t bytes = 0;
};

struct PruneReport {
  std::vector<std::string> deleted;
  std::vector<std::string> kept;
  // The newest safety point that verified; "" when retention deletes nothing, since then none
  // needs to be (or is) decrypted to find it.
  std::string protected_id;
};

// Which store operations a lock allows.
enum class LockMode { kShared, kExclusive };

// flock(2) on <backup_dir>/.lock, released on destruction. Readers share; writers exclude.
class StoreLock {
 public:
  StoreLock(StoreLock&& other) noexcept;
  StoreLock& operator=(StoreLock&& other) noexcept;
  StoreLock(const StoreLock&) = delete;
  StoreLock& operator=(const StoreLock&) = delete;
  ~StoreLock();
  [[nodiscard]] LockMode mode() const { return mode_; }

 private:
  friend class Store;
  StoreLock(int fd, LockMode mode) : fd_(fd), mode_(mode) {}
  int fd_ = -1;
  LockMode mode_ = LockMode::kShared;
};

// Called for every verified entry while a safety point is read: the header, then the data in
// chunks (files only), then `done` once the entry's SHA-256 matched the manifest.
class EntryVisitor {
 public:
  virtual ~EntryVisitor() = default;
  [[nodiscard]] virtual Status Begin(const manifest::Entry& entry) = 0;
  [[nodiscard]] virtual Status Data(std::span<const std::uint8_t> data) = 0;
  [[nodiscard]] virtual Status End(const manifest::Entry& entry) = 0;
};

// The safety-point store: <backup_dir>/<id>/{state_<id>_<sha12>.enc, manifest.json}.
// A safety point appears atomically: it is written in <backup_dir>/.tmp-<id>, fsynced and renamed.
// Thread-safety: one operation at a time per Store; processes coordinate with StoreLock.
class Store {
 public:
  Store(Options options, FileSystem& fs, const Clock& clock);

  [[nodiscard]] const Options& options() const { return options_; }

  // Creates the backup dir (0700) when missing; refuses a symlinked backup dir. With
  // `read_only`, changes nothing: a missing dir stays missing and an existing one keeps its mode.
  [[nodiscard]] Status Prepare(bool read_only = false);
  // Takes the store lock without waiting; kBusy when another process holds it. A shared lock
  // needs no write access to an existing lock file, and is held without one when there is no
  // lock file and none can be made (a read-only mount, a missing backup dir): nothing writes
  // such a store.
  [[nodiscard]] Result<StoreLock> Lock(LockMode mode);
  // Removes leftovers of interrupted writers (.tmp-*, .del-*). REQUIRES: exclusive lock.
  [[nodiscard]] Status CleanLeftovers();

  // Starts the scrypt derivation of the next safety point's key (at options().work_factor) on
  // its own thread, for Backup: a caller collecting its inputs meanwhile has the other core.
  // Errors: as age::ScryptJob::Start.
  [[nodiscard]] Result<std::unique_ptr<age::ScryptJob>> StartKeyDerivation(
      const Secret& passphrase) const;
  // Writes a new safety point. With `started` (from StartKeyDerivation, same passphrase) the
  // first attempt uses that derivation; a second attempt (a file changed while it was read)
  // derives anew. REQUIRES: exclusive lock.
  [[nodiscard]] Result<manifest::Manifest> Backup(const BackupRequest& request,
                                                  const Secret& passphrase,
                                                  const ProgressFn& progress = {},
                                                  std::unique_ptr<age::ScryptJob> started = {});
  // As Backup, under the file key of safety point `id` (`file_key`, as Load or Read unwrapped
  // it) instead of a new one: the new payload and index copy the age header of `id`'s payload,
  // so no scrypt runs (no time, no memory for it) and whatever passphrase opens `id` opens the
  // new one. For the safety point a rollback to `id` takes just before it changes anything.
  // Errors: as Backup; kCorrupt when `id`'s payload header does not belong to `file_key`.
  [[nodiscard]] Result<manifest::Manifest> BackupUnderKeyOf(const std::string& id,
                                                            const Secret& file_key,
                                                            const BackupRequest& request,
                                                            const ProgressFn& progress = {});
  // All safety points, oldest first.
  [[nodiscard]] Result<std::vector<Listing>> List() const;
  // The plaintext manifest of one safety point (kBadInput for a malformed id, kNotFound). For
  // format 2 it is the summary only (entries_listed false); Load adds the entries.
  [[nodiscard]] Result<manifest::Manifest> Show(const std::string& id) const;
  // The whole manifest, entries and warnings included: format 1 from manifest.json, format 2
  // from the encrypted index beside the payload (one scrypt; the payload is not read).
  // Errors: as Show, kWrongPassphrase, kCorrupt for an index that does not match the summary.
  // `fingerprint_key`, when given, receives the key of the safety point's keyed fingerprint
  // (HKDF of its file key; empty for format 1), with no second scrypt. `file_key`, when given,
  // receives the file key itself (empty for format 1), for a later Read without scrypt.
  [[nodiscard]] Result<manifest::Manifest> Load(const std::string& id, const Secret& passphrase,
                                                Secret* fingerprint_key = nullptr,
                                                Secret* file_key = nullptr) const;
  // Decrypts everything and checks every entry against both manifests and the payload hash.
  // With a non-empty `file_key` (the safety point's own), as Read: no scrypt runs.
  [[nodiscard]] Result<VerifyReport> Verify(const std::string& id, const Secret& passphrase,
                                            const Secret* file_key = nullptr) const;
  // Like Verify, handing every entry to `visitor` as it is checked. Entries reach the visitor
  // before the end of the payload is authenticated: a visitor must stage, not publish, until
  // Read returns success. With a non-empty `file_key` (what Load gave for the same id) the payload
  // opens without scrypt; its header MAC and every chunk are still verified.
  [[nodiscard]] Result<VerifyReport> Read(const std::string& id, const Secret& passphrase,
                                          EntryVisitor& visitor,
                                          const Secret* file_key = nullptr) const;
  // Writes the decrypted payload (a tar.zst) to `out`. The age layer authenticates every chunk;
  // a truncated or tampered payload fails before its end.
  [[nodiscard]] Status Decrypt(const std::string& id, const Secret& passphrase,
                               ByteSink& out) const;
  // Extracts entries (all, or those equal to or below `paths`) into `dest` after the whole
  // safety point verified; never writes outside `dest`, never follows links in it. Returns how
  // many entries (files, links, directories) it wrote or found there. As root it sets owners;
  // where the file system refuses one (vfat, NFS root_squash, an unmapped id), the entry keeps
  // the extract's owner and `warnings` (when given) says so, as tar -xp does. kNotFound naming
  // the first of `paths` that matches no entry (nothing is written then).
  [[nodiscard]] Result<std::size_t> Extract(const std::string& id, const Secret& passphrase,
                                            const std::string& dest,
                                            const std::vector<std::string>& paths,
                                            std::vector<std::string>* warnings = nullptr) const;
  // Removes a safety point atomically (rename, then delete). REQUIRES: exclusive lock.
  [[nodiscard]] Status Delete(const std::string& id);
  // Applies retention; never deletes the newest safety point that verifies. The safety point
  // this Store's last Backup wrote is verified under the file key it was written with (its
  // header MAC, which covers the scrypt stanza, every chunk, entry and the index), without a
  // second scrypt, unless that key does not open it (another process deleted it and wrote
  // another under its id): then the passphrase decides. Prune forgets that key, whatever it
  // returns. REQUIRES: exclusive lock.
  [[nodiscard]] Result<PruneReport> Prune(const Retention& retention, const Secret& passphrase);
  // Forgets the file key of the last Backup without a Prune: for a caller whose retention
  // fails before it reaches Prune, so the key is not kept until the next backup.
  void ForgetWritten() { (void)TakeWritten(); }

  // Directory of a safety point (no checks).
  [[nodiscard]] std::string DirOf(const std::string& id) const;

 private:
  // Creates the age encryptor of a new payload file.
  using MakeEncryptor = std::function<Result<std::unique_ptr<age::Encryptor>>(WritableFile&)>;
  Result<manifest::Manifest> BackupWith(const BackupRequest& request, const MakeEncryptor& make,
                                        const ProgressFn& progress);
  // One attempt. The entries `keep_again` are read again and kept once scrypt is done; an
  // attempt that fails because a file changed between its passes sets `changed` to its entry.
  Result<manifest::Manifest> BackupOnce(const BackupRequest& request, const MakeEncryptor& make,
                                        const ProgressFn& progress,
                                        const std::vector<std::size_t>& keep_again,
                                        std::optional<std::size_t>* changed);
  // The id of a safety point started at `started` (its local time, and a suffix when taken).
  Result<std::string> NewId(std::chrono::system_clock::time_point started) const;
  Result<std::string> PayloadPath(const std::string& id, const manifest::Manifest& m) const;
  Result<std::string> IndexPath(const std::string& id, const manifest::Manifest& m) const;
  // Reads the index file of a format 2 safety point and checks it against the summary's size
  // and SHA-256 (no key needed).
  Result<std::string> ReadIndexCiphertext(const std::string& id,
                                          const manifest::Manifest& outer) const;

  // The safety point the last successful Backup wrote (a header of its own) and its file key,
  // until the next Prune takes them or Delete removes that safety point.
  void RememberWritten(const std::string& id, const Secret& file_key);
  // For Prune: the first of `newest_first` that verifies (`written_id` under `written_key`
  // first, then the passphrase); an error when none does, with the first failure's code.
  [[nodiscard]] Result<std::string> NewestThatVerifies(const std::vector<Listing>& newest_first,
                                                       const std::string& written_id,
                                                       const Secret& written_key,
                                                       const Secret& passphrase) const;
  std::pair<std::string, Secret> TakeWritten();

  Options options_;
  FileSystem& fs_;
  const Clock& clock_;
  std::mutex written_mu_;
  std::string written_id_;  // guarded by written_mu_
  Secret written_key_;      // guarded by written_mu_
};

// Sorts ids chronologically (the -N suffix counts numerically).
[[nodiscard]] bool IdLess(const std::string& a, const std::string& b);

}  // namespace safepoint::store
