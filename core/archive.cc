#include "core/archive.h"

#include <archive.h>
#include <archive_entry.h>
#include <sys/stat.h>
#include <zstd.h>

#include <algorithm>
#include <vector>

namespace safepoint::archive {

namespace {

// --- writing -----------------------------------------------------------------------------------

class WriterImpl final : public TarZstdWriter {
 public:
  WriterImpl(ByteSink& out) : out_(out) {}
  ~WriterImpl() override {
    if (archive_ != nullptr) archive_write_free(archive_);
    if (cctx_ != nullptr) ZSTD_freeCCtx(cctx_);
  }
  WriterImpl(const WriterImpl&) = delete;
  WriterImpl& operator=(const WriterImpl&) = delete;

  Status Init(int level, int workers) {
    cctx_ = ZSTD_createCCtx();
    if (cctx_ == nullptr) return Fail(ErrorCode::kInternal, "zstd: out of memory");
    ZSTD_CCtx_setParameter(cctx_, ZSTD_c_compressionLevel, level);
    ZSTD_CCtx_setParameter(cctx_, ZSTD_c_checksumFlag, 1);
    ApplyWorkers(workers);
    out_buf_.resize(ZSTD_CStreamOutSize());

    archive_ = archive_write_new();
    if (archive_ == nullptr) return Fail(ErrorCode::kInternal, "libarchive: out of memory");
    if (archive_write_set_format_pax(archive_) != ARCHIVE_OK ||
        archive_write_set_bytes_per_block(archive_, 64 * 1024) != ARCHIVE_OK ||
        archive_write_set_bytes_in_last_block(archive_, 1) != ARCHIVE_OK) {
      return Fail(ErrorCode::kInternal,
                  std::string("libarchive: ") + archive_error_string(archive_));
    }
    if (archive_write_open2(archive_, this, nullptr, &WriteCallback, nullptr, nullptr) !=
        ARCHIVE_OK) {
      return Error();
    }
    return {};
  }

  Status BeginEntry(const EntryHeader& h) override {
    archive_entry* e = archive_entry_new();
    archive_entry_set_pathname_utf8(e, h.path.c_str());
    archive_entry_set_perm(e, static_cast<mode_t>(h.mode & 07777));
    archive_entry_set_mtime(e, static_cast<time_t>(h.mtime), 0);
    archive_entry_set_uid(e, h.uid);
    archive_entry_set_gid(e, h.gid);
    switch (h.type) {
      case manifest::EntryType::kFile:
        archive_entry_set_filetype(e, AE_IFREG);
        archive_entry_set_size(e, static_cast<la_int64_t>(h.size));
        break;
      case manifest::EntryType::kSymlink:
        archive_entry_set_filetype(e, AE_IFLNK);
        archive_entry_set_symlink_utf8(e, h.link_target.c_str());
        archive_entry_set_size(e, 0);
        break;
      case manifest::EntryType::kDirectory:
        archive_entry_set_filetype(e, AE_IFDIR);
        archive_entry_set_size(e, 0);
        break;
    }
    int rc = archive_write_header(archive_, e);
    archive_entry_free(e);
    if (rc != ARCHIVE_OK) return Error();
    return {};
  }

  Status WriteData(std::span<const std::uint8_t> data) override {
    while (!data.empty()) {
      la_ssize_t n = archive_write_data(archive_, data.data(), data.size());
      if (n < 0) return Error();
      if (n == 0) return Fail(ErrorCode::kInternal, "tar: entry data longer than its size");
      data = data.subspan(static_cast<std::size_t>(n));
    }
    return {};
  }

  Status SetWorkers(int workers) override {
    if (workers == workers_) return {};
    // libarchive buffers up to a block; what it has handed over so far ends this frame.
    SP_RETURN_IF_ERROR(EndFrame());
    ZSTD_CCtx_reset(cctx_, ZSTD_reset_session_only);
    ApplyWorkers(workers);
    return {};
  }

  Status Finish() override {
    if (archive_write_close(archive_) != ARCHIVE_OK) return Error();
    return EndFrame();
  }

  std::uint64_t tar_bytes() const override { return tar_bytes_; }

 private:
  static la_ssize_t WriteCallback(struct archive* /*a*/, void* self, const void* buf, size_t len) {
    auto* w = static_cast<WriterImpl*>(self);
    Status st = w->Compress({static_cast<const std::uint8_t*>(buf), len});
    if (!st) {
      w->sink_error_ = st.error();
      return -1;
    }
    return static_cast<la_ssize_t>(len);
  }

  Status Compress(std::span<const std::uint8_t> data) {
    tar_bytes_ += data.size();
    ZSTD_inBuffer in{data.data(), data.size(), 0};
    while (in.pos < in.size) {
      ZSTD_outBuffer out{out_buf_.data(), out_buf_.size(), 0};
      std::size_t rc = ZSTD_compressStream2(cctx_, &out, &in, ZSTD_e_continue);
      if (ZSTD_isError(rc)) {
        return Fail(ErrorCode::kInternal, std::string("zstd: ") + ZSTD_getErrorName(rc));
      }
      if (out.pos > 0) SP_RETURN_IF_ERROR(out_.Write({out_buf_.data(), out.pos}));
    }
    return {};
  }

  void ApplyWorkers(int workers) {
    workers_ = std::max(workers, 0);
    ZSTD_CCtx_setParameter(cctx_, ZSTD_c_nbWorkers, workers_);
    if (workers_ > 0) {
      // Small jobs keep zstd's input round buffer at a few MiB instead of 4x the window per
      // worker (33 MiB at level 3): peak memory stays near scrypt's own.
      ZSTD_CCtx_setParameter(cctx_, ZSTD_c_jobSize, 1 << 20);
    }
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
      if (out.pos > 0) SP_RETURN_IF_ERROR(out_.Write({out_buf_.data(), out.pos}));
      if (left == 0) return {};
    }
  }

  Status Error() {
    if (sink_error_) return tl::unexpected(*sink_error_);
    const char* msg = archive_error_string(archive_);
    return Fail(ErrorCode::kInternal, std::string("tar: ") + (msg ? msg : "unknown error"));
  }

  ByteSink& out_;
  struct archive* archive_ = nullptr;
  ZSTD_CCtx* cctx_ = nullptr;
  int workers_ = 0;
  std::vector<std::uint8_t> out_buf_;
  std::optional<safepoint::Error> sink_error_;
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
    if (rc != ARCHIVE_OK) return tl::unexpected(Error("reading entry header").error());
    EntryHeader h;
    const char* path = archive_entry_pathname_utf8(e);
    if (path == nullptr) path = archive_entry_pathname(e);
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
        const char* target = archive_entry_symlink_utf8(e);
        if (target == nullptr) target = archive_entry_symlink(e);
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
