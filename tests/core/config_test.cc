#include "core/config/config.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <string>

#include "tests/testutil/testutil.h"

namespace safepoint::config {
namespace {

using safepoint::testing::TempDir;
using safepoint::testing::WriteFile;
using std::chrono::milliseconds;

// A fake passphrase; tests compare it without ever printing it.
constexpr char kPassphrase[] = "correct horse battery staple 7f3a";

class ConfigFile : public ::testing::Test {
 protected:
  void SetUp() override {
    std::filesystem::create_directories(ha());
    WriteFile(ha() + "/secrets.yaml", std::string("# Home Assistant secrets\n"
                                                  "mqtt_password: \"s3cr3t-mqtt\"\n"
                                                  "backup_encryption_passphrase: \"") +
                                          kPassphrase + "\"\n");
  }
  [[nodiscard]] std::string ha() const { return dir_.Sub("ha"); }
  [[nodiscard]] std::string path() const { return dir_.Sub("safepoint.yaml"); }
  // Writes a config whose first line sets paths.ha_config (so line numbers start at 2).
  Result<Config> Load(const std::string& rest) {
    WriteFile(path(), "paths: {ha_config: " + ha() + "}\n" + rest);
    return LoadConfig(path());
  }
  // The message of a failed load; fails the test on success or a code other than kBadInput.
  std::string LoadError(const std::string& rest) {
    auto c = Load(rest);
    if (c) {
      ADD_FAILURE() << "config loaded but should not have";
      return "";
    }
    EXPECT_EQ(c.error().code, ErrorCode::kBadInput);
    return c.error().message;
  }

  TempDir dir_;
};

TEST_F(ConfigFile, DefaultsWhenOnlyHaConfigIsSet) {
  auto c = Load("");
  ASSERT_TRUE(c) << c.error().message;
  EXPECT_EQ(c->source_file, path());
  EXPECT_EQ(c->paths.ha_config, ha());
  EXPECT_EQ(c->paths.workspace, ha() + "/.openclaw/workspace");
  EXPECT_EQ(c->paths.backup_dir, ha() + "/.openclaw/workspace/backup/safety_point");
  EXPECT_EQ(c->encryption.secrets_file, ha() + "/secrets.yaml");
  EXPECT_EQ(c->encryption.passphrase_key, "backup_encryption_passphrase");
  EXPECT_EQ(c->encryption.scrypt_work_factor, 18);
  EXPECT_EQ(c->encryption.max_work_factor, 22);
  EXPECT_EQ(c->sources.ha_config.include, std::vector<std::string>{"**"});
  EXPECT_TRUE(c->sources.ha_config.exclude.empty());
  EXPECT_EQ(c->sources.ha_config.builtin_exclude,
            (std::vector<std::string>{"home-assistant_v2.db*", "**/*.log", "**/*.log.*",
                                      "backups/**", "tts/**", "deps/**", "**/__pycache__/**",
                                      ".cache/**", ".openclaw/workspace/backup/safety_point/**",
                                      ".openclaw/workspace/**"}));
  EXPECT_EQ(c->sources.ha_config.max_file_size, 50u * 1024 * 1024);
  EXPECT_EQ(c->sources.workspace.include,
            (std::vector<std::string>{"memory/*.md", "agenda.md", "sessions/**"}));
  EXPECT_EQ(c->sources.workspace.builtin_exclude,
            std::vector<std::string>{"backup/safety_point/**"});
  EXPECT_EQ(c->sources.environment.variables, std::vector<std::string>{"TZ"});
  EXPECT_TRUE(c->sources.environment.python_site_packages.empty());
  ASSERT_EQ(c->sources.logs.size(), 1u);
  EXPECT_EQ(c->sources.logs[0].path, ha() + "/.openclaw/logs/agent.log");
  EXPECT_EQ(c->sources.logs[0].lines, 50u);
  EXPECT_EQ(c->retention.keep_last, 10u);
  EXPECT_EQ(c->retention.keep_daily, 7u);
  EXPECT_EQ(c->retention.max_total_bytes, 0u);
  EXPECT_TRUE(c->restart.empty());
  EXPECT_EQ(c->rollback.on_conflict, ConflictPolicy::kAbort);
  EXPECT_FALSE(c->mqtt.has_value());
  EXPECT_EQ(c->service.confirm_timeout, std::chrono::minutes(30));
  EXPECT_EQ(c->service.update_timeout, std::chrono::hours(2));
  EXPECT_EQ(c->service.resolve_timeout, std::chrono::minutes(30));
  EXPECT_EQ(c->service.health_timeout, std::chrono::minutes(5));
  EXPECT_TRUE(c->service.auto_rollback);
  EXPECT_EQ(c->service.state_file,
            ha() + "/.openclaw/workspace/backup/safety_point/.service-state.json");
  ASSERT_TRUE(c->service.schedule.daily_at.has_value());
  EXPECT_EQ(*c->service.schedule.daily_at, std::chrono::hours(4));
  EXPECT_EQ(c->logging.level, "info");
}

TEST_F(ConfigFile, EmptyMqttSectionEnablesMqttWithDefaults) {
  auto c = Load("mqtt:\n");
  ASSERT_TRUE(c) << c.error().message;
  ASSERT_TRUE(c->mqtt.has_value());
  const MqttConfig& m = *c->mqtt;
  EXPECT_EQ(m.url, "mqtt://localhost:1883");
  EXPECT_EQ(m.client_id, "safepoint-safepoint");
  EXPECT_EQ(m.username, "");
  EXPECT_FALSE(m.password.has_value());
  EXPECT_EQ(m.protocol, MqttProtocol::kAuto);
  EXPECT_EQ(m.keepalive, std::chrono::seconds(60));
  EXPECT_TRUE(m.tls.verify);
  EXPECT_FALSE(MqttUsesTls(m));
  EXPECT_EQ(m.base_topic, "safepoint");
  EXPECT_EQ(m.discovery_prefix, "homeassistant");
  EXPECT_EQ(m.node_id, "safepoint");
  EXPECT_EQ(m.mirror.filters, std::vector<std::string>{"zigbee2mqtt/#"});
  EXPECT_EQ(m.mirror.exclude,
            (std::vector<std::string>{"zigbee2mqtt/bridge/#", "zigbee2mqtt/#/set/#",
                                      "zigbee2mqtt/#/get/#"}));
  EXPECT_EQ(m.mirror.max_topics, 10000u);
  EXPECT_EQ(m.mirror.max_payload_bytes, 65536u);
  EXPECT_EQ(m.collect_wait, std::chrono::seconds(2));
  EXPECT_FALSE(m.zigbee2mqtt_backup);
  EXPECT_EQ(m.zigbee2mqtt_base_topic, "zigbee2mqtt");
  EXPECT_EQ(m.zigbee2mqtt_backup_timeout, std::chrono::seconds(30));
}

TEST_F(ConfigFile, EveryKeyParses) {
  WriteFile(dir_.Sub("tls/ca.pem"), "ca");
  WriteFile(dir_.Sub("tls/client.pem"), "cert");
  WriteFile(dir_.Sub("tls/client.key"), "key");
  std::filesystem::create_directories(dir_.Sub("ws"));
  WriteFile(path(), R"(paths:
  ha_config: ha
  workspace: ws
  backup_dir: store/points
encryption:
  secrets_file: ha/secrets.yaml
  passphrase_key: my_pass
  scrypt_work_factor: 15
  max_work_factor: 20
sources:
  ha_config:
    include: ["**"]
    exclude: ["www/big/**", "*.tmp"]
    max_file_size: "10 MB"
  workspace:
    include: ["memory/*.md", "agenda.md"]
    exclude: ["memory/private.md"]
    max_file_size: 1MiB
  environment:
    variables: [TZ, LANG]
    python_site_packages: [/usr/lib/python3/dist-packages, venv/site-packages]
  logs:
    - path: logs/agent.log
      lines: 20
    - {path: /var/log/other.log}
retention:
  keep_last: 3
  keep_daily: 0
  max_total_bytes: 2GiB
restart:
  - name: home-assistant
    command: ["ha", "core", "restart"]
    timeout: 2m
    when_changed: [ha_config]
  - name: agent
    command: [systemctl, restart, openclaw]
rollback:
  on_conflict: merge
mqtt:
  url: mqtts://broker.local:8883
  client_id: sp-1
  username: safepoint
  password: !secret mqtt_password
  protocol: 5
  keepalive: 30
  tls:
    ca_file: tls/ca.pem
    cert_file: tls/client.pem
    key_file: tls/client.key
    verify: false
  base_topic: home/safepoint
  discovery_prefix: ha
  node_id: sp_node-1
  mirror:
    filters: ["zigbee2mqtt/#", "homeassistant_statestream/#"]
    exclude: ["zigbee2mqtt/bridge/#"]
    max_topics: 500
    max_payload_bytes: 4KiB
  collect_wait: 500ms
  zigbee2mqtt_backup: true
  zigbee2mqtt_base_topic: z2m/home
  zigbee2mqtt_backup_timeout: 2m
service:
  confirm_timeout: 1h30m
  update_timeout: 0
  resolve_timeout: 10m
  health_timeout: 90
  auto_rollback: no
  state_file: state.json
  schedule: {daily_at: "23:05"}
logging:
  level: DEBUG
)");
  auto c = LoadConfig(path());
  ASSERT_TRUE(c) << c.error().message;
  const std::string d = dir_.path();
  EXPECT_EQ(c->paths.ha_config, d + "/ha");
  EXPECT_EQ(c->paths.workspace, d + "/ws");
  EXPECT_EQ(c->paths.backup_dir, d + "/store/points");
  EXPECT_EQ(c->encryption.secrets_file, d + "/ha/secrets.yaml");
  EXPECT_EQ(c->encryption.passphrase_key, "my_pass");
  EXPECT_EQ(c->encryption.scrypt_work_factor, 15);
  EXPECT_EQ(c->encryption.max_work_factor, 20);
  EXPECT_EQ(c->sources.ha_config.exclude, (std::vector<std::string>{"www/big/**", "*.tmp"}));
  // Neither the workspace nor the backup dir lies inside ha_config here.
  EXPECT_EQ(c->sources.ha_config.builtin_exclude.size(), 8u);
  EXPECT_TRUE(c->sources.workspace.builtin_exclude.empty());
  EXPECT_EQ(c->sources.ha_config.max_file_size, 10'000'000u);
  EXPECT_EQ(c->sources.workspace.include, (std::vector<std::string>{"memory/*.md", "agenda.md"}));
  EXPECT_EQ(c->sources.workspace.exclude, std::vector<std::string>{"memory/private.md"});
  EXPECT_EQ(c->sources.workspace.max_file_size, 1u << 20);
  EXPECT_EQ(c->sources.environment.variables, (std::vector<std::string>{"TZ", "LANG"}));
  EXPECT_EQ(
      c->sources.environment.python_site_packages,
      (std::vector<std::string>{"/usr/lib/python3/dist-packages", d + "/venv/site-packages"}));
  ASSERT_EQ(c->sources.logs.size(), 2u);
  EXPECT_EQ(c->sources.logs[0].path, d + "/logs/agent.log");
  EXPECT_EQ(c->sources.logs[0].lines, 20u);
  EXPECT_EQ(c->sources.logs[1].path, "/var/log/other.log");
  EXPECT_EQ(c->sources.logs[1].lines, 50u);
  EXPECT_EQ(c->retention.keep_last, 3u);
  EXPECT_EQ(c->retention.keep_daily, 0u);
  EXPECT_EQ(c->retention.max_total_bytes, 2ull << 30);
  ASSERT_EQ(c->restart.size(), 2u);
  EXPECT_EQ(c->restart[0].name, "home-assistant");
  EXPECT_EQ(c->restart[0].command, (std::vector<std::string>{"ha", "core", "restart"}));
  EXPECT_EQ(c->restart[0].timeout, std::chrono::minutes(2));
  EXPECT_EQ(c->restart[0].when_changed, std::vector<SourceRoot>{SourceRoot::kHaConfig});
  EXPECT_EQ(c->restart[1].command, (std::vector<std::string>{"systemctl", "restart", "openclaw"}));
  EXPECT_EQ(c->restart[1].timeout, std::chrono::seconds(120));
  EXPECT_EQ(c->restart[1].when_changed,
            (std::vector<SourceRoot>{SourceRoot::kHaConfig, SourceRoot::kWorkspace}));
  EXPECT_EQ(c->rollback.on_conflict, ConflictPolicy::kMerge);
  ASSERT_TRUE(c->mqtt.has_value());
  const MqttConfig& m = *c->mqtt;
  EXPECT_EQ(m.url, "mqtts://broker.local:8883");
  EXPECT_TRUE(MqttUsesTls(m));
  EXPECT_EQ(m.client_id, "sp-1");
  EXPECT_EQ(m.username, "safepoint");
  ASSERT_TRUE(m.password.has_value());
  EXPECT_TRUE(*m.password == "s3cr3t-mqtt");
  EXPECT_EQ(m.protocol, MqttProtocol::kV5);
  EXPECT_EQ(m.keepalive, std::chrono::seconds(30));
  EXPECT_EQ(m.tls.ca_file, d + "/tls/ca.pem");
  EXPECT_EQ(m.tls.cert_file, d + "/tls/client.pem");
  EXPECT_EQ(m.tls.key_file, d + "/tls/client.key");
  EXPECT_FALSE(m.tls.verify);
  EXPECT_EQ(m.base_topic, "home/safepoint");
  EXPECT_EQ(m.discovery_prefix, "ha");
  EXPECT_EQ(m.node_id, "sp_node-1");
  EXPECT_EQ(m.mirror.filters,
            (std::vector<std::string>{"zigbee2mqtt/#", "homeassistant_statestream/#"}));
  EXPECT_EQ(m.mirror.exclude, std::vector<std::string>{"zigbee2mqtt/bridge/#"});
  EXPECT_EQ(m.mirror.max_topics, 500u);
  EXPECT_EQ(m.mirror.max_payload_bytes, 4096u);
  EXPECT_EQ(m.collect_wait, milliseconds(500));
  EXPECT_TRUE(m.zigbee2mqtt_backup);
  EXPECT_EQ(m.zigbee2mqtt_base_topic, "z2m/home");
  EXPECT_EQ(m.zigbee2mqtt_backup_timeout, std::chrono::minutes(2));
  EXPECT_EQ(c->service.confirm_timeout, std::chrono::minutes(90));
  EXPECT_EQ(c->service.update_timeout, std::chrono::milliseconds(0));
  EXPECT_EQ(c->service.resolve_timeout, std::chrono::minutes(10));
  EXPECT_EQ(c->service.health_timeout, std::chrono::seconds(90));
  EXPECT_FALSE(c->service.auto_rollback);
  EXPECT_EQ(c->service.state_file, d + "/state.json");
  ASSERT_TRUE(c->service.schedule.daily_at.has_value());
  EXPECT_EQ(*c->service.schedule.daily_at, std::chrono::minutes(23 * 60 + 5));
  EXPECT_EQ(c->logging.level, "debug");
}

TEST_F(ConfigFile, ParsesDurationsAndSizesInEveryForm) {
  struct Case {
    const char* text;
    milliseconds expected;
  };
  const Case durations[] = {
      {"30m", std::chrono::minutes(30)},     {"120s", std::chrono::seconds(120)},
      {"2h", std::chrono::hours(2)},         {"500ms", milliseconds(500)},
      {"45", std::chrono::seconds(45)},      {"1h30m", std::chrono::minutes(90)},
      {"\"10 s\"", std::chrono::seconds(10)}};
  for (const Case& d : durations) {
    auto c = Load(std::string("restart: [{name: a, command: [x], timeout: ") + d.text + "}]\n");
    ASSERT_TRUE(c) << d.text << ": " << c.error().message;
    EXPECT_EQ(c->restart.at(0).timeout, d.expected) << d.text;
  }
  struct SizeCase {
    const char* text;
    std::uint64_t expected;
  };
  const SizeCase sizes[] = {{"1048576", 1048576},      {"50MiB", 50ull << 20},
                            {"\"10 MB\"", 10'000'000}, {"1kb", 1000},
                            {"2 GiB", 2ull << 30},     {"7B", 7},
                            {"\"3 TiB\"", 3ull << 40}};
  for (const SizeCase& s : sizes) {
    auto c = Load(std::string("retention: {max_total_bytes: ") + s.text + "}\n");
    ASSERT_TRUE(c) << s.text << ": " << c.error().message;
    EXPECT_EQ(c->retention.max_total_bytes, s.expected) << s.text;
  }
}

TEST_F(ConfigFile, RejectsUnknownKeyWithLineAndColumn) {
  EXPECT_EQ(LoadError("retention:\n  keep_last: 3\n  keep_lats: 4\n"),
            path() +
                ":4:3: key 'retention.keep_lats': unknown key (known here: keep_last, "
                "keep_daily, max_total_bytes)");
  EXPECT_EQ(LoadError("backup:\n  dir: x\n"),
            path() +
                ":2:1: key 'backup': unknown key (known here: paths, encryption, sources, "
                "retention, restart, rollback, diff, mqtt, service, logging)");
  EXPECT_EQ(LoadError("restart:\n  - name: a\n    command: [b]\n    shell: true\n"),
            path() +
                ":5:5: key 'restart[0].shell': unknown key (known here: name, command, "
                "timeout, when_changed)");
}

TEST_F(ConfigFile, RejectsWrongTypeWithLineAndColumn) {
  EXPECT_EQ(LoadError("retention:\n  keep_last: [1, 2]\n"),
            path() + ":3:14: key 'retention.keep_last': expected a scalar, got a list");
  EXPECT_EQ(LoadError("retention:\n  keep_last: ten\n"),
            path() + ":3:14: key 'retention.keep_last': expected an integer, got 'ten'");
  EXPECT_EQ(LoadError("sources:\n  ha_config:\n    include: \"**\"\n"),
            path() + ":4:14: key 'sources.ha_config.include': expected a list, got a scalar");
  EXPECT_EQ(LoadError("service:\n  auto_rollback: maybe\n"),
            path() + ":3:18: key 'service.auto_rollback': expected true or false, got 'maybe'");
  EXPECT_EQ(LoadError("service: {confirm_timeout: soon}\n"),
            path() +
                ":2:28: key 'service.confirm_timeout': expected a duration like \"500ms\", "
                "\"120s\", \"2m\", \"1h\" or integer seconds, got 'soon'");
  EXPECT_EQ(LoadError("sources: {ha_config: {max_file_size: 12 parsecs}}\n"),
            path() +
                ":2:38: key 'sources.ha_config.max_file_size': expected a size like "
                "52428800, \"50MiB\" or \"10 MB\", got '12 parsecs'");
  EXPECT_EQ(LoadError("restart:\n  - name: ha\n    command: ha core restart\n"),
            path() +
                ":4:14: key 'restart[0].command': expected an argv list like [\"ha\", "
                "\"core\", \"restart\"] (no shell), got a scalar");
  EXPECT_EQ(LoadError("rollback: [abort]\n"),
            path() + ":2:11: key 'rollback': expected a map, got a list");
  EXPECT_EQ(LoadError("retention:\n  keep_last:\n"),
            path() + ":3:3: key 'retention.keep_last': missing value");
}

TEST_F(ConfigFile, RejectsOutOfRangeValues) {
  EXPECT_EQ(LoadError("encryption:\n  scrypt_work_factor: 23\n"),
            path() +
                ":3:23: key 'encryption.scrypt_work_factor': out of range: 23 (allowed "
                "15..22)");
  EXPECT_EQ(LoadError("encryption:\n  scrypt_work_factor: 20\n  max_work_factor: 19\n"),
            path() +
                ":4:20: key 'encryption.max_work_factor': must be >= "
                "encryption.scrypt_work_factor (20)");
  EXPECT_EQ(LoadError("retention: {keep_last: 0}\n"),
            path() + ":2:24: key 'retention.keep_last': out of range: 0 (allowed 1..100000)");
  EXPECT_EQ(LoadError("mqtt: {keepalive: 70000}\n"),
            path() + ":2:19: key 'mqtt.keepalive': out of range: 70000s (allowed 1s..65535s)");
  EXPECT_EQ(LoadError("service: {schedule: {daily_at: \"24:00\"}}\n"),
            path() +
                ":2:32: key 'service.schedule.daily_at': expected HH:MM (00:00..23:59) or "
                "off, got '24:00'");
  EXPECT_EQ(LoadError("mqtt: {node_id: \"bad id\"}\n"),
            path() + ":2:17: key 'mqtt.node_id': must match [a-zA-Z0-9_-]+");
  EXPECT_EQ(LoadError("mqtt: {url: \"http://broker\"}\n"),
            path() +
                ":2:13: key 'mqtt.url': bad url 'http://broker': unsupported scheme 'http' "
                "(expected mqtt://, mqtts://, tcp:// or ssl://)");
  EXPECT_EQ(LoadError("mqtt: {mirror: {filters: [\"a/#/b\"]}}\n"),
            path() + ":2:27: key 'mqtt.mirror.filters[0]': 'a/#/b': '#' must be the last level");
  EXPECT_EQ(LoadError("sources: {workspace: {include: [\"../x\"]}}\n"),
            path() +
                ":2:33: key 'sources.workspace.include[0]': bad glob '../x': '.' and '..' "
                "segments are not allowed");
  EXPECT_EQ(LoadError("restart:\n  - {name: a, command: [x], when_changed: [media]}\n"),
            path() +
                ":3:44: key 'restart[0].when_changed[0]': expected ha_config or workspace, "
                "got 'media'");
  EXPECT_EQ(LoadError("rollback: {on_conflict: ask}\n"),
            path() +
                ":2:25: key 'rollback.on_conflict': expected abort, overwrite or merge, got "
                "'ask'");
}

TEST_F(ConfigFile, AcceptsMirrorExcludesWithMiddleHash) {
  auto c = Load("mqtt: {mirror: {exclude: [\"zigbee2mqtt/#/set/#\", \"z/+/get\"]}}\n");
  ASSERT_TRUE(c) << c.error().message;
  EXPECT_EQ(c->mqtt->mirror.exclude, (std::vector<std::string>{"zigbee2mqtt/#/set/#", "z/+/get"}));
}

TEST_F(ConfigFile, RejectsDuplicateKeys) {
  EXPECT_EQ(LoadError("retention:\n  keep_last: 3\n  keep_last: 4\n"),
            path() + ":4:3: key 'retention.keep_last': duplicate key");
}

TEST_F(ConfigFile, RejectsUnreadableOrMissingPaths) {
  WriteFile(path(), "paths:\n  ha_config: /nonexistent/safepoint-test\n");
  auto c = LoadConfig(path());
  ASSERT_FALSE(c);
  EXPECT_EQ(c.error().code, ErrorCode::kBadInput);
  EXPECT_EQ(c.error().message, path() +
                                   ":2:14: key 'paths.ha_config': cannot access "
                                   "/nonexistent/safepoint-test: No such file or directory");

  WriteFile(dir_.Sub("file"), "x");
  WriteFile(path(), "paths: {ha_config: file}\n");
  c = LoadConfig(path());
  ASSERT_FALSE(c);
  EXPECT_EQ(c.error().message,
            path() + ":1:20: key 'paths.ha_config': " + dir_.Sub("file") + " is not a directory");

  EXPECT_EQ(LoadError("mqtt:\n  url: mqtts://b\n  tls: {ca_file: missing.pem}\n"),
            path() + ":4:18: key 'mqtt.tls.ca_file': cannot read " + dir_.Sub("missing.pem") +
                ": No such file or directory");
}

TEST_F(ConfigFile, DefaultHaConfigErrorPointsAtTheFile) {
  // Nothing configured: the default /config does not exist on a test machine.
  if (std::filesystem::exists("/config")) GTEST_SKIP() << "/config exists here";
  WriteFile(path(), "logging: {level: info}\n");
  auto c = LoadConfig(path());
  ASSERT_FALSE(c);
  EXPECT_EQ(c.error().message, path() +
                                   ":1:1: key 'paths.ha_config': cannot access /config: No "
                                   "such file or directory");
}

TEST_F(ConfigFile, RejectsOverlappingRoots) {
  WriteFile(path(), "paths:\n  ha_config: " + ha() + "\n  workspace: " + dir_.path() + "\n");
  auto c = LoadConfig(path());
  ASSERT_FALSE(c);
  EXPECT_EQ(c.error().message,
            path() + ":3:14: key 'paths.workspace': must not be or contain paths.ha_config");
  WriteFile(path(),
            "paths:\n  ha_config: " + ha() + "\n  backup_dir: " + ha() + "/.openclaw/workspace\n");
  c = LoadConfig(path());
  ASSERT_FALSE(c);
  EXPECT_EQ(c.error().message, path() +
                                   ":3:15: key 'paths.backup_dir': must not be or contain "
                                   "paths.ha_config or paths.workspace");
}

// Found by a configuration campaign: the roots were compared as text. A backup dir reached
// through a symlink into ha_config was taken for one outside it: every backup archived the
// store, and a rollback moved the store's safety points (its own target among them) aside as
// "added". One equal to ha_config through a symlink was accepted, and its chmod 0700 hit the
// Home Assistant configuration. Both are now compared where they point.
TEST_F(ConfigFile, RootsReachedThroughSymlinksAreComparedWhereTheyPoint) {
  const std::string alias = dir_.Sub("ha_alias");
  std::filesystem::create_directory_symlink(ha(), alias);
  WriteFile(path(), "paths:\n  ha_config: " + ha() + "\n  workspace: " + dir_.Sub("ws") +
                        "\n  backup_dir: " + alias + "/safepoint_store\n");
  auto c = LoadConfig(path());
  ASSERT_TRUE(c) << c.error().message;
  EXPECT_EQ(c->sources.ha_config.builtin_exclude.back(), "safepoint_store/**");
  WriteFile(path(), "paths:\n  ha_config: " + alias + "\n  workspace: " + dir_.Sub("ws") +
                        "\n  backup_dir: " + ha() + "\n");
  c = LoadConfig(path());
  ASSERT_FALSE(c);
  EXPECT_EQ(c.error().message, path() +
                                   ":4:15: key 'paths.backup_dir': must not be or contain "
                                   "paths.ha_config or paths.workspace");
}

TEST_F(ConfigFile, ReportsUnreadableConfigFileAndSyntaxErrors) {
  auto c = LoadConfig(dir_.Sub("nope.yaml"));
  ASSERT_FALSE(c);
  EXPECT_EQ(c.error().code, ErrorCode::kBadInput);
  EXPECT_EQ(c.error().message,
            dir_.Sub("nope.yaml") + ": cannot read configuration file: No such file or directory");

  WriteFile(path(), "paths: {ha_config: " + ha() + "}\nretention: [1,\nlogging: x\n");
  c = LoadConfig(path());
  ASSERT_FALSE(c);
  EXPECT_EQ(c.error().code, ErrorCode::kBadInput);
  EXPECT_EQ(c.error().message, path() + ":4:1: YAML syntax error: end of sequence flow not found");
}

// Found by a test campaign: what followed a `---` line was silently ignored, unknown keys and
// out-of-range values included.
TEST_F(ConfigFile, RejectsASecondYamlDocument) {
  EXPECT_EQ(
      LoadError("---\nthis_key_does_not_exist: 1\nretention:\n  keep_last: -5\n"),
      path() + ":3:1: a second YAML document (after '---'); the configuration is one document");
  EXPECT_EQ(
      LoadError("retention: {keep_last: 3}\n---\nretention: {keep_last: 4}\n"),
      path() + ":4:1: a second YAML document (after '---'); the configuration is one document");
  // A `---` that starts the one document is fine.
  WriteFile(path(), "---\npaths: {ha_config: " + ha() + "}\n");
  auto c = LoadConfig(path());
  ASSERT_TRUE(c) << c.error().message;
}

// Found by the config fuzzer: yaml-cpp's LoadAll, first used to find a second document, loops
// without end (and without bound in memory) on this input. The parser is now asked twice at most.
TEST_F(ConfigFile, InputOnWhichTheYamlLibraryLoopedIsAnsweredAtOnce) {
  const std::string looped(
      ",athf\n\xdf\xfb\xff\xff"
      "co",
      12);
  WriteFile(path(), looped);
  auto c = LoadConfig(path());
  ASSERT_FALSE(c);
  EXPECT_EQ(c.error().code, ErrorCode::kBadInput);
  EXPECT_EQ(c.error().message.rfind(path() + ":", 0), 0u) << c.error().message;
}

// Found by a test campaign: yaml-cpp took a NUL byte for the start of an escape ("w<NUL>rk"
// became "w\rk") or reported an unrelated syntax error.
TEST_F(ConfigFile, RejectsANulByteNamingItsLine) {
  EXPECT_EQ(LoadError(std::string("paths2: w\0rk\n", 13)), path() + ":2:10: NUL byte in the file");
  EXPECT_EQ(LoadError(std::string("logging:\n  level: error\0junk\n", 29)),
            path() + ":3:15: NUL byte in the file");
  EXPECT_EQ(LoadError(std::string(32, '\0')), path() + ":2:1: NUL byte in the file");
}

TEST_F(ConfigFile, RejectsUnknownTags) {
  EXPECT_EQ(LoadError("logging: {level: !include level.yaml}\n"),
            path() + ":2:18: key 'logging.level': unsupported tag '!include'");
}

TEST_F(ConfigFile, ResolvesSecretTags) {
  auto c = Load("mqtt:\n  username: !secret mqtt_password\n  password: !secret mqtt_password\n");
  ASSERT_TRUE(c) << c.error().message;
  EXPECT_TRUE(c->mqtt->username == "s3cr3t-mqtt");
  EXPECT_TRUE(*c->mqtt->password == "s3cr3t-mqtt");
}

TEST_F(ConfigFile, MissingSecretNamesTheSecretButNoValue) {
  const std::string msg = LoadError("mqtt:\n  password: !secret mqtt_pw\n");
  EXPECT_EQ(msg, path() + ":3:13: key 'mqtt.password': secret 'mqtt_pw': " + ha() +
                     "/secrets.yaml: key 'mqtt_pw': not found in the secrets file");
}

TEST_F(ConfigFile, SecretValuesAreNeverEchoedInErrors) {
  // A secret used where an integer is expected: the error must not show the value.
  const std::string msg = LoadError("retention: {keep_last: !secret mqtt_password}\n");
  EXPECT_EQ(msg, path() +
                     ":2:24: key 'retention.keep_last': expected an integer, got (value "
                     "from !secret)");
  EXPECT_EQ(msg.find("s3cr3t-mqtt"), std::string::npos);
  // The backup passphrase is refused for any other setting (issue 9, finding 9).
  const std::string pass =
      LoadError("retention: {keep_last: !secret backup_encryption_passphrase}\n");
  EXPECT_EQ(pass, path() +
                      ":2:24: key 'retention.keep_last': !secret backup_encryption_passphrase is "
                      "the backup passphrase; it only encrypts safety points and may not be used "
                      "for another setting");
  EXPECT_EQ(pass.find(kPassphrase), std::string::npos);
  EXPECT_EQ(LoadError("encryption: {secrets_file: !secret mqtt_password}\n"),
            path() + ":2:28: key 'encryption.secrets_file': !secret is not allowed for this key");
}

TEST_F(ConfigFile, ToJsonShowsResolvedValuesButNoSecrets) {
  auto c = Load("mqtt:\n  password: !secret mqtt_password\n  username: u\n");
  ASSERT_TRUE(c) << c.error().message;
  const nlohmann::json j = ToJson(*c);
  const std::string text = j.dump();
  EXPECT_EQ(text.find("s3cr3t-mqtt"), std::string::npos);
  EXPECT_EQ(text.find(kPassphrase), std::string::npos);
  EXPECT_EQ(j["mqtt"]["password"], "<set>");
  EXPECT_EQ(j["mqtt"]["username"], "u");
  EXPECT_EQ(j["paths"]["ha_config"], ha());
  EXPECT_EQ(j["encryption"]["passphrase_key"], "backup_encryption_passphrase");
  EXPECT_EQ(j["service"]["confirm_timeout"], "30m");
  EXPECT_EQ(j["service"]["schedule"]["daily_at"], "04:00");
  EXPECT_EQ(j["mqtt"]["keepalive"], "1m");
  EXPECT_EQ(j["sources"]["ha_config"]["max_file_size"], 52428800u);
  EXPECT_EQ(j["rollback"]["on_conflict"], "abort");

  auto no_pw = Load("mqtt: {}\nservice: {schedule: {daily_at: off}}\n");
  ASSERT_TRUE(no_pw) << no_pw.error().message;
  const nlohmann::json j2 = ToJson(*no_pw);
  EXPECT_FALSE(j2["mqtt"].contains("password"));
  EXPECT_EQ(j2["service"]["schedule"]["daily_at"], "off");
  EXPECT_FALSE(no_pw->service.schedule.daily_at.has_value());
}

TEST_F(ConfigFile, BrokerUrlsFollowTheClientsRuleAndNeverEchoAPassword) {
  EXPECT_EQ(LoadError("mqtt: {url: \"mqtt://ha:hunter2@broker\"}\n"),
            path() +
                ":2:13: key 'mqtt.url': bad url 'mqtt://***@broker': must not contain "
                "credentials; use mqtt.username and mqtt.password");
  EXPECT_EQ(LoadError("mqtt: {url: \"wss://broker:443/mqtt\"}\n"),
            path() +
                ":2:13: key 'mqtt.url': bad url 'wss://broker:443/mqtt': unsupported scheme "
                "'wss' (expected mqtt://, mqtts://, tcp:// or ssl://); MQTT over WebSocket is not "
                "supported");
  auto c = Load("mqtt: {url: \"MQTTS://[::1]\"}\n");
  ASSERT_TRUE(c) << c.error().message;
  EXPECT_TRUE(MqttUsesTls(*c->mqtt));
  EXPECT_EQ(LoadError("mqtt: {base_topic: \"home//safepoint\"}\n"),
            path() + ":2:20: key 'mqtt.base_topic': must not contain empty levels");
  EXPECT_EQ(LoadError("mqtt: {base_topic: \"home/\\x01\"}\n"),
            path() + ":2:20: key 'mqtt.base_topic': must not contain control characters");
}

TEST_F(ConfigFile, TlsRequiresATlsScheme) {
  EXPECT_EQ(LoadError("mqtt:\n  url: mqtt://b\n  tls: {verify: true}\n"),
            path() +
                ":4:8: key 'mqtt.tls': tls is set but mqtt.url does not use mqtts or ssl");
}

TEST_F(ConfigFile, EmptyListsMeanEmpty) {
  auto c = Load("sources:\n  logs: []\n  ha_config: {exclude:}\n");
  ASSERT_TRUE(c) << c.error().message;
  EXPECT_TRUE(c->sources.logs.empty());
  EXPECT_TRUE(c->sources.ha_config.exclude.empty());
}

TEST_F(ConfigFile, ExampleConfigStatesTheDefaults) {
  // deploy/safepoint.example.yaml spells out every default; with /config pointed at a temp dir
  // it must load to exactly the defaults (plus its MQTT credentials).
  auto text = safepoint::testing::ReadFile(SAFEPOINT_SOURCE_DIR "/deploy/safepoint.example.yaml");
  ASSERT_TRUE(text.has_value());
  std::string replaced;
  for (std::size_t pos = 0;;) {
    const std::size_t hit = text->find("/config", pos);
    if (hit == std::string::npos) {
      replaced += text->substr(pos);
      break;
    }
    replaced += text->substr(pos, hit - pos) + ha();
    pos = hit + 7;
  }
  auto example = ParseConfig(replaced, path());
  ASSERT_TRUE(example) << example.error().message;
  auto defaults = Load("mqtt: {username: safepoint, password: !secret mqtt_password}\n");
  ASSERT_TRUE(defaults) << defaults.error().message;
  EXPECT_EQ(ToJson(*example), ToJson(*defaults));
}

TEST(FormatDuration, PicksTheLargestExactUnit) {
  EXPECT_EQ(FormatDuration(milliseconds(0)), "0s");
  EXPECT_EQ(FormatDuration(milliseconds(500)), "500ms");
  EXPECT_EQ(FormatDuration(std::chrono::seconds(120)), "2m");
  EXPECT_EQ(FormatDuration(std::chrono::seconds(90)), "90s");
  EXPECT_EQ(FormatDuration(std::chrono::hours(2)), "2h");
}

// ---- passphrase ------------------------------------------------------------------------------

class Passphrase : public ConfigFile {
 protected:
  Result<Secret> LoadWith(const std::string& secrets) {
    WriteFile(ha() + "/secrets.yaml", secrets);
    auto c = Load("");
    EXPECT_TRUE(c);
    if (!c) return Fail(ErrorCode::kInternal, "config");
    return LoadPassphrase(*c);
  }
};

TEST_F(Passphrase, ReadsTheConfiguredKeyInEveryScalarForm) {
  struct Case {
    std::string file;
    std::string expected;
  };
  const Case cases[] = {
      {"backup_encryption_passphrase: plain value  # comment\n", "plain value"},
      {"a: 1\nbackup_encryption_passphrase: 'it''s # not a comment'\n", "it's # not a comment"},
      {"backup_encryption_passphrase: \"tab\\tquote\\\" \\u00e9\\x41\"\n",
       "tab\tquote\" \xC3\xA9"
       "A"},
      // \x names a Unicode character as in YAML (U+00E9 is c3 a9), not a raw byte.
      {"backup_encryption_passphrase: \"caf\\xe9 \\xff\"\n", "caf\xC3\xA9 \xC3\xBF"},
      {"backup_encryption_passphrase: crlf-value\r\nother: x\r\n", "crlf-value"},
      {"\xEF\xBB\xBF"
       "backup_encryption_passphrase: bom\n",
       "bom"},
      {"nested:\n  backup_encryption_passphrase: wrong\nbackup_encryption_passphrase: right\n",
       "right"},
      {"backup_encryption_passphrase: no-newline-at-end", "no-newline-at-end"},
  };
  for (const Case& c : cases) {
    auto s = LoadWith(c.file);
    ASSERT_TRUE(s) << s.error().message;
    EXPECT_TRUE(s->view() == c.expected) << "case " << (&c - cases);  // never print the value
  }
}

TEST_F(Passphrase, IsReadFreshAtEachCall) {
  auto c = Load("");
  ASSERT_TRUE(c);
  auto first = LoadPassphrase(*c);
  ASSERT_TRUE(first);
  EXPECT_TRUE(first->view() == kPassphrase);
  WriteFile(ha() + "/secrets.yaml", "backup_encryption_passphrase: rotated\n");
  auto second = LoadPassphrase(*c);
  ASSERT_TRUE(second);
  EXPECT_TRUE(second->view() == "rotated");
}

TEST_F(Passphrase, WhitespaceOnlyPassphraseIsRejected) {
  const std::string file = ha() + "/secrets.yaml";
  const std::string expected =
      file +
      ":1:31: key 'backup_encryption_passphrase': the backup passphrase is only "
      "whitespace; choose one with visible characters";
  for (const std::string value :
       {" ", "   ", "\\t", " \\t \\r\\n ", "\\u00a0", "\\u3000 \\u2003", "\\ufeff"}) {
    auto r = LoadWith("backup_encryption_passphrase: \"" + value + "\"\n");
    ASSERT_FALSE(r) << value;
    EXPECT_EQ(r.error().code, ErrorCode::kBadInput) << value;
    EXPECT_EQ(r.error().message, expected) << value;
  }
  // Whitespace around visible characters is part of a valid passphrase.
  auto padded = LoadWith("backup_encryption_passphrase: \"  a b  \"\n");
  ASSERT_TRUE(padded) << padded.error().message;
  EXPECT_TRUE(padded->view() == "  a b  ");
}

TEST_F(Passphrase, ErrorsNameFileAndKeyButNeverTheValue) {
  const std::string file = ha() + "/secrets.yaml";
  auto missing_key = LoadWith("other: x\n");
  ASSERT_FALSE(missing_key);
  EXPECT_EQ(missing_key.error().code, ErrorCode::kBadInput);
  EXPECT_EQ(missing_key.error().message,
            file + ": key 'backup_encryption_passphrase': not found in the secrets file");

  // Found by a CLI campaign: `passphrase_key: <the passphrase itself>` was echoed in this
  // error, to the terminal, the log and the service's MQTT status. Its text in the file (as
  // the value it is) is now never shown.
  auto value_as_key =
      LoadWith("backup_encryption_passphrase_x: \"pw backup_encryption_passphrase\"\n");
  ASSERT_FALSE(value_as_key);
  EXPECT_EQ(value_as_key.error().code, ErrorCode::kBadInput);
  EXPECT_EQ(value_as_key.error().message,
            file + ": " + std::string(config::kPassphraseKeyIsAValue));
  EXPECT_EQ(value_as_key.error().message.find("'backup_encryption_passphrase'"), std::string::npos);
  // Its text in a comment or a continued line is hidden as well; in a key's name only (a typo of
  // the name, as "backup_encryption" for "backup_encryption_passphrase") it is named.
  for (const char* text : {"# the passphrase: backup_encryption_passphrase\nother: x\n",
                           "other: >\n  pw backup_encryption_passphrase\n"}) {
    auto hidden = LoadWith(text);
    ASSERT_FALSE(hidden);
    EXPECT_EQ(hidden.error().message, file + ": " + std::string(config::kPassphraseKeyIsAValue))
        << text;
  }
  // A passphrase_key holding ": " may be a whole "key: value" line of the file: hidden too.
  WriteFile(ha() + "/secrets.yaml", "correct horse: battery staple\n");
  auto colon = Load("encryption: {passphrase_key: 'correct horse: battery staple'}\n");
  ASSERT_TRUE(colon) << colon.error().message;
  auto colon_pass = LoadPassphrase(*colon);
  ASSERT_FALSE(colon_pass);
  EXPECT_EQ(colon_pass.error().message, file + ": " + std::string(config::kPassphraseKeyIsAValue));
  auto typo =
      LoadWith("backup_encryption_passphrase_2: x\n\"backup_encryption_passphrase x\": y\n");
  ASSERT_FALSE(typo);
  EXPECT_EQ(typo.error().message,
            file + ": key 'backup_encryption_passphrase': not found in the secrets file");

  auto empty = LoadWith("backup_encryption_passphrase: \"\"\n");
  ASSERT_FALSE(empty);
  EXPECT_EQ(empty.error().code, ErrorCode::kBadInput);
  EXPECT_EQ(empty.error().message,
            file + ":1:31: key 'backup_encryption_passphrase': the backup passphrase is empty");

  auto null_value = LoadWith("backup_encryption_passphrase:\nx: 1\n");
  ASSERT_FALSE(null_value);
  EXPECT_EQ(null_value.error().message,
            file + ":1:30: key 'backup_encryption_passphrase': the backup passphrase is empty");

  // A plain ~ or null is YAML's null: empty, refused (it once reached memcpy with no buffer).
  for (const std::string null_form : {"~", "null", "Null", "NULL"}) {
    auto r = LoadWith("backup_encryption_passphrase: " + null_form + "\n");
    ASSERT_FALSE(r) << null_form;
    EXPECT_EQ(r.error().code, ErrorCode::kBadInput) << null_form;
    EXPECT_EQ(r.error().message,
              file + ":1:31: key 'backup_encryption_passphrase': the backup passphrase is empty")
        << null_form;
  }

  const std::string secret_text = "hunter2-do-not-print";
  const struct {
    std::string file;
    std::string message;
  } forms[] = {
      {"backup_encryption_passphrase: |\n  " + secret_text + "\n",
       file + ":1:31: key 'backup_encryption_passphrase': block scalars are not supported here; "
              "quote the value"},
      {"backup_encryption_passphrase: \"" + secret_text + "\n  continued\"\n",
       file + ":1:31: key 'backup_encryption_passphrase': multi-line quoted values are not "
              "supported"},
      {"backup_encryption_passphrase: " + secret_text + "\n  continued\n",
       file + ":1:31: key 'backup_encryption_passphrase': multi-line, list and map values are not "
              "supported; use one quoted line"},
      {"backup_encryption_passphrase: a\nbackup_encryption_passphrase: " + secret_text + "\n",
       file + ":2:1: key 'backup_encryption_passphrase': duplicate key"},
      {"backup_encryption_passphrase: \"" + secret_text + "\" trailing\n",
       file + ":1:31: key 'backup_encryption_passphrase': unexpected text after the quoted value"},
  };
  for (const auto& f : forms) {
    auto r = LoadWith(f.file);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, ErrorCode::kBadInput);
    EXPECT_EQ(r.error().message, f.message);
    EXPECT_EQ(r.error().message.find(secret_text), std::string::npos);
  }

  std::filesystem::remove(file);
  auto c = Load("");
  ASSERT_TRUE(c);
  auto no_file = LoadPassphrase(*c);
  ASSERT_FALSE(no_file);
  EXPECT_EQ(no_file.error().code, ErrorCode::kBadInput);
  EXPECT_EQ(no_file.error().message, file +
                                         ": key 'backup_encryption_passphrase': cannot read "
                                         "secrets file: No such file or directory");
}

// Found by a test campaign: a NUL byte in the secrets file was taken into the passphrase.
TEST_F(Passphrase, NulByteInTheSecretsFileIsRefusedNamingItsLine) {
  const std::string file = ha() + "/secrets.yaml";
  for (const std::string& text :
       {std::string("a: 1\nbackup_encryption_passphrase: pass\0word\n", 45),
        std::string("a: 1\nbackup_encryption_passphrase: \"pass\0word\"\n", 47)}) {
    auto r = LoadWith(text);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, ErrorCode::kBadInput);
    EXPECT_EQ(r.error().message.substr(0, file.size() + 3), file + ":2:");
    EXPECT_NE(r.error().message.find(": NUL byte in the secrets file"), std::string::npos)
        << r.error().message;
  }
  auto other_line = LoadWith(std::string("backup_encryption_passphrase: p\nx: \0\n", 37));
  ASSERT_FALSE(other_line);
  EXPECT_EQ(other_line.error().message,
            file + ":2:4: key 'backup_encryption_passphrase': NUL byte in the secrets file");
}

TEST_F(Passphrase, UsesTheConfiguredFileAndKey) {
  WriteFile(dir_.Sub("other-secrets.yaml"), "my_key: from-other-file\n");
  auto c = Load("encryption: {secrets_file: other-secrets.yaml, passphrase_key: my_key}\n");
  ASSERT_TRUE(c) << c.error().message;
  auto s = LoadPassphrase(*c);
  ASSERT_TRUE(s) << s.error().message;
  EXPECT_TRUE(s->view() == "from-other-file");
}

// Issue 9, finding 9: values from `!secret` are masked wherever text is echoed.
TEST(Redact, MasksEverySecretValueInTextAndJsonLongestFirst) {
  Config c;
  c.secret_values = {{"mqtt.username", "u", "alice"},
                     {"mqtt.client_id", "cid", "alice-laptop"},
                     {"mqtt.password", "empty", ""}};
  EXPECT_EQ(Redact(c, "connect alice-laptop as alice, alice!"),
            "connect (from !secret cid) as (from !secret u), (from !secret u)!");
  EXPECT_EQ(Redact(c, "nothing here"), "nothing here");
  const nlohmann::json j = {{"a", "/x/alice/y"}, {"alice", {1, "alice-laptop"}}, {"n", 3}};
  EXPECT_EQ(RedactJson(c, j), (nlohmann::json{{"a", "/x/(from !secret u)/y"},
                                              {"(from !secret u)", {1, "(from !secret cid)"}},
                                              {"n", 3}}));
}

TEST(Redact, RecordsWhichKeysCameFromSecrets) {
  TempDir dir;
  WriteFile(dir.Sub("ha/secrets.yaml"), "mqtt_user: bob\nbackup_encryption_passphrase: x\n");
  auto c = ParseConfig("paths:\n  ha_config: " + dir.Sub("ha") +
                           "\nmqtt:\n  username: !secret mqtt_user\n  client_id: plain\n",
                       dir.Sub("safepoint.yaml"));
  ASSERT_TRUE(c) << c.error().message;
  ASSERT_EQ(c->secret_values.size(), 1u);
  EXPECT_EQ(c->secret_values[0].key, "mqtt.username");
  EXPECT_EQ(c->secret_values[0].name, "mqtt_user");
  EXPECT_EQ(c->secret_values[0].value, "bob");
  EXPECT_EQ(ToJson(*c)["mqtt"]["username"], "(from !secret mqtt_user)");
  EXPECT_EQ(ToJson(*c)["mqtt"]["client_id"], "plain");
}

}  // namespace
}  // namespace safepoint::config
