// Fuzzes both manifests: manifest::Parse (the plaintext manifest.json beside the payload and the
// authoritative MANIFEST.json inside the tar use the same parser) and CheckConsistent.
//
// Input: "<first manifest>\0<second manifest>" (no NUL: the whole input is one manifest and it
// is compared with itself).
// Invariants: errors are kCorrupt (kUnsupported for a format version this build does not know);
// a parsed manifest serializes and parses back to the same
// text (the inner form when it lists its entries, the outer form when it can be a summary: a
// format 2 summary has no entries, a format 2 inner manifest no index), is consistent with
// itself, and its entries pass the archive path checks.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "core/format/manifest.h"
#include "tests/fuzz/fuzz_util.h"

namespace safepoint::fuzz {
namespace {

void CheckParsed(const manifest::Manifest& m) {
  for (const auto& e : m.entries) {
    if (!manifest::CheckArchivePath(e.path)) Violated("Parse accepted an unsafe entry path");
  }
  if (!manifest::IsValidId(m.id)) Violated("Parse accepted an invalid id");
  if (!manifest::CheckConsistent(m, m)) Violated("a manifest is inconsistent with itself");
  for (bool inner : {false, true}) {
    // A format 2 summary (manifest.json) has no entries to give an inner manifest, and an inner
    // manifest of format 2 has no index to give a summary.
    if (inner && !m.entries_listed) continue;
    if (!inner && m.format >= 2 && !m.index) continue;
    const std::string text = manifest::Serialize(m, inner);
    auto again = manifest::Parse(text);
    if (!again) {
      std::fprintf(stderr, "re-parse (%s): %s\n", inner ? "inner" : "outer",
                   again.error().message.c_str());
      Violated("a serialized manifest does not parse");
    }
    if (manifest::Serialize(*again, inner) != text) Violated("serialization is not stable");
  }
}

}  // namespace
}  // namespace safepoint::fuzz

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace safepoint;
  using namespace safepoint::fuzz;
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const std::size_t nul = input.find('\0');
  const std::string_view first = input.substr(0, nul);
  auto a = manifest::Parse(first);
  if (!a) {
    ExpectCode(a.error(), {ErrorCode::kCorrupt, ErrorCode::kUnsupported}, "Parse");
  } else {
    CheckParsed(*a);
  }
  if (nul == std::string_view::npos) return 0;
  auto b = manifest::Parse(input.substr(nul + 1));
  if (!b) {
    ExpectCode(b.error(), {ErrorCode::kCorrupt, ErrorCode::kUnsupported}, "Parse");
    return 0;
  }
  CheckParsed(*b);
  if (a) {
    auto st = manifest::CheckConsistent(*a, *b);
    if (!st) ExpectCode(st.error(), {ErrorCode::kCorrupt}, "CheckConsistent");
    auto reverse = manifest::CheckConsistent(*b, *a);
    if (st.has_value() != reverse.has_value()) {
      // Consistency compares everything but payload and key_id, which only the outer has; it
      // must not matter which side is passed as inner when neither carries them.
      if (!a->payload && !b->payload && a->key_id.empty() && b->key_id.empty()) {
        Violated("CheckConsistent is not symmetric");
      }
    }
  }
  return 0;
}
