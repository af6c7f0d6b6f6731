#pragma once

#include <optional>

#include "core/config.h"
#include "core/entities.h"
#include "core/store.h"

namespace safepoint::snapshot {

// Everything a safety point of `config` archives, in archive order:
//   ha_config/...                 the Home Assistant configuration tree
//   workspace/...                 the agent's knowledge files
//   environment/environment.json  allow-listed variables and installed Python packages
//   logs/<name>                   the last N lines of each configured log
//   state/entities.json           the entity mirror (when `entities` is given)
// Files are read later, by Store::Backup; generated entries carry their content.
// Collection warnings (skipped files, missing log) are returned in `warnings`.
[[nodiscard]] Result<store::BackupRequest> Collect(
    const config::Config& config, const std::optional<entities::EntitySnapshot>& entities);

}  // namespace safepoint::snapshot
