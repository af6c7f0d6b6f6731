#include "core/base/paths.h"

#include <filesystem>
#include <system_error>

namespace safepoint {

std::string ResolvedPath(const std::string& path) {
  std::error_code ec;
  const std::filesystem::path r = std::filesystem::weakly_canonical(path, ec);
  if (ec || r.empty()) return path;
  std::string out = r.lexically_normal().string();
  while (out.size() > 1 && out.back() == '/') out.pop_back();
  return out;
}

}  // namespace safepoint
