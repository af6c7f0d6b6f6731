// Fuzzes the rollback journal reader (rollback::journal::Parse), which recovery trusts after a
// crash to decide what to move, place and revert (docs/rollback.md).
//
// Input: the text of a journal.json.
// Invariants: errors are kCorrupt; an accepted journal names valid
// safety point ids, absolute roots, and only operations whose paths lie below ha_config/ or
// workspace/ and pass the archive path checks (link targets the link check, staged names are
// digits); ToJson -> dump -> Parse gives back the same journal, and its dump is stable.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "core/format/manifest.h"
#include "core/rollback/journal.h"
#include "tests/fuzz/fuzz_util.h"

namespace safepoint::fuzz {
namespace {

namespace journal = rollback::journal;

void CheckAccepted(const journal::Journal& j) {
  if (!manifest::IsValidId(j.id) || !manifest::IsValidId(j.pre_rollback_id)) {
    Violated("journal: accepted an invalid safety point id");
  }
  if (!j.ha_config_root.starts_with('/') || !j.workspace_root.starts_with('/')) {
    Violated("journal: accepted a relative root");
  }
  for (const auto& op : j.ops) {
    if (!op.path.starts_with("ha_config/") && !op.path.starts_with("workspace/")) {
      Violated("journal: accepted an op outside the restored roots");
    }
    if (!manifest::CheckArchivePath(op.path)) Violated("journal: accepted an unsafe op path");
    if (op.kind == journal::OpKind::kPlaceLink &&
        !manifest::CheckLinkTarget(op.path, op.link_target)) {
      Violated("journal: accepted a link target that leaves the root");
    }
    if (op.kind == journal::OpKind::kPlaceFile) {
      if (op.staged.empty() || op.staged.size() > 20 ||
          op.staged.find_first_not_of("0123456789") != std::string::npos) {
        Violated("journal: accepted a staged name that is not a number");
      }
    }
  }
}

}  // namespace
}  // namespace safepoint::fuzz

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace safepoint;
  using namespace safepoint::fuzz;
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto j = rollback::journal::Parse(text);
  if (!j) {
    ExpectCode(j.error(), {ErrorCode::kCorrupt}, "journal::Parse");
    return 0;
  }
  CheckAccepted(*j);
  const std::string once = rollback::journal::ToJson(*j).dump(1);
  auto again = rollback::journal::Parse(once);
  if (!again) {
    std::fprintf(stderr, "re-parse: %s\n", again.error().message.c_str());
    Violated("journal: a written journal does not parse");
  }
  if (!(*again == *j)) Violated("journal: parse -> write -> parse changed the journal");
  if (rollback::journal::ToJson(*again).dump(1) != once) Violated("journal: writing is unstable");
  return 0;
}
