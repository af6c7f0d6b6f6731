#include "core/format/archive.h"

#include <archive.h>
#include <archive_entry.h>
#include <sys/stat.h>
#include <zstd.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <string_view>
#include <vector>

#include "core/base/utf8.h"

namespace safepoint::archive {

namespace {

// --- writing -----------------------------------------------------------------------------------

// The tar is written here rather than by libarchive: libarchive converts names through the
// process locale, which has no charset for the bytes a Linux name may hold (it crashed on the
// first non-ASCII name in the C locale). This writer emits POSIX pax (docs/format.md, "The
// tar"): a ustar header per entry, preceded by a pax extended header ('x') whenever a field does
// not fit ustar exactly: a name or link target that is not 7-bit ASCII or too long, a size,
// time, uid or gid out of the octal fields' range. A name that is valid UTF-8 is written as pax
// requires (UTF-8, no hdrcharset); any other name is preceded by `hdrcharset=BINARY`, so GNU
// tar, Python's tarfile and libarchive all recreate the same bytes.
constexpr std::size_t kBlock = 512;

bool IsAscii(std::string_view s) {
  return std::all_of(s.begin(), s.end(),
                     [](char c) { return static_cast<unsigned char>(c) < 0x80; });
}

// Writes `value` as zero-padded octal into field[0, width - 1) followed by NUL; false when it
// does not fit.
bool PutOctal(char* field, std::size_t width, std::uint64_t value) {
  for (std::size_t i = width - 1; i-- > 0;) {
    field[i] = static_cast<char>('0' + (value & 7));
    value >>= 3;
  }
  field[width - 1] = '\0';
  return value == 0;
}

// One pax record: "<len> <key>=<value>\n", where <len> counts the whole record.
void AppendPaxRecord(std::string& out, std::string_view key, std::string_view value) {
  const std::size_t body = 1 + key.size() + 1 + value.size() + 1;  // " key=value\n"
  std::size_t len = body + 1;
  while (std::to_string(len).size() + body != len) len = std::to_string(len).size() + body;
  out += std::to_string(len);
  out += ' ';
  out += key;
  out += '=';
  out += value;
  out += '\n';
}

class WriterImpl final : public TarZstdWriter {
 public:
  WriterImpl(ByteSink& out) : out_(out) {}
  ~WriterImpl() override {
    if (cctx_ != nullptr) ZSTD_freeCCtx(cctx_);
  }
  WriterImpl(const WriterImpl&) = delete;
  WriterImpl& operator=(const WriterImpl&) = delete;

  Status Init(int level, int workers) {
    cctx_ = ZSTD_createCCtx();
    if (cctx_ == nullptr) return Fail(ErrorCode::kInternal, "zstd: out of memory");
    level_ = level;
    ZSTD_CCtx_setParameter(cctx_, ZSTD_c_compressionLevel, level);
    ZSTD_CCtx_setParameter(cctx_, ZSTD_c_checksumFlag, 1);
    ApplyWorkers(workers);
    out_buf_.resize(ZSTD_CStreamOutSize());
    pending_.reserve(kBufferSize);
    return {};
  }

  Status BeginEntry(const EntryHeader& h) override {
    if (left_ != 0) return Fail(ErrorCode::kInternal, "tar: previous entry is short of its size");
    if (h.path.empty() || h.path.find('\0') != std::string::npos ||
        h.link_target.find('\0') != std::string::npos) {
      return Fail(ErrorCode::kInternal, "tar: entry name empty or with NUL");
    }
    std::string name = h.path;
    if (h.type == manifest::EntryType::kDirectory) name += '/';
    const std::uint64_t size = h.type == manifest::EntryType::kFile ? h.size : 0;

    std::array<char, kBlock> header{};
    std::string pax;
    if (!IsValidUtf8(name) || !IsValidUtf8(h.link_target)) {
      AppendPaxRecord(pax, "hdrcharset", "BINARY");
    }
    const bool name_fits = name.size() <= 100 && IsAscii(name);
    std::memcpy(header.data(), name.data(), std::min<std::size_t>(name.size(), 100));
    if (!name_fits) AppendPaxRecord(pax, "path", name);
    if (!PutOctal(&header[100], 8, h.mode & 07777)) {
      return Fail(ErrorCode::kInternal, "tar: mode out of range");
    }
    if (!PutOctal(&header[108], 8, h.uid)) {
      PutOctal(&header[108], 8, 0);
      AppendPaxRecord(pax, "uid", std::to_string(h.uid));
    }
    if (!PutOctal(&header[116], 8, h.gid)) {
      PutOctal(&header[116], 8, 0);
      AppendPaxRecord(pax, "gid", std::to_string(h.gid));
    }
    if (!PutOctal(&header[124], 12, size)) {
      PutOctal(&header[124], 12, 0);
      AppendPaxRecord(pax, "size", std::to_string(size));
    }
    if (h.mtime < 0 || !PutOctal(&header[136], 12, static_cast<std::uint64_t>(h.mtime))) {
      PutOctal(&header[136], 12, 0);
      AppendPaxRecord(pax, "mtime", std::to_string(h.mtime));
    }
    switch (h.type) {
      case manifest::EntryType::kFile:
        header[156] = '0';
        break;
      case manifest::EntryType::kSymlink: {
        header[156] = '2';
        const auto& t = h.link_target;
        std::memcpy(&header[157], t.data(), std::min<std::size_t>(t.size(), 100));
        if (t.size() > 100 || !IsAscii(t)) AppendPaxRecord(pax, "linkpath", t);
        break;
      }
      case manifest::EntryType::kDirectory:
        header[156] = '5';
        break;
    }
    if (!pax.empty()) {
      // The extended header's own name only matters to pre-pax readers: ASCII, short.
      std::array<char, kBlock> x{};
      constexpr std::string_view kPaxName = "./PaxHeaders/entry";
      std::memcpy(x.data(), kPaxName.data(), kPaxName.size());
      PutOctal(&x[100], 8, 0644);
      PutOctal(&x[108], 8, 0);
      PutOctal(&x[116], 8, 0);
      PutOctal(&x[124], 12, pax.size());
      std::memcpy(&x[136], &header[136], 12);
      x[156] = 'x';
      SP_RETURN_IF_ERROR(Emit(Seal(x)));
      SP_RETURN_IF_ERROR(Emit({reinterpret_cast<const std::uint8_t*>(pax.data()), pax.size()}));
      SP_RETURN_IF_ERROR(Pad(pax.size()));
    }
    SP_RETURN_IF_ERROR(Emit(Seal(header)));
    left_ = size;
    entry_size_ = size;
    return {};
  }

  Status WriteData(std::span<const std::uint8_t> data) override {
    if (data.size() > left_)
      return Fail(ErrorCode::kInternal, "tar: entry data longer than its size");
    SP_RETURN_IF_ERROR(Emit(data));
    left_ -= data.size();
    if (!data.empty() && left_ == 0) SP_RETURN_IF_ERROR(Pad(entry_size_));
    return {};
  }

  Status WriteDataInOwnFrame(std::span<const std::uint8_t> data, int level,
                             std::vector<std::uint8_t>& frame) override {
    if (data.empty() || data.size() != left_) {
      return Fail(ErrorCode::kInternal, "tar: a frame of its own holds an entry's whole data");
    }
    SP_RETURN_IF_ERROR(Flush());
    SP_RETURN_IF_ERROR(EndFrame());
    ZSTD_CCtx_setParameter(cctx_, ZSTD_c_compressionLevel, level);
    copy_ = &frame;
    tar_bytes_ += data.size();
    Status written = Compress(data);
    if (written) written = EndFrame();
    copy_ = nullptr;
    ZSTD_CCtx_setParameter(cctx_, ZSTD_c_compressionLevel, level_);
    SP_RETURN_IF_ERROR(written);
    left_ = 0;
    return Pad(entry_size_);
  }

  Status SetWorkers(int workers) override {
    if (workers == workers_) return {};
    SP_RETURN_IF_ERROR(Flush());
    SP_RETURN_IF_ERROR(EndFrame());
    ZSTD_CCtx_reset(cctx_, ZSTD_reset_session_only);
    ApplyWorkers(workers);
    return {};
  }

  Status Finish() override {
    if (left_ != 0) return Fail(ErrorCode::kInternal, "tar: last entry is short of its size");
    static constexpr std::array<std::uint8_t, 2 * kBlock> kEnd{};
    SP_RETURN_IF_ERROR(Emit(kEnd));
    SP_RETURN_IF_ERROR(Flush());
    return EndFrame();
  }

  std::uint64_t tar_bytes() const override { return tar_bytes_; }

 private:
  static constexpr std::size_t kBufferSize = 64 * 1024;

  // Fills in the ustar magic and the checksum; returns the block.
  static std::span<const std::uint8_t> Seal(std::array<char, kBlock>& h) {
    std::memcpy(&h[257], "ustar", 6);  // magic "ustar\0"
    h[263] = '0';
    h[264] = '0';
    std::memset(&h[148], ' ', 8);
    unsigned sum = 0;
    for (char c : h) sum += static_cast<unsigned char>(c);
    PutOctal(&h[148], 7, sum);  // six digits, NUL, then the space already there
    return {reinterpret_cast<const std::uint8_t*>(h.data()), h.size()};
  }

  Status Pad(std::uint64_t written) {
    static constexpr std::array<std::uint8_t, kBlock> kZeros{};
    const std::size_t rest = static_cast<std::size_t>(written % kBlock);
    if (rest == 0) return {};
    return Emit({kZeros.data(), kBlock - rest});
  }

  // Tar bytes are gathered into 64 KiB blocks before zstd sees them, as libarchive did.
  Status Emit(std::span<const std::uint8_t> data) {
    tar_bytes_ += data.size();
    while (!data.empty()) {
      if (pending_.empty() && data.size() >= kBufferSize) {
        const std::size_t n = data.size() - data.size() % kBufferSize;
        SP_RETURN_IF_ERROR(Compress(data.first(n)));
        data = data.subspan(n);
        continue;
      }
      const std::size_t n = std::min(kBufferSize - pending_.size(), data.size());
      pending_.insert(pending_.end(), data.begin(), data.begin() + static_cast<std::ptrdiff_t>(n));
      data = data.subspan(n);
      if (pending_.size() == kBufferSize) SP_RETURN_IF_ERROR(Flush());
    }
    return {};
  }

  Status Flush() {
    if (pending_.empty()) return {};
    SP_RETURN_IF_ERROR(Compress(pending_));
    pending_.clear();
    return {};
  }

  Status Compress(std::span<const std::uint8_t> data) {
    ZSTD_inBuffer in{data.data(), data.size(), 0};
    while (in.pos < in.size) {
      ZSTD_outBuffer out{out_buf_.data(), out_buf_.size(), 0};
      std::size_t rc = ZSTD_compressStream2(cctx_, &out, &in, ZSTD_e_continue);
      if (ZSTD_isError(rc)) {
        return Fail(ErrorCode::kInternal, std::string("zstd: ") + ZSTD_getErrorName(rc));
      }
      SP_RETURN_IF_ERROR(Output(out.pos));
    }
    return {};
  }

  void ApplyWorkers(int workers) {
    workers_ = std::max(workers, 0);
    ZSTD_CCtx_setParameter(cctx_, ZSTD_c_nbWorkers, workers_);
    if (workers_ > 0) {
      // Jobs of 4 MiB keep zstd's buffers near 20 MiB with two workers (8 MiB, zstd's own size
      // at level 3, takes 46 MiB more; 1 MiB costs 6 % of the backup's time at 100k files and
      // 4 % of its ratio). Workers start only once scrypt's memory is freed.
      ZSTD_CCtx_setParameter(cctx_, ZSTD_c_jobSize, 4 << 20);
    }
  }

  // Hands zstd's first `n` output bytes to the sink (and to the copy of a frame of its own).
  Status Output(std::size_t n) {
    if (n == 0) return {};
    SP_RETURN_IF_ERROR(out_.Write({out_buf_.data(), n}));
    if (copy_ != nullptr) copy_->insert(copy_->end(), out_buf_.data(), out_buf_.data() + n);
    return {};
  }

  // Flushes and ends the current zstd frame.
  Status EndFrame() {
    for (;;) {
      ZSTD_inBuffer in{nullptr, 0, 0};
      ZSTD_outBuffer out{out_buf_.data(), out_buf_.size(), 0};
      std::size_t left = ZSTD_compressStream2(cctx_, &out, &in, ZSTD_e_end);
      if (ZSTD_isError(left)) {
        return Fail(ErrorCode::kInternal, std::string("zstd: ") + ZSTD_getErrorName(left));
      }
      SP_RETURN_IF_ERROR(Output(out.pos));
      if (left == 0) return {};
    }
  }

  ByteSink& out_;
  ZSTD_CCtx* cctx_ = nullptr;
  int level_ = 0;                              // the writer's compression level
  std::vector<std::uint8_t>* copy_ = nullptr;  // WriteDataInOwnFrame's copy, while it runs
  int workers_ = 0;
  std::vector<std::uint8_t> out_buf_;
  std::vector<std::uint8_t> pending_;
  std::uint64_t left_ = 0;        // data bytes the current entry still expects
  std::uint64_t entry_size_ = 0;  // size of the current entry
  std::uint64_t tar_bytes_ = 0;
};

// --- reading -----------------------------------------------------------------------------------

class ReaderImpl final : public TarZstdReader {
 public:
  explicit ReaderImpl(ByteSource& in) : in_(in), buf_(256 * 1024) {}
  ~ReaderImpl() override {
    if (archive_ != nullptr) archive_read_free(archive_);
  }
  ReaderImpl(const ReaderImpl&) = delete;
  ReaderImpl& operator=(const ReaderImpl&) = delete;

  Status Init() {
    archive_ = archive_read_new();
    if (archive_ == nullptr) return Fail(ErrorCode::kInternal, "libarchive: out of memory");
    archive_read_support_format_tar(archive_);
    archive_read_support_filter_zstd(archive_);
    if (archive_read_open(archive_, this, nullptr, &ReadCallback, nullptr) != ARCHIVE_OK) {
      return Error("open");
    }
    return {};
  }

  Result<std::optional<EntryHeader>> Next() override {
    archive_entry* e = nullptr;
    int rc = archive_read_next_header(archive_, &e);
    if (rc == ARCHIVE_EOF) return std::optional<EntryHeader>{};
    // Names are bytes: they are read in their raw ("MBS") form, never converted. libarchive
    // warns that a UTF-8 pax name has no form in the C locale; the raw form is the one wanted.
    if (rc != ARCHIVE_OK && rc != ARCHIVE_WARN) {
      return tl::unexpected(Error("reading entry header").error());
    }
    EntryHeader h;
    const char* path = archive_entry_pathname(e);
    if (path == nullptr) return Fail(ErrorCode::kCorrupt, "tar: entry without a path");
    h.path = path;
    // Directory entries carry a trailing '/' in tar; the manifest names them without it.
    if (archive_entry_filetype(e) == AE_IFDIR && h.path.size() > 1 && h.path.back() == '/') {
      h.path.pop_back();
    }
    SP_RETURN_IF_ERROR(manifest::CheckArchivePath(h.path));
    if (archive_entry_hardlink(e) != nullptr) {
      return Fail(ErrorCode::kCorrupt, "tar: hard link entry " + h.path + " refused");
    }
    if (archive_entry_sparse_count(e) > 0) {
      return Fail(ErrorCode::kCorrupt, "tar: sparse entry " + h.path + " refused");
    }
    switch (archive_entry_filetype(e)) {
      case AE_IFREG:
        h.type = manifest::EntryType::kFile;
        if (archive_entry_size(e) < 0) return Fail(ErrorCode::kCorrupt, "tar: negative size");
        h.size = static_cast<std::uint64_t>(archive_entry_size(e));
        break;
      case AE_IFLNK: {
        h.type = manifest::EntryType::kSymlink;
        const char* target = archive_entry_symlink(e);
        h.link_target = target != nullptr ? target : "";
        SP_RETURN_IF_ERROR(manifest::CheckLinkTarget(h.path, h.link_target));
        break;
      }
      case AE_IFDIR:
        h.type = manifest::EntryType::kDirectory;
        break;
      default:
        return Fail(ErrorCode::kCorrupt, "tar: special file entry " + h.path + " refused");
    }
    h.mode = static_cast<std::uint32_t>(archive_entry_perm(e)) & 07777;
    h.mtime = archive_entry_mtime(e);
    h.uid = static_cast<std::uint32_t>(archive_entry_uid(e));
    h.gid = static_cast<std::uint32_t>(archive_entry_gid(e));
    return std::optional<EntryHeader>(std::move(h));
  }

  Result<std::size_t> ReadData(std::span<std::uint8_t> out) override {
    la_ssize_t n = archive_read_data(archive_, out.data(), out.size());
    if (n < 0) return tl::unexpected(Error("reading entry data").error());
    return static_cast<std::size_t>(n);
  }

 private:
  static la_ssize_t ReadCallback(struct archive* /*a*/, void* self, const void** buf) {
    auto* r = static_cast<ReaderImpl*>(self);
    auto n = r->in_.Read(r->buf_);
    if (!n) {
      r->source_error_ = n.error();
      return -1;
    }
    *buf = r->buf_.data();
    return static_cast<la_ssize_t>(*n);
  }

  Status Error(const char* what) {
    if (source_error_) return tl::unexpected(*source_error_);
    const char* msg = archive_error_string(archive_);
    return Fail(ErrorCode::kCorrupt,
                std::string("archive damaged (") + what + "): " + (msg ? msg : "unknown error"));
  }

  ByteSource& in_;
  std::vector<std::uint8_t> buf_;
  struct archive* archive_ = nullptr;
  std::optional<safepoint::Error> source_error_;
};

}  // namespace

Result<std::unique_ptr<TarZstdWriter>> TarZstdWriter::Create(ByteSink& out, int level,
                                                             int workers) {
  auto w = std::make_unique<WriterImpl>(out);
  SP_RETURN_IF_ERROR(w->Init(level, workers));
  return std::unique_ptr<TarZstdWriter>(std::move(w));
}

Result<std::unique_ptr<TarZstdReader>> TarZstdReader::Open(ByteSource& in) {
  auto r = std::make_unique<ReaderImpl>(in);
  SP_RETURN_IF_ERROR(r->Init());
  return std::unique_ptr<TarZstdReader>(std::move(r));
}

}  // namespace safepoint::archive
