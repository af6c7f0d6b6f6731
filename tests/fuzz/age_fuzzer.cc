// Fuzzes the age v1 reader: the header parser (age::ReadHeader) and the scrypt + STREAM decryptor
// (Decryptor::Open/Read with a fixed passphrase, and with a fixed file key so mutated payloads
// reach the chunk code without a matching scrypt stanza).
//
// Input: byte 0 picks the mode and the read piece size; the rest is the age file. The fixed
// passphrase and file key are the ones of the C2SP/CCTV vectors the corpus is seeded from, so a
// seed decrypts and mutations explore the paths right beside success.

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "core/base/secret.h"
#include "core/format/age.h"
#include "tests/fuzz/fuzz_util.h"

namespace safepoint::fuzz {
namespace {

// CCTV: "passphrase: password", "file key: 59454c4c4f57205355424d4152494e45".
constexpr std::string_view kPassphrase = "password";
constexpr std::string_view kFileKey = "YELLOW SUBMARINE";
// The CCTV scrypt vectors use work factor 10; above it Open refuses before deriving, which keeps
// every execution cheap (1 MiB of scrypt memory at most).
constexpr int kMaxWorkFactor = 10;

// `limit`: the plaintext can never be longer than the file.
void Drain(age::Decryptor& dec, std::size_t buffer, std::size_t limit) {
  std::vector<std::uint8_t> out(buffer);
  std::uint64_t total = 0;
  for (;;) {
    auto n = dec.Read(out);
    if (!n) {
      ExpectCode(n.error(), {ErrorCode::kCorrupt}, "Decryptor::Read");
      // Sticky: the same error again.
      auto again = dec.Read(out);
      if (again || again.error().code != n.error().code) Violated("Read error is not sticky");
      return;
    }
    if (*n == 0) {
      // The end is final.
      auto again = dec.Read(out);
      if (!again || *again != 0) Violated("Read after the verified end returned data or error");
      return;
    }
    if (*n > out.size()) Violated("Read returned more than asked");
    total += *n;
    if (total > limit) Violated("more plaintext than the file has bytes");
  }
}

}  // namespace
}  // namespace safepoint::fuzz

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace safepoint;
  using namespace safepoint::fuzz;
  if (size < 1) return 0;
  const std::uint8_t control = data[0];
  const std::span<const std::uint8_t> file(data + 1, size - 1);
  // Pieces of 1..4096 bytes, or one large read.
  const std::size_t piece = (control & 0x40) != 0 ? 1u << (control & 0x0c) : 1u << 20;
  const std::size_t buffer = (control & 0x20) != 0 ? 7 : 65536;
  MemorySource in(file, piece);
  switch (control & 0x03) {
    case 0: {
      auto header = age::ReadHeader(in);
      if (!header) {
        ExpectCode(header.error(), {ErrorCode::kCorrupt, ErrorCode::kUnsupported}, "ReadHeader");
        ExpectPrintableMessage(header.error().message, 512, "ReadHeader");
      } else if (header->header_size > file.size() || header->key_id.size() != 16) {
        Violated("ReadHeader: header size beyond the input or malformed key id");
      }
      break;
    }
    case 1: {
      auto dec = age::Decryptor::Open(in, Secret(kPassphrase), kMaxWorkFactor);
      if (!dec) {
        ExpectCode(dec.error(),
                   {ErrorCode::kCorrupt, ErrorCode::kUnsupported, ErrorCode::kWrongPassphrase},
                   "Decryptor::Open");
        ExpectPrintableMessage(dec.error().message, 512, "Decryptor::Open");
        break;
      }
      Drain(**dec, buffer, file.size());
      break;
    }
    default: {
      auto dec = age::Decryptor::OpenWithFileKeyForTesting(in, Secret(kFileKey));
      if (!dec) {
        ExpectCode(dec.error(), {ErrorCode::kCorrupt, ErrorCode::kUnsupported},
                   "Decryptor::OpenWithFileKeyForTesting");
        ExpectPrintableMessage(dec.error().message, 512, "Decryptor::OpenWithFileKey");
        break;
      }
      Drain(**dec, buffer, file.size());
      break;
    }
  }
  return 0;
}
