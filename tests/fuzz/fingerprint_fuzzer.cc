// Fuzzes the fingerprint reader (rollback::ParseFingerprint): <backup_dir>/<id>/fingerprint.json
// tells a rollback which local changes the update made, so a damaged one must be refused, never
// misread.
//
// Input: the text of a fingerprint.json.
// Invariants: errors are kCorrupt; every accepted path passes the archive path checks; files
// carry their size, hash and mode, directories only a mode, links only a target; a keyed one
// (format 2, or 3 with owners) holds only pairs of 64-digit lowercase hex MACs; ToJson -> dump
// -> ParseFingerprint gives back the same id, time and path states, and its dump is stable.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "core/format/manifest.h"
#include "core/rollback/fingerprint.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace safepoint;
  using namespace safepoint::fuzz;
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto f = rollback::ParseFingerprint(text);
  if (!f) {
    ExpectCode(f.error(), {ErrorCode::kCorrupt}, "ParseFingerprint");
    return 0;
  }
  for (const auto& [path, s] : f->paths) {
    if (!manifest::CheckArchivePath(path)) Violated("fingerprint: accepted an unsafe path");
    switch (s.type) {
      case manifest::EntryType::kFile:
        if (!s.link_target.empty()) Violated("fingerprint: a file with a link target");
        break;
      case manifest::EntryType::kDirectory:
        if (s.size != 0 || !s.sha256.empty() || !s.link_target.empty()) {
          Violated("fingerprint: a directory with file or link fields");
        }
        break;
      case manifest::EntryType::kSymlink:
        if (s.size != 0 || !s.sha256.empty() || s.mode != 0) {
          Violated("fingerprint: a link with file fields");
        }
        break;
    }
  }
  for (const auto& [path_mac, state_mac] : f->keyed) {
    if (!f->is_keyed) Violated("fingerprint: keyed entries in a plaintext fingerprint");
    for (const std::string* mac : {&path_mac, &state_mac}) {
      if (mac->size() != 64 || mac->find_first_not_of("0123456789abcdef") != std::string::npos) {
        Violated("fingerprint: accepted a MAC that is not 64 lowercase hex digits");
      }
    }
  }
  if (f->is_keyed && !f->paths.empty()) Violated("fingerprint: plaintext paths in a keyed one");
  if (f->with_owners && !f->is_keyed) Violated("fingerprint: owners in a plaintext one");
  const std::string once = rollback::ToJson(*f).dump(1);
  auto again = rollback::ParseFingerprint(once);
  if (!again) {
    std::fprintf(stderr, "re-parse: %s\n", again.error().message.c_str());
    Violated("fingerprint: a written fingerprint does not parse");
  }
  if (again->id != f->id || again->recorded_at != f->recorded_at || again->paths != f->paths ||
      again->is_keyed != f->is_keyed || again->with_owners != f->with_owners ||
      again->keyed != f->keyed) {
    Violated("fingerprint: parse -> write -> parse changed it");
  }
  if (rollback::ToJson(*again).dump(1) != once) Violated("fingerprint: writing is unstable");
  return 0;
}
