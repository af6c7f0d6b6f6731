#pragma once

#include <cstddef>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "core/base/clock.h"
#include "core/base/fs.h"
#include "core/base/result.h"
#include "core/base/secret.h"
#include "core/config/config.h"
#include "core/format/manifest.h"
#include "core/rollback/fingerprint.h"
#include "core/rollback/restart.h"
#include "core/store/store.h"

// Rolling the ha_config and workspace trees back to a safety point: plan (diff), verified
// staging, a pre-rollback safety point, a journaled apply that completes or reverts after a
// crash, and restarts of the affected services. docs/rollback.md is the user-facing reference.
namespace safepoint::rollback {

// Where recovery gets the passphrase when it must revert a rollback: the caller's, so core never
// reads the secrets file by itself (the CLI and the service read it with config::LoadPassphrase).
using PassphraseSource = std::function<Result<Secret>()>;

using Policy = config::ConflictPolicy;

// How a path of the safety point (or of the live tree) compares.
enum class Change {
  kUnchanged,        // the live path equals the safety point
  kChangedByUpdate,  // differs, and equals the post-update fingerprint
  kConflict,         // differs from the safety point and from the fingerprint (or there is none)
  kMissing,          // in the safety point, gone now: restored
  kAdded,            // exists now inside a backed-up tree, not in the safety point: moved aside
};

// What a rollback does with a path.
enum class Action {
  kNone,           // unchanged
  kRestore,        // replaced by (or created from) the safety point's version
  kRestoreBeside,  // merge: the local file stays; the safety point's version goes beside it
  kMoveAside,      // moved into <backup_dir>/.rollbacks/<rollback-id>/moved/<path>
  kStop,           // a conflict under the abort policy: the rollback does not start
};

[[nodiscard]] std::string_view ChangeName(Change change);  // "changed_by_update", ...
[[nodiscard]] std::string_view ActionName(Action action);  // "restore_beside", ...

struct PlanEntry {
  std::string path;  // archive path ("ha_config/configuration.yaml")
  Change change = Change::kUnchanged;
  Action action = Action::kNone;
  std::optional<PathState> target;   // the safety point's version (nullopt for kAdded)
  std::optional<PathState> current;  // the live version (nullopt when missing)
  // Directories the safety point does not list but its entries need (e.g. "memory" for
  // "memory/*.md"): only their existence matters, not their mode.
  bool implicit_dir = false;
  // kRestoreBeside: archive path of the copy written beside ("<path>.safepoint-<id>").
  std::string beside;
  // Attributes from the manifest, applied on restore.
  std::uint32_t uid = 0;
  std::uint32_t gid = 0;
  std::int64_t mtime = 0;
  // The live version's owner (with `current`, for paths the safety point lists). Running as
  // root, an owner other than the recorded one is a change, as a mode is: a rollback sets it back.
  std::optional<Owner> current_owner;
};

struct Plan {
  std::string id;
  Policy policy = Policy::kAbort;
  bool has_fingerprint = false;
  // Every compared path in archive-path order (parents before children), unchanged included
  // until DropUnchanged.
  std::vector<PlanEntry> entries;
  // Unchanged entries DropUnchanged removed; Count(Change::kUnchanged) includes them.
  std::size_t dropped_unchanged = 0;
  // Parts of the safety point that are reported, never written back (state/, environment/,
  // logs/ entries).
  std::vector<std::string> not_restored;
  // Entries skipped for safety (e.g. inside the backup directory), one line each.
  std::vector<std::string> warnings;
  // Live regular files the plan read and hashed, and those it took as recorded because their
  // lstat(2) still showed the safety point's stamp (manifest::Stamp).
  std::size_t files_hashed = 0;
  std::size_t files_trusted = 0;

  [[nodiscard]] std::size_t Count(Change change) const;
  [[nodiscard]] std::size_t Count(Action action) const;
  [[nodiscard]] std::vector<std::string> Conflicts() const;
  // True when the abort policy meets a conflict: Rollback would fail with kConflict.
  [[nodiscard]] bool WouldStop() const { return Count(Action::kStop) != 0; }
  // True when nothing would change.
  [[nodiscard]] bool Empty() const;
  // Removes the unchanged entries (most of a large tree's), keeping their count: what a report
  // shows is the same, its memory is not.
  void DropUnchanged();
};

// Plans a rollback of `target` (a manifest whose entries are not trusted: every path is checked)
// against the live trees of `config`, with an optional post-update fingerprint.
// Errors: kCorrupt for an entry that is unsafe (absolute, "..", a link leaving its root, an entry
// below a non-directory, a duplicate); kBadInput when a needed root is missing or a symlink;
// kIo reading the live tree.
[[nodiscard]] Result<Plan> PlanFor(const config::Config& config, const manifest::Manifest& target,
                                   const std::optional<Fingerprint>& fingerprint, Policy policy);

// `safepoint diff`: plans a rollback to safety point `id` from its entry list (Store::Load: the
// encrypted index of format 2, one scrypt; manifest.json of format 1) and its fingerprint, without
// reading the payload (Rollback verifies the payload before acting).
// Errors: as Store::Load (kBadInput, kNotFound, kCorrupt, kWrongPassphrase), LoadFingerprint and
// PlanFor.
[[nodiscard]] Result<Plan> MakePlan(const config::Config& config, const store::Store& store,
                                    const Secret& passphrase, const std::string& id, Policy policy);

struct Report {
  std::string rollback_id;      // "" for a dry run
  std::string id;               // the safety point rolled back to
  std::string pre_rollback_id;  // "" for a dry run; `rollback <this>` undoes the rollback
  Policy policy = Policy::kAbort;
  bool dry_run = false;
  Plan plan;
  std::size_t restored = 0;  // paths written from the safety point
  std::size_t written_beside = 0;
  std::size_t moved_aside = 0;
  std::string record_dir;                  // <backup_dir>/.rollbacks/<rollback-id>
  std::vector<std::string> changed_roots;  // "ha_config" / "workspace"
  // What the state/environment/log parts of the safety point say differs now (reported only).
  std::vector<std::string> differences;
  std::vector<restart::Outcome> restarts;
  // Problems after a successful restore (failed restarts); the restore itself stands.
  std::vector<std::string> errors;
  // Policy::kAbort met conflicts: nothing was changed, `plan.Conflicts()` lists them.
  bool stopped = false;
};

// What a rollback stopped on conflicts says: "1 file was changed locally since safety point ID:
// PATH; nothing was changed (use --on-conflict overwrite or merge)" (at most 20 paths named).
[[nodiscard]] std::string ConflictMessage(const Plan& plan);

// Who finishes interrupted rollbacks before a new one starts. Recovery runs once per operation:
// a caller that ran Recover under the exclusive lock it still holds (as the service does for
// every exclusive operation) passes kDoneByCaller, since nothing can interrupt a rollback
// while that lock is held.
enum class Recovery {
  kRecoverFirst,  // Rollback runs Recover itself
  kDoneByCaller,  // the caller ran Recover under the lock it holds for this rollback
};

// The reason of a rollback's pre-rollback safety point starts with this, then the target id.
inline constexpr std::string_view kPreRollbackReason = "pre-rollback to ";

// Rolls the trees back to safety point `id`:
//  1. refuses a missing or symlinked root (kBadInput) and unsafe entries (kCorrupt);
//  2. decrypts and verifies the whole safety point, staging the files to write in
//     <backup_dir>/.rollbacks/<rollback-id>/staging; a corrupt payload (kCorrupt) or a wrong
//     passphrase (kWrongPassphrase) changes nothing;
//  3. with Policy::kAbort and conflicts: stops, nothing changed, and returns the report with
//     `stopped` set and the plan listing them (its conflicts are data, not an error);
//  4. takes a pre-rollback safety point (reason "pre-rollback to <id>");
//  5. journals the operations, applies them (write-temp/rename, fsync), syncs, marks done;
//     on failure reverts to the pre-rollback safety point and returns the error;
//  6. runs the configured restarts of the changed roots (failures go to Report::errors).
// `progress` gets (done, total) as the rollback stages, takes the pre-rollback safety point and
// applies (one scale across the three steps; never decreasing).
// With `dry_run` it stops after verifying and planning (nothing is written; a conflict under
// kAbort is reported in the plan, not as an error).
// Unless `recovery` says the caller has done it, interrupted rollbacks are finished first
// (Recover, with `passphrase`), so their records and the trees are consistent.
// REQUIRES: the caller holds the exclusive store lock (Store::Lock).
[[nodiscard]] Result<Report> Rollback(const config::Config& config, store::Store& store,
                                      FileSystem& fs, const Clock& clock, const Secret& passphrase,
                                      const std::string& id, Policy policy, bool dry_run,
                                      const store::ProgressFn& progress = {},
                                      Recovery recovery = Recovery::kRecoverFirst);

// Finishes every interrupted rollback found in <backup_dir>/.rollbacks: a journal in phase
// "applying" is completed from its staging directory; when a staged file is gone or damaged,
// or the journal says "reverting", the tree is restored from the pre-rollback safety point
// (`passphrase` is asked only then, at most once). Records without a journal (the crash
// came before anything was changed) are removed. Returns one human-readable line per action.
// Restarts of a completed rollback are run as configured.
// REQUIRES: the caller holds the exclusive store lock. Call it before any other exclusive
// operation and at service start.
[[nodiscard]] Result<std::vector<std::string>> Recover(const config::Config& config,
                                                       store::Store& store, FileSystem& fs,
                                                       const PassphraseSource& passphrase);

// Recover() without the notes.
[[nodiscard]] Status RecoverInterrupted(const config::Config& config, store::Store& store,
                                        FileSystem& fs, const PassphraseSource& passphrase);

// The plan for `safepoint diff --json` and MQTT:
// {id, policy, fingerprint: bool, would_stop: bool,
//  summary: {unchanged, changed_by_update, conflict, missing, added},
//  entries: [{path, change, action, type, beside?}] (unchanged paths omitted),
//  conflicts: [path], not_restored: [path], warnings: [..]}
[[nodiscard]] nlohmann::json ToJson(const Plan& plan);

// {rollback_id, id, pre_rollback_id, policy, dry_run, record_dir, restored, written_beside,
//  moved_aside, changed_roots, differences, restarts: [restart::ToJson], errors, plan}
[[nodiscard]] nlohmann::json ToJson(const Report& report);

// Human-readable plan (one line per changed path, then a summary).
[[nodiscard]] std::string Describe(const Plan& plan);

}  // namespace safepoint::rollback
