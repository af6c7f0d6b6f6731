#include "core/base/io.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
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

Result<ReadOnlyFile> ReadOnlyFile::Open(const std::string& path) {
  return OpenAt(AT_FDCWD, path, path);
}

Result<ReadOnlyFile> ReadOnlyFile::OpenAt(int dir_fd, const std::string& rel, std::string path) {
  // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer forever. It has no
  // effect on regular files, the only kind accepted below.
  int fd = ::openat(dir_fd, rel.c_str(), O_RDONLY | O_NONBLOCK | O_NOFOLLOW | O_NOCTTY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    if (err == ENOENT) return Fail(ErrorCode::kNotFound, "open " + path + ": no such file");
    if (err == ELOOP) {
      return Fail(ErrorCode::kCorrupt, path + " is a symlink, not a regular file; not followed");
    }
    return tl::unexpected(ErrnoError(err, "open", path));
  }
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
