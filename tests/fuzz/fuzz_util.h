#pragma once

// Helpers shared by the libFuzzer targets: an in-memory ByteSource and a crash that libFuzzer
// reports with the message that explains which invariant broke.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <initializer_list>
#include <span>
#include <string>
#include <string_view>

#include "core/base/io.h"
#include "core/base/result.h"

namespace safepoint::fuzz {

// Serves `data` in pieces of at most `piece` bytes, so readers see short reads as they would
// from a pipe or a decryptor.
class MemorySource final : public ByteSource {
 public:
  MemorySource(std::span<const std::uint8_t> data, std::size_t piece)
      : data_(data), piece_(piece == 0 ? 1 : piece) {}
  Result<std::size_t> Read(std::span<std::uint8_t> out) override {
    const std::size_t n = std::min({out.size(), piece_, data_.size() - pos_});
    std::copy_n(data_.begin() + static_cast<std::ptrdiff_t>(pos_), n, out.begin());
    pos_ += n;
    return n;
  }

 private:
  std::span<const std::uint8_t> data_;
  std::size_t piece_;
  std::size_t pos_ = 0;
};

// Stops the run with a finding: libFuzzer saves the input and the message says what broke.
[[noreturn]] inline void Violated(std::string_view what) {
  std::fprintf(stderr, "fuzz invariant violated: %.*s\n", static_cast<int>(what.size()),
               what.data());
  std::abort();
}

// An error of a parser of untrusted input must be one the contract names, never kInternal.
inline void ExpectCode(const Error& error, std::initializer_list<ErrorCode> allowed,
                       std::string_view where) {
  if (std::find(allowed.begin(), allowed.end(), error.code) == allowed.end()) {
    std::fprintf(stderr, "%.*s: unexpected error code %s: %s\n", static_cast<int>(where.size()),
                 where.data(), std::string(ErrorCodeName(error.code)).c_str(),
                 error.message.c_str());
    std::abort();
  }
}

// Error texts reach logs and MQTT responses: printable ASCII only (no terminal escapes, no
// newlines that could forge a log line), and bounded.
inline void ExpectPrintableMessage(std::string_view message, std::size_t max_length,
                                   std::string_view where) {
  if (message.size() > max_length) Violated(std::string(where) + ": over-long error message");
  for (char c : message) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u >= 0x7f) {
      Violated(std::string(where) + ": unprintable byte in error message");
    }
  }
}

}  // namespace safepoint::fuzz
