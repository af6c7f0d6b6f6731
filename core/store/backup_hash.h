#pragma once

// Pass 1 of a backup (store_write.cc): every file on disk read until it reads stable, and
// hashed. Not part of any interface.

#include <sys/stat.h>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "core/base/fs.h"
#include "core/base/result.h"
#include "core/format/age.h"
#include "core/store/store.h"

namespace safepoint::store::internal {

// Reads until `buf` is full or the file ends.
[[nodiscard]] Status ReadFull(ReadableFile& file, std::span<std::uint8_t> buf, std::size_t* got);

// The result of reading a file until two fstat calls around the read agree.
struct StableHash {
  bool vanished = false;  // deleted, or no longer a regular file: skipped with `warning`
  struct stat st {};      // as it was when opened: size is what was hashed
  std::string sha256;
  std::string warning;  // set when the file is skipped or recorded while it kept changing
};

// Pass 1's outcome for every input entry: what reading it stable gave, or the error it gave.
struct Pass1 {
  std::vector<StableHash> hashed;
  std::vector<std::optional<safepoint::Error>> errors;
};

// Pass 1: hashes every file on disk until it reads stable. The scrypt derivation keeps one core
// busy for its first part. Until it is done, this runs on the calling thread alone (more threads
// would only slow the derivation, which everything waits for at the end); then a second hashing
// thread joins.
[[nodiscard]] Pass1 HashInputs(FileSystem& fs, const std::vector<InputEntry>& in,
                               const age::Encryptor& enc);

}  // namespace safepoint::store::internal
