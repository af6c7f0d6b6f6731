#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/config/config.h"
#include "core/sources/entities.h"
#include "core/sources/sources.h"
#include "core/store/store.h"

namespace safepoint::snapshot {

// Everything a safety point of `config` archives, in archive order:
//   ha_config/...                 the Home Assistant configuration tree
//   workspace/...                 the agent's knowledge files
//   environment/environment.json  allow-listed variables and installed Python packages
//   logs/<name>                   the last N lines of each configured log
//   state/entities.json           the entity mirror (when `entities_file` is given: the file
//                                 entities::WriteJsonFile wrote; read at backup time, streaming)
//   state/zigbee2mqtt_backup.zip  Zigbee2MQTT's own backup (when `live` has it)
// Files are read later, by Store::Backup; generated entries carry their content.
// Collection warnings (skipped files, missing log) are returned in `warnings`, after
// `live.warnings`.
struct LiveState {
  // The zip Zigbee2MQTT returned for bridge/request/backup.
  std::optional<std::string> zigbee2mqtt_backup;
  // What could not be captured live (e.g. no answer from Zigbee2MQTT).
  std::vector<std::string> warnings;
};

inline constexpr std::string_view kZigbee2MqttBackupPath = "state/zigbee2mqtt_backup.zip";

[[nodiscard]] Result<store::BackupRequest> Collect(const config::Config& config,
                                                   const std::optional<std::string>& entities_file,
                                                   const LiveState& live = {});

// Collect, from a walk of the trees already made (sources::CollectFiles(config)), so that the
// walk can run on another thread (rollback::internal::LiveCollection).
[[nodiscard]] Result<store::BackupRequest> CollectWalked(
    const config::Config& config, sources::Collection files,
    const std::optional<std::string>& entities_file, const LiveState& live = {});

}  // namespace safepoint::snapshot
