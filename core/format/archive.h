#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "core/base/io.h"
#include "core/base/result.h"
#include "core/format/manifest.h"

namespace safepoint::archive {

// Header fields of one tar entry, in manifest terms.
struct EntryHeader {
  std::string path;
  manifest::EntryType type = manifest::EntryType::kFile;
  std::uint64_t size = 0;  // files only
  std::uint32_t mode = 0;  // permission bits
  std::int64_t mtime = 0;
  std::uint32_t uid = 0;
  std::uint32_t gid = 0;
  std::string link_target;  // symlinks only
};

// Writes a pax tar (libarchive) compressed with zstd (multi-threaded when `workers` > 0) to a
// sink. Usage: for each entry BeginEntry, WriteData until exactly `size` bytes, then Finish.
// Not thread-safe.
class TarZstdWriter {
 public:
  [[nodiscard]] static Result<std::unique_ptr<TarZstdWriter>> Create(ByteSink& out, int level,
                                                                     int workers);
  virtual ~TarZstdWriter() = default;
  [[nodiscard]] virtual Status BeginEntry(const EntryHeader& header) = 0;
  [[nodiscard]] virtual Status WriteData(std::span<const std::uint8_t> data) = 0;
  // Writes all of the current entry's data (exactly its size, at least one byte) in a zstd
  // frame of its own, at compression `level`, and appends that frame's bytes to `frame` as well:
  // decompressed alone, it gives `data` exactly. The entry's header and padding lie in the
  // frames before and after, at the writer's own level.
  [[nodiscard]] virtual Status WriteDataInOwnFrame(std::span<const std::uint8_t> data, int level,
                                                   std::vector<std::uint8_t>& frame) = 0;
  // Ends the current zstd frame and compresses what follows in a new frame with `workers`
  // threads (0: on the calling thread). Readers see one continuous tar: zstd decoders, ours and
  // `zstd -d`, read concatenated frames as one stream.
  [[nodiscard]] virtual Status SetWorkers(int workers) = 0;
  // Ends the tar and the zstd frame and flushes everything to the sink.
  [[nodiscard]] virtual Status Finish() = 0;
  // Uncompressed tar bytes produced so far.
  [[nodiscard]] virtual std::uint64_t tar_bytes() const = 0;
};

// Reads a zstd-compressed tar from a source (libarchive, tar formats and the zstd filter only).
// Every entry is checked before it is returned: paths with CheckArchivePath, symlink targets
// with CheckLinkTarget; hard links, devices, fifos and sparse entries are refused (kCorrupt).
// Truncated or malformed input is kCorrupt; errors of the source (e.g. a wrong passphrase or a
// tampered chunk reported by the age decryptor) are passed through unchanged.
class TarZstdReader {
 public:
  [[nodiscard]] static Result<std::unique_ptr<TarZstdReader>> Open(ByteSource& in);
  virtual ~TarZstdReader() = default;
  // The next entry, or std::nullopt at the end of the archive.
  [[nodiscard]] virtual Result<std::optional<EntryHeader>> Next() = 0;
  // Reads the current entry's data; 0 at its end.
  [[nodiscard]] virtual Result<std::size_t> ReadData(std::span<std::uint8_t> out) = 0;
};

// The text of a safety point's index (docs/format.md, "The index"), read from its decrypted
// bytes `in`: one zstd frame, decompressed, as the writer makes it; or, from writers before it
// was compressed, the text itself (a JSON object: never the zstd magic). Reads `in` to its end:
// a damaged or unfinished frame, or any byte after it, is kCorrupt; errors of `in` pass through.
[[nodiscard]] std::unique_ptr<ByteSource> IndexText(ByteSource& in);

}  // namespace safepoint::archive
