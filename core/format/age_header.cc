// The age v1 header (parsing, the scrypt stanza), its encodings and the cryptographic primitives
// of the format; the payload stream is age.cc.
#include <sodium.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <initializer_list>
#include <optional>
#include <string_view>
#include <utility>

#include "core/base/sha256.h"
#include "core/format/age_internal.h"

namespace safepoint::age::internal {

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
  return HexEncode(std::span<const std::uint8_t>(digest).first(8));
}

Error CorruptError(std::string message) {
  return {ErrorCode::kCorrupt, "age: " + std::move(message)};
}

tl::unexpected<Error> Corrupt(std::string message) {
  return tl::unexpected<Error>(CorruptError(std::move(message)));
}

// ---------------------------------------------------------------------------------------------
// Header parsing.

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

}  // namespace safepoint::age::internal
