#pragma once

// Pass 1 of a backup (store_write.cc): every file on disk read until it reads stable, and
// hashed. Not part of any interface.

#include <sys/stat.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "core/base/fs.h"
#include "core/base/result.h"
#include "core/format/age.h"
#include "core/store/store.h"

namespace safepoint::store::internal {

// Reads until `buf` is full or the file ends.
[[nodiscard]] Status ReadFull(ReadableFile& file, std::span<std::uint8_t> buf, std::size_t* got);

// What a backup keeps of a file's fstat when it was opened: its identity, for pass 2 to find
// the same file again, and the attributes its manifest entry records. A fraction of a struct
// stat, because one is kept for every file while scrypt holds its memory.
struct KeptStat {
  dev_t dev = 0;
  ino_t ino = 0;
  std::uint64_t size = 0;  // what was hashed
  std::int64_t mtime = 0;
  std::uint32_t mode = 0;
  std::uint32_t uid = 0;
  std::uint32_t gid = 0;
  std::int64_t mtime_ns = 0;
  std::int64_t ctime_ns = 0;

  static KeptStat Of(const struct stat& st);
};

// The most pass 1 keeps (KeptBytes), whatever scrypt's memory.
inline constexpr std::uint64_t kMaxKeptBytes = std::uint64_t{128} << 20;

// What pass 1 keeps of the files it reads once scrypt's memory is freed: the bytes of each file
// of at most kBufferSize, exactly as hashed, so that pass 2 archives them without opening and
// hashing the file again. Bounded by `budget` (a share of the memory scrypt gave back); held in
// blocks of their own mapping, so the memory goes back to the system when the backup ends.
// Thread-safety: Allocate from any thread.
class KeptBytes {
 public:
  explicit KeptBytes(std::size_t budget) : budget_(budget) {}
  ~KeptBytes();
  KeptBytes(const KeptBytes&) = delete;
  KeptBytes& operator=(const KeptBytes&) = delete;

  // Room for `size` bytes (0 < size <= kBufferSize) that stays until destruction; null when
  // the budget is spent or no memory is left.
  [[nodiscard]] std::uint8_t* Allocate(std::size_t size);
  // Bytes of blocks mapped so far.
  [[nodiscard]] std::size_t mapped() const;
  // What the budget still allows.
  [[nodiscard]] std::size_t room() const;

 private:
  const std::size_t budget_;
  mutable std::mutex mu_;
  std::vector<std::span<std::uint8_t>> blocks_;  // guarded by mu_
  std::size_t used_ = 0;                         // of the last block; guarded by mu_
};

// The result of reading a file until two fstat calls around the read agree. One is kept for
// every input entry while scrypt holds its memory: 112 bytes.
struct StableHash {
  KeptStat st;  // as it was when opened
  std::array<std::uint8_t, 32> sha256{};
  // Set when the file is skipped or recorded while it kept changing (seldom: a pointer, not a
  // string in every record).
  std::unique_ptr<std::string> warning;
  bool vanished = false;  // deleted, or no longer a regular file: skipped with `warning`
  // Read stable, unchanged (mtime and ctime) since kStampQuietSeconds before pass 1 began: its
  // manifest entry records `st` as its stamp.
  bool quiet = false;
  // The file's st.size bytes as hashed, when pass 1 kept them (KeptBytes); else pass 2 reads
  // the file again and checks it against `sha256`.
  const std::uint8_t* kept = nullptr;
};

// What a backup's later attempt keeps of the files that changed under an earlier one
// (HashAgainAndKeep): what pass 1's budget leaves, within these bounds. The least is kept even
// under a copied header (a rollback's pre-rollback point, which keeps nothing in pass 1): a
// few `.storage` files that Home Assistant keeps replacing must not block a rollback.
inline constexpr std::uint64_t kMinKeptAgainBytes = std::uint64_t{8} << 20;
inline constexpr std::uint64_t kMaxKeptAgainBytes = std::uint64_t{32} << 20;

// Pass 1's outcome for every input entry: what reading it stable gave, or (for the first entry,
// in input order, that failed) the error it gave.
struct Pass1 {
  std::vector<StableHash> hashed;
  std::unique_ptr<KeptBytes> kept;  // what the entries' `kept` point into
  std::vector<std::vector<std::uint8_t>> kept_again;  // and HashAgainAndKeep's files
  std::optional<std::pair<std::size_t, safepoint::Error>> first_error;
};

// Pass 1: hashes every file on disk until it reads stable. The scrypt derivation keeps one core
// busy for its first part. Until it is done, this runs on the calling thread alone (more threads
// would only slow the derivation, which everything waits for at the end); then a second hashing
// thread joins, and small files are kept (KeptBytes) up to half of scrypt's memory (at most
// kMaxKeptBytes): the peak stays scrypt's, since nothing is kept while scrypt holds its memory.
// Under a copied header (no scrypt of its own, as a rollback's safety point) nothing is kept.
[[nodiscard]] Pass1 HashInputs(FileSystem& fs, const BackupRequest& request,
                               const age::Encryptor& enc);

// For a backup's next attempt after files changed between pass 1 and pass 2 of the one before
// (replaced by a rename, as Home Assistant writes `.storage`; deleted and made again; written
// through a mapping, which leaves fstat alone, as SQLite's `-shm`): reads the entries
// `indices` again until they read stable and keeps each one's bytes whole (within the bounds
// above), so that pass 2 archives exactly what was hashed instead of reading
// the file a second time. Call once scrypt has freed its memory.
[[nodiscard]] Status HashAgainAndKeep(FileSystem& fs, const BackupRequest& request,
                                      const std::vector<std::size_t>& indices, Pass1& pass1);

}  // namespace safepoint::store::internal
