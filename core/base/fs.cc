#include "core/base/fs.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <ctime>
#include <string>
#include <vector>

#include "core/base/io.h"

namespace safepoint {

Error ErrnoError(int err, std::string_view op, std::string_view path) {
  std::string msg = std::string(op) + " " + std::string(path) + ": " + std::strerror(err);
  if (err == ENOSPC || err == EDQUOT) return Error{ErrorCode::kNoSpace, std::move(msg)};
  return Error{ErrorCode::kIo, std::move(msg)};
}

namespace {

class PosixWritableFile final : public WritableFile {
 public:
  PosixWritableFile(int fd, std::string path) : fd_(fd), path_(std::move(path)) {}
  ~PosixWritableFile() override {
    if (fd_ >= 0) ::close(fd_);
  }
  PosixWritableFile(const PosixWritableFile&) = delete;
  PosixWritableFile& operator=(const PosixWritableFile&) = delete;

  Status Append(std::span<const std::uint8_t> data) override {
    const std::uint8_t* p = data.data();
    std::size_t left = data.size();
    while (left > 0) {
      ssize_t n = ::write(fd_, p, left);
      if (n < 0) {
        if (errno == EINTR) continue;
        return tl::unexpected(ErrnoError(errno, "write", path_));
      }
      p += n;
      left -= static_cast<std::size_t>(n);
    }
    appended_ += data.size();
    if (appended_ - flushed_ >= kWritebackBytes) {
      // Starts writing back what is appended so far without waiting for it, so the disk works
      // while we produce the rest and Sync() has little left to do. Advisory only: an error
      // here surfaces in Sync().
      (void)::sync_file_range(fd_, static_cast<off_t>(flushed_),
                              static_cast<off_t>(appended_ - flushed_), SYNC_FILE_RANGE_WRITE);
      flushed_ = appended_;
    }
    return {};
  }

  Status WriteAt(std::uint64_t offset, std::span<const std::uint8_t> data) override {
    const std::uint8_t* p = data.data();
    std::size_t left = data.size();
    auto off = static_cast<off_t>(offset);
    while (left > 0) {
      ssize_t n = ::pwrite(fd_, p, left, off);
      if (n < 0) {
        if (errno == EINTR) continue;
        return tl::unexpected(ErrnoError(errno, "write", path_));
      }
      p += n;
      off += n;
      left -= static_cast<std::size_t>(n);
    }
    return {};
  }

  Status Sync() override {
    if (::fsync(fd_) != 0) return tl::unexpected(ErrnoError(errno, "fsync", path_));
    return {};
  }

  Status Close() override {
    if (fd_ < 0) return Fail(ErrorCode::kInternal, "close " + path_ + ": already closed");
    int rc = ::close(fd_);
    fd_ = -1;
    if (rc != 0) return tl::unexpected(ErrnoError(errno, "close", path_));
    return {};
  }

 private:
  // Writeback is started every this many appended bytes.
  static constexpr std::uint64_t kWritebackBytes = 8u << 20;

  int fd_;
  std::string path_;
  std::uint64_t appended_ = 0;  // bytes appended (files are only ever appended from offset 0)
  std::uint64_t flushed_ = 0;   // of which writeback was started
};

Status RemoveTreeIn(int parent_fd, const std::string& name, const std::string& display) {
  struct stat st {};
  if (::fstatat(parent_fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    if (errno == ENOENT) return {};
    return tl::unexpected(ErrnoError(errno, "stat", display));
  }
  if (!S_ISDIR(st.st_mode)) {
    if (::unlinkat(parent_fd, name.c_str(), 0) != 0 && errno != ENOENT) {
      return tl::unexpected(ErrnoError(errno, "unlink", display));
    }
    return {};
  }
  int fd = ::openat(parent_fd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return tl::unexpected(ErrnoError(errno, "open", display));
  DIR* dir = ::fdopendir(fd);
  if (dir == nullptr) {
    int err = errno;
    ::close(fd);
    return tl::unexpected(ErrnoError(err, "opendir", display));
  }
  std::vector<std::string> names;
  while (struct dirent* e = ::readdir(dir)) {
    std::string n = e->d_name;
    if (n != "." && n != "..") names.push_back(std::move(n));
  }
  Status status;
  for (const auto& n : names) {
    status = RemoveTreeIn(::dirfd(dir), n, display + "/" + n);
    if (!status) break;
  }
  ::closedir(dir);
  if (!status) return status;
  if (::unlinkat(parent_fd, name.c_str(), AT_REMOVEDIR) != 0 && errno != ENOENT) {
    return tl::unexpected(ErrnoError(errno, "rmdir", display));
  }
  return {};
}

// Sets the mtime (whole seconds; the access time is left) of `path` in `dir_fd`, never through
// a final symlink.
Status SetMtimeIn(int dir_fd, const std::string& path, const std::string& display,
                  std::int64_t mtime) {
  struct timespec times[2];
  times[0].tv_sec = 0;
  times[0].tv_nsec = UTIME_OMIT;
  times[1].tv_sec = static_cast<time_t>(mtime);
  times[1].tv_nsec = 0;
  if (::utimensat(dir_fd, path.c_str(), times, AT_SYMLINK_NOFOLLOW) != 0) {
    return tl::unexpected(ErrnoError(errno, "utimensat", display));
  }
  return {};
}

class PosixReadableFile final : public ReadableFile {
 public:
  explicit PosixReadableFile(ReadOnlyFile file) : file_(std::move(file)) {}
  Result<std::size_t> Read(std::span<std::uint8_t> out) override {
    for (;;) {
      const ssize_t n = ::read(file_.fd(), out.data(), out.size());
      if (n >= 0) return static_cast<std::size_t>(n);
      if (errno != EINTR) return tl::unexpected(ErrnoError(errno, "read", file_.path()));
    }
  }
  Result<struct stat> Stat() override {
    struct stat st {};
    if (::fstat(file_.fd(), &st) != 0)
      return tl::unexpected(ErrnoError(errno, "stat", file_.path()));
    return st;
  }
  Result<struct stat> OpenedStat() override { return file_.opened_stat(); }

 private:
  ReadOnlyFile file_;
};

}  // namespace

Result<std::unique_ptr<ReadableFile>> FileSystem::OpenRead(const std::string& path) {
  auto file = ReadOnlyFile::OpenNoSymlinks(path);
  if (!file) return tl::unexpected(file.error());
  return std::make_unique<PosixReadableFile>(std::move(*file));
}

Result<std::unique_ptr<WritableFile>> PosixFileSystem::CreateFile(const std::string& path,
                                                                  mode_t mode) {
  int fd = ::open(path.c_str(), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC | O_NOFOLLOW, mode);
  if (fd < 0) return tl::unexpected(ErrnoError(errno, "create", path));
  return std::make_unique<PosixWritableFile>(fd, path);
}

Status PosixFileSystem::Rename(const std::string& from, const std::string& to) {
  if (::rename(from.c_str(), to.c_str()) != 0) {
    return tl::unexpected(ErrnoError(errno, "rename", from + " -> " + to));
  }
  return {};
}

namespace {

// Opens the directory `path` and calls `sync` (fsync or syncfs) on it.
Status SyncThroughDir(const std::string& path, int (*sync)(int), const char* what) {
  int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return tl::unexpected(ErrnoError(errno, "open", path));
  int rc = sync(fd);
  int err = errno;
  ::close(fd);
  if (rc != 0) return tl::unexpected(ErrnoError(err, what, path));
  return {};
}

}  // namespace

Status PosixFileSystem::SyncDir(const std::string& path) {
  return SyncThroughDir(path, ::fsync, "fsync");
}

Status FileSystem::SyncFileSystem(const std::string& path) {
  return SyncThroughDir(path, ::syncfs, "syncfs");
}

Status PosixFileSystem::MakeDir(const std::string& path, mode_t mode) {
  if (::mkdir(path.c_str(), mode) != 0) return tl::unexpected(ErrnoError(errno, "mkdir", path));
  return {};
}

Status PosixFileSystem::Remove(const std::string& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) return tl::unexpected(ErrnoError(errno, "remove", path));
  int rc = S_ISDIR(st.st_mode) ? ::rmdir(path.c_str()) : ::unlink(path.c_str());
  if (rc != 0) return tl::unexpected(ErrnoError(errno, "remove", path));
  return {};
}

Status PosixFileSystem::RemoveTree(const std::string& path) {
  return RemoveTreeIn(AT_FDCWD, path, path);
}

Status PosixFileSystem::Symlink(const std::string& target, const std::string& path) {
  if (::symlink(target.c_str(), path.c_str()) != 0) {
    return tl::unexpected(ErrnoError(errno, "symlink", path));
  }
  return {};
}

Status PosixFileSystem::Chmod(const std::string& path, mode_t mode) {
  if (::fchmodat(AT_FDCWD, path.c_str(), mode, 0) != 0) {
    return tl::unexpected(ErrnoError(errno, "chmod", path));
  }
  return {};
}

Status PosixFileSystem::Chown(const std::string& path, uid_t uid, gid_t gid) {
  if (::lchown(path.c_str(), uid, gid) != 0)
    return tl::unexpected(ErrnoError(errno, "chown", path));
  return {};
}

Status PosixFileSystem::SetMtime(const std::string& path, std::int64_t mtime) {
  return SetMtimeIn(AT_FDCWD, path, path, mtime);
}

Result<Dir> Dir::Opened(int fd, std::string path) {
  if (fd >= 0) return Dir(fd, std::move(path));
  const int err = errno;
  if (err == ENOENT) return Fail(ErrorCode::kNotFound, path + " does not exist");
  if (err == ENOTDIR || err == ELOOP) {
    return Fail(ErrorCode::kBadInput, path + " is not a directory (a symlink?); refusing");
  }
  return tl::unexpected(ErrnoError(err, "open", path));
}

Result<Dir> Dir::Open(const std::string& path) {
  return Opened(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC), path);
}

Result<Dir> Dir::OpenIn(const Dir& parent, const std::string& name) {
  return Opened(
      ::openat(parent.fd(), name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC),
      parent.PathOf(name));
}

Result<Dir> Dir::OpenFollowing(const std::string& path) {
  return Opened(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC), path);
}

Dir::Dir(Dir&& other) noexcept : fd_(other.fd_), path_(std::move(other.path_)) { other.fd_ = -1; }

Dir& Dir::operator=(Dir&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = other.fd_;
    path_ = std::move(other.path_);
    other.fd_ = -1;
  }
  return *this;
}

Dir::~Dir() {
  if (fd_ >= 0) ::close(fd_);
}

std::string Dir::PathOf(const std::string& rel) const {
  return rel == "." ? path_ : path_ + "/" + rel;
}

Result<std::unique_ptr<WritableFile>> FileSystem::CreateFileAt(const Dir& dir,
                                                               const std::string& rel,
                                                               mode_t mode) {
  const std::string path = dir.PathOf(rel);
  const int fd =
      ::openat(dir.fd(), rel.c_str(), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC | O_NOFOLLOW, mode);
  if (fd < 0) return tl::unexpected(ErrnoError(errno, "create", path));
  return std::make_unique<PosixWritableFile>(fd, path);
}

Status FileSystem::MakeDirAt(const Dir& dir, const std::string& rel, mode_t mode) {
  if (::mkdirat(dir.fd(), rel.c_str(), mode) != 0) {
    return tl::unexpected(ErrnoError(errno, "mkdir", dir.PathOf(rel)));
  }
  return {};
}

Status FileSystem::SymlinkAt(const std::string& target, const Dir& dir, const std::string& rel) {
  if (::symlinkat(target.c_str(), dir.fd(), rel.c_str()) != 0) {
    return tl::unexpected(ErrnoError(errno, "symlink", dir.PathOf(rel)));
  }
  return {};
}

Status FileSystem::RenameAt(const Dir& from_dir, const std::string& from, const Dir& to_dir,
                            const std::string& to) {
  if (::renameat(from_dir.fd(), from.c_str(), to_dir.fd(), to.c_str()) != 0) {
    return tl::unexpected(
        ErrnoError(errno, "rename", from_dir.PathOf(from) + " -> " + to_dir.PathOf(to)));
  }
  return {};
}

Status FileSystem::ChownAt(const Dir& dir, const std::string& rel, uid_t uid, gid_t gid) {
  if (::fchownat(dir.fd(), rel.c_str(), uid, gid, AT_SYMLINK_NOFOLLOW) != 0) {
    return tl::unexpected(ErrnoError(errno, "chown", dir.PathOf(rel)));
  }
  return {};
}

Status FileSystem::ChmodAt(const Dir& dir, const std::string& rel, mode_t mode) {
  if (::fchmodat(dir.fd(), rel.c_str(), mode, AT_SYMLINK_NOFOLLOW) != 0) {
    const int err = errno;
    if (err == EOPNOTSUPP) {
      return Fail(ErrorCode::kIo, "chmod " + dir.PathOf(rel) +
                                      ": it is a symlink (or /proc is not mounted); refused");
    }
    return tl::unexpected(ErrnoError(err, "chmod", dir.PathOf(rel)));
  }
  return {};
}

Status FileSystem::SetMtimeAt(const Dir& dir, const std::string& rel, std::int64_t mtime) {
  return SetMtimeIn(dir.fd(), rel, dir.PathOf(rel), mtime);
}

Status FileSystem::RemoveTreeAt(const Dir& dir, const std::string& rel) {
  return RemoveTreeIn(dir.fd(), rel, dir.PathOf(rel));
}

Status WriteFileAtomically(FileSystem& fs, const std::string& path, std::string_view content,
                           mode_t mode) {
  const std::string tmp = path + ".tmp";
  struct stat st {};
  if (::lstat(tmp.c_str(), &st) == 0) SP_RETURN_IF_ERROR(fs.Remove(tmp));
  auto file = fs.CreateFile(tmp, mode);
  if (!file) return tl::unexpected(file.error());
  auto written = [&]() -> Status {
    SP_RETURN_IF_ERROR((*file)->Append(std::span<const std::uint8_t>(
        reinterpret_cast<const std::uint8_t*>(content.data()), content.size())));
    SP_RETURN_IF_ERROR((*file)->Sync());
    SP_RETURN_IF_ERROR((*file)->Close());
    return fs.Rename(tmp, path);
  }();
  if (!written) {
    // Not left behind, nor its space kept from whatever must be written next (best effort).
    file->reset();
    (void)fs.Remove(tmp);
    return written;
  }
  auto slash = path.rfind('/');
  return fs.SyncDir(slash == std::string::npos || slash == 0 ? "/" : path.substr(0, slash));
}

Status MakeDirs(FileSystem& fs, const std::string& path, mode_t mode) {
  std::size_t pos = 0;
  while (pos != std::string::npos) {
    pos = path.find('/', pos + 1);
    const std::string prefix = path.substr(0, pos);
    if (prefix.empty() || prefix == "/") continue;
    struct stat st {};
    if (::stat(prefix.c_str(), &st) == 0) {
      if (!S_ISDIR(st.st_mode)) return Fail(ErrorCode::kIo, prefix + " is not a directory");
      continue;
    }
    SP_RETURN_IF_ERROR(fs.MakeDir(prefix, mode));
  }
  return {};
}

}  // namespace safepoint
