#pragma once

// age v1 (https://c2sp.org/age) passphrase encryption, built on libsodium primitives.
//
// safepoint writes and reads exactly one profile of age: a binary (not armored) file whose header
// holds one scrypt recipient stanza. Any age implementation decrypts our files (`age -d`), and we
// decrypt any binary scrypt age file that age itself would, under the same strictness rules
// (canonical unpadded base64, 64-column stanza bodies, one scrypt stanza alone, 16-byte salt,
// decimal work factor without leading zeros, 32-byte stanza body, a non-empty final chunk unless
// the whole payload is empty, no trailing data). docs/format.md specifies the profile.
//
// Key identifier: KeyId() is 16 lowercase hex digits, the first 8 bytes of
// SHA-256("safepoint-key-id" || header MAC). The header MAC is already public (it is in the
// file), so the identifier reveals nothing cheaper to attack than the header itself: testing a
// passphrase against it costs a full scrypt run, exactly as against the stanza. It is unique per
// file (fresh salt and file key), and lets a manifest name the exact header it belongs to.

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "core/base/fs.h"
#include "core/base/io.h"
#include "core/base/result.h"
#include "core/base/secret.h"

namespace safepoint::age {

// scrypt work factor = log2(N); r = 8, p = 1. Memory per run is 128 * 8 * 2^wf bytes
// (256 MiB at 18, 1 GiB at 22).
constexpr int kDefaultWorkFactor = 18;  // age's own default
constexpr int kMinWorkFactor = 15;      // writers: the configurable range is [15, 22]
constexpr int kMaxWorkFactor = 22;      // writers' upper bound, and readers' default maximum
// The largest maximum a reader may be given (128 GiB of scrypt memory); config allows 15..30.
constexpr int kReaderWorkFactorCap = 30;

// Plaintext bytes per STREAM chunk.
constexpr std::size_t kChunkSize = std::size_t{64} * 1024;

// Bytes of scrypt memory at `work_factor`.
[[nodiscard]] constexpr std::uint64_t ScryptMemory(int work_factor) {
  return std::uint64_t{128} * 8 * (std::uint64_t{1} << work_factor);
}

// The scrypt derivation of a new file's wrap key, started ahead of the file: a backup starts it
// before it walks the trees, so the walk runs on the other core while scrypt holds this one.
// The job owns a fresh salt and a copy of the passphrase (wiped once the key is derived); an
// Encryptor made from it (Encryptor::Create with a job) writes that salt into its header.
// Thread-safety: Done and Wait from any thread; the rest from the owning thread.
class ScryptJob {
 public:
  // Errors: kBadInput for an empty passphrase or a work factor outside
  // [kMinWorkFactor, kMaxWorkFactor]; kInternal if no thread can start.
  [[nodiscard]] static Result<std::unique_ptr<ScryptJob>> Start(const Secret& passphrase,
                                                                int work_factor);
  ~ScryptJob();  // waits for the derivation
  ScryptJob(const ScryptJob&) = delete;
  ScryptJob& operator=(const ScryptJob&) = delete;

  [[nodiscard]] int work_factor() const { return work_factor_; }
  // True once the derivation has finished and freed its memory.
  [[nodiscard]] bool Done() const { return done_.load(std::memory_order_acquire); }
  void Wait() const { done_.wait(false, std::memory_order_acquire); }

 private:
  friend class Encryptor;
  ScryptJob(Secret passphrase, int work_factor);
  // Joins the thread; false when scrypt failed (out of memory). Then salt_ and wrap_key_ hold.
  bool Join();

  const int work_factor_;
  Secret passphrase_;
  std::uint8_t salt_[16] = {};
  Secret wrap_key_;                // written by the thread; read only after joining it
  bool ok_ = false;                // written by the thread
  std::atomic<bool> done_{false};  // set by the thread when it is done
  std::thread thread_;
};

// Streams plaintext into an age file with one scrypt stanza.
//
// The header of such a file has a fixed length (HeaderSize()), so the payload is appended from
// that offset on while scrypt derives the wrap key on a background thread (started by Create);
// Finish() writes the final chunk, waits for scrypt, and fills in the header at offset 0 with
// WritableFile::WriteAt. The KDF thus overlaps the streaming instead of delaying it.
//
// Until Finish() succeeds the first HeaderSize() bytes of the file are zero, so an interrupted
// file never parses as age. Finish() does not Sync or Close the file.
// After any error the Encryptor is unusable: every later call returns that error.
// Thread-safety: one thread at a time. The destructor waits for the scrypt thread.
class Encryptor {
 public:
  // REQUIRES: `out` is a new, empty file that outlives the Encryptor.
  // Errors: kBadInput for an empty passphrase or a work factor outside
  // [kMinWorkFactor, kMaxWorkFactor]; write errors of `out`; kInternal if no thread can start.
  // The passphrase is copied (into sodium_malloc memory); the caller may drop its copy.
  [[nodiscard]] static Result<std::unique_ptr<Encryptor>> Create(WritableFile& out,
                                                                 const Secret& passphrase,
                                                                 int work_factor);
  // As Create, with the derivation already started (`job`, not null).
  [[nodiscard]] static Result<std::unique_ptr<Encryptor>> Create(WritableFile& out,
                                                                 std::unique_ptr<ScryptJob> job);
  // Starts a new age file under the file key and the header of an existing one, read from
  // `existing` (positioned at its start): the header is copied byte for byte, the payload gets
  // its own fresh nonce (as WriteSibling), and no scrypt runs; KdfDone() from the start. The
  // header's MAC must verify under `file_key`, which proves the header is the one that key was
  // wrapped in. Errors: kBadInput for a file key that is not 16 bytes; kCorrupt for a header
  // that is not a canonical passphrase header or whose MAC does not verify; errors of both files.
  [[nodiscard]] static Result<std::unique_ptr<Encryptor>> CreateSibling(WritableFile& out,
                                                                        ByteSource& existing,
                                                                        const Secret& file_key);
  ~Encryptor();
  Encryptor(const Encryptor&) = delete;
  Encryptor& operator=(const Encryptor&) = delete;

  // Encrypts and appends plaintext; buffers at most one chunk.
  [[nodiscard]] Status Write(std::span<const std::uint8_t> data);
  // Writes the final chunk, then the header unless WriteHeaderNow already did. Call once.
  [[nodiscard]] Status Finish();
  // Once KdfDone(), writes the header into its reserved place at the start of the file right
  // away (no-op before that, or when it is written already), so the file's first bytes are final
  // while the rest is still being appended.
  [[nodiscard]] Status WriteHeaderNow();
  [[nodiscard]] bool header_written() const { return header_written_; }

  // The key identifier (see the top of this file). REQUIRES: Finish() succeeded.
  [[nodiscard]] std::string KeyId() const { return key_id_; }
  // Bytes of the age file so far (header included); the total once Finish() succeeded.
  [[nodiscard]] std::uint64_t size() const { return size_; }
  // Length of the header written by this Encryptor.
  [[nodiscard]] std::size_t HeaderSize() const { return header_size_; }
  [[nodiscard]] int work_factor() const { return work_factor_; }
  // The file key (16 bytes, in sodium_malloc memory): what reads this file back without scrypt
  // (Decryptor::OpenWithFileKey).
  [[nodiscard]] const Secret& file_key() const { return file_key_; }
  // True for a file with a header of its own (Create), whose scrypt derivation frees its memory
  // when done; false for a sibling (CreateSibling), for which no scrypt runs.
  [[nodiscard]] bool derives_key() const { return kdf_ != nullptr; }
  // True once the scrypt derivation has finished (it runs on its own thread from Create on and
  // uses a whole core meanwhile: a caller may hold back its own parallel work until then).
  [[nodiscard]] bool KdfDone() const { return !kdf_ || kdf_->Done(); }
  // Blocks until KdfDone(): scrypt's memory is freed by then.
  void WaitKdf() const {
    if (kdf_) kdf_->Wait();
  }

  // Writes `plaintext` as a second, complete age file to `out` under the same file key and the
  // same header (scrypt stanza and MAC) as this one, with its own fresh payload nonce: age
  // derives each file's payload key from the file key and that nonce, so the two files share no
  // key stream. `age -d` opens either with the passphrase; a reader that has unwrapped the file
  // key of one opens the other without running scrypt again (Decryptor::OpenWithFileKey).
  // REQUIRES: Finish() succeeded; `out` is a new, empty file.
  [[nodiscard]] Status WriteSibling(WritableFile& out, std::span<const std::uint8_t> plaintext);

  // HKDF-SHA-256(file key, info): a key bound to this file's secret, for keyed hashes kept
  // outside the encryption. REQUIRES: Finish() succeeded.
  [[nodiscard]] Secret DeriveSubkey(std::string_view info) const;

 private:
  Encryptor(WritableFile& out, int work_factor);
  Status EncryptChunk(bool last);
  Status WriteHeader();
  Status Poison(Error error);

  WritableFile& out_;
  const int work_factor_;
  const std::size_t header_size_;
  std::unique_ptr<ScryptJob> kdf_;  // null for a sibling, which copies its header
  Secret file_key_;
  Secret payload_key_;
  bool header_written_ = false;
  std::string pending_key_id_;        // from the header MAC; published by Finish
  std::vector<std::uint8_t> plain_;   // the pending chunk, at most kChunkSize bytes
  std::vector<std::uint8_t> sealed_;  // scratch for one encrypted chunk
  std::uint64_t counter_ = 0;
  std::uint64_t size_ = 0;
  bool finished_ = false;
  std::unique_ptr<Error> error_;
  std::string key_id_;
  std::string header_;  // the final header, kept for WriteSibling
};

// Streams the plaintext out of an age file, verifying as it goes: a chunk is released only after
// its tag verified, and the end of the stream (Read returning 0) is reported only after a valid
// final chunk with nothing behind it. A full-size chunk whose final flag contradicts its position
// (data follows a final chunk, or the file ends after a non-final one) still authenticates: it is
// released and the error follows, as age does. Memory: one chunk, independent of the file size.
//
// Errors of Open and Read:
//   kWrongPassphrase  "wrong passphrase" (the scrypt stanza does not open);
//   kCorrupt          malformed header, a work factor above the maximum ("work factor N above the
//                     maximum M", refused before scrypt runs), header MAC mismatch, truncated or
//                     tampered payload, trailing data, an empty final chunk;
//   kUnsupported      "only passphrase (scrypt) age files are supported" (X25519 and other
//                     recipient stanzas, ASCII-armored files);
//   kBadInput         max_work_factor outside [1, kReaderWorkFactorCap];
//   errors of `in`.
// After an error every later Read returns the same error.
// Thread-safety: one thread at a time.
class Decryptor final : public ByteSource {
 public:
  // Parses the header, runs scrypt, checks the header MAC and reads the payload nonce.
  // REQUIRES: `in` outlives the Decryptor and is positioned at the start of the age file.
  [[nodiscard]] static Result<std::unique_ptr<Decryptor>> Open(ByteSource& in,
                                                               const Secret& passphrase,
                                                               int max_work_factor);

  // Opens with a known 16-byte file key, ignoring what the recipient stanzas say (the header is
  // still parsed with every rule, its MAC checked, the payload verified). Only for tests: it lets
  // the CCTV vectors of X25519 files exercise our header and STREAM code. safepoint never knows a
  // file key in advance.
  [[nodiscard]] static Result<std::unique_ptr<Decryptor>> OpenWithFileKeyForTesting(
      ByteSource& in, const Secret& file_key);

  // Opens a file written under the file key a previous Open unwrapped (`file_key()`), e.g. the
  // sibling written by Encryptor::WriteSibling: the header MAC (which only that key opens) and
  // every chunk are verified; no scrypt runs. Errors as Open, minus kWrongPassphrase.
  [[nodiscard]] static Result<std::unique_ptr<Decryptor>> OpenWithFileKey(ByteSource& in,
                                                                          const Secret& file_key);

  // The unwrapped file key (16 bytes; kept in sodium_malloc memory).
  [[nodiscard]] const Secret& file_key() const { return file_key_; }
  // HKDF-SHA-256(file key, info), as Encryptor::DeriveSubkey.
  [[nodiscard]] Secret DeriveSubkey(std::string_view info) const;

  ~Decryptor() override = default;
  Decryptor(const Decryptor&) = delete;
  Decryptor& operator=(const Decryptor&) = delete;

  // Fills `out` with up to out.size() plaintext bytes; 0 means the verified end of the payload.
  // REQUIRES: !out.empty() (an empty `out` returns 0 without reading).
  [[nodiscard]] Result<std::size_t> Read(std::span<std::uint8_t> out) override;

  // The scrypt work factor of the header (0 when opened with a file key).
  [[nodiscard]] int work_factor() const { return work_factor_; }
  // The key identifier (see the top of this file).
  [[nodiscard]] std::string KeyId() const { return key_id_; }
  // Length of the header in bytes (up to and including the MAC line).
  [[nodiscard]] std::size_t header_size() const { return header_size_; }

 private:
  Decryptor(ByteSource& in, std::vector<std::uint8_t> pending);
  Status Start(const Secret& file_key, std::string_view mac_input,
               std::span<const std::uint8_t> expected_mac);
  Status NextChunk();
  Status Poison(Error error);
  Result<std::size_t> Fill(std::size_t want);

  ByteSource& in_;
  std::vector<std::uint8_t> in_buf_;  // ciphertext read ahead: up to one sealed chunk + 1 byte
  std::vector<std::uint8_t> plain_;   // the current verified chunk
  std::size_t plain_pos_ = 0;
  Secret payload_key_;
  std::uint64_t counter_ = 0;
  bool eof_ = false;   // `in` reported its end
  bool done_ = false;  // the final chunk was verified
  std::unique_ptr<Error> error_;
  std::unique_ptr<Error> deferred_error_;  // reported once the current chunk is consumed
  int work_factor_ = 0;
  std::size_t header_size_ = 0;
  std::string key_id_;
  Secret file_key_;
};

// What the header of a passphrase age file tells without the passphrase.
struct HeaderInfo {
  int work_factor = 0;
  std::string key_id;
  std::size_t header_size = 0;
};

// Parses and validates the header of a passphrase age file (no scrypt, no MAC check: the MAC
// needs the file key). Consumes `in` past the header. Errors as Decryptor::Open, minus
// kWrongPassphrase and the work factor maximum.
[[nodiscard]] Result<HeaderInfo> ReadHeader(ByteSource& in);

}  // namespace safepoint::age
