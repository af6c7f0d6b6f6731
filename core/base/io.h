#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <utility>

#include "core/base/result.h"

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

// Collects everything written, in memory (small outputs, and the tests).
class StringSink final : public ByteSink {
 public:
  [[nodiscard]] Status Write(std::span<const std::uint8_t> data) override {
    text.append(reinterpret_cast<const char*>(data.data()), data.size());
    ++writes;
    return {};
  }
  std::string text;
  int writes = 0;  // calls of Write
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

// Closes a file descriptor on scope exit.
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd();
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  [[nodiscard]] int get() const { return fd_; }
  // Gives up ownership: returns the descriptor, which is no longer closed here.
  [[nodiscard]] int Release() { return std::exchange(fd_, -1); }

 private:
  int fd_;
};

// A regular file opened read-only; closes on destruction.
// Open never waits and never follows a final symlink: it opens with
// O_RDONLY|O_NONBLOCK|O_NOFOLLOW|O_NOCTTY|O_CLOEXEC and then requires fstat(2) to say "regular
// file", so a FIFO, device, socket, directory or symlink planted where a file is expected is
// reported at once instead of blocking the caller (docs/reliability.md, "Files safepoint reads").
// Errors: kNotFound when missing; kCorrupt when the path is not a regular file (the message
// names what it is); kIo for other open/stat failures.
class ReadOnlyFile {
 public:
  [[nodiscard]] static Result<ReadOnlyFile> Open(const std::string& path);
  // Open of `rel` resolved against the open directory `dir_fd`; messages name `display`.
  [[nodiscard]] static Result<ReadOnlyFile> OpenAt(int dir_fd, const std::string& rel,
                                                   std::string display);
  // Open, following no symlink anywhere in `path` (which must have its own symlinks resolved):
  // a file reached by a walk stays in its tree even if a directory on the way is swapped for a
  // symlink meanwhile (kCorrupt then). Kernels before 5.6 only refuse a final symlink.
  [[nodiscard]] static Result<ReadOnlyFile> OpenNoSymlinks(const std::string& path);
  // Takes the descriptor `fd` of `path`: the file, when it is a regular one (else closes it).
  // Errors: kCorrupt when not a regular file, kIo when fstat fails.
  [[nodiscard]] static Result<ReadOnlyFile> Adopt(int fd, std::string path);
  ReadOnlyFile(ReadOnlyFile&& other) noexcept;
  ReadOnlyFile& operator=(ReadOnlyFile&& other) noexcept;
  ReadOnlyFile(const ReadOnlyFile&) = delete;
  ReadOnlyFile& operator=(const ReadOnlyFile&) = delete;
  ~ReadOnlyFile();
  [[nodiscard]] int fd() const { return fd_; }
  [[nodiscard]] const std::string& path() const { return path_; }
  // The size fstat(2) reported at Open.
  [[nodiscard]] std::uint64_t size() const { return static_cast<std::uint64_t>(opened_.st_size); }
  // What fstat(2) reported at Open (no second system call needed for it).
  [[nodiscard]] const struct stat& opened_stat() const { return opened_; }

 private:
  ReadOnlyFile(int fd, std::string path, const struct stat& opened)
      : fd_(fd), path_(std::move(path)), opened_(opened) {}
  int fd_ = -1;
  std::string path_;
  struct stat opened_ {};
};

// What a mode_t is, for messages: "a FIFO", "a directory", "a symlink", ...
[[nodiscard]] std::string FileTypeName(mode_t mode);

// Reads a whole regular file (opened like ReadOnlyFile::Open) of at most `max` bytes. A file
// whose fstat size is above `max` (a sparse giant too) is refused before anything is read.
// Errors: kNotFound when missing, kCorrupt when not a regular file or larger than `max`, kIo
// otherwise.
[[nodiscard]] Result<std::string> ReadFileBounded(const std::string& path, std::size_t max);

}  // namespace safepoint
