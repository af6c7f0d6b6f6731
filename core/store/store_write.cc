// Writing a safety point: Store::NewId and Store::Backup (hash, archive, encrypt, commit).
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
#include "core/store/store_internal.h"

namespace safepoint::store {

using internal::kBufferSize;
using internal::kTmpPrefix;
using internal::kDelPrefix;
using internal::CheckIdArg;

namespace {

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

}  // namespace

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

}  // namespace safepoint::store
