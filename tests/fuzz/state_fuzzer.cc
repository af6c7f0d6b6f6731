// Fuzzes the service state file reader: <backup_dir>/.service-state.json, read at every start
// (Daemon::LoadPersisted) and by the CLI (is a safety point in use?), as JSON ->
// service::PersistedStateFromJson, then adopted by Lifecycle::Restore.
//
// Input: the text of a state file.
// Invariants: a state the reader refuses is kCorrupt; an accepted state writes (as the service
// writes it) and reads back to the same file (a stable round trip); Restore of it at a fixed
// time never crashes and leaves the lifecycle in a state whose file the reader accepts again, so
// a restart never turns a good state file into one the next start refuses; the status payload
// and every action serialize.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "service/lifecycle.h"
#include "tests/fuzz/fuzz_util.h"

namespace safepoint::fuzz {
namespace {

using nlohmann::json;

// As Daemon::Persist writes it.
std::string Write(const service::PersistedState& s) {
  return service::PersistedStateToJson(s).dump(1, ' ', false, json::error_handler_t::replace) +
         "\n";
}

service::PersistedState ReadBack(const std::string& text, std::string_view what) {
  const json j = json::parse(text, nullptr, false);
  if (j.is_discarded()) Violated(std::string(what) + ": the written state is not JSON");
  auto s = service::PersistedStateFromJson(j);
  if (!s) {
    std::fprintf(stderr, "%s\n", s.error().message.c_str());
    Violated(std::string(what) + ": the written state does not read back");
  }
  return *s;
}

}  // namespace
}  // namespace safepoint::fuzz

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace safepoint;
  using namespace safepoint::fuzz;
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const json j = json::parse(text, nullptr, false);
  if (j.is_discarded()) return 0;  // the daemon starts idle; nothing else reads it
  auto state = service::PersistedStateFromJson(j);
  if (!state) {
    ExpectCode(state.error(), {ErrorCode::kCorrupt}, "PersistedStateFromJson");
    return 0;
  }
  const std::string once = Write(*state);
  if (Write(ReadBack(once, "round trip")) != once) Violated("state: the round trip changed it");

  // 2026-05-01T12:00:00Z: deadlines in the input fall before and after it.
  const service::TimePoint now{std::chrono::seconds(1777636800)};
  service::Lifecycle lifecycle;
  const auto actions = lifecycle.Restore(*state, now);
  (void)service::ActionsToJson(actions).dump(-1, ' ', false, json::error_handler_t::replace);
  (void)lifecycle.StatusJson().dump(-1, ' ', false, json::error_handler_t::replace);
  (void)ReadBack(Write(lifecycle.Snapshot()), "after Restore");
  return 0;
}
