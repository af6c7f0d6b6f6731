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

namespace safepoint::age {
namespace {

constexpr std::string_view kVersionLine = "age-encryption.org/v1";
constexpr std::string_view kScryptLabel = "age-encryption.org/v1/scrypt";
constexpr std::string_view kArmorBegin = "-----BEGIN";
constexpr std::string_view kUnsupportedMessage = "only passphrase (scrypt) age files are supported";
constexpr std::size_t kFileKeySize = 16;
constexpr std::size_t kSaltSize = 16;
constexpr std::size_t kNonceSize = 16;  // payload nonce
constexpr std::size_t kTagSize = crypto_aead_chacha20poly1305_ietf_ABYTES;
constexpr std::size_t kKeySize = 32;
constexpr std::size_t kMacSize = crypto_auth_hmacsha256_BYTES;
constexpr std::size_t kSealedChunkSize = kChunkSize + kTagSize;
constexpr std::size_t kStanzaBodySize = kFileKeySize + kTagSize;
constexpr std::size_t kColumns = 64;  // stanza body lines are wrapped at 64 columns
// Headers larger than this are refused (ours is 150 bytes; a hybrid post-quantum stanza ~2 KiB).
constexpr std::size_t kMaxHeaderSize = std::size_t{64} * 1024;
constexpr std::size_t kReadBlock = 4096;

static_assert(kSealedChunkSize == 65552);

// ---------------------------------------------------------------------------------------------
// Encodings.

constexpr std::string_view kBase64Alphabet =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

int Base64Value(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}

bool IsBase64Char(char c) { return Base64Value(c) >= 0; }

// Standard base64 without padding (RFC 4648 section 4, "=" omitted).
std::string Base64Encode(std::span<const std::uint8_t> data) {
  std::string out;
  out.reserve((data.size() * 4 + 2) / 3);
  std::size_t i = 0;
  for (; i + 3 <= data.size(); i += 3) {
    const std::uint32_t v = (std::uint32_t{data[i]} << 16) | (std::uint32_t{data[i + 1]} << 8) |
                            std::uint32_t{data[i + 2]};
    out += kBase64Alphabet[(v >> 18) & 63];
    out += kBase64Alphabet[(v >> 12) & 63];
    out += kBase64Alphabet[(v >> 6) & 63];
    out += kBase64Alphabet[v & 63];
  }
  const std::size_t rest = data.size() - i;
  if (rest == 1) {
    const std::uint32_t v = std::uint32_t{data[i]} << 16;
    out += kBase64Alphabet[(v >> 18) & 63];
    out += kBase64Alphabet[(v >> 12) & 63];
  } else if (rest == 2) {
    const std::uint32_t v = (std::uint32_t{data[i]} << 16) | (std::uint32_t{data[i + 1]} << 8);
    out += kBase64Alphabet[(v >> 18) & 63];
    out += kBase64Alphabet[(v >> 12) & 63];
    out += kBase64Alphabet[(v >> 6) & 63];
  }
  return out;
}

// Decodes unpadded base64, rejecting padding, foreign characters, impossible lengths and
// non-canonical encodings (unused trailing bits must be zero, RFC 4648 section 3.5).
std::optional<std::vector<std::uint8_t>> Base64Decode(std::string_view text) {
  if (text.size() % 4 == 1) return std::nullopt;
  std::vector<std::uint8_t> out;
  out.reserve(text.size() * 3 / 4);
  std::uint32_t acc = 0;
  int bits = 0;
  for (char c : text) {
    const int v = Base64Value(c);
    if (v < 0) return std::nullopt;
    acc = (acc << 6) | static_cast<std::uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<std::uint8_t>((acc >> bits) & 0xff));
    }
  }
  if ((acc & ((1u << bits) - 1)) != 0) return std::nullopt;
  return out;
}

std::string Hex(std::span<const std::uint8_t> data) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(data.size() * 2);
  for (std::uint8_t b : data) {
    out += kHex[b >> 4];
    out += kHex[b & 15];
  }
  return out;
}

std::span<const std::uint8_t> AsBytes(std::string_view s) {
  return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}

// ---------------------------------------------------------------------------------------------
// Primitives.

// HMAC-SHA-256(key, concatenation of parts).
void HmacSha256(std::span<const std::uint8_t> key,
                std::initializer_list<std::span<const std::uint8_t>> parts,
                std::span<std::uint8_t, kMacSize> out) {
  static constexpr std::uint8_t kNoKey = 0;
  crypto_auth_hmacsha256_state state;
  crypto_auth_hmacsha256_init(&state, key.empty() ? &kNoKey : key.data(), key.size());
  for (const auto& part : parts) {
    if (!part.empty()) crypto_auth_hmacsha256_update(&state, part.data(), part.size());
  }
  crypto_auth_hmacsha256_final(&state, out.data());
  sodium_memzero(&state, sizeof state);
}

// HKDF-SHA-256 (RFC 5869) with a 32-byte output: one Extract, one Expand block.
void HkdfSha256(std::span<const std::uint8_t> ikm, std::span<const std::uint8_t> salt,
                std::string_view info, std::span<std::uint8_t, kKeySize> out) {
  std::array<std::uint8_t, kMacSize> prk;
  HmacSha256(salt, {ikm}, prk);  // an empty salt is HMAC's all-zero key, as RFC 5869 specifies
  static constexpr std::uint8_t kCounter = 1;
  HmacSha256(prk, {AsBytes(info), std::span<const std::uint8_t>(&kCounter, 1)}, out);
  sodium_memzero(prk.data(), prk.size());
}

// scrypt(N = 2^work_factor, r = 8, p = 1, S = label || salt, P = passphrase) -> 32 bytes.
bool Scrypt(const Secret& passphrase, std::span<const std::uint8_t> salt, int work_factor,
            Secret& wrap_key) {
  std::array<std::uint8_t, kScryptLabel.size() + kSaltSize> full_salt;
  std::memcpy(full_salt.data(), kScryptLabel.data(), kScryptLabel.size());
  std::memcpy(full_salt.data() + kScryptLabel.size(), salt.data(), kSaltSize);
  wrap_key = Secret(kKeySize);
  return crypto_pwhash_scryptsalsa208sha256_ll(
             passphrase.bytes().data(), passphrase.size(), full_salt.data(), full_salt.size(),
             std::uint64_t{1} << work_factor, 8, 1, wrap_key.bytes().data(), kKeySize) == 0;
}

// The STREAM nonce: an 11-byte big-endian chunk counter, then 0x01 for the final chunk.
std::array<std::uint8_t, crypto_aead_chacha20poly1305_ietf_NPUBBYTES> ChunkNonce(
    std::uint64_t counter, bool last) {
  std::array<std::uint8_t, crypto_aead_chacha20poly1305_ietf_NPUBBYTES> nonce{};
  for (int i = 0; i < 8; ++i) {
    nonce[10 - i] = static_cast<std::uint8_t>(counter >> (8 * i));
  }
  nonce[11] = last ? 1 : 0;
  return nonce;
}

bool AeadOpen(std::span<std::uint8_t> plain, std::span<const std::uint8_t> sealed,
              std::span<const std::uint8_t> nonce, const Secret& key) {
  unsigned long long plain_len = 0;  // NOLINT(google-runtime-int): libsodium's type
  return crypto_aead_chacha20poly1305_ietf_decrypt(plain.data(), &plain_len, nullptr, sealed.data(),
                                                   sealed.size(), nullptr, 0, nonce.data(),
                                                   key.bytes().data()) == 0;
}

void AeadSeal(std::span<std::uint8_t> sealed, std::span<const std::uint8_t> plain,
              std::span<const std::uint8_t> nonce, const Secret& key) {
  unsigned long long sealed_len = 0;  // NOLINT(google-runtime-int): libsodium's type
  crypto_aead_chacha20poly1305_ietf_encrypt(sealed.data(), &sealed_len, plain.data(), plain.size(),
                                            nullptr, 0, nullptr, nonce.data(), key.bytes().data());
}

Secret DeriveKey(const Secret& file_key, std::span<const std::uint8_t> salt,
                 std::string_view info) {
  Secret key(kKeySize);
  HkdfSha256(file_key.bytes(), salt, info, key.bytes().subspan<0, kKeySize>());
  return key;
}

std::string KeyIdFromMac(std::span<const std::uint8_t> mac) {
  static constexpr std::string_view kLabel = "safepoint-key-id";
  std::array<std::uint8_t, crypto_hash_sha256_BYTES> digest;
  crypto_hash_sha256_state state;
  crypto_hash_sha256_init(&state);
  crypto_hash_sha256_update(&state, AsBytes(kLabel).data(), kLabel.size());
  crypto_hash_sha256_update(&state, mac.data(), mac.size());
  crypto_hash_sha256_final(&state, digest.data());
  return Hex(std::span(digest).first(8));
}

Error CorruptError(std::string message) {
  return {ErrorCode::kCorrupt, "age: " + std::move(message)};
}

tl::unexpected<Error> Corrupt(std::string message) {
  return tl::unexpected<Error>(CorruptError(std::move(message)));
}

// ---------------------------------------------------------------------------------------------
// Header parsing.

struct Stanza {
  std::vector<std::string> args;
  std::vector<std::uint8_t> body;
};

struct ParsedHeader {
  std::vector<Stanza> stanzas;
  std::string mac_input;  // the header up to and including "---"
  std::array<std::uint8_t, kMacSize> mac{};
  std::size_t size = 0;                // header bytes including the MAC line
  std::vector<std::uint8_t> leftover;  // bytes read past the header (start of the payload)
};

struct ScryptStanza {
  std::array<std::uint8_t, kSaltSize> salt{};
  int work_factor = 0;
  std::string work_factor_text;  // as written, for messages about absurd values
  std::vector<std::uint8_t> body;
};

// Reads lines of the header from a ByteSource, keeping what it read beyond them.
class LineReader {
 public:
  explicit LineReader(ByteSource& in) : in_(in) {}

  // Makes at least `n` unread bytes available unless the input ends first.
  Status Peek(std::size_t n) {
    while (buf_.size() - pos_ < n && !eof_) {
      const std::size_t old = buf_.size();
      buf_.resize(old + kReadBlock);
      auto got = in_.Read(std::span(buf_).subspan(old));
      if (!got) {
        buf_.resize(old);
        return tl::unexpected(std::move(got.error()));
      }
      buf_.resize(old + *got);
      if (*got == 0) eof_ = true;
    }
    return {};
  }
  [[nodiscard]] std::string_view Unread() const {
    return {reinterpret_cast<const char*>(buf_.data()) + pos_, buf_.size() - pos_};
  }

  // Reads one line terminated by LF (the LF is consumed, not returned).
  Status ReadLine(std::string& line) {
    for (;;) {
      const std::string_view unread = Unread();
      const std::size_t lf = unread.find('\n');
      if (lf != std::string_view::npos) {
        if (consumed_ + lf + 1 > kMaxHeaderSize) return TooLong();
        line.assign(unread.substr(0, lf));
        pos_ += lf + 1;
        consumed_ += lf + 1;
        return {};
      }
      if (consumed_ + unread.size() > kMaxHeaderSize) return TooLong();
      if (eof_) return Corrupt("truncated header (the input ends inside the header)");
      SP_RETURN_IF_ERROR(Peek(unread.size() + 1));
    }
  }

  [[nodiscard]] std::size_t Consumed() const { return consumed_; }
  std::vector<std::uint8_t> TakeLeftover() {
    std::vector<std::uint8_t> rest(buf_.begin() + static_cast<std::ptrdiff_t>(pos_), buf_.end());
    buf_.clear();
    pos_ = 0;
    return rest;
  }

 private:
  static Status TooLong() {
    return Corrupt("header longer than " + std::to_string(kMaxHeaderSize) + " bytes");
  }

  ByteSource& in_;
  std::vector<std::uint8_t> buf_;
  std::size_t pos_ = 0;
  std::size_t consumed_ = 0;
  bool eof_ = false;
};

bool IsVisibleAscii(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return c >= 0x21 && c <= 0x7e; });
}

std::string Printable(std::string_view s) {
  std::string out;
  for (char c : s.substr(0, 40)) out += (c >= 0x20 && c <= 0x7e) ? c : '?';
  if (s.size() > 40) out += "...";
  return out;
}

// Parses the age v1 header grammar:
//   header   = "age-encryption.org/v1" LF 1*stanza "--- " 43base64char LF
//   stanza   = "-> " argument *(SP argument) LF *(64base64char LF) *63base64char LF
//   argument = 1*VCHAR
Result<ParsedHeader> ParseHeader(ByteSource& in) {
  LineReader reader(in);
  SP_RETURN_IF_ERROR(reader.Peek(256));
  {
    std::string_view start = reader.Unread();
    if (start.empty()) return Corrupt("empty input, not an age file");
    const std::size_t text = start.find_first_not_of(" \t\r\n");
    if (text != std::string_view::npos && start.substr(text).starts_with(kArmorBegin)) {
      return Fail(ErrorCode::kUnsupported,
                  std::string(kUnsupportedMessage) + " (ASCII-armored input is not)");
    }
  }
  ParsedHeader header;
  std::string line;
  SP_RETURN_IF_ERROR(reader.ReadLine(line));
  if (line != kVersionLine) {
    if (line.starts_with("age-encryption.org/")) {
      return Corrupt("unsupported age version line '" + Printable(line) + "'");
    }
    return Corrupt("not an age file (no 'age-encryption.org/v1' line)");
  }
  header.mac_input = line + "\n";

  SP_RETURN_IF_ERROR(reader.ReadLine(line));
  for (;;) {
    if (line.starts_with("---")) break;
    if (!line.starts_with("-> ")) {
      return Corrupt("malformed header: expected a stanza or the MAC line, got '" +
                     Printable(line) + "'");
    }
    header.mac_input += line + "\n";
    Stanza stanza;
    std::string_view rest = std::string_view(line).substr(3);
    for (;;) {
      const std::size_t sp = rest.find(' ');
      const std::string_view arg = rest.substr(0, sp);
      if (arg.empty() || !IsVisibleAscii(arg)) {
        return Corrupt("malformed stanza arguments in '" + Printable(line) + "'");
      }
      stanza.args.emplace_back(arg);
      if (sp == std::string_view::npos) break;
      rest.remove_prefix(sp + 1);
    }
    std::string body_text;
    for (;;) {
      SP_RETURN_IF_ERROR(reader.ReadLine(line));
      if (line.size() > kColumns || !std::all_of(line.begin(), line.end(), IsBase64Char)) {
        return Corrupt("malformed stanza body line '" + Printable(line) + "'");
      }
      header.mac_input += line + "\n";
      body_text += line;
      if (line.size() < kColumns) break;
    }
    auto body = Base64Decode(body_text);
    if (!body) return Corrupt("stanza body is not canonical unpadded base64");
    stanza.body = std::move(*body);
    header.stanzas.push_back(std::move(stanza));
    SP_RETURN_IF_ERROR(reader.ReadLine(line));
  }
  if (header.stanzas.empty()) return Corrupt("malformed header: no recipient stanza");
  // The MAC line: "--- " and 43 base64 characters (32 bytes), nothing else.
  constexpr std::size_t kMacChars = 43;
  if (line.size() != 4 + kMacChars || line[3] != ' ') {
    return Corrupt("malformed header MAC line");
  }
  auto mac = Base64Decode(std::string_view(line).substr(4));
  if (!mac || mac->size() != kMacSize) return Corrupt("malformed header MAC line");
  std::copy(mac->begin(), mac->end(), header.mac.begin());
  header.mac_input += "---";
  header.size = reader.Consumed();
  header.leftover = reader.TakeLeftover();
  return header;
}

// Validates an scrypt stanza if the header has one. An scrypt stanza must be the only stanza.
Result<std::optional<ScryptStanza>> FindScryptStanza(const ParsedHeader& header) {
  const auto it = std::find_if(header.stanzas.begin(), header.stanzas.end(),
                               [](const Stanza& s) { return s.args[0] == "scrypt"; });
  if (it == header.stanzas.end()) return std::optional<ScryptStanza>();
  if (header.stanzas.size() != 1) {
    return Corrupt("an scrypt stanza must be the only stanza in the header");
  }
  if (it->args.size() != 3) return Corrupt("scrypt stanza must have exactly 3 arguments");
  ScryptStanza out;
  auto salt = Base64Decode(it->args[1]);
  if (!salt || salt->size() != kSaltSize) {
    return Corrupt("scrypt salt is not 16 bytes of canonical base64");
  }
  std::copy(salt->begin(), salt->end(), out.salt.begin());
  const std::string& wf = it->args[2];
  out.work_factor_text = wf;
  const bool decimal =
      !wf.empty() && wf[0] >= '1' && wf[0] <= '9' &&
      std::all_of(wf.begin(), wf.end(), [](char c) { return c >= '0' && c <= '9'; });
  if (!decimal) {
    return Corrupt("scrypt work factor '" + Printable(wf) +
                   "' is not a decimal number without leading zeros");
  }
  if (wf.size() > 2) return Corrupt("scrypt work factor " + Printable(wf) + " out of range");
  out.work_factor = std::stoi(wf);
  if (it->body.size() != kStanzaBodySize) return Corrupt("scrypt stanza body is not 32 bytes");
  out.body = it->body;
  return std::optional<ScryptStanza>(std::move(out));
}

Result<ScryptStanza> RequireScryptStanza(const ParsedHeader& header) {
  auto found = FindScryptStanza(header);
  if (!found) return tl::unexpected(std::move(found.error()));
  if (!found->has_value()) return Fail(ErrorCode::kUnsupported, std::string(kUnsupportedMessage));
  return std::move(**found);
}

std::size_t ScryptHeaderSize(int work_factor) {
  // version LF, "-> scrypt " salt SP wf LF, body LF, "--- " mac LF
  const std::size_t salt_chars = (kSaltSize * 4 + 2) / 3;
  const std::size_t body_chars = (kStanzaBodySize * 4 + 2) / 3;
  const std::size_t mac_chars = (kMacSize * 4 + 2) / 3;
  return kVersionLine.size() + 1 + 10 + salt_chars + 1 + std::to_string(work_factor).size() + 1 +
         body_chars + 1 + 4 + mac_chars + 1;
}

}  // namespace

// =============================================================================================
// Encryptor

Encryptor::Encryptor(WritableFile& out, Secret passphrase, int work_factor)
    : out_(out),
      work_factor_(work_factor),
      header_size_(ScryptHeaderSize(work_factor)),
      passphrase_(std::move(passphrase)) {}

Encryptor::~Encryptor() {
  if (scrypt_thread_.joinable()) scrypt_thread_.join();
}

Result<std::unique_ptr<Encryptor>> Encryptor::Create(WritableFile& out, const Secret& passphrase,
                                                     int work_factor) {
  if (work_factor < kMinWorkFactor || work_factor > kMaxWorkFactor) {
    return Fail(ErrorCode::kBadInput, "scrypt work factor " + std::to_string(work_factor) +
                                          " outside " + std::to_string(kMinWorkFactor) + ".." +
                                          std::to_string(kMaxWorkFactor));
  }
  if (passphrase.empty()) return Fail(ErrorCode::kBadInput, "the passphrase is empty");
  InitSodium();
  std::unique_ptr<Encryptor> enc(new Encryptor(out, Secret(passphrase.view()), work_factor));
  enc->file_key_ = Secret(kFileKeySize);
  randombytes_buf(enc->file_key_.bytes().data(), kFileKeySize);
  randombytes_buf(enc->salt_, kSaltSize);
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

  Encryptor* self = enc.get();
  try {
    enc->scrypt_thread_ = std::thread([self] {
      self->scrypt_ok_ =
          Scrypt(self->passphrase_, self->salt_, self->work_factor_, self->wrap_key_);
      self->kdf_done_.store(true, std::memory_order_release);
    });
  } catch (const std::system_error& e) {
    return Fail(ErrorCode::kInternal, std::string("cannot start the scrypt thread: ") + e.what());
  }
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
  scrypt_thread_.join();
  passphrase_ = Secret();
  if (!scrypt_ok_) {
    return Poison({ErrorCode::kInternal, "age: scrypt failed (out of memory?)"});
  }
  std::array<std::uint8_t, kStanzaBodySize> body;
  const std::array<std::uint8_t, crypto_aead_chacha20poly1305_ietf_NPUBBYTES> zero_nonce{};
  AeadSeal(body, file_key_.bytes(), zero_nonce, wrap_key_);
  wrap_key_ = Secret();

  std::string header(kVersionLine);
  header += "\n-> scrypt ";
  header += Base64Encode(salt_);
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
  if (file_key.size() != kFileKeySize) {
    return Fail(ErrorCode::kBadInput, "age: a file key is 16 bytes");
  }
  InitSodium();
  auto header = ParseHeader(in);
  if (!header) return tl::unexpected(std::move(header.error()));
  auto stanza = RequireScryptStanza(*header);
  if (!stanza) return tl::unexpected(std::move(stanza.error()));
  std::unique_ptr<Decryptor> dec(new Decryptor(in, std::move(header->leftover)));
  dec->work_factor_ = stanza->work_factor;
  dec->header_size_ = header->size;
  SP_RETURN_IF_ERROR(dec->Start(file_key, header->mac_input, header->mac));
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
  const Secret mac_key = DeriveKey(file_key, {}, "header");
  std::array<std::uint8_t, kMacSize> mac;
  HmacSha256(mac_key.bytes(), {AsBytes(mac_input)}, mac);
  if (expected_mac.size() != kMacSize ||
      sodium_memcmp(mac.data(), expected_mac.data(), kMacSize) != 0) {
    return Corrupt("header MAC mismatch (the header was modified)");
  }
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
