#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "core/base/result.h"

namespace safepoint {

// A file opened for writing through the FileSystem seam.
// Thread-safety: one thread at a time per file.
class WritableFile {
 public:
  virtual ~WritableFile() = default;
  // Appends at the current end (the file position advances).
  [[nodiscard]] virtual Status Append(std::span<const std::uint8_t> data) = 0;
  // Writes at an absolute offset without moving the append position (used to fill in the
  // fixed-size age header after the payload has been streamed).
  [[nodiscard]] virtual Status WriteAt(std::uint64_t offset,
                                       std::span<const std::uint8_t> data) = 0;
  // fsync(2): data and metadata reach stable storage.
  [[nodiscard]] virtual Status Sync() = 0;
  // Closes the file; further calls fail. The destructor closes silently if this was not called.
  [[nodiscard]] virtual Status Close() = 0;
};

// A regular file opened for reading through the FileSystem seam.
// Thread-safety: one thread at a time per file.
class ReadableFile {
 public:
  virtual ~ReadableFile() = default;
  // Reads up to out.size() bytes at the current position; 0 only at the end.
  [[nodiscard]] virtual Result<std::size_t> Read(std::span<std::uint8_t> out) = 0;
  // fstat(2) of the open file.
  [[nodiscard]] virtual Result<struct stat> Stat() = 0;
  // The file as it was when opened. Files that took fstat(2) at open return that, with no
  // further system call (a backup of 100k small files saves one per file and pass).
  [[nodiscard]] virtual Result<struct stat> OpenedStat() { return Stat(); }
};

// A directory held open (O_DIRECTORY | O_NOFOLLOW). Names resolved against it later stay inside
// it even if, meanwhile, it is renamed or a path to it is swapped for a symlink: what extract uses
// in a destination other users can write to. Move-only; closes on destruction.
class Dir {
 public:
  // Opens `path`, whose last component must be a directory itself, not a symlink to one.
  // Errors: kNotFound when missing, kBadInput when not a directory (a symlink?), kIo otherwise.
  [[nodiscard]] static Result<Dir> Open(const std::string& path);
  // Opens `name`, one component, in `parent`; errors as Open.
  [[nodiscard]] static Result<Dir> OpenIn(const Dir& parent, const std::string& name);
  // Opens a directory the configuration names (the roots of the trees, the store), following
  // symlinks anywhere in `path`, its last component too; errors as Open.
  [[nodiscard]] static Result<Dir> OpenFollowing(const std::string& path);
  Dir(Dir&& other) noexcept;
  Dir& operator=(Dir&& other) noexcept;
  Dir(const Dir&) = delete;
  Dir& operator=(const Dir&) = delete;
  ~Dir();

  [[nodiscard]] int fd() const { return fd_; }
  // The path it was opened as, for messages only.
  [[nodiscard]] const std::string& path() const { return path_; }
  // path() + "/" + rel, or path() for ".".
  [[nodiscard]] std::string PathOf(const std::string& rel) const;

 private:
  Dir(int fd, std::string path) : fd_(fd), path_(std::move(path)) {}
  // `fd` as returned by open(2) for `path`: the Dir, or the error errno names.
  static Result<Dir> Opened(int fd, std::string path);
  int fd_ = -1;
  std::string path_;
};

// Every mutating file-system operation of safepoint goes through this seam, so crash and
// disk-full tests can fail the N-th write, fsync or rename in-process (tests/testutil's
// FaultInjectingFileSystem). So does reading the files being backed up (OpenRead), so tests can
// make a file change while it is read. Other reads use plain POSIX calls (ReadOnlyFile).
//
// Errors: ENOSPC/EDQUOT map to ErrorCode::kNoSpace, everything else to kIo; the message names
// the path and the operation.
// Thread-safety: implementations are safe to call from several threads.
class FileSystem {
 public:
  virtual ~FileSystem() = default;

  // Creates a new file (O_CREAT|O_EXCL|O_WRONLY|O_CLOEXEC|O_NOFOLLOW) with `mode`.
  [[nodiscard]] virtual Result<std::unique_ptr<WritableFile>> CreateFile(const std::string& path,
                                                                         mode_t mode) = 0;
  // rename(2): atomically replaces `to` when it exists.
  [[nodiscard]] virtual Status Rename(const std::string& from, const std::string& to) = 0;
  // Opens the directory and fsyncs it, making renames and creations within it durable.
  [[nodiscard]] virtual Status SyncDir(const std::string& path) = 0;
  // syncfs(2) of the file system holding the directory `path`: makes every file written there
  // durable with one call, where an fsync per file would wait on the disk once per file. The
  // default implementation is the real one.
  [[nodiscard]] virtual Status SyncFileSystem(const std::string& path);
  // mkdir(2) of one level; fails with kIo if it exists.
  [[nodiscard]] virtual Status MakeDir(const std::string& path, mode_t mode) = 0;
  // unlink(2) of a file or symlink, rmdir(2) of an empty directory.
  [[nodiscard]] virtual Status Remove(const std::string& path) = 0;
  // Removes a tree without following symlinks. Missing paths are not an error.
  [[nodiscard]] virtual Status RemoveTree(const std::string& path) = 0;
  // symlink(2): creates `path` pointing to `target`.
  [[nodiscard]] virtual Status Symlink(const std::string& target, const std::string& path) = 0;
  // chmod(2) (never follows a final symlink).
  [[nodiscard]] virtual Status Chmod(const std::string& path, mode_t mode) = 0;
  // lchown(2); callers only use it when running as root.
  [[nodiscard]] virtual Status Chown(const std::string& path, uid_t uid, gid_t gid) = 0;
  // Sets the modification time (seconds since the epoch) without following a final symlink.
  [[nodiscard]] virtual Status SetMtime(const std::string& path, std::int64_t mtime) = 0;
  // Opens a file being backed up like ReadOnlyFile::OpenNoSymlinks (core/base/io.h): never
  // waits on a FIFO, never follows a symlink anywhere in `path`, whose own symlinks the caller
  // resolved (a directory swapped for one after the walk is not followed). Errors: kNotFound
  // when missing, kCorrupt when not a regular file or reached through a symlink, kIo otherwise.
  // The default implementation is the real one.
  [[nodiscard]] virtual Result<std::unique_ptr<ReadableFile>> OpenRead(const std::string& path);

  // The same operations relative to an open directory: `rel` (a relative path; "." is `dir`
  // itself) is resolved against `dir`, never through a symlink in its last component (ChmodAt
  // refuses a symlink with kIo: a link has no mode of its own to set). Errors name
  // dir.PathOf(rel). The default implementations are the real ones.
  [[nodiscard]] virtual Result<std::unique_ptr<WritableFile>> CreateFileAt(const Dir& dir,
                                                                           const std::string& rel,
                                                                           mode_t mode);
  [[nodiscard]] virtual Status MakeDirAt(const Dir& dir, const std::string& rel, mode_t mode);
  [[nodiscard]] virtual Status SymlinkAt(const std::string& target, const Dir& dir,
                                         const std::string& rel);
  [[nodiscard]] virtual Status RenameAt(const Dir& from_dir, const std::string& from,
                                        const Dir& to_dir, const std::string& to);
  [[nodiscard]] virtual Status ChownAt(const Dir& dir, const std::string& rel, uid_t uid,
                                       gid_t gid);
  [[nodiscard]] virtual Status ChmodAt(const Dir& dir, const std::string& rel, mode_t mode);
  [[nodiscard]] virtual Status SetMtimeAt(const Dir& dir, const std::string& rel,
                                          std::int64_t mtime);
  // Removes `rel` and, when it is a directory, everything in it, without following symlinks.
  [[nodiscard]] virtual Status RemoveTreeAt(const Dir& dir, const std::string& rel);
};

// The real file system.
class PosixFileSystem final : public FileSystem {
 public:
  Result<std::unique_ptr<WritableFile>> CreateFile(const std::string& path, mode_t mode) override;
  Status Rename(const std::string& from, const std::string& to) override;
  Status SyncDir(const std::string& path) override;
  Status MakeDir(const std::string& path, mode_t mode) override;
  Status Remove(const std::string& path) override;
  Status RemoveTree(const std::string& path) override;
  Status Symlink(const std::string& target, const std::string& path) override;
  Status Chmod(const std::string& path, mode_t mode) override;
  Status Chown(const std::string& path, uid_t uid, gid_t gid) override;
  Status SetMtime(const std::string& path, std::int64_t mtime) override;
};

// Maps errno of a failed `op` on `path` to an Error (kNoSpace for ENOSPC/EDQUOT, else kIo).
[[nodiscard]] Error ErrnoError(int err, std::string_view op, std::string_view path);

// Writes `content` to `path` atomically through `fs`: "<path>.tmp" is written, fsynced and
// renamed over `path`, then the directory is fsynced. A stale "<path>.tmp" is replaced; a failed
// write removes its own (a crash can still leave one, which the next write replaces).
[[nodiscard]] Status WriteFileAtomically(FileSystem& fs, const std::string& path,
                                         std::string_view content, mode_t mode);

// Creates `path` and its missing parents through `fs`, each with `mode` (like mkdir -p; an
// existing directory is left as it is). kIo when a part exists and is not a directory.
[[nodiscard]] Status MakeDirs(FileSystem& fs, const std::string& path, mode_t mode);

}  // namespace safepoint
