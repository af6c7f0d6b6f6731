#pragma once

#include <chrono>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/base/conflict_policy.h"
#include "core/base/result.h"
#include "core/base/secret.h"

// The safepoint configuration file (YAML). docs/configuration.md is the user-facing reference;
// this header is the contract: every key, its type and its default.
//
// Common rules:
// - Unknown keys, wrong types, out-of-range values, duplicate keys and unreadable paths are
//   errors (ErrorCode::kBadInput) with the message "FILE:LINE:COL: key 'a.b.c': <what>" (list
//   items as "restart[0].command"). For a defaulted key without a position the position of the
//   nearest enclosing node (or 1:1) is used.
// - Relative paths resolve against the directory of the configuration file; all paths in Config
//   are absolute and lexically normalized (no trailing '/', no "." or "..").
// - Durations: a non-negative integer (seconds) or a string of <number><unit> groups with units
//   ms, s, m, h, d ("500ms", "120s", "2m", "1h30m").
// - Sizes: a non-negative integer (bytes) or "<number>[ ]<unit>" with units B, KB, MB, GB, TB
//   (powers of 1000) and KiB, MiB, GiB, TiB (powers of 1024), e.g. "50MiB", "10 MB".
// - Booleans: true/false (also yes/no, on/off as Home Assistant's YAML accepts them).
// - An explicitly empty list or section (`exclude:`) means "empty"/"all defaults".
// - Home Assistant's `!secret NAME` tag is accepted on any string value except the keys that
//   locate the secrets file (paths.*, encryption.secrets_file); NAME is looked up in the secrets
//   file. Values that came from a secret are never echoed in error messages.
namespace safepoint::config {

// The roots a safety point takes files from; archive paths start with their name.
enum class SourceRoot { kHaConfig, kWorkspace };
// "ha_config" / "workspace".
[[nodiscard]] const char* SourceRootName(SourceRoot root);

// Rollback conflict policy: the one of core/base/conflict_policy.h.
using safepoint::ConflictPolicy;
using safepoint::ConflictPolicyName;

// MQTT protocol version. kAuto: 5 where the broker offers it, else 3.1.1.
enum class MqttProtocol { kAuto, kV311, kV5 };

struct PathsConfig {
  // paths.ha_config [/config]: the Home Assistant configuration directory. Must be an existing,
  // readable directory.
  std::string ha_config;
  // paths.workspace [<ha_config>/.openclaw/workspace]: the agent's knowledge files. May be
  // missing (collection then warns). Must not equal or contain ha_config.
  std::string workspace;
  // paths.backup_dir [<workspace>/backup/safety_point]: where safety points are stored. Must not
  // equal or contain ha_config or the workspace.
  std::string backup_dir;
};

struct EncryptionConfig {
  // encryption.secrets_file [<ha_config>/secrets.yaml]: Home Assistant's secrets file; read for
  // the passphrase at each use and for `!secret` tags.
  std::string secrets_file;
  // encryption.passphrase_key [backup_encryption_passphrase]: its key in the secrets file.
  std::string passphrase_key = "backup_encryption_passphrase";
  // encryption.scrypt_work_factor [18, 15..22]: log2 of scrypt's N when writing.
  int scrypt_work_factor = 18;
  // encryption.max_work_factor [22, 15..30, >= scrypt_work_factor]: readers refuse a payload
  // whose work factor is above this (before deriving anything).
  int max_work_factor = 22;
};

// sources.ha_config / sources.workspace: a file tree selected by globs (core/base/glob.h) on the
// path relative to the root. A directory matched by an include pattern is taken with its whole
// subtree; a path matched (itself or a parent) by any exclude pattern is left out.
struct TreeSource {
  // include [ha_config: ["**"]; workspace: ["memory/*.md", "agenda.md", "sessions/**"]].
  std::vector<std::string> include;
  // exclude [[]]: the user's excludes.
  std::vector<std::string> exclude;
  // Excludes that always apply, computed by LoadConfig (not a key). For ha_config:
  // home-assistant_v2.db*, **/*.log, **/*.log.*, backups/**, tts/**, deps/**,
  // **/__pycache__/**, .cache/**, plus the backup dir and the workspace when they lie inside.
  // For the workspace: the backup dir when it lies inside.
  std::vector<std::string> builtin_exclude;
  // max_file_size [50 MiB]: larger regular files are skipped with a warning.
  std::uint64_t max_file_size = 50ull << 20;
};

// sources.environment
struct EnvironmentSource {
  // variables [[TZ]]: environment variable names recorded (value or null when unset).
  std::vector<std::string> variables = {"TZ"};
  // python_site_packages [[]]: site-packages directories whose *.dist-info / *.egg-info are
  // listed (name and version). A missing directory is a warning at capture time.
  std::vector<std::string> python_site_packages;
};

// sources.logs[]
struct LogSource {
  // path (required): the log file. Missing at collection time = skipped with a warning.
  std::string path;
  // lines [50, 0..100000]: how many lines to keep from its end.
  std::uint32_t lines = 50;
};

struct SourcesConfig {
  TreeSource ha_config;
  TreeSource workspace;
  EnvironmentSource environment;
  // logs [[{path: <ha_config>/.openclaw/logs/agent.log, lines: 50}]]; `logs: []` disables.
  std::vector<LogSource> logs;
};

struct RetentionConfig {
  // retention.keep_last [10, 1..100000]: newest safety points always kept.
  std::uint32_t keep_last = 10;
  // retention.keep_daily [7, 0..100000]: additionally the newest of each of the last N days.
  std::uint32_t keep_daily = 7;
  // retention.max_total_bytes [0 = unlimited; a size]: prune oldest beyond this total.
  std::uint64_t max_total_bytes = 0;
};

// restart[]: a service restarted after a rollback restored files.
struct RestartConfig {
  // name (required, unique, non-empty).
  std::string name;
  // command (required): argv, non-empty list of non-empty strings; executed without a shell.
  std::vector<std::string> command;
  // timeout [120s, > 0].
  std::chrono::milliseconds timeout{std::chrono::seconds(120)};
  // when_changed [[ha_config, workspace]]: restart only when the restore changed files under
  // one of these roots.
  std::vector<SourceRoot> when_changed = {SourceRoot::kHaConfig, SourceRoot::kWorkspace};
};

struct RollbackConfig {
  // rollback.on_conflict [abort]: abort | overwrite | merge.
  ConflictPolicy on_conflict = ConflictPolicy::kAbort;
};

struct DiffConfig {
  // diff.sensitive_keys [[]]: more key-name fragments whose values a content diff masks (beside
  // password, token, api_key, passphrase, secret, ...; matched case-insensitively).
  std::vector<std::string> sensitive_keys;
};

struct MqttTlsConfig {
  // mqtt.tls.ca_file / cert_file / key_file [unset]: PEM files, must be readable when set;
  // key_file requires cert_file and vice versa.
  std::string ca_file;
  std::string cert_file;
  std::string key_file;
  // mqtt.tls.verify [true]: verify the broker certificate and host name.
  bool verify = true;
};

// mqtt.mirror: which topics the entity mirror keeps.
//
// filters are MQTT subscription filters (`+` one level, `#` last level = zero or more). exclude
// entries use the same syntax with one extension: `#` may also stand as a middle level, where
// it matches one or more levels. That is how the Zigbee2MQTT command topics are excluded even
// though friendly names may contain '/': "zigbee2mqtt/#/set/#" drops every topic with a level
// "set" below the first level ("zigbee2mqtt/kitchen/lamp/set", ".../set/brightness").
struct MirrorConfig {
  // filters [[zigbee2mqtt/#]]
  std::vector<std::string> filters = {"zigbee2mqtt/#"};
  // exclude [[zigbee2mqtt/bridge/#, zigbee2mqtt/#/set/#, zigbee2mqtt/#/get/#]]
  std::vector<std::string> exclude = {"zigbee2mqtt/bridge/#", "zigbee2mqtt/#/set/#",
                                      "zigbee2mqtt/#/get/#"};
  // max_topics [10000, 1..10000000]: further new topics are dropped and counted.
  std::uint64_t max_topics = 10000;
  // max_payload_bytes [65536 (a size), 1..16 MiB]: larger payloads are dropped and counted.
  std::uint64_t max_payload_bytes = 65536;
};

// mqtt: optional; absent means the service runs without MQTT.
struct MqttConfig {
  // url [mqtt://localhost:1883]: scheme mqtt, tcp, mqtts or ssl; host; optional port
  // (mqtt_names::ParseBrokerUrl).
  std::string url = "mqtt://localhost:1883";
  // client_id [safepoint-<node_id>]
  std::string client_id;
  // username [unset]
  std::string username;
  // password [unset] (usually `!secret mqtt_password`). Never printed (ToJson shows "<set>").
  std::optional<std::string> password;
  // protocol [auto]: "auto", "3.1.1" or 5. auto uses MQTT 5 where the broker offers it (retained
  // commands are then recognised by their flag) and falls back to 3.1.1 when the broker refuses
  // version 5 (docs/mqtt-api.md, "Retained commands").
  MqttProtocol protocol = MqttProtocol::kAuto;
  // keepalive [60s, 1s..65535s]
  std::chrono::milliseconds keepalive{std::chrono::seconds(60)};
  MqttTlsConfig tls;
  // base_topic [safepoint]: no wildcards, no leading/trailing '/'.
  std::string base_topic = "safepoint";
  // discovery_prefix [homeassistant]: same rules as base_topic.
  std::string discovery_prefix = "homeassistant";
  // node_id [safepoint]: [a-zA-Z0-9_-]+, used in discovery ids.
  std::string node_id = "safepoint";
  MirrorConfig mirror;
  // collect_wait [2s, <= 1h]: `safepoint backup` run by hand waits this long for retained states.
  std::chrono::milliseconds collect_wait{std::chrono::seconds(2)};
  // zigbee2mqtt_backup [false]: before each safety point the service takes, ask Zigbee2MQTT for
  // its own backup (`<zigbee2mqtt_base_topic>/bridge/request/backup`) and store the zip it
  // returns as state/zigbee2mqtt_backup.zip. No answer within zigbee2mqtt_backup_timeout, or an
  // error answer, is a warning of the safety point, never a failure.
  bool zigbee2mqtt_backup = false;
  // zigbee2mqtt_base_topic [zigbee2mqtt]: Zigbee2MQTT's mqtt.base_topic.
  std::string zigbee2mqtt_base_topic = "zigbee2mqtt";
  // zigbee2mqtt_backup_timeout [30s, 1s..10min]
  std::chrono::milliseconds zigbee2mqtt_backup_timeout{std::chrono::seconds(30)};
};

// True for the TLS schemes (mqtts, ssl).
[[nodiscard]] bool MqttUsesTls(const MqttConfig& mqtt);

struct ScheduleConfig {
  // service.schedule.daily_at ["04:00"]: local time HH:MM of the daily safety point; "off"
  // (std::nullopt) disables it. Stored as minutes after local midnight.
  std::optional<std::chrono::minutes> daily_at = std::chrono::hours(4);
};

struct ServiceConfig {
  // service.confirm_timeout [30m, > 0]: deadline for Continue/Cancel.
  std::chrono::milliseconds confirm_timeout{std::chrono::minutes(30)};
  // service.health_timeout [5m, > 0]: health watch after a successful update.
  std::chrono::milliseconds health_timeout{std::chrono::minutes(5)};
  // service.update_timeout [2h, 0 = never]: an update that reports no result by then is given up
  // (nothing is rolled back: there is no evidence it failed).
  std::chrono::milliseconds update_timeout{std::chrono::hours(2)};
  // service.resolve_timeout [30m, > 0]: deadline for Overwrite / Merge / Abort; then Abort.
  std::chrono::milliseconds resolve_timeout{std::chrono::minutes(30)};
  // service.auto_rollback [true]: roll back automatically when an update fails.
  bool auto_rollback = true;
  // service.state_file [<backup_dir>/.service-state.json]
  std::string state_file;
  ScheduleConfig schedule;
};

struct LoggingConfig {
  // logging.level [info]: trace | debug | info | warn | error | critical | off.
  std::string level = "info";
};

// A configuration value that came from `!secret NAME`. Kept only so that every place that echoes
// configuration (config check, CLI output, logs) can mask it: see Redact.
struct SecretValue {
  std::string key;    // dotted key, e.g. "mqtt.client_id"
  std::string name;   // NAME in the secrets file
  std::string value;  // never printed
};

struct Config {
  // The configuration file it was loaded from (absolute); "" for a default Config.
  std::string source_file;
  PathsConfig paths;
  EncryptionConfig encryption;
  SourcesConfig sources;
  RetentionConfig retention;
  // restart [[]]
  std::vector<RestartConfig> restart;
  RollbackConfig rollback;
  DiffConfig diff;
  std::optional<MqttConfig> mqtt;
  ServiceConfig service;
  LoggingConfig logging;
  // Every value that came from `!secret` (not a key of its own).
  std::vector<SecretValue> secret_values;
};

// Loads and validates a configuration file. Errors: kBadInput (see the rules above), including
// an unreadable file or YAML syntax error ("FILE:LINE:COL: <what>").
[[nodiscard]] Result<Config> LoadConfig(const std::string& path);

// Parses configuration text as if it were the file `path` (relative paths resolve against
// dirname(path)); `path` is only used for messages and paths, never read.
[[nodiscard]] Result<Config> ParseConfig(const std::string& yaml_text, const std::string& path);

// Reads the backup passphrase from encryption.secrets_file / encryption.passphrase_key, freshly
// at each call, into sodium memory. The file is scanned by a small reader (top-level
// `key: value` pairs with plain, 'single' or "double" quoted values) so the passphrase never
// lands in ordinary heap memory. Errors (kBadInput, naming file and key, never the value):
// unreadable file, key missing, empty value, an unsupported form (block or multi-line scalar,
// list, map, alias, tag), a duplicate key. A key that is missing while its text is in the file
// (passphrase_key filled with the passphrase itself?) is not named: kPassphraseKeyIsAValue.
[[nodiscard]] Result<Secret> LoadPassphrase(const Config& config);

// What LoadPassphrase says, after "<secrets file>: ", when the key is missing but its text is in
// the file.
inline constexpr std::string_view kPassphraseKeyIsAValue =
    "the key encryption.passphrase_key names is not in the secrets file, but its text is (the "
    "passphrase itself, or part of a value?), so it is not shown here; passphrase_key must be the "
    "name of the key, such as backup_encryption_passphrase";

// Reads one top-level string `key` from a Home-Assistant-style secrets file, as LoadPassphrase
// does (an empty value is returned as an empty Secret, not an error).
[[nodiscard]] Result<Secret> ReadSecretsFileValue(const std::string& secrets_file,
                                                  const std::string& key);

// The resolved configuration for `safepoint config check`: every key with its effective value
// (durations as "120s"-style strings, sizes in bytes, paths absolute). Never contains a secret:
// mqtt.password is "<set>" when set and absent otherwise; the passphrase is never read; every
// value that came from `!secret NAME` (or contains one, like a path resolved from it) reads
// "(from !secret NAME)".
[[nodiscard]] nlohmann::json ToJson(const Config& config);

// Replaces every occurrence of a `!secret` value of `config` in `text` with "(from !secret
// NAME)" (longest values first). Everything that echoes text that may hold a configuration
// value (CLI output, log lines) passes it through here.
[[nodiscard]] std::string Redact(const Config& config, std::string_view text);
// Redact applied to every string (and object key) in `j`.
[[nodiscard]] nlohmann::json RedactJson(const Config& config, const nlohmann::json& j);

// Formats a duration the way the configuration accepts it, in the largest exact unit
// ("30m", "120s" stays "2m", "500ms").
[[nodiscard]] std::string FormatDuration(std::chrono::milliseconds d);

}  // namespace safepoint::config
