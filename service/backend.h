#pragma once

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "core/base/result.h"
#include "core/format/manifest.h"
#include "core/sources/entities.h"
#include "core/sources/snapshot.h"
#include "core/store/store.h"
#include "service/lifecycle.h"
#include "service/operations.h"

namespace safepoint::service {

// What the service asks of the store and the rollback engine. The daemon calls every method
// from its worker thread, one at a time (List also from the state thread: it only reads).
class Backend {
 public:
  virtual ~Backend() = default;
  [[nodiscard]] virtual Result<manifest::Manifest> Backup(
      const std::string& reason, const std::optional<manifest::UpdateRef>& update,
      const store::ProgressFn& progress, const entities::EntitySnapshot& entities,
      const snapshot::LiveState& live) = 0;
  [[nodiscard]] virtual Status Delete(const std::string& id) = 0;
  [[nodiscard]] virtual Result<std::vector<store::Listing>> List() = 0;
  [[nodiscard]] virtual Result<std::vector<Operations::VerifyResult>> Verify(
      const std::vector<std::string>& ids) = 0;
  // Applies retention; never deletes a safety point for which `in_use` returns true.
  [[nodiscard]] virtual Result<store::PruneReport> Prune(
      std::function<bool(const std::string& id)> in_use) = 0;
  // Records the post-update fingerprint of safety point `id`; with `keep_existing`, one that
  // is already recorded stays as it is.
  [[nodiscard]] virtual Status RecordFingerprint(const std::string& id, bool keep_existing) = 0;
  // Rolls back to `id`. A journaled rollback a crash interrupted is completed (or reverted)
  // first; after a service restart that is the one being resumed, and this call then finds
  // nothing left to do or redoes what was reverted.
  [[nodiscard]] virtual RollbackOutcome Rollback(const std::string& id, ConflictPolicy policy,
                                                 const store::ProgressFn& progress) = 0;
  // What changed in the files since safety point `id` (all, or `path` and below), with the
  // hunks when `hunks` is set (secrets masked).
  [[nodiscard]] virtual Result<diff::Report> ContentDiff(const std::string& id,
                                                         const std::optional<std::string>& path,
                                                         bool hunks) = 0;
  // The entity states stored in safety point `id` (decrypts it).
  [[nodiscard]] virtual Result<entities::EntitySnapshot> EntitiesOf(const std::string& id) = 0;
  // Completes or reverts a rollback a crash interrupted (at service start).
  [[nodiscard]] virtual Status RecoverInterrupted() = 0;
  // What recovery did since the last call, one line per action: at start, and in any operation
  // that writes (each finishes interrupted rollbacks first). Empty when there was nothing.
  [[nodiscard]] virtual std::vector<std::string> TakeRecoveryNotes() = 0;
};

// `backend` with every exception it throws (std::bad_alloc above all) turned into an error of
// that call (kInternal, "<operation>: out of memory" or "<operation>: internal error: <what>"),
// so a failing operation is reported like any other and never ends the service. The daemon
// wraps whatever backend it is given.
std::unique_ptr<Backend> ExceptionSafe(std::unique_ptr<Backend> backend);

// The real backend: Operations (store, locking, passphrase) and the rollback engine.
std::unique_ptr<Backend> MakeBackend(const config::Config& config, FileSystem& fs,
                                     const Clock& clock);

}  // namespace safepoint::service
