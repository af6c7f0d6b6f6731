// Pass 1 of a backup: every file on disk read until it reads stable, and hashed.
#include "core/store/backup_hash.h"

#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <ctime>
#include <limits>
#include <mutex>
#include <system_error>
#include <thread>
#include <utility>

#include "core/base/file_time.h"
#include "core/base/sha256.h"
#include "core/base/utf8.h"
#include "core/store/store_internal.h"

namespace safepoint::store::internal {

namespace {

// Nanoseconds since the epoch; INT64_MAX for a time that 64 bits do not hold: such a file is
// never quiet, so never stamped.
std::int64_t NanosOf(const struct timespec& t) {
  return NanosSinceEpoch(t).value_or(std::numeric_limits<std::int64_t>::max());
}

// The wall-clock time, in the kernel's file-time terms, before which a file's last change must lie
// for its stamp to be recorded (manifest::Stamp).
std::int64_t QuietBefore() {
  struct timespec now {};
  ::clock_gettime(CLOCK_REALTIME, &now);
  return NanosOf(now) - manifest::kStampQuietSeconds * 1'000'000'000;
}

bool SameFile(const struct stat& a, const struct stat& b) {
  return a.st_dev == b.st_dev && a.st_ino == b.st_ino && a.st_size == b.st_size &&
         a.st_mtim.tv_sec == b.st_mtim.tv_sec && a.st_mtim.tv_nsec == b.st_mtim.tv_nsec &&
         a.st_ctim.tv_sec == b.st_ctim.tv_sec && a.st_ctim.tv_nsec == b.st_ctim.tv_nsec;
}

// How often a file that changes while it is read is read again before it is recorded as it was.
constexpr int kReadAttempts = 3;

// Reads and hashes the first `st.st_size` bytes of `path` (its size when opened). Stable when
// fstat after the read equals fstat before; a file that changes on every one of kReadAttempts
// reads is recorded as the last read saw it (its first st_size bytes), with a warning, as GNU
// tar does. Pass 2 re-reads those bytes and checks them against this hash.
// A file of at most buf.size() bytes is read whole into `buf`; with `keep`, a stable read of it is
// kept there too. With `whole`, the bytes hashed (of a file of at most `whole_limit` bytes when
// opened) are collected there, whatever the file's size.
// Warnings name the file by its archive path `name`, as the walk's warnings do; errors by `path`.
Result<StableHash> HashStable(FileSystem& fs, const std::string& path, const std::string& name,
                              std::vector<std::uint8_t>& buf, std::int64_t quiet_before_ns,
                              KeptBytes* keep, std::vector<std::uint8_t>* whole = nullptr,
                              std::uint64_t whole_limit = 0) {
  StableHash out;
  for (int attempt = 1; attempt <= kReadAttempts; ++attempt) {
    if (whole != nullptr) whole->clear();
    auto file = fs.OpenRead(path);
    if (!file) {
      if (file.error().code == ErrorCode::kNotFound) {
        out.vanished = true;
        out.warning = std::make_unique<std::string>("skipped " + QuoteName(name) +
                                                    ": deleted while backing up");
        return out;
      }
      if (file.error().code == ErrorCode::kCorrupt) {  // replaced by a link, FIFO, directory
        out.vanished = true;
        out.warning = std::make_unique<std::string>("skipped " + QuoteName(name) +
                                                    ": replaced while backing up (" +
                                                    PrintableText(file.error().message) + ")");
        return out;
      }
      return tl::unexpected(file.error());
    }
    auto before = (*file)->OpenedStat();
    if (!before) return tl::unexpected(before.error());
    Sha256 hash;
    auto left = static_cast<std::uint64_t>(before->st_size);
    const bool collect = whole != nullptr && left <= whole_limit;
    if (collect) whole->reserve(static_cast<std::size_t>(left));
    bool short_read = false;
    while (left > 0) {
      const auto want = static_cast<std::size_t>(std::min<std::uint64_t>(left, buf.size()));
      std::size_t got = 0;
      SP_RETURN_IF_ERROR(ReadFull(**file, {buf.data(), want}, &got));
      hash.Update(std::span<const std::uint8_t>(buf.data(), got));
      if (collect) whole->insert(whole->end(), buf.data(), buf.data() + got);
      left -= got;
      if (got < want) {
        short_read = true;  // shrank while read
        break;
      }
    }
    auto after = (*file)->Stat();
    if (!after) return tl::unexpected(after.error());
    if (!short_read && SameFile(*before, *after)) {
      out.st = KeptStat::Of(*before);
      out.sha256 = hash.Final();
      out.quiet = out.st.mtime_ns < quiet_before_ns && out.st.ctime_ns < quiet_before_ns;
      const auto size = static_cast<std::size_t>(out.st.size);
      if (keep != nullptr && size > 0 && size <= buf.size()) {
        std::uint8_t* room = keep->Allocate(size);
        if (room != nullptr) {
          std::memcpy(room, buf.data(), size);
          out.kept = room;
        }
      }
      return out;
    }
    if (!short_read && attempt == kReadAttempts) {
      out.st = KeptStat::Of(*before);
      out.sha256 = hash.Final();
      out.warning = std::make_unique<std::string>(
          QuoteName(name) + ": file changed as we read it (" + std::to_string(kReadAttempts) +
          " attempts); recorded as it was when last opened, its first " +
          std::to_string(before->st_size) + " bytes");
      return out;
    }
  }
  return Fail(ErrorCode::kIo, "file " + path + " shrank while it was being read, " +
                                  std::to_string(kReadAttempts) +
                                  " times; back up again when it is quiet");
}

}  // namespace

// Blocks of 4 MiB: a kept file (at most kBufferSize) always fits in a fresh one.
constexpr std::size_t kKeptBlockSize = std::size_t{4} << 20;
static_assert(kBufferSize <= kKeptBlockSize);

KeptBytes::~KeptBytes() {
  for (const auto& block : blocks_) ::munmap(block.data(), block.size());
}

std::uint8_t* KeptBytes::Allocate(std::size_t size) {
  if (size == 0 || size > kKeptBlockSize) return nullptr;
  std::lock_guard lock(mu_);
  if (blocks_.empty() || blocks_.back().size() - used_ < size) {
    if ((blocks_.size() + 1) * kKeptBlockSize > budget_) return nullptr;
    void* p =
        ::mmap(nullptr, kKeptBlockSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return nullptr;  // not kept: pass 2 reads the file again
    blocks_.emplace_back(static_cast<std::uint8_t*>(p), kKeptBlockSize);
    used_ = 0;
  }
  std::uint8_t* room = blocks_.back().data() + used_;
  used_ += size;
  return room;
}

std::size_t KeptBytes::mapped() const {
  std::lock_guard lock(mu_);
  return blocks_.size() * kKeptBlockSize;
}

std::size_t KeptBytes::room() const {
  const std::size_t used = mapped();
  return budget_ > used ? budget_ - used : 0;
}

KeptStat KeptStat::Of(const struct stat& st) {
  KeptStat k;
  k.dev = st.st_dev;
  k.ino = st.st_ino;
  k.size = static_cast<std::uint64_t>(st.st_size);
  k.mtime = st.st_mtim.tv_sec;
  k.mode = st.st_mode;
  k.uid = st.st_uid;
  k.gid = st.st_gid;
  k.mtime_ns = NanosOf(st.st_mtim);
  k.ctime_ns = NanosOf(st.st_ctim);
  return k;
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

// Pass 1: hashes every file on disk until it reads stable. The scrypt derivation keeps one core
// busy for its first part. Until it is done, this runs on the calling thread alone (more threads
// would only slow the derivation, which everything waits for at the end); then a second hashing
// thread joins, and small files are kept.
Pass1 HashInputs(FileSystem& fs, const BackupRequest& request, const age::Encryptor& enc) {
  const std::vector<InputEntry>& in = request.entries;
  Pass1 out;
  out.hashed.resize(in.size());
  // Kept in the memory this backup's own scrypt gives back; none under a copied header (the
  // safety point a rollback takes, whose caller holds the rollback's own structures).
  const std::uint64_t budget =
      enc.derives_key()
          ? std::min<std::uint64_t>(age::ScryptMemory(enc.work_factor()) / 2, kMaxKeptBytes)
          : 0;
  out.kept = std::make_unique<KeptBytes>(static_cast<std::size_t>(budget));
  std::mutex error_mu;
  std::atomic<std::size_t> next{0};
  const std::int64_t quiet_before = QuietBefore();
  // Nothing is kept while scrypt holds its memory.
  auto hash_one = [&](std::size_t i, std::vector<std::uint8_t>& buf, bool keep) {
    if (in[i].header.type != manifest::EntryType::kFile || in[i].content) return;
    auto h = HashStable(fs, SourcePath(request, in[i]), in[i].header.path, buf, quiet_before,
                        keep ? out.kept.get() : nullptr);
    if (h) {
      out.hashed[i] = std::move(*h);
      return;
    }
    std::lock_guard lock(error_mu);
    if (!out.first_error || i < out.first_error->first) out.first_error.emplace(i, h.error());
  };
  auto helper_work = [&] {
    std::vector<std::uint8_t> buf(kBufferSize);
    for (std::size_t i = next++; i < in.size(); i = next++) hash_one(i, buf, true);
  };
  std::thread helper;
  bool helper_tried = false;
  std::vector<std::uint8_t> buf(kBufferSize);
  for (std::size_t i = next++; i < in.size(); i = next++) {
    const bool kdf_done = helper_tried || enc.KdfDone();
    if (!helper_tried && kdf_done) {
      helper_tried = true;
      try {
        helper = std::thread(helper_work);
      } catch (const std::system_error&) {
        // No second thread: this one does it all.
      }
    }
    hash_one(i, buf, kdf_done);
  }
  if (helper.joinable()) helper.join();
  return out;
}

Status HashAgainAndKeep(FileSystem& fs, const BackupRequest& request,
                        const std::vector<std::size_t>& indices, Pass1& pass1) {
  std::vector<std::uint8_t> buf(kBufferSize);
  std::uint64_t left =
      std::clamp<std::uint64_t>(pass1.kept->room(), kMinKeptAgainBytes, kMaxKeptAgainBytes);
  pass1.kept_again.reserve(pass1.kept_again.size() + indices.size());
  for (const std::size_t i : indices) {
    const InputEntry& in = request.entries[i];
    if (in.header.type != manifest::EntryType::kFile || in.content) continue;
    std::vector<std::uint8_t> whole;
    auto h = HashStable(fs, SourcePath(request, in), in.header.path, buf, QuietBefore(), nullptr,
                        &whole, left);
    if (!h) return tl::unexpected(h.error());
    if (!h->vanished && whole.size() == h->st.size && h->st.size > 0) {
      left -= h->st.size;
      pass1.kept_again.push_back(std::move(whole));  // moving keeps the bytes where they are
      h->kept = pass1.kept_again.back().data();
    }
    pass1.hashed[i] = std::move(*h);
  }
  return {};
}

}  // namespace safepoint::store::internal
