#include "core/base/io.h"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <utility>

#include "core/base/fs.h"

namespace safepoint {

Fd::~Fd() {
  if (fd_ >= 0) ::close(fd_);
}

Result<std::size_t> FdSource::Read(std::span<std::uint8_t> out) {
  for (;;) {
    ssize_t n = ::read(fd_, out.data(), out.size());
    if (n >= 0) return static_cast<std::size_t>(n);
    if (errno != EINTR) return tl::unexpected(ErrnoError(errno, "read", name_));
  }
}

Status FdSink::Write(std::span<const std::uint8_t> data) {
  const std::uint8_t* p = data.data();
  std::size_t left = data.size();
  while (left > 0) {
    ssize_t n = ::write(fd_, p, left);
    if (n < 0) {
      if (errno == EINTR) continue;
      return tl::unexpected(ErrnoError(errno, "write", name_));
    }
    p += n;
    left -= static_cast<std::size_t>(n);
  }
  return {};
}

std::string FileTypeName(mode_t mode) {
  if (S_ISREG(mode)) return "a regular file";
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISLNK(mode)) return "a symlink";
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISSOCK(mode)) return "a socket";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  return "not a regular file";
}

namespace {

// O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer forever. It has no
// effect on regular files, the only kind accepted.
constexpr int kReadFlags = O_RDONLY | O_NONBLOCK | O_NOFOLLOW | O_NOCTTY | O_CLOEXEC;

// openat2(2) with RESOLVE_NO_SYMLINKS; plain openat(2) where the kernel has no openat2 (before
// 5.6) or a seccomp filter refuses it (ENOSYS, EPERM), which then follow symlinks above the
// last component as they always did.
int OpenWithoutSymlinks(const std::string& path) {
  static std::atomic<bool> unavailable{false};
  if (!unavailable.load(std::memory_order_relaxed)) {
    struct open_how how {};
    how.flags = static_cast<std::uint64_t>(kReadFlags);
    how.resolve = RESOLVE_NO_SYMLINKS;
    const long fd = ::syscall(SYS_openat2, AT_FDCWD, path.c_str(), &how, sizeof how);
    if (fd >= 0) return static_cast<int>(fd);
    if (errno != ENOSYS && errno != EPERM) return -1;
    if (errno == ENOSYS) unavailable.store(true, std::memory_order_relaxed);
  }
  return ::open(path.c_str(), kReadFlags);
}

// The opened file, when it is a regular file; errors as ReadOnlyFile::Open. `symlink` names what
// ELOOP means.
Result<ReadOnlyFile> Checked(int fd, std::string path, const char* symlink) {
  if (fd < 0) {
    const int err = errno;
    if (err == ENOENT) return Fail(ErrorCode::kNotFound, "open " + path + ": no such file");
    if (err == ELOOP) return Fail(ErrorCode::kCorrupt, path + symlink);
    return tl::unexpected(ErrnoError(err, "open", path));
  }
  return ReadOnlyFile::Adopt(fd, std::move(path));
}

}  // namespace

Result<ReadOnlyFile> ReadOnlyFile::Open(const std::string& path) {
  return OpenAt(AT_FDCWD, path, path);
}

Result<ReadOnlyFile> ReadOnlyFile::OpenAt(int dir_fd, const std::string& rel, std::string path) {
  return Checked(::openat(dir_fd, rel.c_str(), kReadFlags), std::move(path),
                 " is a symlink, not a regular file; not followed");
}

Result<ReadOnlyFile> ReadOnlyFile::OpenNoSymlinks(const std::string& path) {
  return Checked(OpenWithoutSymlinks(path), path,
                 ": it, or a directory on its path, is a symlink now; not followed");
}

Result<ReadOnlyFile> ReadOnlyFile::Adopt(int fd, std::string path) {
  Fd guard(fd);
  struct stat st {};
  if (::fstat(fd, &st) != 0) return tl::unexpected(ErrnoError(errno, "stat", path));
  if (!S_ISREG(st.st_mode)) {
    return Fail(ErrorCode::kCorrupt,
                path + " is " + FileTypeName(st.st_mode) + ", not a regular file; not read");
  }
  return ReadOnlyFile(guard.Release(), std::move(path), st);
}

ReadOnlyFile::ReadOnlyFile(ReadOnlyFile&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)), path_(std::move(other.path_)), opened_(other.opened_) {}

ReadOnlyFile& ReadOnlyFile::operator=(ReadOnlyFile&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = std::exchange(other.fd_, -1);
    path_ = std::move(other.path_);
    opened_ = other.opened_;
  }
  return *this;
}

ReadOnlyFile::~ReadOnlyFile() {
  if (fd_ >= 0) ::close(fd_);
}

Result<std::string> ReadFileBounded(const std::string& path, std::size_t max) {
  auto file = ReadOnlyFile::Open(path);
  if (!file) return tl::unexpected(file.error());
  if (file->size() > max) {
    return Fail(ErrorCode::kCorrupt, path + ": too large (" + std::to_string(file->size()) +
                                         " bytes, at most " + std::to_string(max) + " expected)");
  }
  std::string out;
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(file->fd(), buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      return tl::unexpected(ErrnoError(errno, "read", path));
    }
    if (n == 0) break;
    out.append(buf, static_cast<std::size_t>(n));
    if (out.size() > max) {
      return Fail(ErrorCode::kCorrupt,
                  path + ": too large (grew past " + std::to_string(max) + " bytes while read)");
    }
  }
  return out;
}

}  // namespace safepoint
