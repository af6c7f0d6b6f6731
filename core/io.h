#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "core/result.h"

namespace safepoint {

// A pull-based byte stream. Read returns 0 only at the end of the stream.
class ByteSource {
 public:
  virtual ~ByteSource() = default;
  [[nodiscard]] virtual Result<std::size_t> Read(std::span<std::uint8_t> out) = 0;
};

// A push-based byte stream.
class ByteSink {
 public:
  virtual ~ByteSink() = default;
  [[nodiscard]] virtual Status Write(std::span<const std::uint8_t> data) = 0;
};

// Reads a file descriptor it does not own (EINTR-safe).
class FdSource final : public ByteSource {
 public:
  FdSource(int fd, std::string name) : fd_(fd), name_(std::move(name)) {}
  Result<std::size_t> Read(std::span<std::uint8_t> out) override;

 private:
  int fd_;
  std::string name_;
};

// Writes to a file descriptor it does not own (EINTR-safe, handles short writes).
class FdSink final : public ByteSink {
 public:
  FdSink(int fd, std::string name) : fd_(fd), name_(std::move(name)) {}
  Status Write(std::span<const std::uint8_t> data) override;

 private:
  int fd_;
  std::string name_;
};

// A file opened read-only (O_CLOEXEC|O_NOFOLLOW); closes on destruction.
// Closes a file descriptor on scope exit.
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd();
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  [[nodiscard]] int get() const { return fd_; }

 private:
  int fd_;
};

class ReadOnlyFile {
 public:
  [[nodiscard]] static Result<ReadOnlyFile> Open(const std::string& path);
  ReadOnlyFile(ReadOnlyFile&& other) noexcept;
  ReadOnlyFile& operator=(ReadOnlyFile&& other) noexcept;
  ReadOnlyFile(const ReadOnlyFile&) = delete;
  ReadOnlyFile& operator=(const ReadOnlyFile&) = delete;
  ~ReadOnlyFile();
  [[nodiscard]] int fd() const { return fd_; }
  [[nodiscard]] const std::string& path() const { return path_; }

 private:
  ReadOnlyFile(int fd, std::string path) : fd_(fd), path_(std::move(path)) {}
  int fd_ = -1;
  std::string path_;
};

// Reads a whole file (opened without following a final symlink) of at most `max` bytes.
// Errors: kNotFound when missing, kCorrupt when larger than `max`, kIo otherwise.
[[nodiscard]] Result<std::string> ReadFileBounded(const std::string& path, std::size_t max);

}  // namespace safepoint
