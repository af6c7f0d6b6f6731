// Reading an index's text: its zstd frame decompressed, or older writers' plain text.
#include <zstd.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "core/format/archive.h"

namespace safepoint::archive {

namespace {

// The index's frame is written at level 1 (a window of at most 2 MiB at the levels safepoint
// uses); a window beyond this is refused rather than allocated.
constexpr int kMaxWindowLog = 25;

constexpr std::array<std::uint8_t, 4> kZstdMagic = {0x28, 0xB5, 0x2F, 0xFD};

class IndexTextSource final : public ByteSource {
 public:
  explicit IndexTextSource(ByteSource& in) : in_(in), buf_(ZSTD_DStreamInSize()) {}
  ~IndexTextSource() override {
    if (dctx_ != nullptr) ZSTD_freeDCtx(dctx_);
  }
  IndexTextSource(const IndexTextSource&) = delete;
  IndexTextSource& operator=(const IndexTextSource&) = delete;

  Result<std::size_t> Read(std::span<std::uint8_t> out) override {
    if (!sniffed_) SP_RETURN_IF_ERROR(Sniff());
    if (dctx_ == nullptr) return ReadPlain(out);
    return ReadFrame(out);
  }

 private:
  // Reads the first bytes, enough to tell a zstd frame from text.
  Status Sniff() {
    while (have_.size < kZstdMagic.size()) {
      auto n = Fill();
      if (!n) return tl::unexpected(n.error());
      if (*n == 0) break;
    }
    sniffed_ = true;
    if (have_.size < kZstdMagic.size() ||
        std::memcmp(buf_.data(), kZstdMagic.data(), kZstdMagic.size()) != 0) {
      return {};
    }
    dctx_ = ZSTD_createDCtx();
    if (dctx_ == nullptr) return Fail(ErrorCode::kInternal, "zstd: out of memory");
    ZSTD_DCtx_setParameter(dctx_, ZSTD_d_windowLogMax, kMaxWindowLog);
    return {};
  }

  // Appends what `in` gives to the buffered input; 0 at its end.
  Result<std::size_t> Fill() {
    if (have_.pos == have_.size) have_ = {buf_.data(), 0, 0};
    std::span<std::uint8_t> room(buf_.data() + have_.size, buf_.size() - have_.size);
    if (room.empty()) return Fail(ErrorCode::kInternal, "index: input buffer full");
    auto n = in_.Read(room);
    if (!n) return tl::unexpected(n.error());
    have_.size += *n;
    return *n;
  }

  Result<std::size_t> ReadPlain(std::span<std::uint8_t> out) {
    if (have_.pos < have_.size) {
      const std::size_t n = std::min(out.size(), have_.size - have_.pos);
      std::memcpy(out.data(), static_cast<const std::uint8_t*>(have_.src) + have_.pos, n);
      have_.pos += n;
      return n;
    }
    return in_.Read(out);
  }

  Result<std::size_t> ReadFrame(std::span<std::uint8_t> out) {
    while (!frame_done_) {
      // zstd may still hold output for bytes it has already consumed: it is asked first, and
      // more input is read only when nothing came out.
      const std::size_t consumed = have_.pos;
      ZSTD_outBuffer o{out.data(), out.size(), 0};
      const std::size_t rc = ZSTD_decompressStream(dctx_, &o, &have_);
      if (ZSTD_isError(rc)) {
        return Fail(ErrorCode::kCorrupt, std::string("index: zstd: ") + ZSTD_getErrorName(rc));
      }
      frame_done_ = rc == 0;
      if (o.pos > 0) return o.pos;
      if (frame_done_ || have_.pos != consumed) continue;
      if (have_.pos < have_.size) return Fail(ErrorCode::kCorrupt, "index: zstd made no progress");
      auto n = Fill();
      if (!n) return tl::unexpected(n.error());
      if (*n == 0) return Fail(ErrorCode::kCorrupt, "index ends inside its zstd frame");
    }
    // One frame and nothing after it; `in` read to its end (the age reader's last chunk).
    if (have_.pos < have_.size) return Fail(ErrorCode::kCorrupt, "index: bytes after its frame");
    auto n = Fill();
    if (!n) return tl::unexpected(n.error());
    if (*n != 0) return Fail(ErrorCode::kCorrupt, "index: bytes after its frame");
    return std::size_t{0};
  }

  ByteSource& in_;
  std::vector<std::uint8_t> buf_;
  ZSTD_inBuffer have_{nullptr, 0, 0};  // buffered input: buf_[pos, size)
  ZSTD_DCtx* dctx_ = nullptr;          // set when the index is a zstd frame
  bool sniffed_ = false;
  bool frame_done_ = false;
};

}  // namespace

std::unique_ptr<ByteSource> IndexText(ByteSource& in) {
  return std::make_unique<IndexTextSource>(in);
}

}  // namespace safepoint::archive
