// Fuzzes the tar reader behind the path checks (archive::TarZstdReader, libarchive underneath).
//
// Input: byte 0 picks the read piece size and whether the rest is compressed with zstd before it
// reaches the reader (the reader only accepts zstd, so compressing lets mutations of the tar
// structure itself get past the filter; the raw mode fuzzes the zstd frame parser).
// Invariant: every entry the reader returns passed the path checks (CheckArchivePath, and
// CheckLinkTarget for links), is a file, link or directory, and no read returns more than asked.

#include <zstd.h>

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "core/format/archive.h"
#include "core/format/manifest.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace safepoint;
  using namespace safepoint::fuzz;
  if (size < 1) return 0;
  const std::uint8_t control = data[0];
  std::span<const std::uint8_t> body(data + 1, size - 1);
  std::vector<std::uint8_t> compressed;
  if ((control & 0x01) == 0) {
    compressed.resize(ZSTD_compressBound(body.size()));
    const std::size_t n =
        ZSTD_compress(compressed.data(), compressed.size(), body.data(), body.size(), 1);
    if (ZSTD_isError(n) != 0) return 0;
    compressed.resize(n);
    body = compressed;
  }
  const std::size_t piece = (control & 0x02) != 0 ? 1u + (control >> 4) : 1u << 20;
  MemorySource in(body, piece);
  auto reader = archive::TarZstdReader::Open(in);
  if (!reader) {
    ExpectCode(reader.error(), {ErrorCode::kCorrupt}, "TarZstdReader::Open");
    return 0;
  }
  std::vector<std::uint8_t> buf((control & 0x04) != 0 ? 3 : 65536);
  for (int entries = 0; entries < 10000; ++entries) {
    auto next = (*reader)->Next();
    if (!next) {
      ExpectCode(next.error(), {ErrorCode::kCorrupt}, "TarZstdReader::Next");
      return 0;
    }
    if (!next->has_value()) return 0;
    const archive::EntryHeader& h = **next;
    if (!manifest::CheckArchivePath(h.path)) Violated("returned an entry with an unsafe path");
    if (h.type == manifest::EntryType::kSymlink &&
        !manifest::CheckLinkTarget(h.path, h.link_target)) {
      Violated("returned a link whose target leaves the root");
    }
    if (h.type != manifest::EntryType::kSymlink && !h.link_target.empty()) {
      Violated("non-link entry with a link target");
    }
    if ((h.mode & ~07777u) != 0) Violated("mode beyond the permission bits");
    std::uint64_t got = 0;
    for (;;) {
      auto n = (*reader)->ReadData(buf);
      if (!n) {
        ExpectCode(n.error(), {ErrorCode::kCorrupt}, "TarZstdReader::ReadData");
        return 0;
      }
      if (*n > buf.size()) Violated("ReadData returned more than asked");
      if (*n == 0) break;
      got += *n;
    }
    if (h.type == manifest::EntryType::kFile && got > h.size) {
      Violated("entry data longer than its header size");
    }
  }
  return 0;
}
