// The deployment files as users meet them: the systemd unit (systemd-analyze verify), the install
// rules, the container's build steps, the Home Assistant add-on's options translation, the example
// automations against the MQTT API, and the Mosquitto ACL example against a running service.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "tests/testutil/mosquitto.h"
#include "tests/testutil/process.h"
#include "tests/testutil/testutil.h"

namespace safepoint {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using std::chrono::milliseconds;
using std::chrono::seconds;
using testing::CliMessage;
using testing::Mosquitto;
using testing::MosquittoOptions;
using testing::Payload;
using testing::ReadFile;
using testing::RunProcess;
using testing::RunSafepoint;
using testing::SpawnedProcess;
using testing::TempDir;
using testing::WriteFile;

const std::string kSource = SAFEPOINT_SOURCE_DIR;

std::string Source(const std::string& rel) {
  auto text = ReadFile(kSource + "/" + rel);
  EXPECT_TRUE(text.has_value()) << rel << " is missing";
  return text.value_or("");
}

// "Key=Value" lines of a unit's [Service] section; repeated keys keep every value.
std::multimap<std::string, std::string> ServiceSection(const std::string& unit) {
  std::multimap<std::string, std::string> out;
  std::istringstream in(unit);
  std::string line;
  std::string section;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#' || line[0] == ';') continue;
    if (line[0] == '[') {
      section = line;
      continue;
    }
    const auto eq = line.find('=');
    if (section == "[Service]" && eq != std::string::npos) {
      out.emplace(line.substr(0, eq), line.substr(eq + 1));
    }
  }
  return out;
}

std::string ReplaceAll(std::string text, const std::string& from, const std::string& to) {
  for (auto pos = text.find(from); pos != std::string::npos;
       pos = text.find(from, pos + to.size())) {
    text.replace(pos, from.size(), to);
  }
  return text;
}

// --- systemd -------------------------------------------------------------------------------

TEST(SystemdUnit, PassesSystemdAnalyzeVerify) {
  const std::string unit = Source("deploy/safepoint.service");
  ASSERT_NE(
      unit.find("ExecStart=/usr/local/bin/safepoint --config /etc/safepoint/safepoint.yaml serve"),
      std::string::npos);
  TempDir dir;
  // verify checks that ExecStart is executable: point it at the binary under test.
  const std::string path = dir.Sub("safepoint.service");
  WriteFile(path, ReplaceAll(unit, "/usr/local/bin/safepoint", SAFEPOINT_BINARY));
  auto r = RunProcess({"/usr/bin/systemd-analyze", "verify", path});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_EQ(r.err, "") << "systemd-analyze warned";

  // The same check fails on a broken unit, so the pass above means something.
  const std::string broken = dir.Sub("broken/safepoint.service");
  WriteFile(broken, ReplaceAll(unit, "/usr/local/bin/safepoint", "/nonexistent/safepoint"));
  auto b = RunProcess({"/usr/bin/systemd-analyze", "verify", broken});
  EXPECT_NE(b.exit_code, 0) << b.out << b.err;
}

TEST(SystemdUnit, IsHardenedAndStopsCleanly) {
  const auto s = ServiceSection(Source("deploy/safepoint.service"));
  auto one = [&](const std::string& key) {
    EXPECT_EQ(s.count(key), 1u) << key;
    auto it = s.find(key);
    return it == s.end() ? std::string() : it->second;
  };
  EXPECT_EQ(one("User"), "safepoint");
  EXPECT_EQ(one("NoNewPrivileges"), "yes");
  EXPECT_EQ(one("ProtectSystem"), "strict");
  EXPECT_EQ(one("ProtectHome"), "yes");
  EXPECT_EQ(one("PrivateTmp"), "yes");
  EXPECT_EQ(one("MemoryDenyWriteExecute"), "yes");
  EXPECT_EQ(one("CapabilityBoundingSet"), "");
  EXPECT_EQ(one("LimitCORE"), "0");
  EXPECT_EQ(one("Restart"), "on-failure");
  EXPECT_EQ(one("KillSignal"), "SIGTERM");
  EXPECT_EQ(one("UMask"), "0077");
  // The configuration and backup directories stay writable under ProtectSystem=strict.
  const std::string rw = one("ReadWritePaths");
  EXPECT_NE(rw.find("/config"), std::string::npos) << rw;
  EXPECT_NE(rw.find("/var/lib/safepoint"), std::string::npos) << rw;
  // Long enough for the operation the service finishes after SIGTERM (restarts time out at 2 min
  // by default, a safety point of a large configuration takes minutes).
  std::smatch m;
  const std::string stop = one("TimeoutStopSec");
  ASSERT_TRUE(std::regex_match(stop, m, std::regex(R"(([0-9]+)min)"))) << stop;
  EXPECT_GE(std::stoi(m[1]), 10);
}

TEST(Install, InstallsBinaryUnitAndExampleConfig) {
  TempDir prefix;
  auto r = RunProcess(
      {"/usr/bin/env", "cmake", "--install", SAFEPOINT_BUILD_DIR, "--prefix", prefix.path()}, "",
      {}, seconds(300));
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  std::set<std::string> files;
  for (const auto& e : fs::recursive_directory_iterator(prefix.path())) {
    if (e.is_regular_file()) files.insert(fs::relative(e.path(), prefix.path()).string());
  }
  EXPECT_EQ(files, (std::set<std::string>{"bin/safepoint", "lib/systemd/system/safepoint.service",
                                          "share/safepoint/safepoint.example.yaml"}))
      << r.out;
  EXPECT_EQ(ReadFile(prefix.Sub("share/safepoint/safepoint.example.yaml")),
            Source("deploy/safepoint.example.yaml"));
  const auto unit = ReadFile(prefix.Sub("lib/systemd/system/safepoint.service")).value_or("");
  EXPECT_NE(unit.find("NoNewPrivileges=yes"), std::string::npos);
  EXPECT_TRUE(std::regex_search(
      unit,
      std::regex(
          "\nExecStart=/[^ ]*/bin/safepoint --config /etc/safepoint/safepoint.yaml serve\n")));
  struct stat st {};
  ASSERT_EQ(::stat(prefix.Sub("bin/safepoint").c_str(), &st), 0);
  EXPECT_NE(st.st_mode & S_IXUSR, 0u);
}

// --- container -----------------------------------------------------------------------------

struct Instruction {
  std::string keyword;  // upper case
  std::string args;     // continuation lines joined
};

struct Stage {
  std::string from;
  std::vector<Instruction> steps;
};

std::vector<Stage> ParseDockerfile(const std::string& text) {
  std::vector<Stage> stages;
  std::istringstream in(text);
  std::string line;
  std::string logical;
  auto flush = [&] {
    const auto start = logical.find_first_not_of(" \t");
    if (start == std::string::npos) return;
    logical.erase(0, start);
    const auto space = logical.find_first_of(" \t");
    Instruction ins{logical.substr(0, space),
                    space == std::string::npos ? "" : logical.substr(space + 1)};
    std::transform(ins.keyword.begin(), ins.keyword.end(), ins.keyword.begin(), ::toupper);
    // Normalize runs of white space (continuations leave indentation behind).
    ins.args = std::regex_replace(ins.args, std::regex("[ \t]+"), " ");
    if (ins.keyword == "FROM") {
      stages.push_back({ins.args, {}});
    } else if (!stages.empty()) {
      stages.back().steps.push_back(ins);
    }
    logical.clear();
  };
  while (std::getline(in, line)) {
    const auto first = line.find_first_not_of(" \t");
    if (first != std::string::npos && line[first] == '#') continue;
    if (!line.empty() && line.back() == '\\') {
      logical += line.substr(0, line.size() - 1) + " ";
      continue;
    }
    logical += line;
    flush();
  }
  flush();
  return stages;
}

// The configure line of scripts/demo.sh (continuations joined), reduced to its options
// ("-G Ninja", "-D...").
std::vector<std::string> DemoCmakeOptions() {
  const std::string demo = Source("scripts/demo.sh");
  const auto start = demo.find("cmake -S \"$root\"");
  EXPECT_NE(start, std::string::npos) << "scripts/demo.sh has no cmake configure line";
  if (start == std::string::npos) return {};
  std::string line;
  for (auto i = start; i < demo.size() && demo[i] != '\n' && demo[i] != '>'; ++i) {
    if (demo[i] == '\\' && i + 1 < demo.size() && demo[i + 1] == '\n') {
      line += ' ';
      ++i;
      continue;
    }
    line += demo[i];
  }
  std::istringstream words(line);
  std::vector<std::string> options;
  std::string w;
  while (words >> w) {
    if (w == "-G") {
      words >> w;
      options.push_back("-G " + w);
    } else if (w.rfind("-D", 0) == 0) {
      options.push_back(w);
    }
  }
  return options;
}

void ExpectBuildsWithProjectScripts(const std::string& name, const std::string& dockerfile) {
  SCOPED_TRACE(name);
  const auto stages = ParseDockerfile(dockerfile);
  ASSERT_EQ(stages.size(), 2u) << "a build stage and a runtime stage";
  EXPECT_EQ(stages[0].from, "debian:12 AS build");
  EXPECT_EQ(stages[1].from, "debian:12");

  auto runs = [](const Stage& s) {
    std::vector<std::string> out;
    for (const auto& i : s.steps) {
      if (i.keyword == "RUN") out.push_back(i.args);
    }
    return out;
  };
  const std::regex install_deps(R"((^|&& )\S*scripts/install-deps\.sh( |$))");
  const std::regex install_runtime(R"((^|&& )\S*install-deps\.sh --runtime-only( |$))");
  for (const auto& stage : stages) {
    for (const auto& run : runs(stage)) {
      // Debian packages come from the one install script only.
      EXPECT_EQ(run.find("apt-get install"), std::string::npos)
          << "RUN installs packages itself: " << run;
    }
  }
  const auto build = runs(stages[0]);
  ASSERT_FALSE(build.empty());
  EXPECT_TRUE(std::regex_search(build[0], install_deps)) << build[0];
  EXPECT_EQ(build[0].find("--runtime-only"), std::string::npos) << "the builder needs build deps";

  // Configure and build exactly as the demo does.
  const auto configure = std::find_if(build.begin(), build.end(), [](const std::string& r) {
    return r.rfind("cmake -S ", 0) == 0;
  });
  ASSERT_NE(configure, build.end());
  const auto options = DemoCmakeOptions();
  ASSERT_FALSE(options.empty());
  for (const auto& option : options) {
    EXPECT_NE(configure->find(" " + option), std::string::npos) << option << " in " << *configure;
  }
  EXPECT_NE(Source("scripts/demo.sh").find("--target safepoint"), std::string::npos);
  EXPECT_TRUE(std::any_of(build.begin(), build.end(), [](const std::string& r) {
    return std::regex_match(r, std::regex(R"(cmake --build \S+ --target safepoint)"));
  }));

  const auto runtime = runs(stages[1]);
  EXPECT_TRUE(std::any_of(runtime.begin(), runtime.end(), [&](const std::string& r) {
    return std::regex_search(r, install_runtime);
  }));
  EXPECT_FALSE(std::any_of(runtime.begin(), runtime.end(), [](const std::string& r) {
    return r.find("cmake") != std::string::npos;
  })) << "the runtime image only copies the binary";
  // The install script the stages copy is the repository's.
  std::set<std::string> copied;
  for (const auto& stage : stages) {
    for (const auto& i : stage.steps) {
      if (i.keyword == "COPY" && i.args.find("install-deps.sh") != std::string::npos) {
        copied.insert(i.args.substr(0, i.args.find(' ')));
      }
    }
  }
  EXPECT_EQ(copied.size(), 1u);
}

TEST(Container, BuildStepsAreTheScriptsCiRuns) {
  ExpectBuildsWithProjectScripts("deploy/Dockerfile", Source("deploy/Dockerfile"));
  const auto stages = ParseDockerfile(Source("deploy/Dockerfile"));
  ASSERT_EQ(stages.size(), 2u);
  std::map<std::string, std::string> last;
  for (const auto& i : stages[1].steps) last[i.keyword] = i.args;
  EXPECT_EQ(last["VOLUME"], R"(["/config", "/backups"])");
  EXPECT_EQ(last["USER"], "safepoint");
  EXPECT_EQ(last["STOPSIGNAL"], "SIGTERM");
  // The baked-in configuration names the volumes.
  const YAML::Node config = YAML::LoadFile(kSource + "/deploy/container/safepoint.yaml");
  EXPECT_EQ(config["paths"]["ha_config"].as<std::string>(), "/config");
  EXPECT_EQ(config["paths"]["backup_dir"].as<std::string>(), "/backups");
}

TEST(Container, AddonImageUsesTheSameSteps) {
  // The add-on builds from its own folder (src/ is assembled by make-local-addon.sh).
  const std::string dockerfile = Source("deploy/homeassistant-addon/Dockerfile");
  // python3 for the options translation is the one package added on top of the script's.
  const std::string without_python = ReplaceAll(
      dockerfile, " \\\n && apt-get install -y -qq --no-install-recommends python3-minimal", "");
  ASSERT_NE(without_python, dockerfile);
  ExpectBuildsWithProjectScripts("deploy/homeassistant-addon/Dockerfile", without_python);
}

// --- Home Assistant add-on -----------------------------------------------------------------

json YamlToJson(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Map: {
      json out = json::object();
      for (const auto& kv : node) out[kv.first.as<std::string>()] = YamlToJson(kv.second);
      return out;
    }
    case YAML::NodeType::Sequence: {
      json out = json::array();
      for (const auto& item : node) out.push_back(YamlToJson(item));
      return out;
    }
    case YAML::NodeType::Scalar: {
      const std::string s = node.Scalar();
      if (node.Tag() == "!") return s;  // quoted
      if (s == "true") return true;
      if (s == "false") return false;
      if (!s.empty() && s.find_first_not_of("0123456789") == std::string::npos) {
        return std::stoll(s);
      }
      return s;
    }
    default:
      return nullptr;
  }
}

class Addon : public ::testing::Test {
 protected:
  void SetUp() override {
    ha_ = dir_.Sub("homeassistant");
    WriteFile(ha_ + "/configuration.yaml", "homeassistant:\n  name: Add-on test\n");
    WriteFile(ha_ + "/secrets.yaml", "backup_encryption_passphrase: \"addon test passphrase\"\n",
              0600);
    // A password with every character YAML treats specially.
    mqtt_password_ = "p@ss: \"w#rd\" 'x' \\ {[ ]} &*! %" + testing::Sha256Hex("addon").substr(0, 8);
    service_ = {{"result", "ok"},
                {"data",
                 {{"host", "core-mosquitto"},
                  {"port", 1883},
                  {"ssl", false},
                  {"protocol", "3.1.1"},
                  {"username", "addons"},
                  {"password", mqtt_password_}}}};
    WriteFile(dir_.Sub("mqtt.json"), service_.dump(), 0600);
    const YAML::Node addon = YAML::LoadFile(kSource + "/deploy/homeassistant-addon/config.yaml");
    addon_options_ = YamlToJson(addon["options"]);
  }

  // Runs the translation; returns its result and leaves the config in out.yaml.
  testing::ProcessResult Translate(const json& options) {
    WriteFile(dir_.Sub("options.json"), options.dump());
    return RunProcess({"/usr/bin/python3", kSource + "/deploy/homeassistant-addon/addon_config.py",
                       "--options", dir_.Sub("options.json"), "--mqtt-json", dir_.Sub("mqtt.json"),
                       "--ha-config", ha_, "--out", out()});
  }

  std::string out() const { return dir_.Sub("out.yaml"); }

  TempDir dir_;
  std::string ha_;
  std::string mqtt_password_;
  json service_;
  json addon_options_;
};

TEST_F(Addon, DefaultOptionsMakeAConfigThatPassesConfigCheck) {
  auto t = Translate(addon_options_);
  ASSERT_EQ(t.exit_code, 0) << t.err;
  EXPECT_EQ(t.out + t.err, "");
  struct stat st {};
  ASSERT_EQ(::stat(out().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u) << "the file holds the MQTT password";

  const YAML::Node c = YAML::LoadFile(out());
  EXPECT_EQ(c["paths"]["ha_config"].as<std::string>(), ha_);
  EXPECT_EQ(c["mqtt"]["url"].as<std::string>(), "mqtt://core-mosquitto:1883");
  EXPECT_EQ(c["mqtt"]["username"].as<std::string>(), "addons");
  EXPECT_TRUE(c["mqtt"]["password"].as<std::string>() == mqtt_password_)
      << "the password did not survive the YAML round trip";
  EXPECT_EQ(c["encryption"]["passphrase_key"].as<std::string>(), "backup_encryption_passphrase");
  EXPECT_EQ(c["service"]["confirm_timeout"].as<std::string>(), "30m");
  EXPECT_EQ(c["service"]["schedule"]["daily_at"].as<std::string>(), "04:00");
  EXPECT_EQ(c["mqtt"]["mirror"]["filters"][0].as<std::string>(), "zigbee2mqtt/#");
  EXPECT_FALSE(c["mqtt"]["zigbee2mqtt_backup"].as<bool>());
  ASSERT_EQ(c["restart"].size(), 1u);
  EXPECT_EQ(c["restart"][0]["command"][0].as<std::string>(), "/usr/lib/safepoint/restart_core.py");

  auto check = RunSafepoint({"--json", "--config", out(), "config", "check"});
  EXPECT_EQ(check.exit_code, 0) << check.out << check.err;
  EXPECT_EQ((check.out + check.err).find(mqtt_password_), std::string::npos);
  EXPECT_EQ((check.out + check.err).find("addon test passphrase"), std::string::npos);
  EXPECT_NE(check.out.find("core-mosquitto"), std::string::npos) << check.out;

  // config.yaml's defaults and the script's defaults agree: no options at all, same config.
  const std::string from_addon = ReadFile(out()).value_or("");
  ASSERT_EQ(Translate(json::object()).exit_code, 0);
  EXPECT_EQ(ReadFile(out()).value_or(""), from_addon);
}

TEST_F(Addon, EveryOptionReachesTheConfig) {
  json options = addon_options_;
  options["confirm_timeout"] = "10m";
  options["health_timeout"] = "90s";
  options["auto_rollback"] = false;
  options["on_conflict"] = "merge";
  options["daily_at"] = "off";
  options["keep_last"] = 3;
  options["keep_daily"] = 0;
  options["max_total_size"] = "10GB";
  options["scrypt_work_factor"] = 16;
  options["exclude"] = {"www/**", "**/*.bak"};
  options["mirror_filters"] = {"zigbee2mqtt/#", "homeassistant_statestream/#"};
  options["zigbee2mqtt_backup"] = true;
  options["restart_home_assistant"] = false;
  options["base_topic"] = "home/safepoint";
  options["node_id"] = "safepoint_2";
  options["log_level"] = "debug";
  options["passphrase_key"] = "other_key";
  options["secrets_file"] = "safepoint-secrets.yaml";
  options["backup_dir"] = dir_.Sub("safety_points");
  WriteFile(ha_ + "/safepoint-secrets.yaml", "other_key: 'another passphrase'\n", 0600);
  service_["data"]["ssl"] = true;
  service_["data"]["port"] = 8883;
  WriteFile(dir_.Sub("mqtt.json"), service_.dump(), 0600);

  auto t = Translate(options);
  ASSERT_EQ(t.exit_code, 0) << t.err;
  const YAML::Node c = YAML::LoadFile(out());
  EXPECT_EQ(c["service"]["confirm_timeout"].as<std::string>(), "10m");
  EXPECT_EQ(c["service"]["health_timeout"].as<std::string>(), "90s");
  EXPECT_FALSE(c["service"]["auto_rollback"].as<bool>());
  EXPECT_EQ(c["service"]["schedule"]["daily_at"].as<std::string>(), "off");
  EXPECT_EQ(c["rollback"]["on_conflict"].as<std::string>(), "merge");
  EXPECT_EQ(c["retention"]["keep_last"].as<int>(), 3);
  EXPECT_EQ(c["retention"]["max_total_bytes"].as<std::string>(), "10GB");
  EXPECT_EQ(c["encryption"]["scrypt_work_factor"].as<int>(), 16);
  EXPECT_EQ(c["encryption"]["passphrase_key"].as<std::string>(), "other_key");
  EXPECT_EQ(c["encryption"]["secrets_file"].as<std::string>(), ha_ + "/safepoint-secrets.yaml");
  EXPECT_EQ(c["paths"]["backup_dir"].as<std::string>(), dir_.Sub("safety_points"));
  EXPECT_EQ(c["sources"]["ha_config"]["exclude"][1].as<std::string>(), "**/*.bak");
  EXPECT_EQ(c["mqtt"]["mirror"]["filters"][1].as<std::string>(), "homeassistant_statestream/#");
  EXPECT_TRUE(c["mqtt"]["zigbee2mqtt_backup"].as<bool>());
  EXPECT_EQ(c["mqtt"]["url"].as<std::string>(), "mqtts://core-mosquitto:8883");
  EXPECT_EQ(c["mqtt"]["base_topic"].as<std::string>(), "home/safepoint");
  EXPECT_EQ(c["mqtt"]["node_id"].as<std::string>(), "safepoint_2");
  EXPECT_EQ(c["logging"]["level"].as<std::string>(), "debug");
  EXPECT_EQ(c["restart"].size(), 0u);

  auto check = RunSafepoint({"--json", "--config", out(), "config", "check"});
  EXPECT_EQ(check.exit_code, 0) << check.out << check.err;
  EXPECT_EQ((check.out + check.err).find(mqtt_password_), std::string::npos);
  EXPECT_EQ((check.out + check.err).find("another passphrase"), std::string::npos);
}

TEST_F(Addon, BadOptionsStopWithTheOptionNamedAndNoConfig) {
  struct Case {
    std::string key;
    json value;
    std::string message;
  };
  const std::vector<Case> cases = {
      {"scrypt_work_factor", 30, "option 'scrypt_work_factor': 30 is out of range (15..22)"},
      {"on_conflict", "ignore", "option 'on_conflict': 'ignore' is not abort, overwrite or merge"},
      {"daily_at", "25:00", "option 'daily_at': '25:00' is not HH:MM or off"},
      {"confirm_timeout", "soon", "option 'confirm_timeout': 'soon' is not a duration"},
      {"keep_last", 0, "option 'keep_last': 0 is out of range (>= 1)"},
      {"node_id", "a b", "option 'node_id': 'a b' is not made of letters"},
      {"auto_rollback", "yes", "option 'auto_rollback': expected true or false"},
      {"mirror_filters", "zigbee2mqtt/#", "option 'mirror_filters': expected a list"},
      {"colour", "red", "unknown option 'colour'"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.key);
    fs::remove(out());
    json options = addon_options_;
    options[c.key] = c.value;
    auto t = Translate(options);
    EXPECT_EQ(t.exit_code, 2);
    EXPECT_NE(t.err.find("safepoint add-on: " + c.message), std::string::npos) << t.err;
    EXPECT_FALSE(fs::exists(out()));
  }

  // A broken service description is reported without echoing it (it holds a password).
  WriteFile(dir_.Sub("mqtt.json"), "{\"password\": \"" + mqtt_password_ + "\", oops", 0600);
  auto t = Translate(addon_options_);
  EXPECT_EQ(t.exit_code, 2);
  EXPECT_EQ((t.out + t.err).find(mqtt_password_), std::string::npos);
  EXPECT_NE(t.err.find("not a readable JSON file"), std::string::npos) << t.err;
  WriteFile(dir_.Sub("mqtt.json"), R"({"data": {"port": 1883}})", 0600);
  t = Translate(addon_options_);
  EXPECT_EQ(t.exit_code, 2);
  EXPECT_NE(t.err.find("MQTT service: missing or invalid 'host'"), std::string::npos) << t.err;
}

TEST_F(Addon, ManifestDeclaresMqttServiceConfigMapAndSchemaForEveryOption) {
  const YAML::Node addon = YAML::LoadFile(kSource + "/deploy/homeassistant-addon/config.yaml");
  ASSERT_TRUE(addon["services"].IsSequence());
  // want, not need: the Supervisor's mqtt service exists only with the Mosquitto add-on, and an
  // external broker (the mqtt_host option) works without it.
  EXPECT_EQ(addon["services"][0].as<std::string>(), "mqtt:want");
  EXPECT_EQ(addon["services"].size(), 1u);
  bool config_rw = false;
  for (const auto& m : addon["map"]) {
    if (m["type"].as<std::string>() == "homeassistant_config" && !m["read_only"].as<bool>()) {
      config_rw = true;
    }
  }
  EXPECT_TRUE(config_rw);
  std::set<std::string> options, schema;
  for (const auto& kv : addon["options"]) options.insert(kv.first.as<std::string>());
  for (const auto& kv : addon["schema"]) schema.insert(kv.first.as<std::string>());
  EXPECT_EQ(options, schema);
  const YAML::Node tr =
      YAML::LoadFile(kSource + "/deploy/homeassistant-addon/translations/en.yaml");
  std::set<std::string> translated;
  for (const auto& kv : tr["configuration"]) translated.insert(kv.first.as<std::string>());
  EXPECT_EQ(translated, schema);
  EXPECT_EQ(addon["version"].as<std::string>(), "0.1.0");
}

TEST_F(Addon, ExternalBrokerOptionsReplaceTheSupervisorService) {
  json options = addon_options_;
  options["mqtt_host"] = "broker.example.lan";
  options["mqtt_port"] = 8883;
  options["mqtt_tls"] = true;
  options["mqtt_username"] = "safepoint";
  const std::string external_password = "ext " + mqtt_password_;
  options["mqtt_password"] = external_password;

  // With the Supervisor's service present, the options still win, entirely.
  auto t = Translate(options);
  ASSERT_EQ(t.exit_code, 0) << t.err;
  EXPECT_EQ(t.out + t.err, "");
  YAML::Node c = YAML::LoadFile(out());
  EXPECT_EQ(c["mqtt"]["url"].as<std::string>(), "mqtts://broker.example.lan:8883");
  EXPECT_EQ(c["mqtt"]["username"].as<std::string>(), "safepoint");
  EXPECT_TRUE(c["mqtt"]["password"].as<std::string>() == external_password);

  // Without the service (the API's answer when no add-on provides it).
  WriteFile(dir_.Sub("mqtt.json"), R"({"result": "error", "message": "Service not enabled"})",
            0600);
  options["mqtt_tls"] = false;
  options["mqtt_port"] = 1884;
  options["mqtt_username"] = "";
  options["mqtt_password"] = "";
  t = Translate(options);
  ASSERT_EQ(t.exit_code, 0) << t.err;
  c = YAML::LoadFile(out());
  EXPECT_EQ(c["mqtt"]["url"].as<std::string>(), "mqtt://broker.example.lan:1884");
  EXPECT_FALSE(c["mqtt"]["username"]) << "an empty user is no login";
  EXPECT_FALSE(c["mqtt"]["password"]);
  auto check = RunSafepoint({"--json", "--config", out(), "config", "check"});
  EXPECT_EQ(check.exit_code, 0) << check.out << check.err;

  // In the add-on (--mqtt-from-supervisor) the Supervisor is not asked at all: here there is
  // no SUPERVISOR_TOKEN, which would be an error if it were.
  WriteFile(dir_.Sub("options.json"), options.dump());
  auto direct = RunProcess({"/usr/bin/env", "-u", "SUPERVISOR_TOKEN", "/usr/bin/python3",
                            kSource + "/deploy/homeassistant-addon/addon_config.py", "--options",
                            dir_.Sub("options.json"), "--mqtt-from-supervisor", "--ha-config", ha_,
                            "--out", out()});
  EXPECT_EQ(direct.exit_code, 0) << direct.err;
  EXPECT_EQ(direct.out + direct.err, "");

  // A bad port is named like every other option.
  options["mqtt_port"] = 70000;
  t = Translate(options);
  EXPECT_EQ(t.exit_code, 2);
  EXPECT_NE(t.err.find("option 'mqtt_port': 70000 is out of range (1..65535)"), std::string::npos)
      << t.err;
}

TEST_F(Addon, WithoutAnyBrokerStopsNamingBothWays) {
  const std::string expected =
      "safepoint add-on: no MQTT broker: install and start the Mosquitto broker add-on (the "
      "Supervisor then gives this add-on its address and a login), or set the option "
      "'mqtt_host' (with 'mqtt_port', 'mqtt_username', 'mqtt_password', 'mqtt_tls') for another "
      "broker\n";
  for (const std::string answer :
       {R"({"result": "error", "message": "Service not enabled", "data": {}})",
        R"({"result": "error", "message": "No service"})"}) {
    SCOPED_TRACE(answer);
    fs::remove(out());
    WriteFile(dir_.Sub("mqtt.json"), answer, 0600);
    json options = addon_options_;
    options["mqtt_host"] = "   ";  // blank is not a host
    auto t = Translate(options);
    EXPECT_EQ(t.exit_code, 2);
    EXPECT_EQ(t.out, "");
    EXPECT_EQ(t.err, expected);
    EXPECT_FALSE(fs::exists(out()));
  }
}

// --- the add-on manifest against the Supervisor's rules --------------------------------------

// The rules the Supervisor applies to an add-on's config.yaml (home-assistant/supervisor,
// supervisor/addons/validate.py _SCHEMA_ADDON_CONFIG and supervisor/addons/options.py
// RE_SCHEMA_ELEMENT; the developer documentation's "Add-on configuration" page). A file that
// breaks one is skipped with "Can't read ..." in the Supervisor log: the add-on never appears.
// Returns one line per broken rule.
std::vector<std::string> SupervisorConfigProblems(const YAML::Node& c) {
  std::vector<std::string> problems;
  auto is_scalar = [](const YAML::Node& n) { return n && n.IsScalar(); };
  const std::set<std::string> arches = {"aarch64", "amd64", "armhf", "armv7", "i386"};
  const std::set<std::string> startups = {"initialize", "system", "services", "application",
                                          "once"};
  const std::set<std::string> boots = {"auto", "manual", "manual_only"};
  const std::set<std::string> roles = {"default", "homeassistant", "backup", "manager", "admin"};
  const std::string folders =
      "data|config|ssl|addons|backup|share|media|homeassistant_config|all_addon_configs|"
      "addon_config";
  const std::regex volume("^(" + folders + ")(:(rw|ro))?$");
  const std::regex folder("^(" + folders + ")$");
  const std::regex service("^(mqtt|mysql):(provide|want|need)$");
  const std::regex slug("^[-_.A-Za-z0-9]+$");
  const std::regex element(
      R"(^(|bool|email|url|port|device(\(subsystem=[a-z]+\))?|str(\((\d+)?,(\d+)?\))?)"
      R"(|password(\((\d+)?,(\d+)?\))?|int(\((-?\d+)?,(-?\d+)?\))?)"
      R"(|float(\((-?\d*\.?\d+)?,(-?\d*\.?\d+)?\))?|match\(.*\)|list\(.+\))\??$)");

  for (const std::string key : {"name", "version", "slug", "description"}) {
    if (!is_scalar(c[key]) || c[key].Scalar().empty()) {
      problems.push_back("required key '" + key + "' missing or not a string");
    }
  }
  if (is_scalar(c["slug"]) && !std::regex_match(c["slug"].Scalar(), slug)) {
    problems.push_back("slug '" + c["slug"].Scalar() + "' is not [-_.A-Za-z0-9]+");
  }
  if (!c["arch"] || !c["arch"].IsSequence() || c["arch"].size() == 0) {
    problems.push_back("required key 'arch' missing or not a list");
  } else {
    for (const auto& a : c["arch"]) {
      if (!is_scalar(a) || arches.count(a.Scalar()) == 0) {
        problems.push_back("arch '" + (is_scalar(a) ? a.Scalar() : "?") + "' is not known");
      }
    }
  }
  if (c["timeout"]) {
    const std::string t = is_scalar(c["timeout"]) ? c["timeout"].Scalar() : "";
    if (!std::regex_match(t, std::regex("[0-9]{1,6}")) || std::stoi(t) < 10 || std::stoi(t) > 300) {
      problems.push_back("timeout '" + t + "' is not an integer in 10..300");
    }
  }
  if (c["startup"] && (!is_scalar(c["startup"]) || startups.count(c["startup"].Scalar()) == 0)) {
    problems.push_back("startup is not one of initialize, system, services, application, once");
  }
  if (c["boot"] && (!is_scalar(c["boot"]) || boots.count(c["boot"].Scalar()) == 0)) {
    problems.push_back("boot is not one of auto, manual, manual_only");
  }
  if (c["hassio_role"] &&
      (!is_scalar(c["hassio_role"]) || roles.count(c["hassio_role"].Scalar()) == 0)) {
    problems.push_back("hassio_role is not a known role");
  }
  if (c["services"]) {
    if (!c["services"].IsSequence()) problems.push_back("services is not a list");
    for (const auto& s : c["services"]) {
      if (!is_scalar(s) || !std::regex_match(s.Scalar(), service)) {
        problems.push_back("service '" + (is_scalar(s) ? s.Scalar() : "?") +
                           "' is not <mqtt|mysql>:<provide|want|need>");
      }
    }
  }
  if (c["map"]) {
    if (!c["map"].IsSequence()) problems.push_back("map is not a list");
    for (const auto& m : c["map"]) {
      if (is_scalar(m)) {
        if (!std::regex_match(m.Scalar(), volume)) {
          problems.push_back("map entry '" + m.Scalar() + "' is not a folder[:rw|:ro]");
        }
      } else if (m.IsMap()) {
        if (!is_scalar(m["type"]) || !std::regex_match(m["type"].Scalar(), folder)) {
          problems.push_back("map entry without a known 'type'");
        }
        for (const auto& kv : m) {
          const std::string k = kv.first.as<std::string>();
          if (k == "read_only") {
            const std::string v = is_scalar(kv.second) ? kv.second.Scalar() : "";
            if (v != "true" && v != "false") problems.push_back("map read_only is not a bool");
          } else if (k == "path") {
            if (!is_scalar(kv.second)) problems.push_back("map path is not a string");
          } else if (k != "type") {
            problems.push_back("map entry has an unknown key '" + k + "'");
          }
        }
      } else {
        problems.push_back("map entry is neither a string nor a mapping");
      }
    }
  }
  // Schema elements: a type string, a list of one type (or of one mapping), or a mapping.
  std::function<void(const YAML::Node&, const std::string&, bool)> check_element =
      [&](const YAML::Node& e, const std::string& where, bool in_list) {
        if (is_scalar(e)) {
          if (!std::regex_match(e.Scalar(), element)) {
            problems.push_back("schema '" + where + "': '" + e.Scalar() + "' is not a type");
          }
        } else if (e.IsSequence() && !in_list) {
          if (e.size() != 1) problems.push_back("schema '" + where + "': a list holds one type");
          for (const auto& item : e) check_element(item, where, true);
        } else if (e.IsMap()) {
          for (const auto& kv : e) {
            check_element(kv.second, where + "." + kv.first.as<std::string>(), false);
          }
        } else {
          problems.push_back("schema '" + where + "': not a type");
        }
      };
  if (c["schema"] && c["schema"].IsMap()) {
    for (const auto& kv : c["schema"]) {
      check_element(kv.second, kv.first.as<std::string>(), false);
    }
  } else if (c["schema"] && !(is_scalar(c["schema"]) && c["schema"].Scalar() == "false")) {
    problems.push_back("schema is neither a mapping nor false");
  }
  if (c["options"] && !c["options"].IsMap()) problems.push_back("options is not a mapping");
  if (c["options"] && c["options"].IsMap() && c["schema"] && c["schema"].IsMap()) {
    for (const auto& kv : c["options"]) {
      const std::string k = kv.first.as<std::string>();
      if (!c["schema"][k]) problems.push_back("option '" + k + "' has no schema entry");
    }
  }
  return problems;
}

TEST(AddonManifest, PassesTheSupervisorsConfigRules) {
  const std::string path = kSource + "/deploy/homeassistant-addon/config.yaml";
  const YAML::Node addon = YAML::LoadFile(path);
  EXPECT_EQ(SupervisorConfigProblems(addon), std::vector<std::string>{});
  EXPECT_EQ(addon["timeout"].as<int>(), 300) << "as long as the Supervisor allows";

  // Each rule rejects what the Supervisor rejects (the check above can fail).
  struct Case {
    std::string what;
    std::function<void(YAML::Node&)> edit;
    std::string problem;
  };
  const std::vector<Case> cases = {
      {"timeout 600", [](YAML::Node& c) { c["timeout"] = 600; },
       "timeout '600' is not an integer in 10..300"},
      {"timeout 5", [](YAML::Node& c) { c["timeout"] = 5; },
       "timeout '5' is not an integer in 10..300"},
      {"no slug", [](YAML::Node& c) { c.remove("slug"); },
       "required key 'slug' missing or not a string"},
      {"no arch", [](YAML::Node& c) { c.remove("arch"); },
       "required key 'arch' missing or not a list"},
      {"arch", [](YAML::Node& c) { c["arch"].push_back("riscv64"); },
       "arch 'riscv64' is not known"},
      {"service", [](YAML::Node& c) { c["services"][0] = "mqtt:required"; },
       "service 'mqtt:required' is not <mqtt|mysql>:<provide|want|need>"},
      {"map string", [](YAML::Node& c) { c["map"].push_back("homeassistant:rw"); },
       "map entry 'homeassistant:rw' is not a folder[:rw|:ro]"},
      {"map type",
       [](YAML::Node& c) {
         YAML::Node m;
         m["type"] = "configuration";
         c["map"].push_back(m);
       },
       "map entry without a known 'type'"},
      {"map key",
       [](YAML::Node& c) {
         YAML::Node m;
         m["type"] = "share";
         m["writable"] = true;
         c["map"].push_back(m);
       },
       "map entry has an unknown key 'writable'"},
      {"schema type", [](YAML::Node& c) { c["schema"]["keep_last"] = "integer"; },
       "schema 'keep_last': 'integer' is not a type"},
      {"schema default syntax", [](YAML::Node& c) { c["schema"]["base_topic"] = "str=safepoint"; },
       "schema 'base_topic': 'str=safepoint' is not a type"},
      {"option without schema", [](YAML::Node& c) { c["schema"].remove("log_level"); },
       "option 'log_level' has no schema entry"},
      {"startup", [](YAML::Node& c) { c["startup"] = "after"; },
       "startup is not one of initialize, system, services, application, once"},
      {"boot", [](YAML::Node& c) { c["boot"] = "always"; },
       "boot is not one of auto, manual, manual_only"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.what);
    YAML::Node copy = YAML::LoadFile(path);
    c.edit(copy);
    EXPECT_EQ(SupervisorConfigProblems(copy), std::vector<std::string>{c.problem});
  }
  // The other documented forms pass: string maps with :rw, optional types, ranges, lists.
  YAML::Node other = YAML::LoadFile(path);
  other["map"] = YAML::Load("[homeassistant_config:rw, share, ssl:ro, addon_config:rw]");
  other["schema"]["keep_last"] = "int(1,)?";
  other["schema"]["exclude"] = YAML::Load("[\"match(^[a-z]+$)\"]");
  other["schema"]["mqtt_port"] = "port?";
  EXPECT_EQ(SupervisorConfigProblems(other), std::vector<std::string>{});
}

// --- examples against the MQTT API ---------------------------------------------------------

// Topic patterns of docs/mqtt-api.md's topic table, with the default base topic, prefix and
// node id, by direction ("in": safepoint reads it, "out": safepoint writes it).
std::vector<std::pair<std::regex, std::string>> ApiTopics() {
  const std::string doc = Source("docs/mqtt-api.md");
  // Command names from the commands table.
  std::set<std::string> commands;
  const auto cmd_start = doc.find("## Commands");
  EXPECT_NE(cmd_start, std::string::npos);
  std::istringstream cmd_lines(doc.substr(cmd_start, doc.find("\n## ", cmd_start + 3) - cmd_start));
  std::string line;
  std::smatch m;
  while (std::getline(cmd_lines, line)) {
    if (std::regex_search(line, m, std::regex(R"(^\| `([a-z_]+)` \|)"))) commands.insert(m[1]);
  }
  EXPECT_GE(commands.size(), 10u);
  std::string names;
  for (const auto& c : commands) names += (names.empty() ? "" : "|") + c;

  std::vector<std::pair<std::regex, std::string>> out;
  const auto start = doc.find("## Topics");
  std::istringstream lines(doc.substr(start, doc.find("\n## ", start + 3) - start));
  while (std::getline(lines, line)) {
    if (!std::regex_search(line, m, std::regex(R"(^\| `([^`]+)` \| (in|out|—) \|)"))) continue;
    std::string topic = m[1];
    const std::string dir = m[2];
    topic = ReplaceAll(topic, "<base>", "safepoint");
    topic = ReplaceAll(topic, "<prefix>", "homeassistant");
    topic = ReplaceAll(topic, "<node_id>", "safepoint");
    topic = ReplaceAll(topic, "<name>", "@NAME@");
    std::string pattern = std::regex_replace(topic, std::regex(R"([.^$|()\[\]{}*+?\\])"), R"(\$&)");
    pattern = ReplaceAll(pattern, "@NAME@", "(" + names + ")");
    out.emplace_back(std::regex(pattern), dir == "—" ? "in" : dir);
  }
  EXPECT_GE(out.size(), 12u) << "the topic table of docs/mqtt-api.md was not found";
  return out;
}

std::string TopicDirection(const std::string& topic) {
  static const auto topics = ApiTopics();
  for (const auto& [re, dir] : topics) {
    if (std::regex_match(topic, re)) return dir;
  }
  return "unknown";
}

struct ExampleTopics {
  std::vector<std::string> published;  // mqtt.publish in actions
  std::vector<std::string> awaited;    // mqtt triggers (also inside wait_for_trigger)
};

void CollectTopics(const YAML::Node& node, ExampleTopics& out) {
  if (node.IsMap()) {
    if (node["action"] && node["action"].as<std::string>() == "mqtt.publish") {
      out.published.push_back(node["data"]["topic"].as<std::string>());
    }
    if (node["trigger"] && node["trigger"].IsScalar() &&
        node["trigger"].as<std::string>() == "mqtt") {
      out.awaited.push_back(node["topic"].as<std::string>());
    }
    for (const auto& kv : node) CollectTopics(kv.second, out);
  } else if (node.IsSequence()) {
    for (const auto& item : node) CollectTopics(item, out);
  }
}

TEST(Examples, HomeAssistantAutomationsUseOnlyDocumentedTopicsTheRightWay) {
  std::set<std::string> published, awaited;
  for (const std::string name : {"automations.yaml", "telegram.yaml"}) {
    SCOPED_TRACE(name);
    YAML::Node doc;
    ASSERT_NO_THROW(doc = YAML::LoadFile(kSource + "/examples/homeassistant/" + name));
    ASSERT_TRUE(doc.IsSequence());
    std::set<std::string> ids;
    for (const auto& automation : doc) {
      ASSERT_TRUE(automation["id"] && automation["alias"] && automation["triggers"] &&
                  automation["actions"]);
      EXPECT_TRUE(ids.insert(automation["id"].as<std::string>()).second);
    }
    ExampleTopics topics;
    CollectTopics(doc, topics);
    for (const auto& t : topics.published) {
      EXPECT_EQ(TopicDirection(t), "in") << "publishes to " << t;
      published.insert(t);
    }
    for (const auto& t : topics.awaited) {
      EXPECT_EQ(TopicDirection(t), "out") << "waits on " << t;
      awaited.insert(t);
    }
  }
  // What the examples promise: ask before an update (the decision is read from the retained
  // status, see below), Telegram with Continue/Cancel, a nightly safety point, a notification
  // on a failed rollback.
  EXPECT_EQ(published, (std::set<std::string>{"safepoint/update/request", "safepoint/update/result",
                                              "safepoint/cmd/backup", "safepoint/cmd/continue",
                                              "safepoint/cmd/cancel", "safepoint/cmd/text"}));
  EXPECT_EQ(awaited, (std::set<std::string>{"safepoint/event", "safepoint/response/text"}));
  const std::string automations = Source("examples/homeassistant/automations.yaml");
  EXPECT_NE(automations.find("payload: rollback_failed"), std::string::npos);
}

// --- the example automations' structure and templates ----------------------------------------

YAML::Node Automation(const std::string& file, const std::string& id) {
  const YAML::Node doc = YAML::LoadFile(kSource + "/examples/homeassistant/" + file);
  for (const auto& a : doc) {
    if (a["id"] && a["id"].as<std::string>() == id) return a;
  }
  ADD_FAILURE() << id << " is not in " << file;
  return YAML::Node();
}

// The top-level actions of an automation that have `key`, in order.
std::vector<YAML::Node> ActionsWith(const YAML::Node& automation, const std::string& key) {
  std::vector<YAML::Node> out;
  for (const auto& action : automation["actions"]) {
    if (action[key]) out.push_back(action);
  }
  return out;
}

// The index of the first top-level action matching `pred` (-1 when none).
int ActionIndex(const YAML::Node& automation, const std::function<bool(const YAML::Node&)>& pred) {
  int i = 0;
  for (const auto& action : automation["actions"]) {
    if (pred(action)) return i;
    ++i;
  }
  return -1;
}

bool Publishes(const YAML::Node& action, const std::string& topic) {
  return action["action"] && action["action"].as<std::string>() == "mqtt.publish" &&
         action["data"]["topic"].as<std::string>() == topic;
}

// Every mapping in the tree (depth first).
void EachMap(const YAML::Node& node, const std::function<void(const YAML::Node&)>& f) {
  if (node.IsMap()) {
    f(node);
    for (const auto& kv : node) EachMap(kv.second, f);
  } else if (node.IsSequence()) {
    for (const auto& item : node) EachMap(item, f);
  }
}

// Renders a Home Assistant template with tests/deploy/render_ha_template.py (Jinja2 with
// states(), is_state(), state_attr(), tojson, and native-typed variables).
std::string Render(const std::string& tmpl, const json& states, const json& variables = {},
                   const json& steps = json::array()) {
  const json request = {{"states", states},
                        {"variables", variables.is_null() ? json::object() : variables},
                        {"steps", steps},
                        {"template", tmpl}};
  auto r = RunProcess({"/usr/bin/python3", kSource + "/tests/deploy/render_ha_template.py"},
                      request.dump());
  EXPECT_EQ(r.exit_code, 0) << r.err << "\n" << tmpl;
  return r.out.empty() ? r.out : r.out.substr(0, r.out.size() - 1);
}

// The `variables` action's entries as render steps.
json Steps(const YAML::Node& variables_action) {
  json steps = json::array();
  for (const auto& kv : variables_action["variables"]) {
    steps.push_back({kv.first.as<std::string>(), kv.second.as<std::string>()});
  }
  return steps;
}

json StatusEntity(const std::string& state, const json& pending) {
  return {{"state", state},
          {"attributes",
           {{"operation", pending.is_null() ? json() : json("update")},
            {"pending", pending},
            {"last_error", nullptr}}}};
}

json CoreEntity(const std::string& state, const std::string& installed, const std::string& latest) {
  return {{"state", state},
          {"attributes", {{"installed_version", installed}, {"latest_version", latest}}}};
}

TEST(Examples, CoreUpdateAsksForEveryReleaseAndCannotMissTheDecision) {
  const YAML::Node a = Automation("automations.yaml", "safepoint_update_core");
  ASSERT_TRUE(a.IsMap());
  // Triggers: turning on, and a new latest_version while it stays on.
  bool on = false, latest = false;
  for (const auto& t : a["triggers"]) {
    ASSERT_EQ(t["trigger"].as<std::string>(), "state");
    EXPECT_EQ(t["entity_id"].as<std::string>(), "update.home_assistant_core_update");
    if (t["to"] && t["to"].as<std::string>() == "on" && !t["attribute"]) on = true;
    if (t["attribute"] && t["attribute"].as<std::string>() == "latest_version" && !t["to"]) {
      latest = true;
    }
  }
  EXPECT_TRUE(on && latest);
  EXPECT_NE(a["mode"].as<std::string>(), "restart") << "a restart would abandon a pending update";

  // No transient trigger anywhere: the decision is read from the retained status.
  EachMap(a, [](const YAML::Node& m) {
    EXPECT_FALSE(m["wait_for_trigger"]) << "wait_for_trigger can miss an answer sent before it";
  });
  const int request =
      ActionIndex(a, [](const YAML::Node& x) { return Publishes(x, "safepoint/update/request"); });
  const int first_wait =
      ActionIndex(a, [](const YAML::Node& x) { return bool(x["wait_template"]); });
  const int install = ActionIndex(a, [](const YAML::Node& x) {
    return x["action"] && x["action"].as<std::string>() == "update.install";
  });
  const int result =
      ActionIndex(a, [](const YAML::Node& x) { return Publishes(x, "safepoint/update/result"); });
  ASSERT_GE(request, 0);
  EXPECT_GT(first_wait, request);
  EXPECT_GT(install, first_wait);
  EXPECT_GT(result, install) << "a failed install must be reported right away";
  const YAML::Node install_action = a["actions"][install];
  EXPECT_TRUE(install_action["continue_on_error"].as<bool>());

  const auto vars = ActionsWith(a, "variables");
  ASSERT_GE(vars.size(), 3u);
  const json core_on = CoreEntity("on", "2026.11.3", "2026.12.1");
  // The update id names the release: a newer release is a new id.
  const json id_steps = Steps(vars[0]);
  EXPECT_EQ(
      Render("{{ update_id }}", {{"update.home_assistant_core_update", core_on}}, {}, id_steps),
      "core-2026.12.1");
  EXPECT_EQ(
      Render("{{ update_id }}",
             {{"update.home_assistant_core_update", CoreEntity("on", "2026.11.3", "2026.12.2")}},
             {}, id_steps),
      "core-2026.12.2");

  const json ours = {{"update_id", "core-2026.12.1"},
                     {"target", "core"},
                     {"backup_id", "2026-12-02_05-00-00"},
                     {"deadline", nullptr}};
  const json vars0 = {{"entity", "update.home_assistant_core_update"},
                      {"status", "sensor.safepoint_status"},
                      {"to_version", "2026.12.1"},
                      {"update_id", "core-2026.12.1"}};
  auto wait = [&](std::size_t n, const std::string& state, const json& pending) {
    const auto waits = ActionsWith(a, "wait_template");
    EXPECT_EQ(waits.size(), 2u);
    if (waits.size() <= n) return std::string();
    return Render(waits[n]["wait_template"].as<std::string>(),
                  {{"sensor.safepoint_status", StatusEntity(state, pending)}}, vars0);
  };
  // 1st wait: the request was taken (this update is pending), whatever came before.
  EXPECT_EQ(wait(0, "idle", nullptr), "False");
  EXPECT_EQ(wait(0, "backing_up", ours), "True");
  EXPECT_EQ(wait(0, "awaiting_confirmation", ours), "True");
  json other = ours;
  other["update_id"] = "nodered-example-addon-1";
  other["target"] = "example-addon";
  EXPECT_EQ(wait(0, "awaiting_confirmation", other), "False") << "busy with another update";
  // 2nd wait: a decision, or this update is no longer pending.
  EXPECT_EQ(wait(1, "awaiting_confirmation", ours), "False");
  json decided = ours;
  decided["decision"] = "continue";
  EXPECT_EQ(wait(1, "updating", decided), "True");
  EXPECT_EQ(wait(1, "idle", nullptr), "True") << "cancelled or expired";
  EXPECT_EQ(wait(1, "backing_up", other), "True");

  // Released only with Continue for this update.
  auto released = [&](const std::string& state, const json& pending) {
    return Render("{{ released }}", {{"sensor.safepoint_status", StatusEntity(state, pending)}},
                  vars0, Steps(vars[1]));
  };
  EXPECT_EQ(released("updating", decided), "True");
  EXPECT_EQ(released("idle", nullptr), "False");
  json cancelled = ours;
  cancelled["decision"] = "cancel";
  EXPECT_EQ(released("awaiting_confirmation", cancelled), "False");

  // The result after install: installed_version against the release.
  const YAML::Node publish = a["actions"][result];
  auto payload = [&](const std::string& installed) {
    const json states = {
        {"update.home_assistant_core_update", CoreEntity("on", installed, "2026.12.1")}};
    return json::parse(
        Render(publish["data"]["payload"].as<std::string>(), states, vars0, Steps(vars[2])),
        nullptr, false);
  };
  EXPECT_EQ(payload("2026.12.1"), (json{{"update_id", "core-2026.12.1"},
                                        {"success", true},
                                        {"detail", "installed 2026.12.1, wanted 2026.12.1"}}));
  EXPECT_EQ(payload("2026.11.3"), (json{{"update_id", "core-2026.12.1"},
                                        {"success", false},
                                        {"detail", "installed 2026.11.3, wanted 2026.12.1"}}));

  const std::string text = Source("examples/homeassistant/automations.yaml");
  EXPECT_EQ(text.find("any `update.*`"), std::string::npos) << "add-ons do not restart HA";
}

TEST(Examples, StartReportsOnlyTheCoreUpdateThatRestartedHomeAssistant) {
  const YAML::Node a = Automation("automations.yaml", "safepoint_report_core_update");
  ASSERT_TRUE(a.IsMap());
  const auto conditions = ActionsWith(a, "condition");
  ASSERT_EQ(conditions.size(), 1u);
  const auto vars = ActionsWith(a, "variables");
  ASSERT_EQ(vars.size(), 2u);
  const int publish =
      ActionIndex(a, [](const YAML::Node& x) { return Publishes(x, "safepoint/update/result"); });
  ASSERT_GE(publish, 0);

  // Runs the automation's templates against a status and the core update entity; returns the
  // result payload, or null when the condition stops it.
  auto run = [&](const std::string& state, const json& pending, const std::string& installed) {
    const json states = {
        {"sensor.safepoint_status", StatusEntity(state, pending)},
        {"update.home_assistant_core_update", CoreEntity("off", installed, "2026.12.1")}};
    json steps = Steps(vars[0]);
    const std::string go =
        Render(conditions[0]["value_template"].as<std::string>(), states, {}, steps);
    EXPECT_TRUE(go == "True" || go == "False") << go;
    if (go != "True") return json();
    for (const auto& step : Steps(vars[1])) steps.push_back(step);
    return json::parse(
        Render(a["actions"][publish]["data"]["payload"].as<std::string>(), states, {}, steps),
        nullptr, false);
  };
  const json core = {{"update_id", "core-2026.12.1"},
                     {"target", "core"},
                     {"backup_id", "2026-12-02_05-00-00"},
                     {"deadline", nullptr},
                     {"decision", "continue"}};
  EXPECT_EQ(run("updating", core, "2026.12.1"),
            (json{{"update_id", "core-2026.12.1"},
                  {"success", true},
                  {"detail", "installed 2026.12.1, wanted 2026.12.1"}}));
  EXPECT_EQ(run("updating", core, "2026.11.3"),
            (json{{"update_id", "core-2026.12.1"},
                  {"success", false},
                  {"detail", "installed 2026.11.3, wanted 2026.12.1"}}));
  // An add-on update made elsewhere, pending while Home Assistant restarts: nothing reported.
  json addon = core;
  addon["update_id"] = "nodered-zigbee2mqtt-1764651600000";
  addon["target"] = "zigbee2mqtt";
  EXPECT_EQ(run("updating", addon, "2026.11.3"), json());
  json core_target_other_id = core;
  core_target_other_id["update_id"] = "manual-core";
  EXPECT_EQ(run("updating", core_target_other_id, "2026.11.3"), json());
  // Not released, or nothing pending.
  json waiting = core;
  waiting.erase("decision");
  EXPECT_EQ(run("awaiting_confirmation", waiting, "2026.11.3"), json());
  EXPECT_EQ(run("idle", nullptr, "2026.11.3"), json());
  EXPECT_EQ(run("health_check", core, "2026.12.1"), json()) << "the result was already given";
}

// The notification of what an update changed, rendered from update_changes events.
TEST(Examples, UpdateChangesNotificationListsTheFilesWithTheirLineCounts) {
  const YAML::Node a = Automation("automations.yaml", "safepoint_update_changes");
  ASSERT_TRUE(a.IsMap());
  const YAML::Node data = a["actions"][0]["data"];
  const auto render = [&](const json& event) {
    return Render(data["message"].as<std::string>(), json::object(),
                  {{"trigger", {{"payload_json", event}}}});
  };
  json event = {{"event_type", "update_changes"},
                {"message", "The update of core changed 3 files: ..."},
                {"data",
                 {{"update_id", "core-2026.12.1"},
                  {"backup_id", "2026-12-02_05-00-00"},
                  {"target", "core"},
                  {"files_total", 3},
                  {"files",
                   {{{"path", "ha_config/.storage/core.config_entries"},
                     {"change", "modified"},
                     {"binary", false},
                     {"added", 12},
                     {"removed", 3}},
                    {{"path", "ha_config/www/plan.png"},
                     {"change", "modified"},
                     {"binary", true},
                     {"added", 0},
                     {"removed", 0}},
                    {{"path", "ha_config/packages/neu.yaml"},
                     {"change", "added"},
                     {"binary", false},
                     {"added", 4},
                     {"removed", 0}}}}}}};
  EXPECT_EQ(render(event),
            "3 files changed since safety point 2026-12-02_05-00-00:\n"
            "- ha_config/.storage/core.config_entries (+12 -3)\n"
            "- ha_config/www/plan.png (binary)\n"
            "- ha_config/packages/neu.yaml (+4 -0, added)\n"
            "Details: /diff 2026-12-02_05-00-00 <path>");
  event["data"]["files_total"] = 0;
  event["data"]["files"] = json::array();
  EXPECT_EQ(render(event), "The update changed no file since safety point 2026-12-02_05-00-00.");
  event["data"] = {{"update_id", "u"}, {"backup_id", "b"}, {"target", "core"}, {"error", "x"}};
  event["message"] = "The files the update of core changed cannot be listed: x";
  EXPECT_EQ(render(event), "The files the update of core changed cannot be listed: x");
  EXPECT_EQ(Render(data["title"].as<std::string>(), json::object(),
                   {{"trigger", {{"payload_json", event}}}}),
            "safepoint: what the update of core changed");
}

// The Telegram answer to chat commands: a /diff answer as its message and patch, other answers
// as before, errors as "Error: ...".
TEST(Examples, TelegramAnswersShowDiffsAsText) {
  const YAML::Node a = Automation("telegram.yaml", "safepoint_telegram_responses");
  ASSERT_TRUE(a.IsMap());
  const std::string tmpl = a["actions"][0]["data"]["message"].as<std::string>();
  const auto render = [&](const json& response) {
    return Render(tmpl, json::object(), {{"trigger", {{"payload_json", response}}}});
  };
  const std::string patch =
      "--- 2026-12-02_05-00-00/ha_config/configuration.yaml\n"
      "+++ live/ha_config/configuration.yaml\n@@ -1 +1 @@\n-a: 1\n+a: 2\n";
  EXPECT_EQ(render({{"status", "ok"},
                    {"data",
                     {{"message",
                       "Changed since safety point 2026-12-02_05-00-00: 1 file: "
                       "ha_config/configuration.yaml (+1 -1)."},
                      {"patch", patch}}}}),
            "Changed since safety point 2026-12-02_05-00-00: 1 file: ha_config/configuration.yaml "
            "(+1 -1).\n" +
                patch.substr(0, patch.size() - 1));
  EXPECT_EQ(render({{"status", "ok"}, {"data", {{"message", "Changed since x: no file."}}}}),
            "Changed since x: no file.");
  EXPECT_EQ(render({{"status", "error"}, {"error", "not_found: no safety point x"}}),
            "Error: not_found: no safety point x");
  EXPECT_EQ(render({{"status", "ok"}, {"data", {{"state", "idle"}}}}), "OK {\"state\": \"idle\"}");
  const std::string long_patch(5000, 'x');
  const std::string cut =
      render({{"status", "ok"}, {"data", {{"message", "m"}, {"patch", long_patch}}}});
  EXPECT_EQ(cut, "m\n" + std::string(3000, 'x') + "[cut]");
}

// Telegram actions: `chat_id`, never the deprecated `target`; inline keyboards as rows of
// buttons, each a [text, callback_data] pair or a {text, callback_data} mapping, never a string.
TEST(Examples, TelegramActionsUseChatIdAndStructuredKeyboards) {
  int telegram_actions = 0, keyboards = 0, buttons = 0;
  for (const std::string file : {"automations.yaml", "telegram.yaml"}) {
    SCOPED_TRACE(file);
    const YAML::Node doc = YAML::LoadFile(kSource + "/examples/homeassistant/" + file);
    EachMap(doc, [&](const YAML::Node& m) {
      if (!m["action"] || m["action"].as<std::string>().rfind("telegram_bot.", 0) != 0) return;
      ++telegram_actions;
      const std::string action = m["action"].as<std::string>();
      SCOPED_TRACE(action);
      EXPECT_FALSE(m["target"]) << "telegram_bot takes no target";
      ASSERT_TRUE(m["data"].IsMap());
      EXPECT_FALSE(m["data"]["target"]) << "target is deprecated (removed in 2026.9): chat_id";
      if (action == "telegram_bot.send_message" || action == "telegram_bot.edit_replymarkup") {
        EXPECT_TRUE(m["data"]["chat_id"]) << "which chat";
      }
      const YAML::Node kb = m["data"]["inline_keyboard"];
      if (!kb) return;
      ++keyboards;
      ASSERT_TRUE(kb.IsSequence());
      for (const auto& row : kb) {
        ASSERT_TRUE(row.IsSequence()) << "a string row is the deprecated form: " << row;
        for (const auto& b : row) {
          ++buttons;
          if (b.IsMap()) {
            EXPECT_TRUE(b["text"] && b["callback_data"]) << b;
          } else {
            ASSERT_TRUE(b.IsSequence() && b.size() == 2) << b;
            EXPECT_TRUE(b[0].IsScalar() && b[1].IsScalar()) << b;
            EXPECT_EQ(b[1].Scalar().rfind("/sp_", 0), 0u)
                << "the commands the buttons automation reads";
          }
        }
      }
    });
  }
  EXPECT_EQ(telegram_actions, 5);
  EXPECT_EQ(keyboards, 2);  // the question's buttons, and removing them after a press
  EXPECT_EQ(buttons, 2);
  const std::string telegram = Source("examples/homeassistant/telegram.yaml");
  EXPECT_NE(telegram.find("config_entry_id"), std::string::npos) << "more than one bot";
}

TEST(Examples, NodeRedFlowUsesOnlyDocumentedTopicsTheRightWay) {
  const json flow = json::parse(Source("examples/node-red/safepoint-update.json"));
  ASSERT_TRUE(flow.is_array());
  std::set<std::string> published, awaited;
  for (const auto& node : flow) {
    const std::string type = node.at("type");
    if (type == "mqtt in") awaited.insert(node.at("topic").get<std::string>());
    if (type == "mqtt out") {
      EXPECT_EQ(node.at("topic"), "") << "topics come from msg.topic";
    }
    if (type == "function") {
      const std::string func = node.at("func");
      std::smatch m;
      if (std::regex_search(func, m, std::regex(R"re(msg\.topic = "([^"]+)")re"))) {
        published.insert(m[1]);
      }
    }
  }
  for (const auto& t : published) EXPECT_EQ(TopicDirection(t), "in") << t;
  for (const auto& t : awaited) EXPECT_EQ(TopicDirection(t), "out") << t;
  EXPECT_EQ(published,
            (std::set<std::string>{"safepoint/update/request", "safepoint/update/result"}));
  // The retained status gives the pending update back after a Node-RED restart.
  EXPECT_EQ(awaited, (std::set<std::string>{"safepoint/update/decision", "safepoint/status"}));
}

// --- Mosquitto ACL -------------------------------------------------------------------------

// One client of the ACL'd broker: mosquitto_pub with its login in a private options file, so no
// password appears in a process list.
class Client {
 public:
  Client(const TempDir& dir, const Mosquitto& broker, const std::string& user,
         const std::string& password)
      : home_(dir.Sub("cli-" + user)), port_(broker.port()) {
    WriteFile(home_ + "/mosquitto_pub", "-h 127.0.0.1\n-u " + user + "\n-P " + password + "\n",
              0600);
  }
  void Pub(const std::string& topic, const std::string& payload) const {
    std::string output;
    const int rc = testing::RunProgram(
        {"/usr/bin/mosquitto_pub", "-p", std::to_string(port_), "-q", "1", "-t", topic, "-s"},
        payload, &output, seconds(10), {"XDG_CONFIG_HOME=" + home_});
    ASSERT_EQ(rc, 0) << "mosquitto_pub to " << topic << ": " << output;
  }

 private:
  std::string home_;
  int port_;
};

// Waits until a message on `sub` satisfies `pred`; returns it (or nullopt after `timeout`).
std::optional<CliMessage> WaitMessage(testing::CliSubscriber& sub,
                                      const std::function<bool(const CliMessage&)>& pred,
                                      milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::size_t seen = 0;
  while (true) {
    auto messages = sub.WaitFor(seen + 1, milliseconds(100));
    for (; seen < messages.size(); ++seen) {
      if (pred(messages[seen])) return messages[seen];
    }
    if (std::chrono::steady_clock::now() >= deadline) return std::nullopt;
  }
}

TEST(MosquittoAcl, OnlyNamedClientsReachTheService) {
  TempDir dir;
  const std::string salt = testing::Sha256Hex(dir.path()).substr(0, 12);
  std::map<std::string, std::string> passwords;
  MosquittoOptions options;
  options.allow_anonymous = false;
  options.acl = Source("deploy/mosquitto/acl.example");
  for (const std::string user : {"safepoint", "homeassistant", "nodered", "zigbee2mqtt"}) {
    passwords[user] = user + "-" + salt;
    options.users.emplace_back(user, passwords[user]);
  }
  Mosquitto broker(options);
  ASSERT_TRUE(broker.Start());

  const std::string ha = dir.Sub("config");
  WriteFile(ha + "/configuration.yaml", "homeassistant:\n  name: ACL test\n");
  WriteFile(ha + "/secrets.yaml",
            "backup_encryption_passphrase: \"acl test passphrase\"\nsafepoint_mqtt_password: \"" +
                passwords["safepoint"] + "\"\n",
            0600);
  const std::string config = dir.Sub("safepoint.yaml");
  const std::string common = "paths:\n  ha_config: " + ha +
                             "\n  backup_dir: " + dir.Sub("backups") +
                             "\nencryption:\n  scrypt_work_factor: 15\nsources:\n  logs: []\n";
  WriteFile(config, common + "mqtt:\n  url: " + broker.url() +
                        "\n  username: safepoint\n  password: !secret safepoint_mqtt_password\n"
                        "service:\n  schedule:\n    daily_at: \"off\"\n");
  // The safety point to roll back to, made by the CLI on the same store (without MQTT: this
  // test is about the broker, not about collecting entity states).
  WriteFile(dir.Sub("cli.yaml"), common);
  auto backup =
      RunSafepoint({"--json", "--config", dir.Sub("cli.yaml"), "backup", "--reason", "acl test"});
  ASSERT_EQ(backup.exit_code, 0) << backup.err;
  const json backup_json = json::parse(backup.out, nullptr, false);
  ASSERT_TRUE(backup_json.is_object()) << backup.out;
  const std::string id = backup_json["data"]["id"];

  auto watch = broker.Sub("safepoint/#");
  SpawnedProcess service({SAFEPOINT_BINARY, "--config", config, "serve"});
  ASSERT_TRUE(WaitMessage(
      *watch,
      [](const CliMessage& m) {
        return m.topic == "safepoint/availability" && m.payload == "online";
      },
      seconds(30)))
      << service.output() << broker.Log();

  const Client intruder(dir, broker, "zigbee2mqtt", passwords["zigbee2mqtt"]);
  const Client homeassistant(dir, broker, "homeassistant", passwords["homeassistant"]);
  const Client nodered(dir, broker, "nodered", passwords["nodered"]);
  WriteFile(ha + "/configuration.yaml", "homeassistant:\n  name: changed after the safety point\n");

  // A client with a valid login but no right to command safepoint.
  intruder.Pub(
      "safepoint/cmd/rollback",
      R"({"backup_id":")" + id + R"(","on_conflict":"overwrite","transaction":"intruder"})");
  intruder.Pub("safepoint/cmd/backup", R"({"reason":"intruder","transaction":"intruder"})");
  intruder.Pub("safepoint/update/request", R"({"update_id":"intruder-1","target":"core"})");
  // A command of an allowed client after them: once it is answered, the service has seen
  // everything that reached it before.
  homeassistant.Pub("safepoint/cmd/list", R"({"transaction":"marker-1"})");
  auto list = WaitMessage(
      *watch,
      [](const CliMessage& m) {
        return m.topic == "safepoint/response/list" &&
               Payload(m).value("transaction", "") == "marker-1";
      },
      seconds(30));
  ASSERT_TRUE(list) << service.output();
  std::this_thread::sleep_for(milliseconds(500));
  for (const auto& m : watch->WaitFor(0, milliseconds(0))) {
    EXPECT_EQ(m.payload.find("intruder"), std::string::npos) << m.topic << " " << m.payload;
    EXPECT_NE(m.topic, "safepoint/update/decision") << m.payload;
    if (m.topic == "safepoint/event") {
      EXPECT_NE(Payload(m).value("event_type", ""), "rollback_started") << m.payload;
    }
  }
  const json safety_points = Payload(*list)["data"]["safety_points"];
  ASSERT_EQ(safety_points.size(), 1u) << list->payload;
  EXPECT_EQ(safety_points[0]["id"], id);
  EXPECT_EQ(ReadFile(ha + "/configuration.yaml"),
            "homeassistant:\n  name: changed after the safety point\n");

  // Home Assistant's rollback reaches the service: it answers and starts the rollback.
  homeassistant.Pub(
      "safepoint/cmd/rollback",
      R"({"backup_id":")" + id + R"(","on_conflict":"overwrite","transaction":"ha"})");
  auto answer = WaitMessage(
      *watch,
      [](const CliMessage& m) {
        return m.topic == "safepoint/response/rollback" &&
               Payload(m).value("transaction", "") == "ha";
      },
      seconds(30));
  ASSERT_TRUE(answer) << service.output();
  EXPECT_EQ(Payload(*answer)["status"], "ok") << answer->payload;
  auto started = WaitMessage(
      *watch,
      [&](const CliMessage& m) {
        const json p = Payload(m);
        return m.topic == "safepoint/event" && p.value("event_type", "") == "rollback_started" &&
               p["data"].value("backup_id", "") == id;
      },
      seconds(30));
  EXPECT_TRUE(started) << service.output();
  // The rollback ends (restored, or failed: either way the service is free again).
  auto settled = WaitMessage(
      *watch,
      [](const CliMessage& m) {
        if (m.topic != "safepoint/event") return false;
        const std::string type = Payload(m).value("event_type", "");
        return type == "rollback_completed" || type == "rollback_failed" ||
               type == "rollback_conflicts" || type == "rollback_aborted";
      },
      seconds(120));
  ASSERT_TRUE(settled) << service.output();

  // Node-RED may drive the update lifecycle; its request gets a decision.
  nodered.Pub("safepoint/update/request", R"({"update_id":"nodered-1","target":"example"})");
  auto waiting = WaitMessage(
      *watch,
      [](const CliMessage& m) {
        return m.topic == "safepoint/event" &&
               Payload(m).value("event_type", "") == "confirmation_requested";
      },
      seconds(60));
  ASSERT_TRUE(waiting) << service.output();
  homeassistant.Pub("safepoint/cmd/cancel", "PRESS");
  auto decision = WaitMessage(
      *watch, [](const CliMessage& m) { return m.topic == "safepoint/update/decision"; },
      seconds(30));
  ASSERT_TRUE(decision) << service.output();
  EXPECT_EQ(Payload(*decision)["update_id"], "nodered-1");
  EXPECT_EQ(Payload(*decision)["decision"], "cancel");

  // Secrets never reach the log.
  const std::string log = service.output();
  EXPECT_EQ(log.find(passwords["safepoint"]), std::string::npos);
  EXPECT_EQ(log.find("acl test passphrase"), std::string::npos);
  const int status = service.Signal(SIGTERM, seconds(30));
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status << log;
}

}  // namespace
}  // namespace safepoint
