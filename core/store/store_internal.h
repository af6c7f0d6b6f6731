#pragma once

// What the store's source files share (store.cc, store_write.cc, store_read.cc). Not part of any
// interface.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "core/base/result.h"

namespace safepoint::store::internal {

inline constexpr std::size_t kBufferSize = 256 * 1024;
// Names of the store's temporary entries: a safety point being written, one being deleted.
inline constexpr std::string_view kTmpPrefix = ".tmp-";
inline constexpr std::string_view kDelPrefix = ".del-";

// kBadInput unless `id` is a safety point id (and so a plain directory name).
[[nodiscard]] Status CheckIdArg(const std::string& id);

}  // namespace safepoint::store::internal
