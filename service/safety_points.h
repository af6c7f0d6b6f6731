#pragma once

#include <optional>
#include <string>
#include <vector>

#include "core/base/result.h"

namespace safepoint::service {

// The safety points the service knows (newest first) and the one the "Roll back" button uses:
// the `select` command and the discovery select entity choose it, the list refreshes it. Pure.
class SafetyPointChoice {
 public:
  // A new list, newest first. The selection stays while its safety point is listed; otherwise
  // (or when nothing was selected) it becomes the newest. True when the list changed.
  bool Update(std::vector<std::string> ids_newest_first);
  [[nodiscard]] bool Known(const std::string& id) const;
  // The `select` command: kNotFound for a safety point not in the list.
  [[nodiscard]] Status Select(const std::string& id);
  // The safety point a `rollback` command means: the one it names, or the selected one
  // (kBadInput "no safety point selected"). Whether it exists is for the caller to check.
  [[nodiscard]] Result<std::string> RollbackTarget(const std::optional<std::string>& named) const;

  [[nodiscard]] const std::vector<std::string>& ids() const { return ids_; }
  [[nodiscard]] const std::optional<std::string>& selected() const { return selected_; }

 private:
  std::vector<std::string> ids_;
  std::optional<std::string> selected_;
};

}  // namespace safepoint::service
