#include "core/rollback/fingerprint.h"

#include <sodium.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <initializer_list>
#include <limits>
#include <vector>

#include "core/base/file_time.h"
#include "core/base/io.h"
#include "core/base/json_int.h"
#include "core/base/json_name.h"
#include "core/base/sha256.h"
#include "core/base/time_text.h"
#include "core/base/utf8.h"
#include "core/sources/snapshot.h"
#include "core/sources/sources.h"

namespace safepoint::rollback {

namespace {

using nlohmann::json;

constexpr std::size_t kHashBuffer = std::size_t{256} * 1024;
constexpr std::size_t kMaxFingerprintBytes = 256u << 20;

// HMAC-SHA-256(key, parts joined by NUL bytes), lowercase hex.
std::string Mac(const Secret& key, std::initializer_list<std::string_view> parts) {
  crypto_auth_hmacsha256_state state;
  crypto_auth_hmacsha256_init(&state, key.bytes().data(), key.size());
  bool first = true;
  for (std::string_view part : parts) {
    if (!first) {
      const unsigned char zero = 0;
      crypto_auth_hmacsha256_update(&state, &zero, 1);
    }
    first = false;
    crypto_auth_hmacsha256_update(&state, reinterpret_cast<const unsigned char*>(part.data()),
                                  part.size());
  }
  std::array<unsigned char, crypto_auth_hmacsha256_BYTES> out{};
  crypto_auth_hmacsha256_final(&state, out.data());
  sodium_memzero(&state, sizeof state);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string hex;
  hex.reserve(out.size() * 2);
  for (unsigned char b : out) {
    hex.push_back(kHex[b >> 4]);
    hex.push_back(kHex[b & 15]);
  }
  return hex;
}

// The bytes a state MAC covers: every field PathState compares, NUL-separated (a link target
// holds no NUL).
std::string Canonical(const PathState& s) {
  return std::string(manifest::EntryTypeName(s.type)) + '\0' + std::to_string(s.size) + '\0' +
         s.sha256 + '\0' + std::to_string(s.mode) + '\0' + s.link_target;
}

std::string PathMac(const Secret& key, const std::string& path) { return Mac(key, {"path", path}); }
// Format 3 covers the owner too (`owner`); format 2 did not (nullptr).
std::string StateMac(const Secret& key, const std::string& path, const PathState& s,
                     const Owner* owner) {
  if (owner == nullptr) return Mac(key, {"state", path, Canonical(s)});
  return Mac(
      key, {"state", path,
            Canonical(s) + '\0' + std::to_string(owner->uid) + '\0' + std::to_string(owner->gid)});
}

bool IsHex64(const std::string& s) {
  return s.size() == 64 && std::all_of(s.begin(), s.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

std::optional<manifest::EntryType> TypeFromName(std::string_view name) {
  if (name == "file") return manifest::EntryType::kFile;
  if (name == "symlink") return manifest::EntryType::kSymlink;
  if (name == "dir") return manifest::EntryType::kDirectory;  // manifest::EntryTypeName
  return std::nullopt;
}

}  // namespace

PathState StateOf(const manifest::Entry& e) {
  PathState s;
  s.type = e.type;
  switch (e.type) {
    case manifest::EntryType::kFile:
      s.size = e.size;
      s.sha256 = e.sha256;
      s.mode = e.mode & 07777;
      break;
    case manifest::EntryType::kDirectory:
      s.mode = e.mode & 07777;
      break;
    case manifest::EntryType::kSymlink:
      s.link_target = e.link_target;
      break;
  }
  return s;
}

std::optional<std::string> LocalPathOf(const config::Config& config,
                                       std::string_view archive_path) {
  auto slash = archive_path.find('/');
  std::string_view top = archive_path.substr(0, slash);
  std::string_view rel =
      slash == std::string_view::npos ? std::string_view() : archive_path.substr(slash + 1);
  const std::string* root = nullptr;
  if (top == "ha_config") root = &config.paths.ha_config;
  if (top == "workspace") root = &config.paths.workspace;
  if (root == nullptr) return std::nullopt;
  if (rel.empty()) return *root;
  return *root + "/" + std::string(rel);
}

namespace {

struct Hashed {
  std::string sha256;
  std::uint64_t size = 0;  // the bytes hashed
};

Result<Hashed> HashCounted(const std::string& path) {
  auto file = ReadOnlyFile::Open(path);
  if (!file) return tl::unexpected(file.error());
  Sha256 hash;
  std::uint64_t size = 0;
  std::vector<std::uint8_t> buf(static_cast<std::size_t>(
      std::min<std::uint64_t>(kHashBuffer, std::max<std::uint64_t>(file->size() + 1, 4096))));
  for (;;) {
    ssize_t n = ::read(file->fd(), buf.data(), buf.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return tl::unexpected(ErrnoError(errno, "read", path));
    }
    if (n == 0) break;
    hash.Update(std::span<const std::uint8_t>(buf.data(), static_cast<std::size_t>(n)));
    size += static_cast<std::uint64_t>(n);
  }
  return Hashed{hash.FinalHex(), size};
}

// Describes what lstat(2) found at `path`; files are hashed.
Result<PathState> StateAt(const std::string& path, const struct stat& st) {
  PathState s;
  if (S_ISLNK(st.st_mode)) {
    s.type = manifest::EntryType::kSymlink;
    std::string target(static_cast<std::size_t>(st.st_size) + 1, '\0');
    for (;;) {
      ssize_t n = ::readlink(path.c_str(), target.data(), target.size());
      if (n < 0) return tl::unexpected(ErrnoError(errno, "readlink", path));
      if (static_cast<std::size_t>(n) < target.size()) {
        target.resize(static_cast<std::size_t>(n));
        break;
      }
      target.resize(target.size() * 2);
    }
    s.link_target = std::move(target);
  } else if (S_ISDIR(st.st_mode)) {
    s.type = manifest::EntryType::kDirectory;
    s.mode = st.st_mode & 07777;
  } else if (S_ISREG(st.st_mode)) {
    s.type = manifest::EntryType::kFile;
    s.mode = st.st_mode & 07777;
    auto hashed = HashCounted(path);
    if (!hashed) return tl::unexpected(hashed.error());
    s.sha256 = std::move(hashed->sha256);
    s.size = hashed->size;  // what was hashed, not what the earlier lstat said
  } else {
    // A fifo, socket or device is never restored over; it counts as "something else".
    s.type = manifest::EntryType::kFile;
    s.mode = st.st_mode & 07777;
    s.sha256 = "special";
  }
  return s;
}

}  // namespace

Result<std::string> HashFile(const std::string& path) {
  auto hashed = HashCounted(path);
  if (!hashed) return tl::unexpected(hashed.error());
  return std::move(hashed->sha256);
}

Result<std::optional<PathState>> ReadPathState(const std::string& root, const std::string& rel) {
  return LiveTreeReader().Read(root, rel);
}

bool StampHolds(const manifest::Entry& entry, const struct stat& st) {
  if (!entry.stamp || entry.type != manifest::EntryType::kFile || !S_ISREG(st.st_mode)) {
    return false;
  }
  const manifest::Stamp& s = *entry.stamp;
  // A time that 64-bit nanoseconds do not hold is never stamped, so never matches.
  const auto mtime_ns = NanosSinceEpoch(st.st_mtim);
  const auto ctime_ns = NanosSinceEpoch(st.st_ctim);
  return static_cast<std::uint64_t>(st.st_dev) == s.dev &&
         static_cast<std::uint64_t>(st.st_ino) == s.ino &&
         static_cast<std::uint64_t>(st.st_size) == entry.size && mtime_ns && ctime_ns &&
         *mtime_ns == s.mtime_ns && *ctime_ns == s.ctime_ns;
}

Result<std::optional<PathState>> LiveTreeReader::Read(const std::string& root,
                                                      const std::string& rel,
                                                      const manifest::Entry* recorded,
                                                      Owner* owner) {
  std::string path = root;
  struct stat st {};
  std::size_t pos = 0;
  for (;;) {
    const bool last = pos >= rel.size();
    if (last || real_dirs_.count(path) == 0) {
      if (::lstat(path.c_str(), &st) != 0) {
        if (errno == ENOENT || errno == ENOTDIR) return std::optional<PathState>();
        return tl::unexpected(ErrnoError(errno, "stat", path));
      }
      if (last) break;
      // A component that is not a real directory hides everything below it.
      if (!S_ISDIR(st.st_mode)) return std::optional<PathState>();
      real_dirs_.insert(path);
    }
    std::size_t next = rel.find('/', pos);
    if (next == std::string::npos) next = rel.size();
    path += '/';
    path.append(rel, pos, next - pos);
    pos = next + 1;
  }
  if (owner != nullptr) *owner = Owner{st.st_uid, st.st_gid};
  if (recorded != nullptr && StampHolds(*recorded, st)) {
    ++files_trusted_;
    return std::optional<PathState>(PathState{manifest::EntryType::kFile, recorded->size,
                                              recorded->sha256, st.st_mode & 07777u, ""});
  }
  if (S_ISREG(st.st_mode)) ++files_hashed_;
  auto state = StateAt(path, st);
  if (!state) return tl::unexpected(state.error());
  return std::optional<PathState>(std::move(*state));
}

bool Fingerprint::Matches(const std::string& path, const PathState& state,
                          const std::optional<Owner>& owner) const {
  if (!is_keyed) {
    auto it = paths.find(path);
    return it != paths.end() && it->second == state;
  }
  if (!key || key->empty()) return false;
  if (with_owners && !owner) return false;
  auto it = keyed.find(PathMac(*key, path));
  const std::string mac = StateMac(*key, path, state, with_owners ? &*owner : nullptr);
  return it != keyed.end() && sodium_memcmp(it->second.data(), mac.data(), it->second.size()) == 0;
}

json ToJson(const Fingerprint& f) {
  if (f.is_keyed) {
    json entries = json::object();
    for (const auto& [path_mac, state_mac] : f.keyed) entries[path_mac] = state_mac;
    return {{"format", f.with_owners ? 3 : 2},
            {"id", f.id},
            {"recorded_at", f.recorded_at},
            {"mac", "hmac-sha256"},
            {"entries", entries}};
  }
  json entries = json::array();
  for (const auto& [path, s] : f.paths) {
    json e = json::object();
    PutName(e, "path", path);
    e["type"] = manifest::EntryTypeName(s.type);
    switch (s.type) {
      case manifest::EntryType::kFile:
        e["size"] = s.size;
        e["sha256"] = s.sha256;
        e["mode"] = s.mode;
        break;
      case manifest::EntryType::kDirectory:
        e["mode"] = s.mode;
        break;
      case manifest::EntryType::kSymlink:
        PutName(e, "link_target", s.link_target);
        break;
    }
    entries.push_back(std::move(e));
  }
  return {{"format", 1}, {"id", f.id}, {"recorded_at", f.recorded_at}, {"entries", entries}};
}

Result<Fingerprint> ParseFingerprint(std::string_view text) {
  try {
    json j = json::parse(text);
    const int format = IntegerField<int>(j, "format");
    if (format < 1 || format > 3) {
      return Fail(ErrorCode::kCorrupt, "fingerprint: unsupported format");
    }
    Fingerprint f;
    f.id = j.at("id").get<std::string>();
    f.recorded_at = j.at("recorded_at").get<std::string>();
    if (format >= 2) {
      f.with_owners = format == 3;
      if (j.at("mac").get<std::string>() != "hmac-sha256") {
        return Fail(ErrorCode::kCorrupt, "fingerprint: unknown MAC");
      }
      f.is_keyed = true;
      const json& entries = j.at("entries");
      if (!entries.is_object()) return Fail(ErrorCode::kCorrupt, "fingerprint: entries");
      for (const auto& [path_mac, state_mac] : entries.items()) {
        if (!state_mac.is_string() || !IsHex64(path_mac) ||
            !IsHex64(state_mac.get<std::string>())) {
          return Fail(ErrorCode::kCorrupt, "fingerprint: an entry is not two HMAC-SHA-256");
        }
        f.keyed[path_mac] = state_mac.get<std::string>();
      }
      return f;
    }
    for (const auto& e : j.at("entries")) {
      PathState s;
      const auto type = TypeFromName(e.at("type").get<std::string>());
      if (!type) return Fail(ErrorCode::kCorrupt, "fingerprint: unknown entry type");
      s.type = *type;
      auto path_or = GetName(e, "path", "fingerprint");
      if (!path_or) return tl::unexpected(path_or.error());
      const std::string path = std::move(*path_or);
      SP_RETURN_IF_ERROR(manifest::CheckArchivePath(path));
      switch (s.type) {
        case manifest::EntryType::kFile:
          s.size = IntegerField<std::uint64_t>(e, "size");
          s.sha256 = e.at("sha256").get<std::string>();
          s.mode = IntegerField<std::uint32_t>(e, "mode");
          break;
        case manifest::EntryType::kDirectory:
          s.mode = IntegerField<std::uint32_t>(e, "mode");
          break;
        case manifest::EntryType::kSymlink:
          if (auto t = GetName(e, "link_target", "fingerprint"); t) {
            s.link_target = std::move(*t);
          } else {
            return tl::unexpected(t.error());
          }
          break;
      }
      f.paths[path] = std::move(s);
    }
    return f;
  } catch (const json::exception& e) {
    return Fail(ErrorCode::kCorrupt, std::string("fingerprint: ") + e.what());
  }
}

Status RecordFingerprint(const config::Config& config, const store::Store& store, FileSystem& fs,
                         const Clock& clock, const Secret& passphrase, const std::string& id) {
  Secret key;
  auto m = store.Load(id, passphrase, &key);
  if (!m) return tl::unexpected(m.error());
  auto files = sources::CollectFiles(config);
  if (!files) return tl::unexpected(files.error());
  Fingerprint f;
  f.id = id;
  f.recorded_at = FormatUtcSecondsTime(clock.Now());
  // The safety point's entries by path: a file still showing its recorded stamp is not read.
  std::vector<const manifest::Entry*> recorded;
  recorded.reserve(m->entries.size());
  for (const auto& e : m->entries) recorded.push_back(&e);
  std::sort(recorded.begin(), recorded.end(),
            [](const manifest::Entry* a, const manifest::Entry* b) { return a->path < b->path; });
  auto recorded_entry = [&](const std::string& path) -> const manifest::Entry* {
    auto it = std::lower_bound(
        recorded.begin(), recorded.end(), path,
        [](const manifest::Entry* e, const std::string& p) { return e->path < p; });
    return it != recorded.end() && (*it)->path == path ? *it : nullptr;
  };
  LiveTreeReader live;
  for (const auto& e : files->entries) {
    auto local = LocalPathOf(config, e.archive_path);
    if (!local) continue;
    const bool ha = e.archive_path.starts_with("ha_config/");
    const std::string& root = ha ? config.paths.ha_config : config.paths.workspace;
    Owner owner;
    auto state = live.Read(root, e.archive_path.substr(e.archive_path.find('/') + 1),
                           recorded_entry(e.archive_path), &owner);
    if (!state) return tl::unexpected(state.error());
    if (!*state) continue;  // gone since it was listed
    if (key.empty()) {
      f.paths[e.archive_path] = std::move(**state);
    } else {
      f.keyed[PathMac(key, e.archive_path)] = StateMac(key, e.archive_path, **state, &owner);
    }
  }
  f.is_keyed = !key.empty();
  f.with_owners = f.is_keyed;
  return WriteFileAtomically(fs, store.DirOf(id) + "/" + std::string(kFingerprintName),
                             ToJson(f).dump(1) + "\n", 0600);
}

namespace {

// As the store checks an id argument: quoted as names are (control bytes as \ooo, one line).
Status CheckId(const std::string& id) {
  if (manifest::IsValidId(id)) return {};
  return Fail(ErrorCode::kBadInput, "'" + QuoteName(id.substr(0, 64)) +
                                        "' is not a safety point id (expected YYYY-MM-DD_HH-MM-SS)");
}

}  // namespace

Result<bool> FingerprintRecorded(const store::Store& store, const std::string& id) {
  SP_RETURN_IF_ERROR(CheckId(id));
  const std::string path = store.DirOf(id) + "/" + std::string(kFingerprintName);
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0) return true;
  if (errno == ENOENT) return false;
  return Fail(ErrorCode::kIo, path + ": " + std::strerror(errno));
}

Result<std::optional<Fingerprint>> LoadFingerprint(const store::Store& store, const std::string& id,
                                                   Secret key) {
  SP_RETURN_IF_ERROR(CheckId(id));
  const std::string path = store.DirOf(id) + "/" + std::string(kFingerprintName);
  auto text = ReadFileBounded(path, kMaxFingerprintBytes);
  if (!text) {
    if (text.error().code == ErrorCode::kNotFound) return std::optional<Fingerprint>();
    struct stat st {};
    if (::lstat(path.c_str(), &st) != 0 && errno == ENOENT) return std::optional<Fingerprint>();
    return tl::unexpected(text.error());
  }
  auto f = ParseFingerprint(*text);
  if (!f) return Fail(ErrorCode::kCorrupt, path + ": " + f.error().message);
  if (f->id != id) return Fail(ErrorCode::kCorrupt, path + ": belongs to safety point " + f->id);
  if (f->is_keyed) {
    if (key.empty())
      return Fail(ErrorCode::kCorrupt, path + ": keyed, but its safety point has no key");
    f->key = std::make_shared<const Secret>(std::move(key));
  }
  return std::optional<Fingerprint>(std::move(*f));
}

}  // namespace safepoint::rollback
