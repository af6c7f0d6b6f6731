// The age v1 payload stream: Encryptor, Decryptor and ReadHeader. The header grammar, its
// encodings and the primitives are age_header.cc.
#include "core/format/age.h"

#include <sodium.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <initializer_list>
#include <optional>
#include <string_view>
#include <system_error>
#include <utility>

#include "core/format/age_internal.h"

namespace safepoint::age {

using namespace internal;  // NOLINT(google-build-using-namespace): this module's own helpers

namespace {

// A header for a reader or writer that knows the file key: the key's size is checked, then the
// header is parsed and must hold one scrypt stanza.
struct KeyedHeader {
  ParsedHeader header;
  ScryptStanza stanza;
};
Result<KeyedHeader> ParseWithFileKey(ByteSource& in, const Secret& file_key) {
  if (file_key.size() != kFileKeySize) {
    return Fail(ErrorCode::kBadInput, "age: a file key is 16 bytes");
  }
  InitSodium();
  auto header = ParseHeader(in);
  if (!header) return tl::unexpected(std::move(header.error()));
  auto stanza = RequireScryptStanza(*header);
  if (!stanza) return tl::unexpected(std::move(stanza.error()));
  return KeyedHeader{std::move(*header), std::move(*stanza)};
}

// kCorrupt unless `mac` is the header MAC of `mac_input` under `file_key`.
Status CheckHeaderMac(const Secret& file_key, std::string_view mac_input,
                      std::span<const std::uint8_t> expected_mac) {
  const Secret mac_key = DeriveKey(file_key, {}, "header");
  std::array<std::uint8_t, kMacSize> mac;
  HmacSha256(mac_key.bytes(), {AsBytes(mac_input)}, mac);
  if (expected_mac.size() != kMacSize ||
      sodium_memcmp(mac.data(), expected_mac.data(), kMacSize) != 0) {
    return Corrupt("header MAC mismatch (the header was modified)");
  }
  return {};
}

}  // namespace

// =============================================================================================
// Encryptor

// =============================================================================================
// ScryptJob

ScryptJob::ScryptJob(Secret passphrase, int work_factor)
    : work_factor_(work_factor), passphrase_(std::move(passphrase)) {}

ScryptJob::~ScryptJob() {
  if (thread_.joinable()) thread_.join();
}

Result<std::unique_ptr<ScryptJob>> ScryptJob::Start(const Secret& passphrase, int work_factor) {
  if (work_factor < kMinWorkFactor || work_factor > kMaxWorkFactor) {
    return Fail(ErrorCode::kBadInput, "scrypt work factor " + std::to_string(work_factor) +
                                          " outside " + std::to_string(kMinWorkFactor) + ".." +
                                          std::to_string(kMaxWorkFactor));
  }
  if (passphrase.empty()) return Fail(ErrorCode::kBadInput, "the passphrase is empty");
  InitSodium();
  std::unique_ptr<ScryptJob> job(new ScryptJob(Secret(passphrase.view()), work_factor));
  randombytes_buf(job->salt_, kSaltSize);
  ScryptJob* self = job.get();
  try {
    job->thread_ = std::thread([self] {
      self->ok_ = Scrypt(self->passphrase_, self->salt_, self->work_factor_, self->wrap_key_);
      self->passphrase_ = Secret();
      self->done_.store(true, std::memory_order_release);
      self->done_.notify_all();
    });
  } catch (const std::system_error& e) {
    return Fail(ErrorCode::kInternal, std::string("cannot start the scrypt thread: ") + e.what());
  }
  return job;
}

bool ScryptJob::Join() {
  if (thread_.joinable()) thread_.join();
  return ok_;
}

// =============================================================================================
// Encryptor

Encryptor::Encryptor(WritableFile& out, int work_factor)
    : out_(out), work_factor_(work_factor), header_size_(ScryptHeaderSize(work_factor)) {}

Encryptor::~Encryptor() = default;

Result<std::unique_ptr<Encryptor>> Encryptor::Create(WritableFile& out, const Secret& passphrase,
                                                     int work_factor) {
  auto job = ScryptJob::Start(passphrase, work_factor);
  if (!job) return tl::unexpected(std::move(job.error()));
  return Create(out, std::move(*job));
}

Result<std::unique_ptr<Encryptor>> Encryptor::Create(WritableFile& out,
                                                     std::unique_ptr<ScryptJob> job) {
  if (!job) return Fail(ErrorCode::kInternal, "age: no scrypt derivation for a new file");
  std::unique_ptr<Encryptor> enc(new Encryptor(out, job->work_factor()));
  enc->kdf_ = std::move(job);
  enc->file_key_ = Secret(kFileKeySize);
  randombytes_buf(enc->file_key_.bytes().data(), kFileKeySize);
  std::array<std::uint8_t, kNonceSize> nonce;
  randombytes_buf(nonce.data(), nonce.size());
  enc->payload_key_ = DeriveKey(enc->file_key_, nonce, "payload");
  enc->plain_.reserve(kChunkSize);
  enc->sealed_.resize(kSealedChunkSize);

  // The header is filled in by Finish(); until then its bytes are zero.
  const std::vector<std::uint8_t> placeholder(enc->header_size_, 0);
  SP_RETURN_IF_ERROR(out.Append(placeholder));
  SP_RETURN_IF_ERROR(out.Append(nonce));
  enc->size_ = enc->header_size_ + kNonceSize;
  return enc;
}

Result<std::unique_ptr<Encryptor>> Encryptor::CreateSibling(WritableFile& out, ByteSource& existing,
                                                            const Secret& file_key) {
  auto parsed = ParseWithFileKey(existing, file_key);
  if (!parsed) return tl::unexpected(std::move(parsed.error()));
  const ParsedHeader& header = parsed->header;
  SP_RETURN_IF_ERROR(CheckHeaderMac(file_key, header.mac_input, header.mac));
  std::string text = header.mac_input + " " + Base64Encode(header.mac) + "\n";
  const int work_factor = parsed->stanza.work_factor;
  if (text.size() != header.size || text.size() != ScryptHeaderSize(work_factor)) {
    return Corrupt("the header is not in its canonical form");
  }
  std::unique_ptr<Encryptor> enc(new Encryptor(out, work_factor));
  enc->file_key_ = Secret(file_key.view());
  std::array<std::uint8_t, kNonceSize> nonce;
  randombytes_buf(nonce.data(), nonce.size());
  enc->payload_key_ = DeriveKey(enc->file_key_, nonce, "payload");
  enc->plain_.reserve(kChunkSize);
  enc->sealed_.resize(kSealedChunkSize);
  SP_RETURN_IF_ERROR(out.Append(AsBytes(text)));
  SP_RETURN_IF_ERROR(out.Append(nonce));
  enc->size_ = text.size() + kNonceSize;
  enc->pending_key_id_ = KeyIdFromMac(header.mac);
  enc->header_ = std::move(text);
  enc->header_written_ = true;
  return enc;
}

Status Encryptor::Poison(Error error) {
  if (!error_) error_ = std::make_unique<Error>(error);
  return tl::unexpected(std::move(error));
}

Status Encryptor::EncryptChunk(bool last) {
  const std::size_t sealed_size = plain_.size() + kTagSize;
  AeadSeal(std::span(sealed_).first(sealed_size), plain_, ChunkNonce(counter_, last), payload_key_);
  auto written = out_.Append(std::span(sealed_).first(sealed_size));
  if (!written) return Poison(written.error());
  ++counter_;
  size_ += sealed_size;
  plain_.clear();
  return {};
}

Status Encryptor::Write(std::span<const std::uint8_t> data) {
  if (error_) return tl::unexpected(*error_);
  if (finished_) return Poison({ErrorCode::kInternal, "age: Write after Finish"});
  while (!data.empty()) {
    // A full chunk is sealed only once more data arrives: the final chunk needs its own flag.
    if (plain_.size() == kChunkSize) SP_RETURN_IF_ERROR(EncryptChunk(false));
    const std::size_t take = std::min(kChunkSize - plain_.size(), data.size());
    plain_.insert(plain_.end(), data.begin(), data.begin() + static_cast<std::ptrdiff_t>(take));
    data = data.subspan(take);
  }
  return {};
}

Status Encryptor::Finish() {
  if (error_) return tl::unexpected(*error_);
  if (finished_) return Poison({ErrorCode::kInternal, "age: Finish called twice"});
  // The final chunk is empty only when the whole payload is (Write keeps a full chunk pending).
  SP_RETURN_IF_ERROR(EncryptChunk(true));
  if (!header_written_) SP_RETURN_IF_ERROR(WriteHeader());
  key_id_ = pending_key_id_;
  payload_key_ = Secret();
  finished_ = true;
  return {};
}

Status Encryptor::WriteHeaderNow() {
  if (error_) return tl::unexpected(*error_);
  if (header_written_ || finished_ || !KdfDone()) return {};
  return WriteHeader();
}

Status Encryptor::WriteHeader() {
  if (!kdf_ || !kdf_->Join()) {
    return Poison({ErrorCode::kInternal, "age: scrypt failed (out of memory?)"});
  }
  std::array<std::uint8_t, kStanzaBodySize> body;
  const std::array<std::uint8_t, crypto_aead_chacha20poly1305_ietf_NPUBBYTES> zero_nonce{};
  AeadSeal(body, file_key_.bytes(), zero_nonce, kdf_->wrap_key_);
  kdf_->wrap_key_ = Secret();

  std::string header(kVersionLine);
  header += "\n-> scrypt ";
  header += Base64Encode(kdf_->salt_);
  header += ' ';
  header += std::to_string(work_factor_);
  header += '\n';
  header += Base64Encode(body);
  header += "\n---";
  const Secret mac_key = DeriveKey(file_key_, {}, "header");
  std::array<std::uint8_t, kMacSize> mac;
  HmacSha256(mac_key.bytes(), {AsBytes(header)}, mac);
  header += ' ';
  header += Base64Encode(mac);
  header += '\n';
  if (header.size() != header_size_) {
    return Poison({ErrorCode::kInternal, "age: header size differs from the reserved size"});
  }
  auto written = out_.WriteAt(0, AsBytes(header));
  if (!written) return Poison(written.error());
  pending_key_id_ = KeyIdFromMac(mac);
  header_ = std::move(header);  // the file key stays for WriteSibling and DeriveSubkey
  header_written_ = true;
  return {};
}

Status Encryptor::WriteSibling(WritableFile& out, std::span<const std::uint8_t> plaintext) {
  if (error_) return tl::unexpected(*error_);
  if (!finished_ || header_.empty()) {
    return Fail(ErrorCode::kInternal, "age: WriteSibling before Finish");
  }
  std::array<std::uint8_t, kNonceSize> nonce;
  randombytes_buf(nonce.data(), nonce.size());
  const Secret key = DeriveKey(file_key_, nonce, "payload");
  SP_RETURN_IF_ERROR(out.Append(AsBytes(header_)));
  SP_RETURN_IF_ERROR(out.Append(nonce));
  std::vector<std::uint8_t> sealed(kSealedChunkSize);
  std::uint64_t counter = 0;
  // The final chunk is empty only when the whole plaintext is.
  do {
    const std::size_t take = std::min(kChunkSize, plaintext.size());
    const bool last = take == plaintext.size();
    AeadSeal(std::span(sealed).first(take + kTagSize), plaintext.first(take),
             ChunkNonce(counter++, last), key);
    SP_RETURN_IF_ERROR(out.Append(std::span(sealed).first(take + kTagSize)));
    plaintext = plaintext.subspan(take);
  } while (!plaintext.empty());
  return {};
}

Secret Encryptor::DeriveSubkey(std::string_view info) const {
  return DeriveKey(file_key_, {}, info);
}

// =============================================================================================
// Decryptor

Decryptor::Decryptor(ByteSource& in, std::vector<std::uint8_t> pending)
    : in_(in), in_buf_(std::move(pending)) {}

Result<std::unique_ptr<Decryptor>> Decryptor::Open(ByteSource& in, const Secret& passphrase,
                                                   int max_work_factor) {
  if (max_work_factor < 1 || max_work_factor > kReaderWorkFactorCap) {
    return Fail(ErrorCode::kBadInput, "maximum scrypt work factor " +
                                          std::to_string(max_work_factor) + " outside 1.." +
                                          std::to_string(kReaderWorkFactorCap));
  }
  InitSodium();
  auto header = ParseHeader(in);
  if (!header) return tl::unexpected(std::move(header.error()));
  auto stanza = RequireScryptStanza(*header);
  if (!stanza) return tl::unexpected(std::move(stanza.error()));
  // Refuse before deriving: an attacker-chosen work factor must not cost us memory or time.
  if (stanza->work_factor > max_work_factor) {
    return Corrupt("work factor " + std::to_string(stanza->work_factor) + " above the maximum " +
                   std::to_string(max_work_factor));
  }
  Secret wrap_key;
  if (!Scrypt(passphrase, stanza->salt, stanza->work_factor, wrap_key)) {
    return Fail(ErrorCode::kInternal, "age: scrypt failed (out of memory?)");
  }
  Secret file_key(kFileKeySize);
  const std::array<std::uint8_t, crypto_aead_chacha20poly1305_ietf_NPUBBYTES> zero_nonce{};
  if (!AeadOpen(file_key.bytes(), stanza->body, zero_nonce, wrap_key)) {
    return Fail(ErrorCode::kWrongPassphrase, "wrong passphrase");
  }
  std::unique_ptr<Decryptor> dec(new Decryptor(in, std::move(header->leftover)));
  dec->work_factor_ = stanza->work_factor;
  dec->header_size_ = header->size;
  SP_RETURN_IF_ERROR(dec->Start(file_key, header->mac_input, header->mac));
  return dec;
}

Result<std::unique_ptr<Decryptor>> Decryptor::OpenWithFileKey(ByteSource& in,
                                                              const Secret& file_key) {
  auto parsed = ParseWithFileKey(in, file_key);
  if (!parsed) return tl::unexpected(std::move(parsed.error()));
  ParsedHeader& header = parsed->header;
  std::unique_ptr<Decryptor> dec(new Decryptor(in, std::move(header.leftover)));
  dec->work_factor_ = parsed->stanza.work_factor;
  dec->header_size_ = header.size;
  SP_RETURN_IF_ERROR(dec->Start(file_key, header.mac_input, header.mac));
  return dec;
}

Secret Decryptor::DeriveSubkey(std::string_view info) const {
  return DeriveKey(file_key_, {}, info);
}

Result<std::unique_ptr<Decryptor>> Decryptor::OpenWithFileKeyForTesting(ByteSource& in,
                                                                        const Secret& file_key) {
  if (file_key.size() != kFileKeySize) {
    return Fail(ErrorCode::kBadInput, "age: a file key is 16 bytes");
  }
  InitSodium();
  auto header = ParseHeader(in);
  if (!header) return tl::unexpected(std::move(header.error()));
  auto stanza = FindScryptStanza(*header);
  if (!stanza) return tl::unexpected(std::move(stanza.error()));
  std::unique_ptr<Decryptor> dec(new Decryptor(in, std::move(header->leftover)));
  dec->header_size_ = header->size;
  SP_RETURN_IF_ERROR(dec->Start(file_key, header->mac_input, header->mac));
  return dec;
}

Status Decryptor::Start(const Secret& file_key, std::string_view mac_input,
                        std::span<const std::uint8_t> expected_mac) {
  SP_RETURN_IF_ERROR(CheckHeaderMac(file_key, mac_input, expected_mac));
  key_id_ = KeyIdFromMac(expected_mac);
  file_key_ = Secret(file_key.view());
  auto got = Fill(kNonceSize);
  if (!got) return tl::unexpected(std::move(got.error()));
  if (*got < kNonceSize) return Corrupt("truncated: the payload nonce is missing");
  payload_key_ = DeriveKey(file_key, std::span(in_buf_).first(kNonceSize), "payload");
  in_buf_.erase(in_buf_.begin(), in_buf_.begin() + kNonceSize);
  in_buf_.reserve(kSealedChunkSize + 1);
  plain_.reserve(kChunkSize);
  return {};
}

Result<std::size_t> Decryptor::Fill(std::size_t want) {
  while (in_buf_.size() < want && !eof_) {
    const std::size_t old = in_buf_.size();
    in_buf_.resize(want);
    auto got = in_.Read(std::span(in_buf_).subspan(old));
    if (!got) {
      in_buf_.resize(old);
      return tl::unexpected(std::move(got.error()));
    }
    in_buf_.resize(old + *got);
    if (*got == 0) eof_ = true;
  }
  return in_buf_.size();
}

Status Decryptor::Poison(Error error) {
  if (!error_) error_ = std::make_unique<Error>(error);
  plain_.clear();
  plain_pos_ = 0;
  return tl::unexpected(std::move(error));
}

Status Decryptor::NextChunk() {
  // One byte of look-ahead tells whether this chunk is the final one.
  auto got = Fill(kSealedChunkSize + 1);
  if (!got) return Poison(got.error());
  const bool last = *got <= kSealedChunkSize;
  const std::size_t n = last ? *got : kSealedChunkSize;
  const auto chunk = [this] { return "payload chunk " + std::to_string(counter_); };
  // After a non-final chunk at least one byte follows, so an empty read means no chunk at all.
  if (n == 0) return Poison(CorruptError("truncated: the payload has no chunks"));
  if (n < kTagSize) return Poison(CorruptError("truncated: " + chunk() + " is too short"));
  const auto sealed = std::span<const std::uint8_t>(in_buf_).first(n);
  plain_.resize(n - kTagSize);
  if (!AeadOpen(plain_, sealed, ChunkNonce(counter_, last), payload_key_)) {
    // A full chunk that authenticates with the other final flag is genuine data in the wrong
    // place: release it (as age does), then report the broken stream structure.
    if (n != kSealedChunkSize ||
        !AeadOpen(plain_, sealed, ChunkNonce(counter_, !last), payload_key_)) {
      return Poison(CorruptError(chunk() + " failed authentication (tampered or truncated)"));
    }
    deferred_error_ = std::make_unique<Error>(
        last ? CorruptError("truncated: the payload ends without a final chunk")
             : CorruptError("trailing data after the final chunk"));
    in_buf_.erase(in_buf_.begin(), in_buf_.begin() + static_cast<std::ptrdiff_t>(n));
    ++counter_;
    plain_pos_ = 0;
    return {};
  }
  if (last && n == kTagSize && counter_ > 0) {
    return Poison(CorruptError("the final chunk is empty (not allowed after other chunks)"));
  }
  in_buf_.erase(in_buf_.begin(), in_buf_.begin() + static_cast<std::ptrdiff_t>(n));
  ++counter_;
  plain_pos_ = 0;
  if (last) done_ = true;
  return {};
}

Result<std::size_t> Decryptor::Read(std::span<std::uint8_t> out) {
  if (error_) return tl::unexpected(*error_);
  if (out.empty()) return 0;
  while (plain_pos_ == plain_.size()) {
    if (done_) return 0;
    if (deferred_error_) {
      auto failed = Poison(*deferred_error_);
      return tl::unexpected(std::move(failed.error()));
    }
    SP_RETURN_IF_ERROR(NextChunk());
  }
  const std::size_t n = std::min(out.size(), plain_.size() - plain_pos_);
  std::memcpy(out.data(), plain_.data() + plain_pos_, n);
  plain_pos_ += n;
  return n;
}

// =============================================================================================

Result<HeaderInfo> ReadHeader(ByteSource& in) {
  InitSodium();
  auto header = ParseHeader(in);
  if (!header) return tl::unexpected(std::move(header.error()));
  auto stanza = RequireScryptStanza(*header);
  if (!stanza) return tl::unexpected(std::move(stanza.error()));
  return HeaderInfo{stanza->work_factor, KeyIdFromMac(header->mac), header->size};
}

}  // namespace safepoint::age
