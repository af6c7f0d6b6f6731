#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>

namespace safepoint {

// Streaming SHA-256 (OpenSSL's implementation, which uses the CPU's SHA extensions).
// Not thread-safe; one instance per stream.
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  Sha256(Sha256&&) noexcept;
  Sha256& operator=(Sha256&&) noexcept;

  void Update(std::span<const std::uint8_t> data);
  void Update(std::string_view data);
  // Returns the digest and resets the hasher for a new stream.
  std::array<std::uint8_t, 32> Final();
  // Final() as 64 lowercase hex digits.
  std::string FinalHex();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Lowercase hex of bytes.
[[nodiscard]] std::string HexEncode(std::span<const std::uint8_t> bytes);
// One-shot helper.
[[nodiscard]] std::string Sha256Hex(std::string_view data);

}  // namespace safepoint
