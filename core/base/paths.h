#pragma once

#include <string>

namespace safepoint {

// `path` with the symlinks of its existing part resolved (std::filesystem::weakly_canonical) and
// normalized, without a trailing slash; `path` itself when that fails. The configuration's
// directories, the roots a backup reads below and the paths users type are resolved by it, so
// that two spellings of one directory (one through a symlink) compare equal.
[[nodiscard]] std::string ResolvedPath(const std::string& path);

}  // namespace safepoint
