#pragma once

#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/base/clock.h"
#include "core/base/fs.h"
#include "core/config/config.h"
#include "core/rollback/content_diff.h"
#include "core/rollback/rollback.h"
#include "core/sources/entities.h"
#include "core/sources/snapshot.h"
#include "core/store/store.h"

namespace safepoint::service {

inline constexpr std::string_view kVersion = "0.1.0";

// The store operations as the CLI and the service perform them: each takes the store lock
// (exclusive for writers, shared for readers; kBusy when held elsewhere), cleans leftovers of
// interrupted writers first, and reads the passphrase from the secrets file at each use.
// Thread-safety: one operation at a time per instance.
class Operations {
 public:
  Operations(const config::Config& config, FileSystem& fs, const Clock& clock);

  [[nodiscard]] store::Store& store() { return store_; }
  [[nodiscard]] const config::Config& config() const { return config_; }
  // The passphrase from the configured secrets file, read when called (for recovery).
  [[nodiscard]] rollback::PassphraseSource PassphraseSource() const {
    return [this] { return config::LoadPassphrase(config_); };
  }

  // Takes a safety point of the configured sources (and the entity mirror and other live
  // state, when given).
  [[nodiscard]] Result<manifest::Manifest> Backup(
      const std::string& reason, const std::optional<manifest::UpdateRef>& update,
      const store::ProgressFn& progress = {},
      const std::optional<entities::EntitySnapshot>& entities = std::nullopt,
      const snapshot::LiveState& live = {});

  struct VerifyResult {
    std::string id;
    store::VerifyReport report;
    std::optional<Error> error;
  };
  // Verifies the given ids, or every safety point when `ids` is empty. Per-id failures are in
  // the results; the Result itself fails only for a lock, passphrase or listing problem.
  [[nodiscard]] Result<std::vector<VerifyResult>> Verify(const std::vector<std::string>& ids);
  // `paths` as users type them (rollback::ArchivePathsOf). `warnings` (optional) gets an owner
  // that could not be set (store::Store::Extract).
  [[nodiscard]] Result<std::size_t> Extract(const std::string& id, const std::string& dest,
                                            const std::vector<std::string>& paths,
                                            std::vector<std::string>* warnings = nullptr);
  [[nodiscard]] Status Decrypt(const std::string& id, ByteSink& out);
  [[nodiscard]] Status Delete(const std::string& id);
  // Applies config.retention. `in_use` (optional) names safety points that must stay (see
  // store::Retention::in_use).
  [[nodiscard]] Result<store::PruneReport> Prune(
      std::function<bool(const std::string& id)> in_use = {});

  // Records the post-update fingerprint of safety point `id`; with `keep_existing`, one that is
  // already recorded stays as it is.
  [[nodiscard]] Status RecordFingerprint(const std::string& id, bool keep_existing);
  // Rolls back to `id` (rollback::Rollback, whose report says when the abort policy stopped on
  // conflicts). `confirm`, when given, sees the plan under the lock before anything is staged;
  // false: kBadInput "not confirmed", nothing changed.
  [[nodiscard]] Result<rollback::Report> Rollback(
      const std::string& id, rollback::Policy policy, bool dry_run,
      const store::ProgressFn& progress = {},
      const std::function<bool(const rollback::Plan&)>& confirm = {});
  // What a rollback to `id` would do with `policy` (the `diff` command); changes nothing.
  [[nodiscard]] Result<rollback::Plan> Plan(const std::string& id, rollback::Policy policy);
  // What changed in the files since safety point `id` (or between it and a second one), line by
  // line with secrets masked (`diff --patch`, the `diff` command); changes nothing.
  [[nodiscard]] Result<diff::Report> ContentDiff(rollback::ContentDiffRequest request);
  // The manifest of `id` with its entry list; format 2 keeps that list encrypted, so reading it
  // takes the passphrase (one scrypt). Takes no lock: writers replace a safety point's files
  // by renaming, so a reader sees the old or the new file whole.
  [[nodiscard]] Result<manifest::Manifest> Show(const std::string& id);
  // Finishes every rollback a crash interrupted; one line per action.
  [[nodiscard]] Result<std::vector<std::string>> Recover();
  // What every LockExclusive since the last call recovered, one line per action (the service
  // reports it as an event, whatever operation happened to run the recovery).
  [[nodiscard]] std::vector<std::string> TakeRecovered();
  // The entity states stored in safety point `id` (decrypts it).
  [[nodiscard]] Result<entities::EntitySnapshot> EntitiesOf(const std::string& id);

  // The exclusive store lock, after finishing every rollback a crash interrupted and removing
  // the leftovers of interrupted writers: what each writer takes first. Recovery is logged as a
  // warning, one line per action (`recovered` holds them too).
  struct ExclusiveLock {
    store::StoreLock lock;
    std::vector<std::string> recovered;
  };
  [[nodiscard]] Result<ExclusiveLock> LockExclusive();

 private:
  const config::Config& config_;
  FileSystem& fs_;
  const Clock& clock_;
  store::Store store_;
  std::vector<std::string> recovered_;  // see TakeRecovered
};

// One result of Operations::Verify as the CLI and the MQTT `verify` command answer it:
// {"id", "ok": true, "entries", "bytes"} or {"id", "ok": false, "error": <code name>, "message"}.
[[nodiscard]] nlohmann::json VerifyResultJson(const Operations::VerifyResult& result);

// Operations::Verify's results as the CLI and the MQTT `verify` command answer them: the array
// of VerifyResultJson, and the first failure, which is the answer's error.
struct VerifyAnswer {
  nlohmann::json results;
  std::optional<Error> first_error;
};
[[nodiscard]] VerifyAnswer VerifyAnswerOf(const std::vector<Operations::VerifyResult>& results);

// One safety point of a listing as `list` answers it (CLI --json, MQTT): {"id", "created_at",
// "reason", "files", "bytes", "payload_bytes", "update"}, or {"id", "problem"} when its manifest
// cannot be read.
[[nodiscard]] nlohmann::json ListingJson(const store::Listing& listing);

// Store options from the configuration.
[[nodiscard]] store::Options StoreOptionsFor(const config::Config& config);
// The summary of a new safety point (CLI --json, MQTT responses and events).
[[nodiscard]] nlohmann::json SummaryJson(const manifest::Manifest& m, const store::Store& store);

}  // namespace safepoint::service
