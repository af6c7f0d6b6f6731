// Fuzzes the configuration loader (config::ParseConfig: YAML via yaml-cpp, then every key's
// validation, `!secret` lookups through the secrets reader included). The input is the YAML text
// of <tree>/safepoint.yaml, where <tree> is a private temporary directory made once per process:
//
//   <tree>/config/              a Home Assistant configuration directory (paths.ha_config)
//   <tree>/config/secrets.yaml  the passphrase and two other secrets (kSecrets)
//   <tree>/workspace/           a workspace (paths.workspace)
//
// Relative paths resolve against <tree>, so a seed with `ha_config: config` passes the checks of
// paths.* and every later section of the schema is validated (an absolute /config stops at
// "cannot access"). Invariants: errors are kBadInput; a loaded configuration has absolute paths,
// an existing ha_config directory and a work factor within 15..22; its JSON form (config check)
// builds and never contains the value of a secret (unless the text itself spells it out).

#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <utility>

#include "core/config/config.h"
#include "tests/fuzz/fuzz_util.h"

namespace safepoint::fuzz {
namespace {

// name -> value in <tree>/config/secrets.yaml. Values are long and unlike anything else a
// configuration holds, so finding one in config check's output is a leak, not a coincidence.
constexpr std::pair<std::string_view, std::string_view> kSecrets[] = {
    {"backup_encryption_passphrase", "fuzz-passphrase-4a1f9c0e"},
    {"safepoint_mqtt_password", "fuzz-mqtt-password-77d2b3a5"},
    {"mqtt_user", "fuzz-mqtt-user-c95e1d08"},
};

const std::string& Tree() {
  static const std::string tree = [] {
    std::string dir = (std::filesystem::temp_directory_path() / "safepoint-fuzz-XXXXXX").string();
    if (::mkdtemp(dir.data()) == nullptr) Violated("cannot make a temporary directory");
    std::filesystem::create_directories(dir + "/config");
    std::filesystem::create_directories(dir + "/workspace");
    std::ofstream secrets(dir + "/config/secrets.yaml");
    for (const auto& [name, value] : kSecrets) secrets << name << ": \"" << value << "\"\n";
    if (!secrets.flush()) Violated("cannot write the secrets file");
    static const std::string remove = dir;
    std::atexit([] { std::filesystem::remove_all(remove); });
    return dir;
  }();
  return tree;
}

}  // namespace
}  // namespace safepoint::fuzz

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace safepoint;
  using namespace safepoint::fuzz;
  const std::string text(reinterpret_cast<const char*>(data), size);
  auto config = config::ParseConfig(text, Tree() + "/safepoint.yaml");
  if (!config) {
    ExpectCode(config.error(), {ErrorCode::kBadInput}, "ParseConfig");
    return 0;
  }
  for (const std::string* p :
       {&config->paths.ha_config, &config->paths.workspace, &config->paths.backup_dir,
        &config->encryption.secrets_file, &config->service.state_file}) {
    if (!p->starts_with('/')) Violated("config: a relative path was not resolved");
  }
  if (!std::filesystem::is_directory(config->paths.ha_config)) {
    Violated("config: accepted an ha_config that is not a directory");
  }
  if (config->encryption.scrypt_work_factor < 15 || config->encryption.scrypt_work_factor > 22) {
    Violated("config: accepted a work factor outside 15..22");
  }
  const std::string shown = config::ToJson(*config).dump();
  for (const auto& [name, value] : kSecrets) {
    // A value the configuration spells out itself is not a secret (the fuzzer learns the values
    // from the comparisons it sees and may write one in).
    if (shown.find(value) != std::string::npos && text.find(value) == std::string::npos) {
      Violated("config: config check shows a secret");
    }
  }
  return 0;
}
