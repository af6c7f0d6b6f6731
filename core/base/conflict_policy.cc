#include "core/base/conflict_policy.h"

namespace safepoint {

const char* ConflictPolicyName(ConflictPolicy policy) {
  switch (policy) {
    case ConflictPolicy::kAbort:
      return "abort";
    case ConflictPolicy::kOverwrite:
      return "overwrite";
    case ConflictPolicy::kMerge:
      return "merge";
  }
  return "abort";
}

std::optional<ConflictPolicy> ParseConflictPolicy(std::string_view name) {
  if (name == "abort") return ConflictPolicy::kAbort;
  if (name == "overwrite") return ConflictPolicy::kOverwrite;
  if (name == "merge") return ConflictPolicy::kMerge;
  return std::nullopt;
}

}  // namespace safepoint
