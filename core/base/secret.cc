#include "core/base/secret.h"

#include <sodium.h>

#include <cstdlib>
#include <cstring>
#include <new>
#include <utility>

namespace safepoint {

void InitSodium() {
  static const bool ok = [] { return sodium_init() >= 0; }();
  if (!ok) std::abort();  // no CSPRNG: continuing would be unsafe
}

Secret::Secret(std::string_view bytes) : Secret(bytes.size()) {
  if (!bytes.empty()) std::memcpy(data_, bytes.data(), bytes.size());
}

Secret::Secret(std::size_t size) {
  InitSodium();
  // sodium_malloc(0) is valid; keep a real allocation so data_ is never null for a live secret.
  data_ = static_cast<std::uint8_t*>(sodium_malloc(size == 0 ? 1 : size));
  if (data_ == nullptr) throw std::bad_alloc();
  size_ = size;
  sodium_memzero(data_, size == 0 ? 1 : size);
}

Secret::~Secret() { Release(); }

Secret::Secret(Secret&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}

Secret& Secret::operator=(Secret&& other) noexcept {
  if (this != &other) {
    Release();
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

void Secret::Release() {
  if (data_ != nullptr) sodium_free(data_);  // sodium_free wipes before unmapping
  data_ = nullptr;
  size_ = 0;
}

}  // namespace safepoint
