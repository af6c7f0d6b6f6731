#pragma once

#include <optional>
#include <set>
#include <string>
#include <vector>

#include "core/base/result.h"

namespace safepoint::service {

// The safety points the service knows (newest first) and the one the "Roll back" button uses:
// the newest until the user chooses one (the `select` command, the discovery select entity);
// the list refreshes it. Pure.
class SafetyPointChoice {
 public:
  // A new list, newest first, and which of them are a rollback's pre-rollback safety point.
  // The user's choice stays while its safety point is listed; otherwise, or when the user chose
  // none, the selection is the newest that is not a pre-rollback point (the newest if all are):
  // after a backup before an update, a bare "Roll back" returns to that backup, not to whichever
  // safety point was the newest when the service started; pressed again after a rollback, it
  // repeats that rollback instead of undoing it. True when the list changed.
  bool Update(std::vector<std::string> ids_newest_first,
              const std::set<std::string>& pre_rollback = {});
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
  bool chosen_ = false;  // selected_ is the user's choice, not the newest by default
};

}  // namespace safepoint::service
