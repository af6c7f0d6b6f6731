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
  [[nodiscard]] Result<std::size_t> Extract(const std::string& id, const std::string& dest,
                                            const std::vector<std::string>& paths);
  [[nodiscard]] Status Decrypt(const std::string& id, ByteSink& out);
  [[nodiscard]] Status Delete(const std::string& id);
  // Applies config.retention. `in_use` (optional) names safety points that must stay (see
  // store::Retention::in_use).
  [[nodiscard]] Result<store::PruneReport> Prune(
      std::function<bool(const std::string& id)> in_use = {});

  // The exclusive store lock, after completing any interrupted rollback and removing the
  // leftovers of interrupted writers.
  [[nodiscard]] Result<store::StoreLock> LockExclusive();

 private:
  const config::Config& config_;
  FileSystem& fs_;
  store::Store store_;
};

// Store options from the configuration.
[[nodiscard]] store::Options StoreOptionsFor(const config::Config& config);
// The summary of a new safety point (CLI --json, MQTT responses and events).
[[nodiscard]] nlohmann::json SummaryJson(const manifest::Manifest& m, const store::Store& store);

}  // namespace safepoint::service
