#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "core/base/clock.h"
#include "core/base/fs.h"

namespace safepoint::testing {

// A fresh directory under $TMPDIR (or /tmp), removed with its contents on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  [[nodiscard]] const std::string& path() const { return path_; }
  [[nodiscard]] std::string Sub(const std::string& rel) const { return path_ + "/" + rel; }

 private:
  std::string path_;
};

// Writes `content` to `path`, creating parent directories; aborts the test on failure.
void WriteFile(const std::string& path, const std::string& content, mode_t mode = 0644);

// A secrets.yaml (mode 0600) whose backup_encryption_passphrase is `passphrase` (quoted), followed
// by the lines of `extra`.
void WriteSecrets(const std::string& path, const std::string& passphrase,
                  const std::string& extra = "");
// A small Home Assistant configuration directory at `ha`: secrets.yaml with `passphrase`,
// configuration.yaml ("homeassistant:\n  name: Home\n"), automations.yaml, an entity registry
// in .storage/, a custom component, an empty directory (blueprints/empty_dir) and a symlink
// (link.yaml -> configuration.yaml): one of each kind a safety point holds.
void WriteHomeAssistantTree(const std::string& ha, const std::string& passphrase);
// Reads a whole file; std::nullopt when it does not exist.
std::optional<std::string> ReadFile(const std::string& path);
// Lowercase hex SHA-256 of a string.
std::string Sha256Hex(const std::string& data);
// Every path below `root` (relative) with its type, mode bits and content hash or link target:
// "F <mode> <sha256>", "D <mode>", "L <target>". Empty when `root` does not exist.
std::map<std::string, std::string> SnapTree(const std::string& root);

// Which operations a FaultInjectingFileSystem counts and fails.
enum class FaultKind {
  kCrash,    // the N-th mutating operation and every later one fail with kIo ("simulated crash")
  kNoSpace,  // the N-th write (Append/WriteAt) and every later write fail with kNoSpace
};

// How a file registered with FaultInjectingFileSystem::ChangeOnEveryRead changes.
enum class ReadChange {
  kAppend,   // one byte is appended after every read that returned data (a growing log)
  kRewrite,  // its first byte is flipped after every read that returned data (same size)
  // Before every open but the first, it is replaced by a new file (a rename over it) one byte
  // longer, as Home Assistant writes `.storage`: each open finds a new inode that reads stable.
  kReplace,
};

// Wraps the real file system and fails from the N-th counted operation on (1-based). Counted
// operations: CreateFile, Append, WriteAt, Sync, Close, Rename, SyncDir, SyncFileSystem, MakeDir,
// Remove, RemoveTree, Symlink, Chmod, Chown, SetMtime. With fail_at == 0 nothing fails and ops()
// counts, so a test can first learn how many crash points a run has, then crash at each one.
class FaultInjectingFileSystem final : public FileSystem {
 public:
  explicit FaultInjectingFileSystem(std::uint64_t fail_at = 0, FaultKind kind = FaultKind::kCrash)
      : fail_at_(fail_at), kind_(kind) {}

  [[nodiscard]] std::uint64_t ops() const { return ops_.load(); }
  [[nodiscard]] bool tripped() const { return tripped_.load(); }
  void Disarm() { fail_at_ = 0; }

  Result<std::unique_ptr<WritableFile>> CreateFile(const std::string& path, mode_t mode) override;
  Status Rename(const std::string& from, const std::string& to) override;
  Status SyncDir(const std::string& path) override;
  Status SyncFileSystem(const std::string& path) override;
  Status MakeDir(const std::string& path, mode_t mode) override;
  Status Remove(const std::string& path) override;
  Status RemoveTree(const std::string& path) override;
  Status Symlink(const std::string& target, const std::string& path) override;
  Status Chmod(const std::string& path, mode_t mode) override;
  Status Chown(const std::string& path, uid_t uid, gid_t gid) override;
  Status SetMtime(const std::string& path, std::int64_t mtime) override;
  // The operations in an open directory count and fail the same way.
  Result<std::unique_ptr<WritableFile>> CreateFileAt(const Dir& dir, const std::string& rel,
                                                     mode_t mode) override;
  Status MakeDirAt(const Dir& dir, const std::string& rel, mode_t mode) override;
  Status SymlinkAt(const std::string& target, const Dir& dir, const std::string& rel) override;
  Status RenameAt(const Dir& from_dir, const std::string& from, const Dir& to_dir,
                  const std::string& to) override;
  Status ChownAt(const Dir& dir, const std::string& rel, uid_t uid, gid_t gid) override;
  Status ChmodAt(const Dir& dir, const std::string& rel, mode_t mode) override;
  Status SetMtimeAt(const Dir& dir, const std::string& rel, std::int64_t mtime) override;
  Status RemoveTreeAt(const Dir& dir, const std::string& rel) override;

  // Opens through the real file system (not counted). A file registered with
  // ChangeOnEveryRead changes on disk after each of its reads, deterministically, with no thread.
  Result<std::unique_ptr<ReadableFile>> OpenRead(const std::string& path) override;
  // REQUIRES: called before the file system is used from several threads.
  void ChangeOnEveryRead(const std::string& path, ReadChange how) { changing_[path] = how; }

  // Counts one operation; returns an error when it must fail. `is_write` marks data writes.
  Status Check(const char* op, const std::string& path, bool is_write);

 private:
  std::map<std::string, ReadChange> changing_;
  std::mutex opens_mu_;
  std::map<std::string, int> opens_;  // of kReplace files; guarded by opens_mu_
  PosixFileSystem real_;
  std::atomic<std::uint64_t> ops_{0};
  std::atomic<bool> tripped_{false};
  std::uint64_t fail_at_;
  FaultKind kind_;
};

}  // namespace safepoint::testing

namespace safepoint::testing {

// A clock that only moves when told to.
class FakeClock final : public Clock {
 public:
  explicit FakeClock(std::chrono::system_clock::time_point start =
                         std::chrono::system_clock::time_point(std::chrono::seconds(1795000000)))
      : now_(start) {}
  [[nodiscard]] std::chrono::system_clock::time_point Now() const override { return now_; }
  [[nodiscard]] std::chrono::steady_clock::time_point Monotonic() const override {
    return std::chrono::steady_clock::time_point(now_.time_since_epoch());
  }
  void Advance(std::chrono::milliseconds d) { now_ += d; }
  void Set(std::chrono::system_clock::time_point t) { now_ = t; }

 private:
  std::chrono::system_clock::time_point now_;
};

}  // namespace safepoint::testing
