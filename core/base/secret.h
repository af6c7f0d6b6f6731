#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

namespace safepoint {

// Bytes of a secret (the passphrase, a file key) held in sodium_malloc memory: guarded pages,
// mlock'ed, excluded from core dumps (MADV_DONTDUMP), wiped on destruction.
// Move-only. Never log or print its contents.
class Secret {
 public:
  Secret() = default;
  explicit Secret(std::string_view bytes);
  explicit Secret(std::size_t size);  // zero-filled
  ~Secret();
  Secret(Secret&& other) noexcept;
  Secret& operator=(Secret&& other) noexcept;
  Secret(const Secret&) = delete;
  Secret& operator=(const Secret&) = delete;

  [[nodiscard]] std::span<std::uint8_t> bytes() { return {data_, size_}; }
  [[nodiscard]] std::span<const std::uint8_t> bytes() const { return {data_, size_}; }
  [[nodiscard]] std::string_view view() const {
    return {reinterpret_cast<const char*>(data_), size_};
  }
  [[nodiscard]] std::size_t size() const { return size_; }
  [[nodiscard]] bool empty() const { return size_ == 0; }

 private:
  void Release();
  std::uint8_t* data_ = nullptr;
  std::size_t size_ = 0;
};

// Initializes libsodium once; safe to call from any thread, any number of times.
void InitSodium();

}  // namespace safepoint
