#include "core/io.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <utility>

#include "core/fs.h"

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

Result<ReadOnlyFile> ReadOnlyFile::Open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) {
    if (errno == ENOENT) return Fail(ErrorCode::kNotFound, "open " + path + ": no such file");
    return tl::unexpected(ErrnoError(errno, "open", path));
  }
  return ReadOnlyFile(fd, path);
}

ReadOnlyFile::ReadOnlyFile(ReadOnlyFile&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)), path_(std::move(other.path_)) {}

ReadOnlyFile& ReadOnlyFile::operator=(ReadOnlyFile&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = std::exchange(other.fd_, -1);
    path_ = std::move(other.path_);
  }
  return *this;
}

ReadOnlyFile::~ReadOnlyFile() {
  if (fd_ >= 0) ::close(fd_);
}

Result<std::string> ReadFileBounded(const std::string& path, std::size_t max) {
  auto file = ReadOnlyFile::Open(path);
  if (!file) return tl::unexpected(file.error());
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
    if (out.size() > max) return Fail(ErrorCode::kCorrupt, path + ": too large");
  }
  return out;
}

}  // namespace safepoint
