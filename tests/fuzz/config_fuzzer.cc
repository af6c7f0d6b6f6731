// Fuzzes the configuration loader (config::ParseConfig: YAML via yaml-cpp, then every key's
// validation). The input is the YAML text of a configuration file at a path that does not exist,
// so relative paths resolve against a directory the run never writes to.
// Invariants: errors are kBadInput; a loaded configuration's JSON form (config check) builds.

#include <cstddef>
#include <cstdint>
#include <string>

#include "core/config.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace safepoint;
  using namespace safepoint::fuzz;
  if (size > 64 * 1024) return 0;  // a configuration file is small; bigger inputs only slow down
  const std::string text(reinterpret_cast<const char*>(data), size);
  auto config = config::ParseConfig(text, "/nonexistent-safepoint-fuzz/safepoint.yaml");
  if (!config) {
    ExpectCode(config.error(), {ErrorCode::kBadInput}, "ParseConfig");
    return 0;
  }
  (void)config::ToJson(*config).dump();
  return 0;
}
