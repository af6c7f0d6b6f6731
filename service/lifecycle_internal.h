#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "core/format/manifest.h"
#include "service/lifecycle.h"

// Shared by the two halves of the lifecycle (lifecycle.cc, lifecycle_rollback.cc).
namespace safepoint::service::lifecycle_internal {

// The update as a safety point's manifest records it.
inline manifest::UpdateRef UpdateRefOf(const UpdateRequest& r) {
  return {r.update_id, r.target, r.from_version.value_or(""), r.to_version.value_or("")};
}

// "\n- a\n- b ... and 3 more": the first 20 of `items`, one per line, for an event's message.
inline std::string BulletList(const std::vector<std::string>& items) {
  constexpr std::size_t kMaxItems = 20;
  std::string text;
  for (std::size_t i = 0; i < items.size() && i < kMaxItems; ++i) text += "\n- " + items[i];
  if (items.size() > kMaxItems) {
    text += "\n- ... and " + std::to_string(items.size() - kMaxItems) + " more";
  }
  return text;
}

}  // namespace safepoint::service::lifecycle_internal
