#pragma once

// What the age reader and writer (age.cc) share with the header, encoding and primitive code
// (age_header.cc). Not part of any interface: age.h is.

#include <sodium.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/base/io.h"
#include "core/base/result.h"
#include "core/base/secret.h"
#include "core/format/age.h"

namespace safepoint::age::internal {

inline constexpr std::string_view kVersionLine = "age-encryption.org/v1";
inline constexpr std::string_view kScryptLabel = "age-encryption.org/v1/scrypt";
inline constexpr std::string_view kArmorBegin = "-----BEGIN";
inline constexpr std::string_view kUnsupportedMessage =
    "only passphrase (scrypt) age files are supported";
inline constexpr std::size_t kFileKeySize = 16;
inline constexpr std::size_t kSaltSize = 16;
inline constexpr std::size_t kNonceSize = 16;  // payload nonce
inline constexpr std::size_t kTagSize = crypto_aead_chacha20poly1305_ietf_ABYTES;
inline constexpr std::size_t kKeySize = 32;
inline constexpr std::size_t kMacSize = crypto_auth_hmacsha256_BYTES;
inline constexpr std::size_t kSealedChunkSize = kChunkSize + kTagSize;
inline constexpr std::size_t kStanzaBodySize = kFileKeySize + kTagSize;
inline constexpr std::size_t kColumns = 64;  // stanza body lines are wrapped at 64 columns
// Headers larger than this are refused (ours is 150 bytes; a hybrid post-quantum stanza ~2 KiB).
inline constexpr std::size_t kMaxHeaderSize = std::size_t{64} * 1024;
inline constexpr std::size_t kReadBlock = 4096;

static_assert(kSealedChunkSize == 65552);

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

// Standard base64 without padding (RFC 4648 section 4, "=" omitted).
std::string Base64Encode(std::span<const std::uint8_t> data);

// The bytes of `s` (no copy).
std::span<const std::uint8_t> AsBytes(std::string_view s);

// HMAC-SHA-256(key, concatenation of parts).
void HmacSha256(std::span<const std::uint8_t> key,
                std::initializer_list<std::span<const std::uint8_t>> parts,
                std::span<std::uint8_t, kMacSize> out);

// scrypt(N = 2^work_factor, r = 8, p = 1, S = label || salt, P = passphrase) -> 32 bytes.
bool Scrypt(const Secret& passphrase, std::span<const std::uint8_t> salt, int work_factor,
            Secret& wrap_key);

// The STREAM nonce: an 11-byte big-endian chunk counter, then 0x01 for the final chunk.
std::array<std::uint8_t, crypto_aead_chacha20poly1305_ietf_NPUBBYTES> ChunkNonce(
    std::uint64_t counter, bool last);

// ChaCha20-Poly1305 (IETF): opens `sealed` into `plain`; false when it does not authenticate.
bool AeadOpen(std::span<std::uint8_t> plain, std::span<const std::uint8_t> sealed,
              std::span<const std::uint8_t> nonce, const Secret& key);

// ChaCha20-Poly1305 (IETF): seals `plain` into `sealed` (tag appended).
void AeadSeal(std::span<std::uint8_t> sealed, std::span<const std::uint8_t> plain,
              std::span<const std::uint8_t> nonce, const Secret& key);

// HKDF-SHA-256 of the file key: the header MAC key, the payload key and subkeys.
Secret DeriveKey(const Secret& file_key, std::span<const std::uint8_t> salt, std::string_view info);

// The key identifier of a header: hex of the first 8 bytes of SHA-256("safepoint-key-id" ||
// header MAC).
std::string KeyIdFromMac(std::span<const std::uint8_t> mac);

// kCorrupt, "age: <message>".
Error CorruptError(std::string message);

tl::unexpected<Error> Corrupt(std::string message);

// Parses the age v1 header grammar:
//   header   = "age-encryption.org/v1" LF 1*stanza "--- " 43base64char LF
//   stanza   = "-> " argument *(SP argument) LF *(64base64char LF) *63base64char LF
//   argument = 1*VCHAR
Result<ParsedHeader> ParseHeader(ByteSource& in);

// Validates an scrypt stanza if the header has one. An scrypt stanza must be the only stanza.
Result<std::optional<ScryptStanza>> FindScryptStanza(const ParsedHeader& header);

// The header's scrypt stanza; kUnsupported when it has none (another recipient type).
Result<ScryptStanza> RequireScryptStanza(const ParsedHeader& header);

// Bytes of the header this package writes (one scrypt stanza) at `work_factor`.
std::size_t ScryptHeaderSize(int work_factor);

}  // namespace safepoint::age::internal
