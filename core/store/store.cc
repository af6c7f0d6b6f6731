#include "core/store/store.h"

#include <dirent.h>
#include <fcntl.h>
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
#include "core/format/age.h"

namespace safepoint::store {

namespace {

constexpr std::size_t kBufferSize = 256 * 1024;
constexpr std::uint64_t kMaxInnerManifest = 256ull * 1024 * 1024;
// manifest.json: format 2 holds a summary of a few KiB; format 1 also lists every entry
// (~300 bytes each), so 64 MiB is ~200,000 entries. A larger one is reported as damaged
// without being read (docs/reliability.md).
constexpr std::uint64_t kMaxOuterManifest = 64ull * 1024 * 1024;
constexpr std::string_view kTmpPrefix = ".tmp-";
constexpr std::string_view kDelPrefix = ".del-";

bool SameFile(const struct stat& a, const struct stat& b) {
  return a.st_dev == b.st_dev && a.st_ino == b.st_ino && a.st_size == b.st_size &&
         a.st_mtim.tv_sec == b.st_mtim.tv_sec && a.st_mtim.tv_nsec == b.st_mtim.tv_nsec &&
         a.st_ctim.tv_sec == b.st_ctim.tv_sec && a.st_ctim.tv_nsec == b.st_ctim.tv_nsec;
}

// Reads until `buf` is full or the file ends.
Status ReadFull(ReadableFile& file, std::span<std::uint8_t> buf, std::size_t* got) {
  *got = 0;
  while (*got < buf.size()) {
    auto n = file.Read(buf.subspan(*got));
    if (!n) return tl::unexpected(n.error());
    if (*n == 0) break;
    *got += *n;
  }
  return {};
}

// How often a file that changes while it is read is read again before it is recorded as it was.
constexpr int kReadAttempts = 3;

// The result of reading a file until two fstat calls around the read agree.
struct StableHash {
  bool vanished = false;  // deleted, or no longer a regular file: skipped with `warning`
  struct stat st {};      // as it was when opened: size is what was hashed
  std::string sha256;
  std::string warning;  // set when the file is skipped or recorded while it kept changing
};

// Reads and hashes the first `st.st_size` bytes of `path` (its size when opened). Stable when
// fstat after the read equals fstat before; a file that changes on every one of kReadAttempts
// reads is recorded as the last read saw it (its first st_size bytes), with a warning, as GNU
// tar does. Pass 2 re-reads those bytes and checks them against this hash.
Result<StableHash> HashStable(FileSystem& fs, const std::string& path,
                              std::vector<std::uint8_t>& buf) {
  StableHash out;
  for (int attempt = 1; attempt <= kReadAttempts; ++attempt) {
    auto file = fs.OpenRead(path);
    if (!file) {
      if (file.error().code == ErrorCode::kNotFound) {
        out.vanished = true;
        out.warning = "skipped " + path + ": deleted while backing up";
        return out;
      }
      if (file.error().code == ErrorCode::kCorrupt) {  // replaced by a link, FIFO, directory
        out.vanished = true;
        out.warning =
            "skipped " + path + ": replaced while backing up (" + file.error().message + ")";
        return out;
      }
      return tl::unexpected(file.error());
    }
    auto before = (*file)->Stat();
    if (!before) return tl::unexpected(before.error());
    Sha256 hash;
    auto left = static_cast<std::uint64_t>(before->st_size);
    bool short_read = false;
    while (left > 0) {
      const auto want = static_cast<std::size_t>(std::min<std::uint64_t>(left, buf.size()));
      std::size_t got = 0;
      SP_RETURN_IF_ERROR(ReadFull(**file, {buf.data(), want}, &got));
      hash.Update(std::span<const std::uint8_t>(buf.data(), got));
      left -= got;
      if (got < want) {
        short_read = true;  // shrank while read
        break;
      }
    }
    auto after = (*file)->Stat();
    if (!after) return tl::unexpected(after.error());
    if (!short_read && SameFile(*before, *after)) {
      out.st = *before;
      out.sha256 = hash.FinalHex();
      return out;
    }
    if (!short_read && attempt == kReadAttempts) {
      out.st = *before;
      out.sha256 = hash.FinalHex();
      out.warning = path + ": file changed as we read it (" + std::to_string(kReadAttempts) +
                    " attempts); recorded as it was when last opened, its first " +
                    std::to_string(before->st_size) + " bytes";
      return out;
    }
  }
  return Fail(ErrorCode::kIo, "file " + path + " shrank while it was being read, " +
                                  std::to_string(kReadAttempts) +
                                  " times; back up again when it is quiet");
}

// Feeds bytes to the age encryptor.
class EncryptorSink final : public ByteSink {
 public:
  explicit EncryptorSink(age::Encryptor& enc) : enc_(enc) {}
  Status Write(std::span<const std::uint8_t> data) override { return enc_.Write(data); }

 private:
  age::Encryptor& enc_;
};

// Hashes a file while it is still being appended to: a thread reads (from the page cache) up to
// what the writer has reported and waits for more, so that when the writer is done only the
// last bytes are left to hash. The bytes it reads must be final: the file's start is written
// before Start, everything else is only ever appended.
class TrailingHasher {
 public:
  TrailingHasher() = default;
  TrailingHasher(const TrailingHasher&) = delete;
  TrailingHasher& operator=(const TrailingHasher&) = delete;
  ~TrailingHasher() { (void)Finish(available_); }

  [[nodiscard]] bool started() const { return thread_.joinable(); }

  // Starts hashing `path` from offset 0; it has `size` bytes so far.
  Status Start(const std::string& path, std::uint64_t size) {
    auto file = ReadOnlyFile::Open(path);
    if (!file) return tl::unexpected(file.error());
    file_.emplace(std::move(*file));
    path_ = path;
    available_ = size;
    try {
      thread_ = std::thread([this] { Run(); });
    } catch (const std::system_error& e) {
      return Fail(ErrorCode::kInternal, std::string("cannot start a hashing thread: ") + e.what());
    }
    return {};
  }

  // The writer: the file now has `size` bytes.
  void Appended(std::uint64_t size) {
    {
      std::lock_guard lock(mu_);
      available_ = size;
    }
    cv_.notify_one();
  }

  // The writer is done at `size` bytes: waits for the hash of all of them. Hex SHA-256.
  Result<std::string> Finish(std::uint64_t size) {
    if (!thread_.joinable()) return Fail(ErrorCode::kInternal, "payload hasher not started");
    {
      std::lock_guard lock(mu_);
      available_ = size;
      done_ = true;
    }
    cv_.notify_one();
    thread_.join();
    if (error_) return tl::unexpected(*error_);
    if (hashed_ != size) return Fail(ErrorCode::kIo, "read back " + path_ + ": short read");
    return hash_.FinalHex();
  }

 private:
  void Run() {
    std::vector<std::uint8_t> buf(1 << 20);
    std::unique_lock lock(mu_);
    for (;;) {
      cv_.wait(lock, [&] { return available_ > hashed_ || done_; });
      const std::uint64_t upto = available_;
      if (hashed_ >= upto && done_) return;
      lock.unlock();
      while (hashed_ < upto) {
        const auto want =
            static_cast<std::size_t>(std::min<std::uint64_t>(buf.size(), upto - hashed_));
        const ssize_t n = ::pread(file_->fd(), buf.data(), want, static_cast<off_t>(hashed_));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
          error_ = n < 0 ? ErrnoError(errno, "read back", path_)
                         : Error{ErrorCode::kIo, "read back " + path_ + ": unexpected end"};
          return;
        }
        hash_.Update(std::span<const std::uint8_t>(buf.data(), static_cast<std::size_t>(n)));
        hashed_ += static_cast<std::uint64_t>(n);
      }
      lock.lock();
    }
  }

  std::optional<ReadOnlyFile> file_;
  std::string path_;
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::uint64_t available_ = 0;  // guarded by mu_
  bool done_ = false;            // guarded by mu_
  std::uint64_t hashed_ = 0;     // the hashing thread's, read after join
  Sha256 hash_;
  std::optional<Error> error_;
};

// Forwards to a file and tells a started TrailingHasher how far it has been appended.
class ReportingFile final : public WritableFile {
 public:
  ReportingFile(WritableFile& file, TrailingHasher& hasher) : file_(file), hasher_(hasher) {}
  Status Append(std::span<const std::uint8_t> data) override {
    SP_RETURN_IF_ERROR(file_.Append(data));
    size_ += data.size();
    if (hasher_.started()) hasher_.Appended(size_);
    return {};
  }
  Status WriteAt(std::uint64_t offset, std::span<const std::uint8_t> data) override {
    return file_.WriteAt(offset, data);
  }
  Status Sync() override { return file_.Sync(); }
  Status Close() override { return file_.Close(); }
  [[nodiscard]] std::uint64_t size() const { return size_; }

 private:
  WritableFile& file_;
  TrailingHasher& hasher_;
  std::uint64_t size_ = 0;
};

// Hashes and counts what passes through.
class HashingSource final : public ByteSource {
 public:
  explicit HashingSource(ByteSource& in) : in_(in) {}
  Result<std::size_t> Read(std::span<std::uint8_t> out) override {
    auto n = in_.Read(out);
    if (n && *n > 0) {
      hash_.Update(std::span<const std::uint8_t>(out.data(), *n));
      bytes_ += *n;
    }
    return n;
  }
  std::string FinalHex() { return hash_.FinalHex(); }
  [[nodiscard]] std::uint64_t bytes() const { return bytes_; }

 private:
  ByteSource& in_;
  Sha256 hash_;
  std::uint64_t bytes_ = 0;
};

// Collects what an age writer produces, for the small index file.
class MemoryFile final : public WritableFile {
 public:
  Status Append(std::span<const std::uint8_t> data) override {
    bytes_.append(reinterpret_cast<const char*>(data.data()), data.size());
    return {};
  }
  Status WriteAt(std::uint64_t offset, std::span<const std::uint8_t> data) override {
    if (offset + data.size() > bytes_.size()) {
      return Fail(ErrorCode::kInternal, "memory file: write past the end");
    }
    std::memcpy(bytes_.data() + offset, data.data(), data.size());
    return {};
  }
  Status Sync() override { return {}; }
  Status Close() override { return {}; }
  [[nodiscard]] const std::string& bytes() const { return bytes_; }

 private:
  std::string bytes_;
};

// Reads from a string.
class StringSource final : public ByteSource {
 public:
  explicit StringSource(std::string_view data) : data_(data) {}
  Result<std::size_t> Read(std::span<std::uint8_t> out) override {
    const std::size_t n = std::min(out.size(), data_.size() - pos_);
    std::memcpy(out.data(), data_.data() + pos_, n);
    pos_ += n;
    return n;
  }

 private:
  std::string_view data_;
  std::size_t pos_ = 0;
};

// Reads an age source to its verified end, at most `max` bytes.
Result<std::string> ReadAll(ByteSource& in, std::uint64_t max, const std::string& what) {
  std::string out;
  std::vector<std::uint8_t> buf(kBufferSize);
  for (;;) {
    auto n = in.Read(buf);
    if (!n) return tl::unexpected(n.error());
    if (*n == 0) return out;
    if (out.size() + *n > max) return Fail(ErrorCode::kCorrupt, what + " is too large");
    out.append(reinterpret_cast<const char*>(buf.data()), *n);
  }
}

std::string LocalIdFor(std::chrono::system_clock::time_point t) {
  std::time_t tt = std::chrono::system_clock::to_time_t(t);
  std::tm tm{};
  localtime_r(&tt, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d_%H-%M-%S", &tm);
  return buf;
}

std::string IsoLocal(std::chrono::system_clock::time_point t) {
  std::time_t tt = std::chrono::system_clock::to_time_t(t);
  std::tm tm{};
  localtime_r(&tt, &tm);
  char buf[40];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S%z", &tm);
  std::string s = buf;
  // +0100 -> +01:00
  if (s.size() >= 5) s.insert(s.size() - 2, ":");
  return s;
}

bool Exists(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0;
}

int IdSuffix(const std::string& id) {
  if (id.size() <= 19) return 1;
  return std::atoi(id.c_str() + 20);
}

Status CheckIdArg(const std::string& id) {
  if (!manifest::IsValidId(id)) {
    std::string shown = id.substr(0, 64);
    for (char& c : shown) {
      if (static_cast<unsigned char>(c) < 0x20) c = '?';
    }
    return Fail(ErrorCode::kBadInput,
                "'" + shown + "' is not a safety point id (expected YYYY-MM-DD_HH-MM-SS)");
  }
  return {};
}

}  // namespace

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

std::string Store::DirOf(const std::string& id) const { return options_.backup_dir + "/" + id; }

Status Store::Prepare() {
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
    if ((st.st_mode & 07777) != 0700) SP_RETURN_IF_ERROR(fs_.Chmod(dir, 0700));
    return {};
  }
  if (errno != ENOENT) return tl::unexpected(ErrnoError(errno, "stat", dir));
  std::error_code ec;
  auto parent = std::filesystem::path(dir).parent_path();
  if (!parent.empty()) std::filesystem::create_directories(parent, ec);
  if (ec) return Fail(ErrorCode::kIo, "create " + parent.string() + ": " + ec.message());
  SP_RETURN_IF_ERROR(fs_.MakeDir(dir, 0700));
  if (!parent.empty()) SP_RETURN_IF_ERROR(fs_.SyncDir(parent.string()));
  return {};
}

Result<StoreLock> Store::Lock(LockMode mode) {
  SP_RETURN_IF_ERROR(Prepare());
  std::string path = options_.backup_dir + "/.lock";
  int fd = ::open(path.c_str(), O_CREAT | O_RDWR | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) return tl::unexpected(ErrnoError(errno, "open", path));
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

Result<std::string> Store::NewId() const {
  const std::string base = LocalIdFor(clock_.Now());
  auto id_for = [&](int n) { return n == 1 ? base : base + "-" + std::to_string(n); };
  // A new id sorts after every id of the same second still in use: a free slot below one in
  // use (its safety point deleted by retention a moment ago) would make the newest safety point
  // look like the oldest of that second.
  int highest = 0;
  for (int n = 1; n <= 999; ++n) {
    const std::string id = id_for(n);
    if (Exists(DirOf(id)) || Exists(options_.backup_dir + "/" + std::string(kTmpPrefix) + id)) {
      highest = n;
    }
  }
  if (highest >= 999) return Fail(ErrorCode::kBusy, "more than 999 safety points in one second");
  return id_for(highest + 1);
}

Result<manifest::Manifest> Store::Backup(const BackupRequest& request, const Secret& passphrase,
                                         const ProgressFn& progress) {
  bool retry = false;
  auto result = BackupOnce(request, passphrase, progress, &retry);
  if (!result && retry) result = BackupOnce(request, passphrase, progress, &retry);
  return result;
}

Result<manifest::Manifest> Store::BackupOnce(const BackupRequest& request, const Secret& passphrase,
                                             const ProgressFn& progress, bool* retry) {
  *retry = false;
  SP_RETURN_IF_ERROR(Prepare());
  auto id = NewId();
  if (!id) return tl::unexpected(id.error());
  const std::string staging = options_.backup_dir + "/" + std::string(kTmpPrefix) + *id;
  SP_RETURN_IF_ERROR(fs_.MakeDir(staging, 0700));

  // Everything below cleans the staging dir on failure.
  auto result = [&]() -> Result<manifest::Manifest> {
    const std::string partial = staging + "/payload.partial";
    auto file = fs_.CreateFile(partial, 0600);
    if (!file) return tl::unexpected(file.error());
    // The payload's hash names it. Once the KDF is done the header is final, and a thread hashes
    // the file from its start while the rest is appended.
    TrailingHasher payload_hasher;
    ReportingFile reporting(**file, payload_hasher);
    // Starts the scrypt derivation on its own thread; it runs while we hash and stream.
    auto enc = age::Encryptor::Create(reporting, passphrase, options_.work_factor);
    if (!enc) return tl::unexpected(enc.error());

    // The scrypt derivation keeps one core busy for its first part. Until it is done, the rest
    // runs on this thread alone (more threads would only slow the derivation, which everything
    // waits for at the end); then a second hashing thread and zstd's workers join.
    // Pass 1: hash every file until it reads stable.
    const auto& in = request.entries;
    std::vector<StableHash> hashed(in.size());
    std::vector<std::optional<safepoint::Error>> errors(in.size());
    {
      std::atomic<std::size_t> next{0};
      auto hash_one = [&](std::size_t i, std::vector<std::uint8_t>& buf) {
        if (in[i].header.type != manifest::EntryType::kFile || in[i].content) return;
        auto h = HashStable(fs_, in[i].abs_path, buf);
        if (h) {
          hashed[i] = std::move(*h);
        } else {
          errors[i] = h.error();
        }
      };
      auto helper_work = [&] {
        std::vector<std::uint8_t> buf(kBufferSize);
        for (std::size_t i = next++; i < in.size(); i = next++) hash_one(i, buf);
      };
      std::thread helper;
      bool helper_tried = false;
      std::vector<std::uint8_t> buf(kBufferSize);
      for (std::size_t i = next++; i < in.size(); i = next++) {
        if (!helper_tried && (*enc)->KdfDone()) {
          helper_tried = true;
          try {
            helper = std::thread(helper_work);
          } catch (const std::system_error&) {
            // No second thread: this one does it all.
          }
        }
        hash_one(i, buf);
      }
      if (helper.joinable()) helper.join();
    }
    manifest::Manifest m;
    m.id = *id;
    auto now = clock_.Now();
    m.created_at = IsoLocal(now);
    m.created_unix =
        std::chrono::duration_cast<std::chrono::seconds>(now.time_since_epoch()).count();
    m.reason = request.reason;
    m.update = request.update;
    m.producer = options_.producer;
    m.kdf.work_factor = options_.work_factor;
    m.warnings = request.warnings;
    std::vector<std::size_t> order;  // indices of `in` that are archived, in manifest order
    for (std::size_t i = 0; i < in.size(); ++i) {
      if (errors[i]) return tl::unexpected(*errors[i]);
      const auto& src = in[i];
      manifest::Entry e;
      e.path = src.header.path;
      e.type = src.header.type;
      e.mode = src.header.mode & 07777;
      e.mtime = src.header.mtime;
      e.uid = src.header.uid;
      e.gid = src.header.gid;
      e.link_target = src.header.link_target;
      if (e.type == manifest::EntryType::kFile) {
        if (src.content) {
          e.size = src.content->size();
          e.sha256 = Sha256Hex(*src.content);
        } else {
          if (!hashed[i].warning.empty()) m.warnings.push_back(hashed[i].warning);
          if (hashed[i].vanished) continue;
          const struct stat& st = hashed[i].st;
          e.size = static_cast<std::uint64_t>(st.st_size);
          e.sha256 = hashed[i].sha256;
          e.mode = st.st_mode & 07777;
          e.mtime = st.st_mtim.tv_sec;
          e.uid = st.st_uid;
          e.gid = st.st_gid;
        }
      }
      SP_RETURN_IF_ERROR(manifest::CheckArchivePath(e.path));
      m.entries.push_back(std::move(e));
      order.push_back(i);
    }
    const std::uint64_t total = m.TotalBytes();

    // Pass 2: stream MANIFEST.json and every entry into tar -> zstd -> age.
    EncryptorSink sink(**enc);
    bool all_workers = false;
    auto tar = archive::TarZstdWriter::Create(sink, options_.zstd_level, 0);
    if (!tar) return tl::unexpected(tar.error());
    auto use_all_workers = [&]() -> Status {
      if (all_workers || !(*enc)->KdfDone()) return {};
      all_workers = true;
      SP_RETURN_IF_ERROR((*enc)->WriteHeaderNow());
      SP_RETURN_IF_ERROR(payload_hasher.Start(partial, reporting.size()));
      return (*tar)->SetWorkers(options_.zstd_workers);
    };
    const std::string inner = manifest::Serialize(m, /*inner=*/true);
    archive::EntryHeader mh;
    mh.path = std::string(manifest::kInnerName);
    mh.size = inner.size();
    mh.mode = 0600;
    mh.mtime = m.created_unix;
    SP_RETURN_IF_ERROR((*tar)->BeginEntry(mh));
    SP_RETURN_IF_ERROR(
        (*tar)->WriteData({reinterpret_cast<const std::uint8_t*>(inner.data()), inner.size()}));

    std::vector<std::uint8_t> buf(kBufferSize);
    std::uint64_t done = 0;
    for (std::size_t k = 0; k < order.size(); ++k) {
      const auto& src = in[order[k]];
      const auto& e = m.entries[k];
      archive::EntryHeader h{e.path, e.type, e.size, e.mode, e.mtime, e.uid, e.gid, e.link_target};
      SP_RETURN_IF_ERROR(use_all_workers());
      SP_RETURN_IF_ERROR((*tar)->BeginEntry(h));
      if (e.type != manifest::EntryType::kFile) continue;
      if (src.content) {
        SP_RETURN_IF_ERROR((*tar)->WriteData(
            {reinterpret_cast<const std::uint8_t*>(src.content->data()), src.content->size()}));
        done += e.size;
        continue;
      }
      // The bytes recorded in pass 1 are read again: the same file (inode) with at least that
      // many bytes, whose first e.size bytes hash the same. A file that only grew (a log) passes.
      auto source = fs_.OpenRead(src.abs_path);
      const struct stat& was = hashed[order[k]].st;
      bool same = false;
      if (source) {
        auto st = (*source)->Stat();
        same = st && st->st_dev == was.st_dev && st->st_ino == was.st_ino &&
               static_cast<std::uint64_t>(st->st_size) >= e.size;
      }
      Sha256 hash;
      std::uint64_t left = e.size;
      while (left > 0) {
        std::size_t want = static_cast<std::size_t>(std::min<std::uint64_t>(left, buf.size()));
        std::size_t got = 0;
        if (same) SP_RETURN_IF_ERROR(ReadFull(**source, {buf.data(), want}, &got));
        if (got < want) {
          // Shorter than it was a moment ago: pad the entry, and let the hash check fail.
          std::fill(buf.begin() + static_cast<std::ptrdiff_t>(got),
                    buf.begin() + static_cast<std::ptrdiff_t>(want), 0);
          same = false;
        }
        hash.Update(std::span<const std::uint8_t>(buf.data(), want));
        SP_RETURN_IF_ERROR(use_all_workers());
        SP_RETURN_IF_ERROR((*tar)->WriteData({buf.data(), want}));
        left -= want;
        done += want;
        if (progress) progress(done, total);
      }
      if (!same || hash.FinalHex() != e.sha256) {
        *retry = true;
        return Fail(ErrorCode::kIo, "file " + src.abs_path +
                                        " changed while it was being backed up, twice; back up "
                                        "again when it is quiet");
      }
    }
    SP_RETURN_IF_ERROR((*tar)->Finish());
    SP_RETURN_IF_ERROR((*enc)->Finish());
    // A short payload can end before the KDF does: then the header went in last, and the hash
    // starts now, from the beginning.
    if (!payload_hasher.started()) {
      SP_RETURN_IF_ERROR(payload_hasher.Start(partial, reporting.size()));
    }
    // The hash's tail runs while this thread waits for the fsync.
    Status synced = (**file).Sync();
    auto sha256 = payload_hasher.Finish(reporting.size());
    SP_RETURN_IF_ERROR(synced);
    if (!sha256) return tl::unexpected(sha256.error());
    SP_RETURN_IF_ERROR((**file).Close());
    if (progress) progress(total, total);
    manifest::Payload payload;
    payload.sha256 = *sha256;
    payload.size = reporting.size();
    payload.name = "state_" + *id + "_" + payload.sha256.substr(0, 12) + ".enc";
    m.payload = payload;
    m.key_id = (*enc)->KeyId();
    SP_RETURN_IF_ERROR(fs_.Rename(partial, staging + "/" + payload.name));

    // The encrypted index: the same MANIFEST.json, as a second age file under the payload's file
    // key and header, so show, diff and the rollback plan read it without the payload.
    MemoryFile index_bytes;
    SP_RETURN_IF_ERROR((*enc)->WriteSibling(
        index_bytes, {reinterpret_cast<const std::uint8_t*>(inner.data()), inner.size()}));
    manifest::Payload index;
    index.sha256 = Sha256Hex(index_bytes.bytes());
    index.size = index_bytes.bytes().size();
    index.name = "index_" + *id + "_" + index.sha256.substr(0, 12) + ".enc";
    m.index = index;
    {
      auto xf = fs_.CreateFile(staging + "/" + index.name, 0600);
      if (!xf) return tl::unexpected(xf.error());
      SP_RETURN_IF_ERROR(
          (*xf)->Append({reinterpret_cast<const std::uint8_t*>(index_bytes.bytes().data()),
                         index_bytes.bytes().size()}));
      SP_RETURN_IF_ERROR((*xf)->Sync());
      SP_RETURN_IF_ERROR((*xf)->Close());
    }

    const std::string outer = manifest::Serialize(m, /*inner=*/false);
    auto mf = fs_.CreateFile(staging + "/" + std::string(manifest::kOuterName), 0600);
    if (!mf) return tl::unexpected(mf.error());
    SP_RETURN_IF_ERROR(
        (*mf)->Append({reinterpret_cast<const std::uint8_t*>(outer.data()), outer.size()}));
    SP_RETURN_IF_ERROR((*mf)->Sync());
    SP_RETURN_IF_ERROR((*mf)->Close());
    SP_RETURN_IF_ERROR(fs_.SyncDir(staging));
    SP_RETURN_IF_ERROR(fs_.Rename(staging, DirOf(*id)));
    SP_RETURN_IF_ERROR(fs_.SyncDir(options_.backup_dir));
    return m;
  }();
  if (!result && Exists(staging)) {
    // Best effort: a crash here leaves the staging dir for CleanLeftovers.
    (void)fs_.RemoveTree(staging);
  }
  return result;
}

Result<std::vector<Listing>> Store::List() const {
  std::vector<Listing> out;
  DIR* d = ::opendir(options_.backup_dir.c_str());
  if (d == nullptr) {
    if (errno == ENOENT) return out;
    return tl::unexpected(ErrnoError(errno, "open", options_.backup_dir));
  }
  std::vector<std::string> ids;
  while (struct dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (manifest::IsValidId(name)) ids.push_back(std::move(name));
  }
  ::closedir(d);
  std::sort(ids.begin(), ids.end(), IdLess);
  for (auto& id : ids) {
    Listing l;
    l.id = id;
    l.dir = DirOf(id);
    auto m = Show(id);
    if (m) {
      l.manifest = std::move(*m);
    } else {
      l.problem = m.error().message;
    }
    out.push_back(std::move(l));
  }
  return out;
}

Result<manifest::Manifest> Store::Show(const std::string& id) const {
  SP_RETURN_IF_ERROR(CheckIdArg(id));
  const std::string dir = DirOf(id);
  struct stat st {};
  if (::lstat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return Fail(ErrorCode::kNotFound, "no safety point " + id);
  }
  auto text = ReadFileBounded(dir + "/" + std::string(manifest::kOuterName), kMaxOuterManifest);
  if (!text) {
    if (text.error().code == ErrorCode::kNotFound) {
      return Fail(ErrorCode::kCorrupt, "safety point " + id + " has no manifest.json");
    }
    return Fail(text.error().code, "safety point " + id + ": " + text.error().message);
  }
  auto m = manifest::Parse(*text);
  if (!m) {
    return Fail(m.error().code, "safety point " + id + ": " + m.error().message);
  }
  if (m->id != id) {
    return Fail(
        ErrorCode::kCorrupt,
        "safety point " + id + ": manifest.json belongs to another safety point (" + m->id + ")");
  }
  if (!m->payload) {
    return Fail(ErrorCode::kCorrupt, "safety point " + id + ": manifest.json lacks the payload");
  }
  return m;
}

Result<std::string> Store::IndexPath(const std::string& id, const manifest::Manifest& m) const {
  if (!m.index) return Fail(ErrorCode::kCorrupt, "safety point " + id + ": no index");
  const auto& p = *m.index;
  if (p.name != "index_" + id + "_" + p.sha256.substr(0, 12) + ".enc") {
    return Fail(ErrorCode::kCorrupt, "safety point " + id + ": unexpected index name");
  }
  return DirOf(id) + "/" + p.name;
}

Result<std::string> Store::ReadIndexCiphertext(const std::string& id,
                                               const manifest::Manifest& outer) const {
  auto path = IndexPath(id, outer);
  if (!path) return tl::unexpected(path.error());
  auto bytes = ReadFileBounded(*path, kMaxInnerManifest);
  if (!bytes) {
    if (bytes.error().code == ErrorCode::kNotFound) {
      return Fail(ErrorCode::kCorrupt, "safety point " + id + ": index file is missing");
    }
    return Fail(bytes.error().code, "safety point " + id + ": " + bytes.error().message);
  }
  if (bytes->size() != outer.index->size || Sha256Hex(*bytes) != outer.index->sha256) {
    return Fail(
        ErrorCode::kCorrupt,
        "safety point " + id + ": index differs from manifest.json (truncated or replaced)");
  }
  return bytes;
}

Result<manifest::Manifest> Store::Load(const std::string& id, const Secret& passphrase,
                                       Secret* fingerprint_key) const {
  auto outer = Show(id);
  if (!outer) return tl::unexpected(outer.error());
  if (outer->entries_listed) return outer;  // format 1
  auto corrupt = [&](const std::string& what) {
    return Fail(ErrorCode::kCorrupt, "safety point " + id + ": " + what);
  };
  auto bytes = ReadIndexCiphertext(id, *outer);
  if (!bytes) return tl::unexpected(bytes.error());
  StringSource src(*bytes);
  auto dec = age::Decryptor::Open(src, passphrase, options_.max_work_factor);
  if (!dec) return tl::unexpected(dec.error());
  if ((*dec)->KeyId() != outer->key_id) return corrupt("index key identifier differs");
  if (fingerprint_key) *fingerprint_key = (*dec)->DeriveSubkey(kFingerprintKeyInfo);
  auto text = ReadAll(**dec, kMaxInnerManifest, "index");
  if (!text) return corrupt("index: " + text.error().message);
  auto full = manifest::Parse(*text);
  if (!full || !full->entries_listed) {
    return corrupt("index: " + (full ? std::string("no entries") : full.error().message));
  }
  SP_RETURN_IF_ERROR(manifest::CheckConsistent(*full, *outer));
  full->payload = outer->payload;
  full->index = outer->index;
  full->key_id = outer->key_id;
  return full;
}

Result<std::string> Store::PayloadPath(const std::string& id, const manifest::Manifest& m) const {
  const auto& p = *m.payload;
  if (p.name != "state_" + id + "_" + p.sha256.substr(0, 12) + ".enc") {
    return Fail(ErrorCode::kCorrupt, "safety point " + id + ": unexpected payload name");
  }
  return DirOf(id) + "/" + p.name;
}

namespace {

// Verifies entries without keeping them.
class NullVisitor final : public EntryVisitor {
 public:
  Status Begin(const manifest::Entry&) override { return {}; }
  Status Data(std::span<const std::uint8_t>) override { return {}; }
  Status End(const manifest::Entry&) override { return {}; }
};

}  // namespace

Result<VerifyReport> Store::Verify(const std::string& id, const Secret& passphrase) const {
  NullVisitor visitor;
  return Read(id, passphrase, visitor);
}

Result<VerifyReport> Store::Read(const std::string& id, const Secret& passphrase,
                                 EntryVisitor& visitor) const {
  auto outer = Show(id);
  if (!outer) return tl::unexpected(outer.error());
  auto path = PayloadPath(id, *outer);
  if (!path) return tl::unexpected(path.error());
  auto file = ReadOnlyFile::Open(*path);
  if (!file) {
    if (file.error().code == ErrorCode::kNotFound) {
      return Fail(ErrorCode::kCorrupt, "safety point " + id + ": payload file is missing");
    }
    return Fail(file.error().code, "safety point " + id + ": " + file.error().message);
  }
  if (file->size() != outer->payload->size) {
    return Fail(ErrorCode::kCorrupt, "safety point " + id + ": payload is " +
                                         std::to_string(file->size()) + " bytes, manifest says " +
                                         std::to_string(outer->payload->size) +
                                         " (truncated or replaced)");
  }
  auto corrupt = [&](const std::string& what) {
    return Fail(ErrorCode::kCorrupt, "safety point " + id + ": " + what);
  };
  FdSource raw(file->fd(), *path);
  HashingSource hashing(raw);
  auto dec = age::Decryptor::Open(hashing, passphrase, options_.max_work_factor);
  if (!dec) return tl::unexpected(dec.error());
  if (!outer->key_id.empty() && (*dec)->KeyId() != outer->key_id) {
    return corrupt("key identifier differs from manifest.json");
  }
  if ((*dec)->work_factor() != outer->kdf.work_factor) {
    return corrupt("work factor differs from manifest.json");
  }
  auto reader = archive::TarZstdReader::Open(**dec);
  if (!reader) return tl::unexpected(reader.error());

  // The first entry is the authoritative manifest.
  auto first = (*reader)->Next();
  if (!first) return tl::unexpected(first.error());
  if (!*first || (*first)->path != manifest::kInnerName ||
      (*first)->type != manifest::EntryType::kFile || (*first)->size > kMaxInnerManifest) {
    return corrupt("the archive does not start with MANIFEST.json");
  }
  std::string inner_text;
  std::vector<std::uint8_t> buf(kBufferSize);
  for (;;) {
    auto n = (*reader)->ReadData(buf);
    if (!n) return tl::unexpected(n.error());
    if (*n == 0) break;
    inner_text.append(reinterpret_cast<const char*>(buf.data()), *n);
  }
  auto inner = manifest::Parse(inner_text);
  if (!inner) return corrupt("MANIFEST.json: " + inner.error().message);
  SP_RETURN_IF_ERROR(manifest::CheckConsistent(*inner, *outer));
  if (!outer->entries_listed) {
    // Format 2: the index, opened with the payload's file key, must list exactly what the
    // authoritative MANIFEST.json lists.
    auto bytes = ReadIndexCiphertext(id, *outer);
    if (!bytes) return tl::unexpected(bytes.error());
    StringSource src(*bytes);
    auto idx_dec = age::Decryptor::OpenWithFileKey(src, (*dec)->file_key());
    if (!idx_dec) return corrupt("index: " + idx_dec.error().message);
    auto text = ReadAll(**idx_dec, kMaxInnerManifest, "index");
    if (!text) return corrupt("index: " + text.error().message);
    auto listed = manifest::Parse(*text);
    if (!listed) return corrupt("index: " + listed.error().message);
    if (auto st = manifest::CheckConsistent(*inner, *listed); !st) {
      return corrupt("the index differs from MANIFEST.json: " + st.error().message);
    }
  }

  VerifyReport report;
  report.id = id;
  for (const auto& expected : inner->entries) {
    auto h = (*reader)->Next();
    if (!h) return tl::unexpected(h.error());
    if (!*h) return corrupt("archive ends before entry " + expected.path);
    const auto& got = **h;
    if (got.path != expected.path || got.type != expected.type ||
        (expected.type == manifest::EntryType::kFile && got.size != expected.size) ||
        got.mode != expected.mode || got.mtime != expected.mtime || got.uid != expected.uid ||
        got.gid != expected.gid || got.link_target != expected.link_target) {
      return corrupt("archive entry " + got.path + " does not match the manifest entry " +
                     expected.path);
    }
    SP_RETURN_IF_ERROR(visitor.Begin(expected));
    if (expected.type == manifest::EntryType::kFile) {
      Sha256 hash;
      std::uint64_t size = 0;
      for (;;) {
        auto n = (*reader)->ReadData(buf);
        if (!n) return tl::unexpected(n.error());
        if (*n == 0) break;
        std::span<const std::uint8_t> chunk(buf.data(), *n);
        hash.Update(chunk);
        size += *n;
        SP_RETURN_IF_ERROR(visitor.Data(chunk));
      }
      if (size != expected.size || hash.FinalHex() != expected.sha256) {
        return corrupt("entry " + expected.path + " does not match its SHA-256");
      }
      report.bytes += size;
    }
    SP_RETURN_IF_ERROR(visitor.End(expected));
    ++report.entries;
  }
  auto extra = (*reader)->Next();
  if (!extra) return tl::unexpected(extra.error());
  if (*extra) return corrupt("unexpected archive entry " + (**extra).path);
  // Authenticate the rest of the payload, to its final chunk.
  for (;;) {
    auto n = (*dec)->Read(buf);
    if (!n) return tl::unexpected(n.error());
    if (*n == 0) break;
  }
  for (;;) {
    auto n = hashing.Read(buf);
    if (!n) return tl::unexpected(n.error());
    if (*n == 0) break;
  }
  if (hashing.bytes() != outer->payload->size || hashing.FinalHex() != outer->payload->sha256) {
    return corrupt("payload SHA-256 differs from manifest.json");
  }
  return report;
}

Status Store::Decrypt(const std::string& id, const Secret& passphrase, ByteSink& out) const {
  auto outer = Show(id);
  if (!outer) return tl::unexpected(outer.error());
  auto path = PayloadPath(id, *outer);
  if (!path) return tl::unexpected(path.error());
  auto file = ReadOnlyFile::Open(*path);
  if (!file) return Fail(file.error().code, "safety point " + id + ": " + file.error().message);
  std::vector<std::uint8_t> buf(kBufferSize);
  // First the cheap check of the whole file against manifest.json (no KDF), so a truncated or
  // damaged payload writes nothing: `out` is usually a pipe or stdout that cannot take back
  // what a failure half-way would have released.
  {
    FdSource raw(file->fd(), *path);
    HashingSource hashing(raw);
    for (;;) {
      auto n = hashing.Read(buf);
      if (!n) return tl::unexpected(n.error());
      if (*n == 0) break;
    }
    if (hashing.bytes() != outer->payload->size || hashing.FinalHex() != outer->payload->sha256) {
      return Fail(ErrorCode::kCorrupt,
                  "safety point " + id + ": payload differs from manifest.json (" +
                      std::to_string(hashing.bytes()) + " bytes; truncated or replaced)");
    }
    if (::lseek(file->fd(), 0, SEEK_SET) != 0) {
      return Fail(ErrorCode::kIo, "seek " + *path + ": " + std::strerror(errno));
    }
  }
  FdSource raw(file->fd(), *path);
  HashingSource hashing(raw);
  auto dec = age::Decryptor::Open(hashing, passphrase, options_.max_work_factor);
  if (!dec) return tl::unexpected(dec.error());
  for (;;) {
    auto n = (*dec)->Read(buf);
    if (!n) return tl::unexpected(n.error());
    if (*n == 0) break;
    SP_RETURN_IF_ERROR(out.Write({buf.data(), *n}));
  }
  if (hashing.FinalHex() != outer->payload->sha256) {
    return Fail(ErrorCode::kCorrupt, "safety point " + id + ": payload SHA-256 differs");
  }
  return {};
}

namespace {

bool Selected(const std::string& path, const std::vector<std::string>& paths) {
  if (paths.empty()) return true;
  for (const auto& p : paths) {
    std::string_view want = p;
    while (want.size() > 1 && want.back() == '/') want.remove_suffix(1);
    if (path == want ||
        (path.size() > want.size() && path.starts_with(want) && path[want.size()] == '/')) {
      return true;
    }
  }
  return false;
}

// Creates the directories of `rel` below `root`, refusing any component that is not a real
// directory (a symlink planted in the destination must not redirect the extraction).
Status MakeParents(FileSystem& fs, const std::string& root, const std::string& rel) {
  std::string cur = root;
  std::size_t start = 0;
  for (;;) {
    std::size_t slash = rel.find('/', start);
    if (slash == std::string::npos) return {};
    cur += "/" + rel.substr(start, slash - start);
    struct stat st {};
    if (::lstat(cur.c_str(), &st) == 0) {
      if (!S_ISDIR(st.st_mode)) {
        return Fail(ErrorCode::kBadInput, cur + " is not a directory (a symlink?); refusing");
      }
    } else if (errno == ENOENT) {
      SP_RETURN_IF_ERROR(fs.MakeDir(cur, 0700));
    } else {
      return tl::unexpected(ErrnoError(errno, "stat", cur));
    }
    start = slash + 1;
  }
}

// Writes selected entries into a staging dir; nothing is visible in the destination until the
// whole safety point verified.
class StagingVisitor final : public EntryVisitor {
 public:
  StagingVisitor(FileSystem& fs, std::string staging, const std::vector<std::string>& paths)
      : fs_(fs), staging_(std::move(staging)), paths_(paths) {}

  Status Begin(const manifest::Entry& e) override {
    active_ = Selected(e.path, paths_);
    if (!active_) return {};
    SP_RETURN_IF_ERROR(MakeParents(fs_, staging_, e.path));
    const std::string path = staging_ + "/" + e.path;
    switch (e.type) {
      case manifest::EntryType::kFile: {
        auto f = fs_.CreateFile(path, 0600);
        if (!f) return tl::unexpected(f.error());
        file_ = std::move(*f);
        break;
      }
      case manifest::EntryType::kSymlink:
        SP_RETURN_IF_ERROR(fs_.Symlink(e.link_target, path));
        break;
      case manifest::EntryType::kDirectory: {
        struct stat st {};
        if (::lstat(path.c_str(), &st) != 0) SP_RETURN_IF_ERROR(fs_.MakeDir(path, 0700));
        break;
      }
    }
    selected_.push_back(e);
    return {};
  }
  Status Data(std::span<const std::uint8_t> data) override {
    if (!active_ || !file_) return {};
    return file_->Append(data);
  }
  Status End(const manifest::Entry& e) override {
    if (!active_) return {};
    const std::string path = staging_ + "/" + e.path;
    if (file_) {
      SP_RETURN_IF_ERROR(file_->Sync());
      SP_RETURN_IF_ERROR(file_->Close());
      file_.reset();
    }
    if (e.type != manifest::EntryType::kSymlink) {
      SP_RETURN_IF_ERROR(fs_.Chmod(path, e.mode & 07777));
      SP_RETURN_IF_ERROR(fs_.SetMtime(path, e.mtime));
    }
    return {};
  }
  [[nodiscard]] const std::vector<manifest::Entry>& selected() const { return selected_; }

 private:
  FileSystem& fs_;
  std::string staging_;
  const std::vector<std::string>& paths_;
  bool active_ = false;
  std::unique_ptr<WritableFile> file_;
  std::vector<manifest::Entry> selected_;
};

}  // namespace

Result<std::size_t> Store::Extract(const std::string& id, const Secret& passphrase,
                                   const std::string& dest,
                                   const std::vector<std::string>& paths) const {
  SP_RETURN_IF_ERROR(CheckIdArg(id));
  for (const auto& p : paths) {
    std::string trimmed = p;
    while (trimmed.size() > 1 && trimmed.back() == '/') trimmed.pop_back();
    if (auto st = manifest::CheckArchivePath(trimmed); !st) {
      return Fail(ErrorCode::kBadInput, st.error().message);
    }
  }
  struct stat st {};
  if (::lstat(dest.c_str(), &st) != 0) {
    if (errno != ENOENT) return tl::unexpected(ErrnoError(errno, "stat", dest));
    SP_RETURN_IF_ERROR(fs_.MakeDir(dest, 0700));
  } else if (!S_ISDIR(st.st_mode)) {
    return Fail(ErrorCode::kBadInput, "--to " + dest + " is not a directory");
  }
  std::string tmpl = dest + "/.safepoint-extract-XXXXXX";
  if (::mkdtemp(tmpl.data()) == nullptr) return tl::unexpected(ErrnoError(errno, "mkdtemp", dest));
  const std::string staging = tmpl;
  auto result = [&]() -> Result<std::size_t> {
    StagingVisitor visitor(fs_, staging, paths);
    auto report = Read(id, passphrase, visitor);
    if (!report) return tl::unexpected(report.error());
    if (visitor.selected().empty()) {
      return Fail(ErrorCode::kNotFound, "no entry of safety point " + id + " matches the paths");
    }
    // Publish: files and links by rename, directories created.
    std::size_t count = 0;
    std::vector<const manifest::Entry*> made_dirs;
    for (const auto& e : visitor.selected()) {
      SP_RETURN_IF_ERROR(MakeParents(fs_, dest, e.path));
      const std::string from = staging + "/" + e.path;
      const std::string to = dest + "/" + e.path;
      struct stat existing {};
      bool exists = ::lstat(to.c_str(), &existing) == 0;
      if (e.type == manifest::EntryType::kDirectory) {
        if (exists && !S_ISDIR(existing.st_mode)) {
          return Fail(ErrorCode::kBadInput, to + " exists and is not a directory");
        }
        if (!exists) {
          // Writable while it is filled; its own mode (all 07777 bits) is set at the end.
          SP_RETURN_IF_ERROR(fs_.MakeDir(to, 0700));
          made_dirs.push_back(&e);
        }
        continue;
      }
      if (exists && S_ISDIR(existing.st_mode)) {
        return Fail(ErrorCode::kBadInput, to + " exists and is a directory");
      }
      SP_RETURN_IF_ERROR(fs_.Rename(from, to));
      ++count;
    }
    for (auto it = made_dirs.rbegin(); it != made_dirs.rend(); ++it) {
      SP_RETURN_IF_ERROR(fs_.Chmod(dest + "/" + (*it)->path, (*it)->mode & 07777));
    }
    return count;
  }();
  (void)fs_.RemoveTree(staging);
  return result;
}

Status Store::Delete(const std::string& id) {
  SP_RETURN_IF_ERROR(CheckIdArg(id));
  const std::string dir = DirOf(id);
  struct stat st {};
  if (::lstat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return Fail(ErrorCode::kNotFound, "no safety point " + id);
  }
  const std::string gone = options_.backup_dir + "/" + std::string(kDelPrefix) + id;
  SP_RETURN_IF_ERROR(fs_.Rename(dir, gone));
  SP_RETURN_IF_ERROR(fs_.SyncDir(options_.backup_dir));
  SP_RETURN_IF_ERROR(fs_.RemoveTree(gone));
  return {};
}

Result<PruneReport> Store::Prune(const Retention& retention, const Secret& passphrase) {
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
    for (const auto& l : items) {
      if (!l.manifest) continue;
      if (Verify(l.id, passphrase)) {
        report.protected_id = l.id;
        break;
      }
    }
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

}  // namespace safepoint::store
