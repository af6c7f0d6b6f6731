#include "core/sources/snapshot.h"

#include <unistd.h>

#include <chrono>

#include "core/base/paths.h"
#include "core/base/utf8.h"
#include "core/sources/sources.h"

namespace safepoint::snapshot {

namespace {

store::InputEntry Generated(const std::string& path, std::string content, std::int64_t mtime) {
  store::InputEntry e;
  e.header.path = path;
  e.header.type = manifest::EntryType::kFile;
  e.header.size = content.size();
  e.header.mode = 0600;
  e.header.mtime = mtime;
  e.header.uid = static_cast<std::uint32_t>(::getuid());
  e.header.gid = static_cast<std::uint32_t>(::getgid());
  e.content = std::move(content);
  return e;
}

}  // namespace

Result<store::BackupRequest> Collect(const config::Config& config,
                                     const std::optional<std::string>& entities_file,
                                     const LiveState& live) {
  auto files = sources::CollectFiles(config);
  if (!files) return tl::unexpected(files.error());
  return CollectWalked(config, std::move(*files), entities_file, live);
}

Result<store::BackupRequest> CollectWalked(const config::Config& config, sources::Collection files,
                                           const std::optional<std::string>& entities_file,
                                           const LiveState& live) {
  store::BackupRequest request;
  // Read where they are: files are opened without following any symlink on their path
  // (FileSystem::OpenRead), and a root the user configured may well be reached through one.
  request.roots = {{"ha_config", ResolvedPath(config.paths.ha_config)},
                   {"workspace", ResolvedPath(config.paths.workspace)}};
  for (const auto& w : live.warnings) request.warnings.push_back(SanitizeUtf8(w));
  for (const auto& w : files.warnings) request.warnings.push_back(SanitizeUtf8(w));
  const auto now = std::chrono::duration_cast<std::chrono::seconds>(
                       std::chrono::system_clock::now().time_since_epoch())
                       .count();
  auto env = sources::CaptureEnvironment(config);
  if (!env) return tl::unexpected(env.error());
  auto logs = sources::CaptureLogs(config);
  if (!logs) return tl::unexpected(logs.error());
  // Exactly as many as are added below, not a vector grown to up to twice the tree's size.
  request.entries.reserve(files.entries.size() + 1 + logs->logs.size() + (entities_file ? 1 : 0) +
                          (live.zigbee2mqtt_backup ? 1 : 0));
  for (auto& s : files.entries) {
    store::InputEntry e;
    // Copied, not moved: the walk's strings are then all freed together and their pages can go
    // back to the system before scrypt starts (moved, they would stay interleaved with the
    // freed absolute paths).
    e.header.path = s.archive_path;
    switch (s.kind) {
      case sources::SourceEntry::Kind::kFile:
        e.header.type = manifest::EntryType::kFile;
        break;
      case sources::SourceEntry::Kind::kSymlink:
        e.header.type = manifest::EntryType::kSymlink;
        break;
      case sources::SourceEntry::Kind::kDirectory:
        e.header.type = manifest::EntryType::kDirectory;
        break;
    }
    e.header.size = s.size;
    e.header.mode = s.mode & 07777;
    e.header.mtime = s.mtime;
    e.header.uid = s.uid;
    e.header.gid = s.gid;
    e.header.link_target = std::move(s.link_target);
    // No path of its own: it was found at its root joined with the rest of its archive path,
    // which is where SourcePath reads it from (the walk's roots are request.roots).
    // A link whose target leaves its root is kept out: a restore could never write it safely.
    if (e.header.type == manifest::EntryType::kSymlink) {
      if (auto st = manifest::CheckLinkTarget(e.header.path, e.header.link_target); !st) {
        request.warnings.push_back(
            "skipped " + QuoteName(SourcePath(request, e)) + ": " + SanitizeUtf8(st.error().message));
        continue;
      }
    }
    request.entries.push_back(std::move(e));
  }

  request.entries.push_back(
      Generated("environment/environment.json",
                env->dump(1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n", now));

  for (auto& w : logs->warnings) request.warnings.push_back(SanitizeUtf8(w));
  for (auto& log : logs->logs) {
    request.entries.push_back(Generated(log.archive_path, std::move(log.text), now));
  }

  if (entities_file) {
    // Written beforehand, streaming (it can be as large as the mirror); the store reads it.
    store::InputEntry e = Generated("state/entities.json", std::string(), now);
    e.content.reset();
    e.abs_path = ResolvedPath(*entities_file);
    request.entries.push_back(std::move(e));
  }
  if (live.zigbee2mqtt_backup) {
    request.entries.push_back(
        Generated(std::string(kZigbee2MqttBackupPath), *live.zigbee2mqtt_backup, now));
  }
  return request;
}

}  // namespace safepoint::snapshot
