// Fuzzes the archive path checks on their own (manifest::CheckArchivePath, CheckLinkTarget)
// against an independent, deliberately simple model of what they must refuse. A backslash and any
// byte but NUL are ordinary in a Linux name, so the model only refuses shapes, roots and the
// components "", "." and "..".
//
// Input: "<path>\0<link target>" (no NUL: the whole input is the path, the target is empty).

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/format/manifest.h"
#include "tests/fuzz/fuzz_util.h"

namespace safepoint::fuzz {
namespace {

std::vector<std::string_view> Split(std::string_view s) {
  std::vector<std::string_view> parts;
  std::size_t start = 0;
  for (;;) {
    const std::size_t slash = s.find('/', start);
    parts.push_back(s.substr(start, slash == std::string_view::npos ? slash : slash - start));
    if (slash == std::string_view::npos) return parts;
    start = slash + 1;
  }
}

bool KnownRoot(std::string_view root) {
  for (std::string_view r : {"ha_config", "workspace", "environment", "logs", "state"}) {
    if (root == r) return true;
  }
  return false;
}

// Resolves `target` lexically from the directory of the link at `path`; false when it climbs
// above the link's top-level root.
bool StaysInRoot(std::string_view path, std::string_view target) {
  auto dir = Split(path);
  dir.pop_back();
  std::size_t depth = dir.size();  // 1 = at the root directory itself
  for (auto part : Split(target)) {
    if (part.empty() || part == ".") continue;
    if (part == "..") {
      if (depth <= 1) return false;
      --depth;
    } else {
      ++depth;
    }
  }
  return true;
}

}  // namespace
}  // namespace safepoint::fuzz

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace safepoint;
  using namespace safepoint::fuzz;
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const std::size_t nul = input.find('\0');
  const std::string_view path = input.substr(0, nul);
  const std::string_view target =
      nul == std::string_view::npos ? std::string_view() : input.substr(nul + 1);

  if (auto st = manifest::CheckArchivePath(path); st) {
    if (path.empty() || path.size() > 4096 || path.front() == '/') Violated("accepted path shape");
    if (path != manifest::kInnerName) {
      const auto parts = Split(path);
      if (!KnownRoot(parts[0])) Violated("accepted a path outside the known roots");
      for (auto part : parts) {
        if (part.empty() || part == "." || part == "..") Violated("accepted a bad component");
      }
    }
  } else {
    ExpectCode(st.error(), {ErrorCode::kCorrupt}, "CheckArchivePath");
  }

  // The reader checks a link's target only after its path passed; the model assumes the same.
  if (!manifest::CheckArchivePath(path)) return 0;
  if (auto st = manifest::CheckLinkTarget(path, target); st) {
    if (target.empty() || target.front() == '/') Violated("accepted an empty or absolute target");
    if (target.find('\0') != std::string_view::npos) Violated("accepted a NUL in the target");
    if (Split(path).size() < 2) Violated("accepted a link at a root");
    if (!StaysInRoot(path, target)) Violated("accepted a target that leaves the root");
  } else {
    ExpectCode(st.error(), {ErrorCode::kCorrupt}, "CheckLinkTarget");
  }
  return 0;
}
