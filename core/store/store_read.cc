// Reading safety points: List, Show, Load, Verify, Read, Decrypt (Extract: store_extract.cc).
#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <system_error>
#include <thread>
#include <utility>

#include "core/base/sha256.h"
#include "core/base/utf8.h"
#include "core/format/age.h"
#include "core/format/archive.h"
#include "core/store/store.h"
#include "core/store/store_internal.h"

namespace safepoint::store {

using internal::CheckIdArg;
using internal::kBufferSize;

namespace {

constexpr std::uint64_t kMaxInnerManifest = 256ull * 1024 * 1024;
// manifest.json: format 2 holds a summary of a few KiB; format 1 also lists every entry
// (~300 bytes each), so 64 MiB is ~200,000 entries. A larger one is reported as damaged
// without being read (docs/reliability.md).
constexpr std::uint64_t kMaxOuterManifest = 64ull * 1024 * 1024;

// Hashes and counts what passes through.
class HashingSource final : public ByteSource {
 public:
  explicit HashingSource(ByteSource& in) : in_(in) {}
  Result<std::size_t> Read(std::span<std::uint8_t> out) override {
    auto n = in_.Read(out);
    if (n && *n > 0) {
      hash_.Update(std::span<const std::uint8_t>(out.data(), *n));
      bytes_ += *n;
    }
    return n;
  }
  std::string FinalHex() { return hash_.FinalHex(); }
  [[nodiscard]] std::uint64_t bytes() const { return bytes_; }

 private:
  ByteSource& in_;
  Sha256 hash_;
  std::uint64_t bytes_ = 0;
};

// Reads from a string.
class StringSource final : public ByteSource {
 public:
  explicit StringSource(std::string_view data) : data_(data) {}
  Result<std::size_t> Read(std::span<std::uint8_t> out) override {
    const std::size_t n = std::min(out.size(), data_.size() - pos_);
    std::memcpy(out.data(), data_.data() + pos_, n);
    pos_ += n;
    return n;
  }

 private:
  std::string_view data_;
  std::size_t pos_ = 0;
};

// Reads `in` to its end.
Status Drain(ByteSource& in, std::vector<std::uint8_t>& buf) {
  for (;;) {
    auto n = in.Read(buf);
    if (!n) return tl::unexpected(n.error());
    if (*n == 0) return {};
  }
}

// Reads an age source to its verified end, at most `max` bytes.
Result<std::string> ReadAll(ByteSource& in, std::uint64_t max, const std::string& what) {
  std::string out;
  std::vector<std::uint8_t> buf(kBufferSize);
  for (;;) {
    auto n = in.Read(buf);
    if (!n) return tl::unexpected(n.error());
    if (*n == 0) return out;
    if (out.size() + *n > max) return Fail(ErrorCode::kCorrupt, what + " is too large");
    out.append(reinterpret_cast<const char*>(buf.data()), *n);
  }
}

}  // namespace

Result<std::vector<Listing>> Store::List() const {
  std::vector<Listing> out;
  DIR* d = ::opendir(options_.backup_dir.c_str());
  if (d == nullptr) {
    if (errno == ENOENT) return out;
    return tl::unexpected(ErrnoError(errno, "open", options_.backup_dir));
  }
  std::vector<std::string> ids;
  while (struct dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (manifest::IsValidId(name)) ids.push_back(std::move(name));
  }
  ::closedir(d);
  std::sort(ids.begin(), ids.end(), IdLess);
  for (auto& id : ids) {
    Listing l;
    l.id = id;
    l.dir = DirOf(id);
    auto m = Show(id);
    if (m) {
      l.manifest = std::move(*m);
    } else {
      l.problem = m.error().message;
    }
    out.push_back(std::move(l));
  }
  return out;
}

Result<manifest::Manifest> Store::Show(const std::string& id) const {
  SP_RETURN_IF_ERROR(CheckIdArg(id));
  const std::string dir = DirOf(id);
  struct stat st {};
  if (::lstat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return Fail(ErrorCode::kNotFound, "no safety point " + id);
  }
  auto text = ReadFileBounded(dir + "/" + std::string(manifest::kOuterName), kMaxOuterManifest);
  if (!text) {
    if (text.error().code == ErrorCode::kNotFound) {
      return Fail(ErrorCode::kCorrupt, "safety point " + id + " has no manifest.json");
    }
    return Fail(text.error().code, "safety point " + id + ": " + text.error().message);
  }
  auto m = manifest::Parse(*text);
  if (!m) {
    return Fail(m.error().code, "safety point " + id + ": " + m.error().message);
  }
  if (m->id != id) {
    return Fail(
        ErrorCode::kCorrupt,
        "safety point " + id + ": manifest.json belongs to another safety point (" + m->id + ")");
  }
  if (!m->payload) {
    return Fail(ErrorCode::kCorrupt, "safety point " + id + ": manifest.json lacks the payload");
  }
  return m;
}

Result<std::string> Store::IndexPath(const std::string& id, const manifest::Manifest& m) const {
  if (!m.index) return Fail(ErrorCode::kCorrupt, "safety point " + id + ": no index");
  const auto& p = *m.index;
  if (p.name != "index_" + id + "_" + p.sha256.substr(0, 12) + ".enc") {
    return Fail(ErrorCode::kCorrupt, "safety point " + id + ": unexpected index name");
  }
  return DirOf(id) + "/" + p.name;
}

Result<std::string> Store::ReadIndexCiphertext(const std::string& id,
                                               const manifest::Manifest& outer) const {
  auto path = IndexPath(id, outer);
  if (!path) return tl::unexpected(path.error());
  auto bytes = ReadFileBounded(*path, kMaxInnerManifest);
  if (!bytes) {
    if (bytes.error().code == ErrorCode::kNotFound) {
      return Fail(ErrorCode::kCorrupt, "safety point " + id + ": index file is missing");
    }
    return Fail(bytes.error().code, "safety point " + id + ": " + bytes.error().message);
  }
  if (bytes->size() != outer.index->size || Sha256Hex(*bytes) != outer.index->sha256) {
    return Fail(
        ErrorCode::kCorrupt,
        "safety point " + id + ": index differs from manifest.json (truncated or replaced)");
  }
  return bytes;
}

Result<manifest::Manifest> Store::Load(const std::string& id, const Secret& passphrase,
                                       Secret* fingerprint_key, Secret* file_key) const {
  auto outer = Show(id);
  if (!outer) return tl::unexpected(outer.error());
  if (outer->entries_listed) return outer;  // format 1
  auto corrupt = [&](const std::string& what) {
    return Fail(ErrorCode::kCorrupt, "safety point " + id + ": " + what);
  };
  // The index is decrypted as it is read from its file, never held as ciphertext (it would sit
  // in memory beside scrypt's); its size is checked first, its hash when it has been read.
  auto path = IndexPath(id, *outer);
  if (!path) return tl::unexpected(path.error());
  auto file = ReadOnlyFile::Open(*path);
  if (!file) {
    if (file.error().code == ErrorCode::kNotFound) return corrupt("index file is missing");
    return Fail(file.error().code, "safety point " + id + ": " + file.error().message);
  }
  const std::string replaced = "index differs from manifest.json (truncated or replaced)";
  if (file->size() != outer->index->size) return corrupt(replaced);
  FdSource raw(file->fd(), *path);
  HashingSource hashing(raw);
  std::optional<std::string> text;
  Status opened = [&]() -> Status {
    auto dec = age::Decryptor::Open(hashing, passphrase, options_.max_work_factor);
    if (!dec) return tl::unexpected(dec.error());
    if ((*dec)->KeyId() != outer->key_id) return corrupt("index key identifier differs");
    if ((*dec)->work_factor() != outer->kdf.work_factor) {
      return corrupt("index work factor differs");
    }
    auto all = ReadAll(*archive::IndexText(**dec), kMaxInnerManifest, "index");
    if (!all) return corrupt("index: " + all.error().message);
    if (fingerprint_key) *fingerprint_key = (*dec)->DeriveSubkey(kFingerprintKeyInfo);
    if (file_key) *file_key = Secret((*dec)->file_key().view());
    text = std::move(*all);
    return {};
  }();
  // A replaced or truncated file is reported as such, whatever decrypting it said.
  std::vector<std::uint8_t> buf(kBufferSize);
  SP_RETURN_IF_ERROR(Drain(hashing, buf));
  if (hashing.bytes() != outer->index->size || hashing.FinalHex() != outer->index->sha256) {
    return corrupt(replaced);
  }
  if (!opened) return tl::unexpected(opened.error());
  auto full = manifest::Parse(*text);
  if (!full || !full->entries_listed) {
    return corrupt("index: " + (full ? std::string("no entries") : full.error().message));
  }
  SP_RETURN_IF_ERROR(manifest::CheckConsistent(*full, *outer));
  full->payload = outer->payload;
  full->index = outer->index;
  full->key_id = outer->key_id;
  return full;
}

Result<std::string> Store::PayloadPath(const std::string& id, const manifest::Manifest& m) const {
  const auto& p = *m.payload;
  if (p.name != "state_" + id + "_" + p.sha256.substr(0, 12) + ".enc") {
    return Fail(ErrorCode::kCorrupt, "safety point " + id + ": unexpected payload name");
  }
  return DirOf(id) + "/" + p.name;
}

namespace {

// Verifies entries without keeping them.
class NullVisitor final : public EntryVisitor {
 public:
  Status Begin(const manifest::Entry&) override { return {}; }
  Status Data(std::span<const std::uint8_t>) override { return {}; }
  Status End(const manifest::Entry&) override { return {}; }
};

Error CorruptIn(const std::string& id, const std::string& what) {
  return Error{ErrorCode::kCorrupt, "safety point " + id + ": " + what};
}

// Opens the payload file of safety point `id` and checks its size against manifest.json's.
Result<ReadOnlyFile> OpenPayload(const std::string& id, const std::string& path,
                                 std::uint64_t expected_size) {
  auto file = ReadOnlyFile::Open(path);
  if (!file) {
    if (file.error().code == ErrorCode::kNotFound) {
      return tl::unexpected(CorruptIn(id, "payload file is missing"));
    }
    return Fail(file.error().code, "safety point " + id + ": " + file.error().message);
  }
  if (file->size() != expected_size) {
    return tl::unexpected(
        CorruptIn(id, "payload is " + std::to_string(file->size()) + " bytes, manifest says " +
                          std::to_string(expected_size) + " (truncated or replaced)"));
  }
  return std::move(*file);
}

// The archive's MANIFEST.json, parsed, with the SHA-256 of its text.
struct InnerManifest {
  manifest::Manifest manifest;
  std::string text_sha256;
};

// Reads the archive's first entry, which must be the authoritative MANIFEST.json.
Result<InnerManifest> ReadInnerManifest(archive::TarZstdReader& reader, const std::string& id,
                                        std::vector<std::uint8_t>& buf) {
  auto first = reader.Next();
  if (!first) return tl::unexpected(first.error());
  if (!*first || (*first)->path != manifest::kInnerName ||
      (*first)->type != manifest::EntryType::kFile || (*first)->size > kMaxInnerManifest) {
    return tl::unexpected(CorruptIn(id, "the archive does not start with MANIFEST.json"));
  }
  std::string inner_text;
  for (;;) {
    auto n = reader.ReadData(buf);
    if (!n) return tl::unexpected(n.error());
    if (*n == 0) break;
    inner_text.append(reinterpret_cast<const char*>(buf.data()), *n);
  }
  auto inner = manifest::Parse(inner_text);
  if (!inner) return tl::unexpected(CorruptIn(id, "MANIFEST.json: " + inner.error().message));
  return InnerManifest{std::move(*inner), Sha256Hex(inner_text)};
}

// Format 2: the index (`ciphertext`), opened with the payload's file key, must list exactly what
// the authoritative MANIFEST.json (`inner`) lists.
Status CheckIndexParsesAsInner(const std::string& id, const std::string& ciphertext,
                               const Secret& file_key, const manifest::Manifest& inner) {
  StringSource src(ciphertext);
  auto idx_dec = age::Decryptor::OpenWithFileKey(src, file_key);
  if (!idx_dec) return tl::unexpected(CorruptIn(id, "index: " + idx_dec.error().message));
  auto text = ReadAll(*archive::IndexText(**idx_dec), kMaxInnerManifest, "index");
  if (!text) return tl::unexpected(CorruptIn(id, "index: " + text.error().message));
  auto listed = manifest::Parse(*text);
  if (!listed) return tl::unexpected(CorruptIn(id, "index: " + listed.error().message));
  if (auto st = manifest::CheckConsistent(inner, *listed); !st) {
    return tl::unexpected(
        CorruptIn(id, "the index differs from MANIFEST.json: " + st.error().message));
  }
  return {};
}

// Reads the archive's next entry, which must be `expected`, handing it to `visitor` and checking
// a file's bytes against its size and SHA-256. Returns the file bytes read.
Result<std::uint64_t> ReadEntry(archive::TarZstdReader& reader, const std::string& id,
                                const manifest::Entry& expected, EntryVisitor& visitor,
                                std::vector<std::uint8_t>& buf) {
  auto h = reader.Next();
  if (!h) return tl::unexpected(h.error());
  if (!*h) return tl::unexpected(CorruptIn(id, "archive ends before entry " + QuoteName(expected.path)));
  const auto& got = **h;
  if (got.path != expected.path || got.type != expected.type ||
      (expected.type == manifest::EntryType::kFile && got.size != expected.size) ||
      got.mode != expected.mode || got.mtime != expected.mtime || got.uid != expected.uid ||
      got.gid != expected.gid || got.link_target != expected.link_target) {
    return tl::unexpected(CorruptIn(
        id, "archive entry " + QuoteName(got.path) + " does not match the manifest entry " +
                QuoteName(expected.path)));
  }
  SP_RETURN_IF_ERROR(visitor.Begin(expected));
  std::uint64_t size = 0;
  if (expected.type == manifest::EntryType::kFile) {
    Sha256 hash;
    for (;;) {
      auto n = reader.ReadData(buf);
      if (!n) return tl::unexpected(n.error());
      if (*n == 0) break;
      std::span<const std::uint8_t> chunk(buf.data(), *n);
      hash.Update(chunk);
      size += *n;
      SP_RETURN_IF_ERROR(visitor.Data(chunk));
    }
    if (size != expected.size || hash.FinalHex() != expected.sha256) {
      return tl::unexpected(
          CorruptIn(id, "entry " + QuoteName(expected.path) + " does not match its SHA-256"));
    }
  }
  SP_RETURN_IF_ERROR(visitor.End(expected));
  return size;
}

// Format 2: whether the index file at `path` (checked against `expected`, its size and SHA-256
// in manifest.json) decrypts, under the payload's file key, to text whose SHA-256 is
// `inner_sha256`. The writer encrypts MANIFEST.json's very bytes, so this is the usual answer;
// the index is streamed, never held whole. false: it decrypts to other text (the caller then
// compares what both list).
Result<bool> IndexTextIs(const std::string& id, const std::string& path,
                         const manifest::Payload& expected, const Secret& file_key,
                         const std::string& inner_sha256, std::vector<std::uint8_t>& buf) {
  auto file = ReadOnlyFile::Open(path);
  if (!file) {
    if (file.error().code == ErrorCode::kNotFound) {
      return tl::unexpected(CorruptIn(id, "index file is missing"));
    }
    return Fail(file.error().code, "safety point " + id + ": " + file.error().message);
  }
  const std::string replaced = "index differs from manifest.json (truncated or replaced)";
  if (file->size() != expected.size) return tl::unexpected(CorruptIn(id, replaced));
  FdSource raw(file->fd(), path);
  HashingSource cipher(raw);
  Status read = [&]() -> Status {
    auto dec = age::Decryptor::OpenWithFileKey(cipher, file_key);
    if (!dec) return tl::unexpected(dec.error());
    auto text = archive::IndexText(**dec);
    HashingSource plain(*text);
    for (;;) {
      auto n = plain.Read(buf);
      if (!n) return tl::unexpected(n.error());
      if (*n == 0) break;
      if (plain.bytes() > kMaxInnerManifest) return Fail(ErrorCode::kCorrupt, "too large");
    }
    if (plain.FinalHex() != inner_sha256) return Fail(ErrorCode::kNotFound, "other text");
    return {};
  }();
  // The file against manifest.json first: a replaced or truncated index is reported as such,
  // whatever decrypting it said.
  SP_RETURN_IF_ERROR(Drain(cipher, buf));
  if (cipher.bytes() != expected.size || cipher.FinalHex() != expected.sha256) {
    return tl::unexpected(CorruptIn(id, replaced));
  }
  if (read) return true;
  if (read.error().code == ErrorCode::kNotFound) return false;
  return tl::unexpected(CorruptIn(id, "index: " + read.error().message));
}

}  // namespace

Result<VerifyReport> Store::Verify(const std::string& id, const Secret& passphrase,
                                   const Secret* file_key) const {
  NullVisitor visitor;
  return Read(id, passphrase, visitor, file_key);
}

Result<VerifyReport> Store::Read(const std::string& id, const Secret& passphrase,
                                 EntryVisitor& visitor, const Secret* file_key) const {
  auto outer = Show(id);
  if (!outer) return tl::unexpected(outer.error());
  auto path = PayloadPath(id, *outer);
  if (!path) return tl::unexpected(path.error());
  auto file = OpenPayload(id, *path, outer->payload->size);
  if (!file) return tl::unexpected(file.error());
  auto corrupt = [&](const std::string& what) { return tl::unexpected(CorruptIn(id, what)); };
  FdSource raw(file->fd(), *path);
  HashingSource hashing(raw);
  const bool unlocked = file_key != nullptr && !file_key->empty();
  auto dec = unlocked ? age::Decryptor::OpenWithFileKey(hashing, *file_key)
                      : age::Decryptor::Open(hashing, passphrase, options_.max_work_factor);
  if (!dec) return tl::unexpected(dec.error());
  if (!outer->key_id.empty() && (*dec)->KeyId() != outer->key_id) {
    return corrupt("key identifier differs from manifest.json");
  }
  // Opened with the file key, the work factor is still the header's own (its MAC covers it).
  if ((*dec)->work_factor() != outer->kdf.work_factor) {
    return corrupt("work factor differs from manifest.json");
  }
  auto reader = archive::TarZstdReader::Open(**dec);
  if (!reader) return tl::unexpected(reader.error());

  std::vector<std::uint8_t> buf(kBufferSize);
  auto read_inner = ReadInnerManifest(**reader, id, buf);
  if (!read_inner) return tl::unexpected(read_inner.error());
  const manifest::Manifest& inner = read_inner->manifest;
  SP_RETURN_IF_ERROR(manifest::CheckConsistent(inner, *outer));
  if (!outer->entries_listed) {
    auto index_path = IndexPath(id, *outer);
    if (!index_path) return tl::unexpected(index_path.error());
    auto same = IndexTextIs(id, *index_path, *outer->index, (*dec)->file_key(),
                            read_inner->text_sha256, buf);
    if (!same) return tl::unexpected(same.error());
    if (!*same) {
      auto bytes = ReadIndexCiphertext(id, *outer);
      if (!bytes) return tl::unexpected(bytes.error());
      SP_RETURN_IF_ERROR(CheckIndexParsesAsInner(id, *bytes, (*dec)->file_key(), inner));
    }
  }

  VerifyReport report;
  report.id = id;
  for (const auto& expected : inner.entries) {
    auto bytes = ReadEntry(**reader, id, expected, visitor, buf);
    if (!bytes) return tl::unexpected(bytes.error());
    report.bytes += *bytes;
    ++report.entries;
  }
  auto extra = (*reader)->Next();
  if (!extra) return tl::unexpected(extra.error());
  if (*extra) return corrupt("unexpected archive entry " + (**extra).path);
  // Authenticate the rest of the payload, to its final chunk.
  SP_RETURN_IF_ERROR(Drain(**dec, buf));
  SP_RETURN_IF_ERROR(Drain(hashing, buf));
  if (hashing.bytes() != outer->payload->size || hashing.FinalHex() != outer->payload->sha256) {
    return corrupt("payload SHA-256 differs from manifest.json");
  }
  return report;
}

Status Store::Decrypt(const std::string& id, const Secret& passphrase, ByteSink& out) const {
  auto outer = Show(id);
  if (!outer) return tl::unexpected(outer.error());
  auto path = PayloadPath(id, *outer);
  if (!path) return tl::unexpected(path.error());
  auto file = ReadOnlyFile::Open(*path);
  if (!file) return Fail(file.error().code, "safety point " + id + ": " + file.error().message);
  std::vector<std::uint8_t> buf(kBufferSize);
  // First the cheap check of the whole file against manifest.json (no KDF), so a truncated or
  // damaged payload writes nothing: `out` is usually a pipe or stdout that cannot take back
  // what a failure half-way would have released.
  {
    FdSource raw(file->fd(), *path);
    HashingSource hashing(raw);
    for (;;) {
      auto n = hashing.Read(buf);
      if (!n) return tl::unexpected(n.error());
      if (*n == 0) break;
    }
    if (hashing.bytes() != outer->payload->size) {
      return Fail(ErrorCode::kCorrupt,
                  "safety point " + id + ": the payload has " + std::to_string(hashing.bytes()) +
                      " bytes, manifest.json says " + std::to_string(outer->payload->size) +
                      " (truncated or replaced); nothing was written");
    }
    if (hashing.FinalHex() != outer->payload->sha256) {
      return Fail(ErrorCode::kCorrupt,
                  "safety point " + id +
                      ": the payload is damaged (its size is right, its SHA-256 differs from "
                      "manifest.json); nothing was written. `safepoint verify " +
                      id + "` checks it part by part");
    }
    if (::lseek(file->fd(), 0, SEEK_SET) != 0) {
      return Fail(ErrorCode::kIo, "seek " + *path + ": " + std::strerror(errno));
    }
  }
  FdSource raw(file->fd(), *path);
  HashingSource hashing(raw);
  auto dec = age::Decryptor::Open(hashing, passphrase, options_.max_work_factor);
  if (!dec) return tl::unexpected(dec.error());
  for (;;) {
    auto n = (*dec)->Read(buf);
    if (!n) return tl::unexpected(n.error());
    if (*n == 0) break;
    SP_RETURN_IF_ERROR(out.Write({buf.data(), *n}));
  }
  if (hashing.FinalHex() != outer->payload->sha256) {
    return Fail(ErrorCode::kCorrupt, "safety point " + id + ": payload SHA-256 differs");
  }
  return {};
}

}  // namespace safepoint::store
