#include "core/store/store.h"

#include <dirent.h>
#include <fcntl.h>
#include <malloc.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <system_error>
#include <thread>
#include <utility>

#include "core/base/sha256.h"
#include "core/base/time_text.h"
#include "core/base/utf8.h"
#include "core/format/age.h"
#include "core/store/store_internal.h"

namespace safepoint::store {

using internal::kDelPrefix;
using internal::kTmpPrefix;

namespace {

int IdSuffix(const std::string& id) {
  if (id.size() <= 19) return 1;
  return std::atoi(id.c_str() + 20);
}

}  // namespace

namespace internal {

Status CheckIdArg(const std::string& id) {
  if (!manifest::IsValidId(id)) {
    // Quoted as names are (docs/cli.md, "Names"): control bytes as \ooo, on one line.
    return Fail(ErrorCode::kBadInput,
                "'" + QuoteName(id.substr(0, 64)) +
                    "' is not a safety point id (expected YYYY-MM-DD_HH-MM-SS)");
  }
  return {};
}

}  // namespace internal

using internal::CheckIdArg;

bool IdLess(const std::string& a, const std::string& b) {
  std::string_view base_a = std::string_view(a).substr(0, 19);
  std::string_view base_b = std::string_view(b).substr(0, 19);
  if (base_a != base_b) return base_a < base_b;
  return IdSuffix(a) < IdSuffix(b);
}

StoreLock::StoreLock(StoreLock&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)), mode_(other.mode_) {}

StoreLock& StoreLock::operator=(StoreLock&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = std::exchange(other.fd_, -1);
    mode_ = other.mode_;
  }
  return *this;
}

StoreLock::~StoreLock() {
  if (fd_ >= 0) ::close(fd_);  // closing releases the flock
}

Store::Store(Options options, FileSystem& fs, const Clock& clock)
    : options_(std::move(options)), fs_(fs), clock_(clock) {}

std::string SourcePath(const BackupRequest& request, const InputEntry& entry) {
  if (!entry.abs_path.empty()) return entry.abs_path;
  const std::string& path = entry.header.path;
  for (const SourceRoot& root : request.roots) {
    if (path.size() > root.name.size() + 1 && path.compare(0, root.name.size(), root.name) == 0 &&
        path[root.name.size()] == '/') {
      return root.dir + path.substr(root.name.size());
    }
  }
  return {};
}

std::string Store::DirOf(const std::string& id) const { return options_.backup_dir + "/" + id; }

Status Store::Prepare(bool read_only) {
  const std::string& dir = options_.backup_dir;
  if (dir.empty()) return Fail(ErrorCode::kBadInput, "backup dir is not set");
  struct stat st {};
  if (::lstat(dir.c_str(), &st) == 0) {
    if (S_ISLNK(st.st_mode)) {
      return Fail(ErrorCode::kBadInput, "backup dir " + dir + " is a symlink; refusing to use it");
    }
    if (!S_ISDIR(st.st_mode)) {
      return Fail(ErrorCode::kBadInput, "backup dir " + dir + " is not a directory");
    }
    // A reader changes nothing (the store may be a read-only mount); a writer fixes the mode.
    if (!read_only && (st.st_mode & 07777) != 0700) SP_RETURN_IF_ERROR(fs_.Chmod(dir, 0700));
    return {};
  }
  if (errno != ENOENT) return tl::unexpected(ErrnoError(errno, "stat", dir));
  // A reader finds no safety points in a directory that does not exist; it makes none (a
  // mistyped path, a read-only mount).
  if (read_only) return {};
  const auto parent = std::filesystem::path(dir).parent_path();
  if (!parent.empty()) SP_RETURN_IF_ERROR(MakeDirs(fs_, parent.string(), 0755));
  SP_RETURN_IF_ERROR(fs_.MakeDir(dir, 0700));
  if (!parent.empty()) SP_RETURN_IF_ERROR(fs_.SyncDir(parent.string()));
  return {};
}

Result<StoreLock> Store::Lock(LockMode mode) {
  const bool shared = mode == LockMode::kShared;
  SP_RETURN_IF_ERROR(Prepare(/*read_only=*/shared));
  std::string path = options_.backup_dir + "/.lock";
  // flock(2) takes a shared lock through a read-only descriptor too, so a reader needs no
  // write access to an existing lock file.
  // O_NONBLOCK: a FIFO in its place must not make a command wait (it is refused below).
  constexpr int kFlags = O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK;
  int fd = shared ? ::open(path.c_str(), O_RDONLY | kFlags) : -1;
  if (fd < 0 && (!shared || errno == ENOENT)) {
    fd = ::open(path.c_str(), O_CREAT | O_RDWR | kFlags, 0600);
    // No lock file, and none can be made (a read-only mount, a directory the reader may not
    // write): no safepoint has written here since the directory was made, and none can on a
    // read-only mount, so a reader goes on without one.
    // Nor when the backup dir does not exist: there is nothing to read.
    if (fd < 0 && shared && (errno == EROFS || errno == EACCES || errno == ENOENT)) {
      return StoreLock(-1, mode);
    }
  }
  if (fd < 0) return tl::unexpected(ErrnoError(errno, "open", path));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return Fail(ErrorCode::kBadInput, path + " is not a regular file; remove it");
  }
  int op = (mode == LockMode::kExclusive ? LOCK_EX : LOCK_SH) | LOCK_NB;
  if (::flock(fd, op) != 0) {
    int err = errno;
    ::close(fd);
    if (err == EWOULDBLOCK) {
      return Fail(ErrorCode::kBusy, "another safepoint operation is using " + options_.backup_dir +
                                        "; try again when it has finished");
    }
    return tl::unexpected(ErrnoError(err, "lock", path));
  }
  return StoreLock(fd, mode);
}

Status Store::CleanLeftovers() {
  DIR* d = ::opendir(options_.backup_dir.c_str());
  if (d == nullptr) {
    if (errno == ENOENT) return {};
    return tl::unexpected(ErrnoError(errno, "open", options_.backup_dir));
  }
  std::vector<std::string> leftovers;
  while (struct dirent* e = ::readdir(d)) {
    std::string_view name = e->d_name;
    if (name.starts_with(kTmpPrefix) || name.starts_with(kDelPrefix)) {
      leftovers.emplace_back(name);
    }
  }
  ::closedir(d);
  for (const auto& name : leftovers) {
    SP_RETURN_IF_ERROR(fs_.RemoveTree(options_.backup_dir + "/" + name));
  }
  if (!leftovers.empty()) SP_RETURN_IF_ERROR(fs_.SyncDir(options_.backup_dir));
  return {};
}

Status Store::Delete(const std::string& id) {
  SP_RETURN_IF_ERROR(CheckIdArg(id));
  const std::string dir = DirOf(id);
  struct stat st {};
  if (::lstat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return Fail(ErrorCode::kNotFound, "no safety point " + id);
  }
  const std::string gone = options_.backup_dir + "/" + std::string(kDelPrefix) + id;
  {
    // Its id may be given to a new safety point within the same second.
    std::lock_guard lock(written_mu_);
    if (written_id_ == id) {
      written_id_.clear();
      written_key_ = Secret();
    }
  }
  SP_RETURN_IF_ERROR(fs_.Rename(dir, gone));
  SP_RETURN_IF_ERROR(fs_.SyncDir(options_.backup_dir));
  SP_RETURN_IF_ERROR(fs_.RemoveTree(gone));
  return {};
}

void Store::RememberWritten(const std::string& id, const Secret& file_key) {
  std::lock_guard lock(written_mu_);
  written_id_ = id;
  written_key_ = Secret(file_key.view());
}

std::pair<std::string, Secret> Store::TakeWritten() {
  std::lock_guard lock(written_mu_);
  std::pair<std::string, Secret> out(std::move(written_id_), std::move(written_key_));
  written_id_.clear();
  written_key_ = Secret();
  return out;
}

Result<std::string> Store::NewestThatVerifies(const std::vector<Listing>& newest_first,
                                              const std::string& written_id,
                                              const Secret& written_key,
                                              const Secret& passphrase) const {
  std::optional<Error> first_error;
  for (const auto& l : newest_first) {
    if (!l.manifest) continue;
    // A remembered key that does not open the point (another process deleted it and wrote
    // another under the same id) proves nothing: the passphrase decides, as for any other.
    if (l.id == written_id && !written_key.empty() && Verify(l.id, passphrase, &written_key)) {
      return l.id;
    }
    auto verified = Verify(l.id, passphrase);
    if (verified) return l.id;
    if (!first_error) first_error = verified.error();
  }
  // None verifies (a passphrase that changed in the secrets file, damage to every one): the
  // ones retention would delete may be the only ones that can still be opened.
  const ErrorCode code = first_error ? first_error->code : ErrorCode::kCorrupt;
  return Fail(code, "retention deleted nothing: no safety point verifies" +
                        (first_error ? " (newest: " + first_error->message + ")" : ""));
}

Result<PruneReport> Store::Prune(const Retention& retention, const Secret& passphrase) {
  // Taken first: whatever happens below, the key is not kept for later.
  const auto [written_id, written_key] = TakeWritten();
  auto all = List();
  if (!all) return tl::unexpected(all.error());
  // Newest first.
  const std::vector<Listing> items(all->rbegin(), all->rend());
  // The safety points retention keeps when `protected_id` (may be "") must stay.
  auto keep_set = [&](const std::string& protected_id) {
    std::set<std::string> keep;
    if (!protected_id.empty()) keep.insert(protected_id);
    for (std::size_t i = 0; i < items.size() && static_cast<int>(i) < retention.keep_last; ++i) {
      keep.insert(items[i].id);
    }
    std::set<std::string> days;
    for (const auto& l : items) {
      std::string day = l.id.substr(0, 10);
      if (days.count(day) != 0) continue;
      if (static_cast<int>(days.size()) >= retention.keep_daily) break;
      days.insert(day);
      keep.insert(l.id);  // the newest of that day
    }
    if (retention.max_total_bytes > 0) {
      // Oldest kept ones go first until the kept set fits; the protected one always stays.
      std::uint64_t total = 0;
      for (const auto& l : items) {
        if (keep.count(l.id) != 0 && l.manifest) total += l.manifest->payload->size;
      }
      for (auto it = items.rbegin(); it != items.rend() && total > retention.max_total_bytes;
           ++it) {
        if (keep.count(it->id) == 0 || it->id == protected_id) continue;
        keep.erase(it->id);
        if (it->manifest) total -= it->manifest->payload->size;
      }
    }
    return keep;
  };
  // `in_use` is asked only right before a deletion, so a candidate may still turn out kept.
  auto deletes_any = [&](const std::set<std::string>& keep) {
    return std::any_of(items.begin(), items.end(),
                       [&](const Listing& l) { return keep.count(l.id) == 0; });
  };

  PruneReport report;
  std::set<std::string> keep = keep_set("");
  // Finding the newest safety point that verifies costs a full decryption; it is needed only
  // when something would be deleted (retention runs after every new safety point).
  if (deletes_any(keep)) {
    ::malloc_trim(0);  // what the backup before freed goes back to the system before scrypt
    auto newest = NewestThatVerifies(items, written_id, written_key, passphrase);
    if (!newest) return tl::unexpected(newest.error());
    report.protected_id = std::move(*newest);
    keep = keep_set(report.protected_id);
  }
  // Oldest first, so an interruption leaves the newest history.
  for (auto it = items.rbegin(); it != items.rend(); ++it) {
    if (keep.count(it->id) != 0 || (retention.in_use && retention.in_use(it->id))) {
      report.kept.push_back(it->id);
      continue;
    }
    SP_RETURN_IF_ERROR(Delete(it->id));
    report.deleted.push_back(it->id);
  }
  return report;
}

Result<std::string> Store::NewId(std::chrono::system_clock::time_point started) const {
  const std::string base = FormatLocalStamp(started);
  auto id_for = [&](int n) { return n == 1 ? base : base + "-" + std::to_string(n); };
  auto exists = [](const std::string& path) {
    struct stat st {};
    return ::lstat(path.c_str(), &st) == 0;
  };
  // A new id sorts after every id of the same second still in use: a free slot below one in
  // use (its safety point deleted by retention a moment ago) would make the newest safety point
  // look like the oldest of that second.
  int highest = 0;
  for (int n = 1; n <= 999; ++n) {
    const std::string id = id_for(n);
    if (exists(DirOf(id)) || exists(options_.backup_dir + "/" + std::string(kTmpPrefix) + id)) {
      highest = n;
    }
  }
  if (highest >= 999) return Fail(ErrorCode::kBusy, "more than 999 safety points in one second");
  return id_for(highest + 1);
}

}  // namespace safepoint::store
