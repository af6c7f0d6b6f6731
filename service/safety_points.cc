#include "service/safety_points.h"

#include <algorithm>
#include <utility>

namespace safepoint::service {

bool SafetyPointChoice::Update(std::vector<std::string> ids_newest_first,
                               const std::set<std::string>& pre_rollback) {
  const bool changed = ids_newest_first != ids_;
  ids_ = std::move(ids_newest_first);
  if (chosen_ && selected_ && Known(*selected_)) return changed;
  chosen_ = false;
  selected_.reset();
  auto it = std::find_if(ids_.begin(), ids_.end(),
                         [&](const std::string& id) { return !pre_rollback.contains(id); });
  if (it != ids_.end()) {
    selected_ = *it;
  } else if (!ids_.empty()) {
    selected_ = ids_.front();
  }
  return changed;
}

bool SafetyPointChoice::Known(const std::string& id) const {
  return std::find(ids_.begin(), ids_.end(), id) != ids_.end();
}

Status SafetyPointChoice::Select(const std::string& id) {
  if (!Known(id)) return Fail(ErrorCode::kNotFound, "no safety point " + id);
  selected_ = id;
  chosen_ = true;
  return {};
}

Result<std::string> SafetyPointChoice::RollbackTarget(
    const std::optional<std::string>& named) const {
  if (named) return *named;
  if (selected_) return *selected_;
  return Fail(ErrorCode::kBadInput, "no safety point selected");
}

}  // namespace safepoint::service
