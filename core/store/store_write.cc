// Writing a safety point: Store::NewId and Store::Backup (hash, archive, encrypt, commit).
#include <dirent.h>
#include <fcntl.h>
#include <malloc.h>
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
#include "core/base/time_text.h"
#include "core/format/age.h"
#include "core/store/backup_hash.h"
#include "core/store/store.h"
#include "core/store/store_internal.h"

namespace safepoint::store {

using internal::CheckIdArg;
using internal::HashInputs;
using internal::kBufferSize;
using internal::kDelPrefix;
using internal::KeptStat;
using internal::kTmpPrefix;
using internal::Pass1;
using internal::ReadFull;
using internal::StableHash;

namespace {

// From this many entries on, a backup builds its manifest after the key derivation (BackupOnce).
constexpr std::size_t kWaitForKdfEntries = 16384;

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

// Forwards appends to a file and hashes them, so the index (whose name holds its hash) is
// streamed to disk instead of held in memory. Appends only.
class HashingFile final : public WritableFile {
 public:
  explicit HashingFile(WritableFile& file) : file_(file) {}
  Status Append(std::span<const std::uint8_t> data) override {
    SP_RETURN_IF_ERROR(file_.Append(data));
    sha_.Update(data);
    size_ += data.size();
    return {};
  }
  Status WriteAt(std::uint64_t /*offset*/, std::span<const std::uint8_t> /*data*/) override {
    return Fail(ErrorCode::kInternal, "hashing file: only appends are hashed");
  }
  Status Sync() override { return file_.Sync(); }
  Status Close() override { return file_.Close(); }
  [[nodiscard]] std::string FinalHex() { return sha_.FinalHex(); }
  [[nodiscard]] std::uint64_t size() const { return size_; }

 private:
  WritableFile& file_;
  Sha256 sha_;
  std::uint64_t size_ = 0;
};

bool Exists(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0;
}

// The manifest entry of `src`: as pass 1 read it for a file on disk. Empty when the file
// vanished; a warning pass 1 gave goes to `warnings`.
std::optional<manifest::Entry> ManifestEntry(const InputEntry& src, const StableHash& hashed,
                                             std::vector<std::string>& warnings) {
  manifest::Entry e;
  e.path = src.header.path;
  e.type = src.header.type;
  e.mode = src.header.mode & 07777;
  e.mtime = src.header.mtime;
  e.uid = src.header.uid;
  e.gid = src.header.gid;
  e.link_target = src.header.link_target;
  if (e.type != manifest::EntryType::kFile) return e;
  if (src.content) {
    e.size = src.content->size();
    e.sha256 = Sha256Hex(*src.content);
    return e;
  }
  if (hashed.warning) warnings.push_back(*hashed.warning);
  if (hashed.vanished) return std::nullopt;
  const KeptStat& st = hashed.st;
  e.size = st.size;
  e.sha256 = HexEncode(hashed.sha256);
  e.mode = st.mode & 07777;
  e.mtime = st.mtime;
  e.uid = st.uid;
  e.gid = st.gid;
  if (hashed.quiet) {
    e.stamp = manifest::Stamp{static_cast<std::uint64_t>(st.dev),
                              static_cast<std::uint64_t>(st.ino), st.mtime_ns, st.ctime_ns};
  }
  return e;
}

// Adds an entry to `m` for every input that pass 1 did not see vanish. Returns the indices of
// `in` that are archived, in manifest order.
Result<std::vector<std::size_t>> AddEntries(const std::vector<InputEntry>& in, const Pass1& pass1,
                                            manifest::Manifest& m) {
  if (pass1.first_error) return tl::unexpected(pass1.first_error->second);
  std::vector<std::size_t> order;
  for (std::size_t i = 0; i < in.size(); ++i) {
    auto e = ManifestEntry(in[i], pass1.hashed[i], m.warnings);
    if (!e) continue;
    SP_RETURN_IF_ERROR(manifest::CheckArchivePath(e->path));
    m.entries.push_back(std::move(*e));
    order.push_back(i);
  }
  return order;
}

std::span<const std::uint8_t> Bytes(const std::string& s) {
  return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}

// Creates `path` with `bytes` and syncs it.
Status WriteSyncedFile(FileSystem& fs, const std::string& path, const std::string& bytes) {
  auto file = fs.CreateFile(path, 0600);
  if (!file) return tl::unexpected(file.error());
  SP_RETURN_IF_ERROR((*file)->Append(Bytes(bytes)));
  SP_RETURN_IF_ERROR((*file)->Sync());
  return (*file)->Close();
}

// MANIFEST.json's zstd level: its JSON compresses smaller and twice as fast at 1 as at 3 (at
// 100k files, 31 MB of text: 6.0 MB in 0.04 s of CPU, against 6.6 MB in 0.09 s).
constexpr int kManifestLevel = 1;

// Pass 2: streams MANIFEST.json and every entry into tar -> zstd -> age. The payload's hash
// names it: once the KDF is done the header is final, and a thread hashes the file from its
// start while the rest is appended.
class PayloadStream {
 public:
  PayloadStream(FileSystem& fs, age::Encryptor& enc, TrailingHasher& hasher,
                ReportingFile& reporting, const std::string& partial, const Options& options,
                const ProgressFn& progress, std::uint64_t total)
      : fs_(fs),
        enc_(enc),
        hasher_(hasher),
        reporting_(reporting),
        partial_(partial),
        options_(options),
        progress_(progress),
        total_(total),
        sink_(enc),
        buf_(kBufferSize) {}

  // Starts the archive with the inner manifest `inner`, in a zstd frame of its own that is also
  // the index's text (`index_frame`); on all workers when the KDF is done.
  Status Begin(const std::string& inner, std::int64_t mtime,
               std::vector<std::uint8_t>& index_frame) {
    if (enc_.KdfDone()) SP_RETURN_IF_ERROR(StartPayloadHash());
    auto tar = archive::TarZstdWriter::Create(sink_, options_.zstd_level,
                                              all_workers_ ? options_.zstd_workers : 0);
    if (!tar) return tl::unexpected(tar.error());
    tar_ = std::move(*tar);
    archive::EntryHeader mh;
    mh.path = std::string(manifest::kInnerName);
    mh.size = inner.size();
    mh.mode = 0600;
    mh.mtime = mtime;
    SP_RETURN_IF_ERROR(tar_->BeginEntry(mh));
    return tar_->WriteDataInOwnFrame(Bytes(inner), kManifestLevel, index_frame);
  }

  // Archives `e`, the entry of `src` in `request`. A file on disk comes from what pass 1 kept of
  // it (`hashed.kept`: the bytes it hashed), or is read again from its SourcePath and must match
  // its pass 1 stat and hash (else `*retry`).
  Status Add(const BackupRequest& request, const InputEntry& src, const manifest::Entry& e,
             const StableHash& hashed, bool* retry) {
    archive::EntryHeader h{e.path, e.type, e.size, e.mode, e.mtime, e.uid, e.gid, e.link_target};
    SP_RETURN_IF_ERROR(UseAllWorkers());
    SP_RETURN_IF_ERROR(tar_->BeginEntry(h));
    // An empty file has no bytes to check: it is recorded empty, as pass 1 found it.
    if (e.type != manifest::EntryType::kFile || e.size == 0) return {};
    if (src.content || hashed.kept != nullptr) {
      const std::span<const std::uint8_t> bytes =
          src.content
              ? Bytes(*src.content)
              : std::span<const std::uint8_t>(hashed.kept, static_cast<std::size_t>(e.size));
      SP_RETURN_IF_ERROR(tar_->WriteData(bytes));
      done_ += e.size;
      if (progress_ && !src.content) progress_(done_, total_);
      return {};
    }
    return AddRecordedFile(SourcePath(request, src), e, hashed.st, retry);
  }

  // Ends the archive and the age file; the payload hasher has started.
  Status Finish() {
    SP_RETURN_IF_ERROR(tar_->Finish());
    SP_RETURN_IF_ERROR(enc_.Finish());
    // A short payload can end before the KDF does: then the header went in last, and the hash
    // starts now, from the beginning.
    if (!hasher_.started()) SP_RETURN_IF_ERROR(hasher_.Start(partial_, reporting_.size()));
    return {};
  }

 private:
  // Once the KDF is done: the header goes in, the payload hasher starts, zstd's workers join.
  Status UseAllWorkers() {
    if (all_workers_ || !enc_.KdfDone()) return {};
    SP_RETURN_IF_ERROR(StartPayloadHash());
    return tar_->SetWorkers(options_.zstd_workers);
  }

  // The KDF is done: the header goes in, and the payload hasher starts.
  Status StartPayloadHash() {
    all_workers_ = true;
    SP_RETURN_IF_ERROR(enc_.WriteHeaderNow());
    return hasher_.Start(partial_, reporting_.size());
  }

  // The bytes recorded in pass 1 are read again: the same file (inode) with at least that many
  // bytes, whose first e.size bytes hash the same. A file that only grew (a log) passes.
  Status AddRecordedFile(const std::string& path, const manifest::Entry& e, const KeptStat& was,
                         bool* retry) {
    auto source = fs_.OpenRead(path);
    bool same = false;
    if (source) {
      auto st = (*source)->OpenedStat();
      same = st && st->st_dev == was.dev && st->st_ino == was.ino &&
             static_cast<std::uint64_t>(st->st_size) >= e.size;
    }
    Sha256 hash;
    std::uint64_t left = e.size;
    while (left > 0) {
      std::size_t want = static_cast<std::size_t>(std::min<std::uint64_t>(left, buf_.size()));
      std::size_t got = 0;
      if (same) SP_RETURN_IF_ERROR(ReadFull(**source, {buf_.data(), want}, &got));
      if (got < want) {
        // Shorter than it was a moment ago: pad the entry, and let the hash check fail.
        std::fill(buf_.begin() + static_cast<std::ptrdiff_t>(got),
                  buf_.begin() + static_cast<std::ptrdiff_t>(want), 0);
        same = false;
      }
      hash.Update(std::span<const std::uint8_t>(buf_.data(), want));
      SP_RETURN_IF_ERROR(UseAllWorkers());
      SP_RETURN_IF_ERROR(tar_->WriteData({buf_.data(), want}));
      left -= want;
      done_ += want;
      if (progress_) progress_(done_, total_);
    }
    if (!same || hash.FinalHex() != e.sha256) {
      *retry = true;
      return Fail(ErrorCode::kIo, "file " + path + " changed while it was being backed up");
    }
    return {};
  }

  FileSystem& fs_;
  age::Encryptor& enc_;
  TrailingHasher& hasher_;
  ReportingFile& reporting_;
  const std::string& partial_;
  const Options& options_;
  const ProgressFn& progress_;
  const std::uint64_t total_;
  EncryptorSink sink_;
  std::unique_ptr<archive::TarZstdWriter> tar_;
  std::vector<std::uint8_t> buf_;
  std::uint64_t done_ = 0;
  bool all_workers_ = false;
};

// A new safety point's manifest, without its entries and files.
manifest::Manifest NewManifest(const std::string& id, const BackupRequest& request,
                               std::chrono::system_clock::time_point now, const Options& options) {
  manifest::Manifest m;
  m.id = id;
  m.created_at = FormatLocalIsoTime(now);
  m.created_unix = std::chrono::duration_cast<std::chrono::seconds>(now.time_since_epoch()).count();
  m.reason = request.reason;
  m.update = request.update;
  m.producer = options.producer;
  m.kdf.work_factor = options.work_factor;
  m.warnings = request.warnings;
  return m;
}

// The encrypted index: MANIFEST.json's zstd frame from the payload (`frame`), as a second age
// file under the payload's file key and header, so show, diff and the rollback plan read it
// without the payload.
Status WriteIndex(FileSystem& fs, age::Encryptor& enc, std::span<const std::uint8_t> frame,
                  const std::string& staging, manifest::Manifest& m) {
  // Written under a fixed name, renamed to its hash-bearing one; Commit syncs the directory.
  const std::string partial = staging + "/index.partial";
  auto file = fs.CreateFile(partial, 0600);
  if (!file) return tl::unexpected(file.error());
  HashingFile hashing(**file);
  SP_RETURN_IF_ERROR(enc.WriteSibling(hashing, frame));
  SP_RETURN_IF_ERROR(hashing.Sync());
  SP_RETURN_IF_ERROR(hashing.Close());
  manifest::Payload index;
  index.sha256 = hashing.FinalHex();
  index.size = hashing.size();
  index.name = "index_" + m.id + "_" + index.sha256.substr(0, 12) + ".enc";
  m.index = index;
  return fs.Rename(partial, staging + "/" + index.name);
}

// Writes the summary manifest.json and moves the staging dir to `final_dir`, durably.
Status Commit(FileSystem& fs, const std::string& staging, const std::string& final_dir,
              const std::string& backup_dir, const manifest::Manifest& m) {
  const std::string outer = manifest::Serialize(m, /*inner=*/false);
  SP_RETURN_IF_ERROR(WriteSyncedFile(fs, staging + "/" + std::string(manifest::kOuterName), outer));
  SP_RETURN_IF_ERROR(fs.SyncDir(staging));
  SP_RETURN_IF_ERROR(fs.Rename(staging, final_dir));
  return fs.SyncDir(backup_dir);
}

}  // namespace

Result<std::unique_ptr<age::ScryptJob>> Store::StartKeyDerivation(const Secret& passphrase) const {
  return age::ScryptJob::Start(passphrase, options_.work_factor);
}

Result<manifest::Manifest> Store::Backup(const BackupRequest& request, const Secret& passphrase,
                                         const ProgressFn& progress,
                                         std::unique_ptr<age::ScryptJob> started) {
  // The scrypt derivation runs on its own thread (started here unless the caller started it
  // earlier) while the backup hashes and streams.
  return BackupWith(
      request,
      [&](WritableFile& out) {
        if (started) return age::Encryptor::Create(out, std::move(started));
        return age::Encryptor::Create(out, passphrase, options_.work_factor);
      },
      progress);
}

Result<manifest::Manifest> Store::BackupUnderKeyOf(const std::string& id, const Secret& file_key,
                                                   const BackupRequest& request,
                                                   const ProgressFn& progress) {
  SP_RETURN_IF_ERROR(internal::CheckIdArg(id));
  auto outer = Show(id);
  if (!outer) return tl::unexpected(outer.error());
  auto path = PayloadPath(id, *outer);
  if (!path) return tl::unexpected(path.error());
  return BackupWith(
      request,
      [&](WritableFile& out) -> Result<std::unique_ptr<age::Encryptor>> {
        auto file = ReadOnlyFile::Open(*path);
        if (!file) return tl::unexpected(file.error());
        FdSource source(file->fd(), *path);
        auto enc = age::Encryptor::CreateSibling(out, source, file_key);
        if (!enc) {
          return Fail(enc.error().code, "safety point " + id + ": " + enc.error().message);
        }
        return enc;
      },
      progress);
}

Result<manifest::Manifest> Store::BackupWith(const BackupRequest& request,
                                             const MakeEncryptor& make,
                                             const ProgressFn& progress) {
  // A file that changes between pass 1 and pass 2 fails an attempt. The next attempt reads it
  // again and keeps its bytes (HashAgainAndKeep), so a file replaced by a rename (Home
  // Assistant's `.storage`) is recorded as one of its versions; each attempt keeps one more, so
  // several replaced in turn cost an attempt each. A file too large to keep fails.
  constexpr int kAttempts = 6;
  std::vector<std::size_t> keep_again;
  for (int attempt = 1;; ++attempt) {
    std::optional<std::size_t> changed;
    auto result = BackupOnce(request, make, progress, keep_again, &changed);
    if (result || !changed) return result;
    const bool kept_before =
        std::find(keep_again.begin(), keep_again.end(), *changed) != keep_again.end();
    if (attempt == kAttempts || kept_before) {
      result.error().message +=
          kept_before ? ", again, and is too large to hold in memory"
                      : ", on " + std::to_string(kAttempts) + " attempts, each time another file";
      result.error().message += "; back up again when it is quiet, or exclude it";
      return result;
    }
    keep_again.push_back(*changed);
    ::malloc_trim(0);  // the failed attempt's memory back to the system before the next scrypt
  }
}

Result<manifest::Manifest> Store::BackupOnce(const BackupRequest& request,
                                             const MakeEncryptor& make, const ProgressFn& progress,
                                             const std::vector<std::size_t>& keep_again,
                                             std::optional<std::size_t>* changed) {
  changed->reset();
  SP_RETURN_IF_ERROR(Prepare());
  // The id and created_at are both the start time (format.md), however long the backup takes.
  const auto started = clock_.Now();
  auto id = NewId(started);
  if (!id) return tl::unexpected(id.error());
  const std::string staging = options_.backup_dir + "/" + std::string(kTmpPrefix) + *id;
  SP_RETURN_IF_ERROR(fs_.MakeDir(staging, 0700));

  // Everything below cleans the staging dir on failure.
  auto result = [&]() -> Result<manifest::Manifest> {
    const std::string partial = staging + "/payload.partial";
    auto file = fs_.CreateFile(partial, 0600);
    if (!file) return tl::unexpected(file.error());
    TrailingHasher payload_hasher;
    ReportingFile reporting(**file, payload_hasher);
    auto enc = make(reporting);
    if (!enc) return tl::unexpected(enc.error());

    Pass1 pass1 = HashInputs(fs_, request, **enc);
    // A large tree's entries and inner manifest (about 0.7 kB per entry) are built only once
    // scrypt has freed its memory, so the peak is scrypt's plus pass 1's, not all of them at
    // once. A tree this large takes longer to hash than scrypt to derive, so this seldom waits.
    if (request.entries.size() >= kWaitForKdfEntries || !keep_again.empty()) (**enc).WaitKdf();
    if (!keep_again.empty()) {
      SP_RETURN_IF_ERROR(HashAgainAndKeep(fs_, request, keep_again, pass1));
    }
    manifest::Manifest m = NewManifest(*id, request, started, options_);
    m.kdf.work_factor = (**enc).work_factor();  // a copied header keeps its own
    auto order = AddEntries(request.entries, pass1, m);
    if (!order) return tl::unexpected(order.error());

    std::string inner = manifest::Serialize(m, /*inner=*/true);
    const std::uint64_t total = m.TotalBytes();
    PayloadStream stream(fs_, **enc, payload_hasher, reporting, partial, options_, progress, total);
    std::vector<std::uint8_t> index_frame;  // the text again, compressed: 4-5x smaller
    SP_RETURN_IF_ERROR(stream.Begin(inner, m.created_unix, index_frame));
    std::string().swap(inner);
    for (std::size_t k = 0; k < order->size(); ++k) {
      const std::size_t i = (*order)[k];
      const InputEntry& src = request.entries[i];
      bool retry = false;
      if (auto st = stream.Add(request, src, m.entries[k], pass1.hashed[i], &retry); !st) {
        if (retry) *changed = i;
        return tl::unexpected(st.error());
      }
    }
    SP_RETURN_IF_ERROR(stream.Finish());
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
    SP_RETURN_IF_ERROR(WriteIndex(fs_, **enc, index_frame, staging, m));
    SP_RETURN_IF_ERROR(Commit(fs_, staging, DirOf(*id), options_.backup_dir, m));
    // Only a safety point that exists is remembered: a failed one's id is free again.
    if ((*enc)->derives_key()) RememberWritten(*id, (*enc)->file_key());
    return m;
  }();
  if (!result && Exists(staging)) {
    // Best effort: a crash here leaves the staging dir for CleanLeftovers.
    (void)fs_.RemoveTree(staging);
  }
  return result;
}

}  // namespace safepoint::store
