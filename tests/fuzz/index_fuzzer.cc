// Fuzzes the reader of an index's text (archive::IndexText): the decrypted bytes of an index,
// a zstd frame as the writer makes it or the plain text of older writers.
//
// Input: byte 0 picks the piece size the source serves, the size of each read, and whether the
// rest is first compressed into one zstd frame (with or without its checksum) so that the text
// behind a valid frame is fuzzed too; the raw mode fuzzes the frame parser itself.
// Invariants: a frame of our own compression reads back as exactly the bytes compressed; input
// that does not start with the zstd magic reads back as itself; otherwise the only error is
// kCorrupt, with a printable message; no read returns more than asked; output stops at 16 MiB.

#include <zstd.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

#include "core/format/archive.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace safepoint;
  using namespace safepoint::fuzz;
  if (size < 1) return 0;
  const std::uint8_t control = data[0];
  const std::span<const std::uint8_t> text(data + 1, size - 1);
  std::span<const std::uint8_t> body = text;
  std::vector<std::uint8_t> compressed;
  const bool ours = (control & 0x01) == 0;
  if (ours) {
    ZSTD_CCtx* cctx = ZSTD_createCCtx();
    if (cctx == nullptr) return 0;
    ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, 1);
    ZSTD_CCtx_setParameter(cctx, ZSTD_c_checksumFlag, (control & 0x08) != 0 ? 0 : 1);
    compressed.resize(ZSTD_compressBound(text.size()));
    const std::size_t n =
        ZSTD_compress2(cctx, compressed.data(), compressed.size(), text.data(), text.size());
    ZSTD_freeCCtx(cctx);
    if (ZSTD_isError(n) != 0) Violated("zstd could not compress the input");
    compressed.resize(n);
    body = compressed;
  }
  static constexpr std::uint8_t kMagic[4] = {0x28, 0xB5, 0x2F, 0xFD};
  const bool plain = !ours && (body.size() < 4 || std::memcmp(body.data(), kMagic, 4) != 0);
  const std::size_t piece = (control & 0x02) != 0 ? 1u + (control >> 4) : 1u << 20;
  MemorySource in(body, piece);
  auto reader = archive::IndexText(in);
  std::vector<std::uint8_t> buf((control & 0x04) != 0 ? 1u + (control >> 5) : 65536);
  std::vector<std::uint8_t> out;
  constexpr std::size_t kMaxOutput = 16u << 20;
  while (out.size() < kMaxOutput) {
    auto n = reader->Read(buf);
    if (!n) {
      if (ours || plain) Violated("IndexText refused a valid frame or plain text");
      ExpectCode(n.error(), {ErrorCode::kCorrupt}, "IndexText::Read");
      ExpectPrintableMessage(n.error().message, 300, "IndexText::Read");
      return 0;
    }
    if (*n > buf.size()) Violated("IndexText returned more than asked");
    if (*n == 0) break;
    out.insert(out.end(), buf.begin(), buf.begin() + static_cast<std::ptrdiff_t>(*n));
  }
  const std::span<const std::uint8_t> expected = ours ? text : body;
  if ((ours || plain) &&
      (out.size() != expected.size() || !std::equal(out.begin(), out.end(), expected.begin()))) {
    Violated("IndexText did not give back exactly what was compressed or written");
  }
  return 0;
}
