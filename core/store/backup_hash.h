#pragma once

// Pass 1 of a backup (store_write.cc): every file on disk read until it reads stable, and
// hashed. Not part of any interface.

#include <sys/stat.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
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
};

// Pass 1's outcome for every input entry: what reading it stable gave, or (for the first entry,
// in input order, that failed) the error it gave.
struct Pass1 {
  std::vector<StableHash> hashed;
  std::optional<std::pair<std::size_t, safepoint::Error>> first_error;
};

// Pass 1: hashes every file on disk until it reads stable. The scrypt derivation keeps one core
// busy for its first part. Until it is done, this runs on the calling thread alone (more threads
// would only slow the derivation, which everything waits for at the end); then a second hashing
// thread joins.
[[nodiscard]] Pass1 HashInputs(FileSystem& fs, const BackupRequest& request,
                               const age::Encryptor& enc);

}  // namespace safepoint::store::internal
