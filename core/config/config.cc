#include "core/config/config.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <filesystem>
#include <initializer_list>
#include <set>
#include <string_view>
#include <utility>

#include "core/base/glob.h"
#include "core/base/io.h"
#include "core/base/mqtt_names.h"
#include "core/base/paths.h"
#include "core/base/utf8.h"
#include "core/config/reader.h"

namespace safepoint::config {
namespace {

using namespace internal;  // NOLINT(google-build-using-namespace): this module's own readers

// The configuration file: a few KiB in practice.
constexpr std::size_t kMaxConfigFileBytes = 1 << 20;

Status ParseTree(const Ctx& c, const Item& item, TreeSource& tree) {
  auto s = Section::Open(c, item, {"include", "exclude", "max_file_size"});
  if (!s) return tl::unexpected(s.error());
  if (const Item* i = s->Get("include"))
    SP_RETURN_IF_ERROR(Assign(tree.include, GetGlobList(c, *i)));
  if (const Item* i = s->Get("exclude"))
    SP_RETURN_IF_ERROR(Assign(tree.exclude, GetGlobList(c, *i)));
  if (const Item* i = s->Get("max_file_size")) {
    SP_RETURN_IF_ERROR(Assign(tree.max_file_size, GetSize(c, *i, 1, 1ull << 50)));
  }
  return {};
}

bool ValidEnvName(std::string_view s) {
  if (s.empty() || (s[0] >= '0' && s[0] <= '9')) return false;
  return std::all_of(s.begin(), s.end(), [](char ch) {
    return std::isalnum(static_cast<unsigned char>(ch)) || ch == '_';
  });
}

Status ParseSources(const Ctx& c, const Item& item, const Config& cfg, SourcesConfig& src) {
  auto s = Section::Open(c, item, {"ha_config", "workspace", "environment", "logs"});
  if (!s) return tl::unexpected(s.error());
  src.ha_config.include = {"**"};
  src.workspace.include = {"memory/*.md", "agenda.md", "sessions/**"};
  SP_RETURN_IF_ERROR(ParseTree(c, s->Sub("ha_config"), src.ha_config));
  SP_RETURN_IF_ERROR(ParseTree(c, s->Sub("workspace"), src.workspace));

  auto env = Section::Open(c, s->Sub("environment"), {"variables", "python_site_packages"});
  if (!env) return tl::unexpected(env.error());
  if (const Item* i = env->Get("variables")) {
    auto items = GetList(c, *i);
    if (!items) return tl::unexpected(items.error());
    src.environment.variables.clear();
    for (const Item& e : *items) {
      auto name = GetStr(c, e);
      if (!name) return tl::unexpected(name.error());
      if (!ValidEnvName(name->value)) {
        return Bad(c, e.mark, e.key, "not a variable name: " + name->Show());
      }
      src.environment.variables.push_back(name->value);
    }
  }
  if (const Item* i = env->Get("python_site_packages")) {
    auto items = GetList(c, *i);
    if (!items) return tl::unexpected(items.error());
    for (const Item& e : *items) {
      auto p = GetPath(c, e);
      if (!p) return tl::unexpected(p.error());
      src.environment.python_site_packages.push_back(std::move(*p));
    }
  }

  if (const Item* i = s->Get("logs")) {
    auto items = GetList(c, *i);
    if (!items) return tl::unexpected(items.error());
    for (const Item& e : *items) {
      auto log = Section::Open(c, e, {"path", "lines"});
      if (!log) return tl::unexpected(log.error());
      if (e.node.IsNull()) return Bad(c, e.mark, e.key, "expected a map with 'path'");
      LogSource ls;
      const Item* p = log->Get("path");
      if (p == nullptr) return Bad(c, e.mark, e.key + ".path", "required key is missing");
      SP_RETURN_IF_ERROR(Assign(ls.path, GetPath(c, *p)));
      if (const Item* l = log->Get("lines"))
        SP_RETURN_IF_ERROR(Assign(ls.lines, GetInt(c, *l, 0, 100000)));
      src.logs.push_back(std::move(ls));
    }
  } else {
    src.logs.push_back(LogSource{cfg.paths.ha_config + "/.openclaw/logs/agent.log", 50});
  }
  return {};
}

Result<SourceRoot> ParseRoot(const Ctx& c, const Item& item) {
  auto s = GetStr(c, item);
  if (!s) return tl::unexpected(s.error());
  if (s->value == "ha_config") return SourceRoot::kHaConfig;
  if (s->value == "workspace") return SourceRoot::kWorkspace;
  return Bad(c, item.mark, item.key, "expected ha_config or workspace, got " + s->Show());
}

Status ParseRestart(const Ctx& c, const Item& item, std::vector<RestartConfig>& out) {
  auto items = GetList(c, item);
  if (!items) return tl::unexpected(items.error());
  std::set<std::string> names;
  for (const Item& e : *items) {
    if (!e.node.IsMap()) {
      return Bad(c, e.mark, e.key,
                 std::string("expected a map with name and command, got ") + TypeName(e.node));
    }
    auto s = Section::Open(c, e, {"name", "command", "timeout", "when_changed"});
    if (!s) return tl::unexpected(s.error());
    RestartConfig r;
    const Item* name = s->Get("name");
    if (name == nullptr) return Bad(c, e.mark, e.key + ".name", "required key is missing");
    auto name_value = GetStr(c, *name);
    if (!name_value) return tl::unexpected(name_value.error());
    r.name = name_value->value;
    if (r.name.empty()) return Bad(c, name->mark, name->key, "must not be empty");
    if (!names.insert(r.name).second) {
      return Bad(c, name->mark, name->key, "duplicate restart name " + name_value->Show());
    }
    const Item* cmd = s->Get("command");
    if (cmd == nullptr) return Bad(c, e.mark, e.key + ".command", "required key is missing");
    if (!cmd->node.IsSequence()) {
      return Bad(c, cmd->mark, cmd->key,
                 "expected an argv list like [\"ha\", \"core\", \"restart\"] (no shell), got " +
                     std::string(TypeName(cmd->node)));
    }
    SP_RETURN_IF_ERROR(Assign(r.command, GetStringList(c, *cmd)));
    if (r.command.empty()) return Bad(c, cmd->mark, cmd->key, "must not be empty");
    if (const Item* t = s->Get("timeout")) {
      SP_RETURN_IF_ERROR(
          Assign(r.timeout, GetDuration(c, *t, milliseconds(1), milliseconds(kMaxDurationMs))));
    }
    if (const Item* w = s->Get("when_changed")) {
      auto roots = GetList(c, *w);
      if (!roots) return tl::unexpected(roots.error());
      if (roots->empty()) {
        return Bad(c, w->mark, w->key, "list at least one of ha_config, workspace");
      }
      r.when_changed.clear();
      for (const Item& ri : *roots) {
        auto root = ParseRoot(c, ri);
        if (!root) return tl::unexpected(root.error());
        if (std::find(r.when_changed.begin(), r.when_changed.end(), *root) ==
            r.when_changed.end()) {
          r.when_changed.push_back(*root);
        }
      }
    }
    out.push_back(std::move(r));
  }
  return {};
}

Status ParseService(const Ctx& c, const Item& item, ServiceConfig& svc) {
  auto s = Section::Open(c, item,
                         {"confirm_timeout", "health_timeout", "update_timeout", "resolve_timeout",
                          "auto_rollback", "state_file", "schedule"});
  if (!s) return tl::unexpected(s.error());
  const milliseconds max_ms(kMaxDurationMs);
  if (const Item* i = s->Get("confirm_timeout")) {
    SP_RETURN_IF_ERROR(
        Assign(svc.confirm_timeout, GetDuration(c, *i, std::chrono::seconds(1), max_ms)));
  }
  if (const Item* i = s->Get("health_timeout")) {
    SP_RETURN_IF_ERROR(
        Assign(svc.health_timeout, GetDuration(c, *i, std::chrono::seconds(1), max_ms)));
  }
  if (const Item* i = s->Get("update_timeout")) {
    SP_RETURN_IF_ERROR(Assign(svc.update_timeout, GetDuration(c, *i, milliseconds(0), max_ms)));
  }
  if (const Item* i = s->Get("resolve_timeout")) {
    SP_RETURN_IF_ERROR(
        Assign(svc.resolve_timeout, GetDuration(c, *i, std::chrono::seconds(1), max_ms)));
  }
  if (const Item* i = s->Get("auto_rollback"))
    SP_RETURN_IF_ERROR(Assign(svc.auto_rollback, GetBool(c, *i)));
  if (const Item* i = s->Get("state_file"))
    SP_RETURN_IF_ERROR(Assign(svc.state_file, GetPath(c, *i)));
  auto sched = Section::Open(c, s->Sub("schedule"), {"daily_at"});
  if (!sched) return tl::unexpected(sched.error());
  if (const Item* i = sched->Get("daily_at")) {
    auto v = GetStr(c, *i);
    if (!v) return tl::unexpected(v.error());
    const std::string t = Lower(v->value);
    if (t == "off" || t == "false") {
      svc.schedule.daily_at.reset();
    } else {
      std::uint64_t hh = 100;
      std::uint64_t mm = 100;
      const std::size_t colon = t.find(':');
      const bool ok = colon != std::string::npos && colon >= 1 && colon <= 2 &&
                      t.size() - colon - 1 == 2 && ParseUint(t.substr(0, colon), &hh) &&
                      ParseUint(t.substr(colon + 1), &mm) && hh < 24 && mm < 60;
      if (!ok)
        return Bad(c, i->mark, i->key, "expected HH:MM (00:00..23:59) or off, got " + v->Show());
      svc.schedule.daily_at = std::chrono::minutes(hh * 60 + mm);
    }
  }
  return {};
}

// paths: the trees and the backup directory; none may contain another.
Status ParsePaths(const Ctx& c, const Item& item, Config& cfg) {
  auto paths = Section::Open(c, item, {"ha_config", "workspace", "backup_dir"});
  if (!paths) return tl::unexpected(paths.error());
  cfg.paths.ha_config = "/config";
  const Item* ha_item = paths->Get("ha_config");
  if (ha_item != nullptr)
    SP_RETURN_IF_ERROR(Assign(cfg.paths.ha_config, GetPath(c, *ha_item, false)));
  // The trees are used where they are: backup reads below them without following any symlink,
  // and diff and rollback refuse a root that is one, so a root configured through symlinks (its
  // own name or a parent's) is resolved once, here.
  cfg.paths.ha_config = ResolvedPath(cfg.paths.ha_config);
  cfg.paths.workspace = cfg.paths.ha_config + "/.openclaw/workspace";
  const Item* ws_item = paths->Get("workspace");
  if (ws_item != nullptr)
    SP_RETURN_IF_ERROR(Assign(cfg.paths.workspace, GetPath(c, *ws_item, false)));
  cfg.paths.workspace = ResolvedPath(cfg.paths.workspace);
  cfg.paths.backup_dir = cfg.paths.workspace + "/backup/safety_point";
  const Item* bd_item = paths->Get("backup_dir");
  if (bd_item != nullptr)
    SP_RETURN_IF_ERROR(Assign(cfg.paths.backup_dir, GetPath(c, *bd_item, false)));

  const Item ha_at = paths->Sub("ha_config");
  const Item ws_at = paths->Sub("workspace");
  const Item bd_at = paths->Sub("backup_dir");
  {
    struct stat st {};
    if (::stat(cfg.paths.ha_config.c_str(), &st) != 0) {
      return Bad(c, ha_at.mark, "paths.ha_config",
                 "cannot access " + cfg.paths.ha_config + ": " + std::strerror(errno));
    }
    if (!S_ISDIR(st.st_mode)) {
      return Bad(c, ha_at.mark, "paths.ha_config", cfg.paths.ha_config + " is not a directory");
    }
    if (::access(cfg.paths.ha_config.c_str(), R_OK | X_OK) != 0) {
      return Bad(c, ha_at.mark, "paths.ha_config",
                 "cannot read " + cfg.paths.ha_config + ": " + std::strerror(errno));
    }
  }
  if (IsWithin(cfg.paths.ha_config, cfg.paths.workspace)) {
    return Bad(c, ws_at.mark, "paths.workspace", "must not be or contain paths.ha_config");
  }
  if (IsWithin(cfg.paths.ha_config, cfg.paths.backup_dir) ||
      IsWithin(cfg.paths.workspace, cfg.paths.backup_dir)) {
    return Bad(c, bd_at.mark, "paths.backup_dir",
               "must not be or contain paths.ha_config or paths.workspace");
  }
  return {};
}

// encryption; records the secrets file and passphrase key in `c` as soon as they are known.
Status ParseEncryption(Ctx& c, const Item& item, Config& cfg) {
  auto enc = Section::Open(
      c, item, {"secrets_file", "passphrase_key", "scrypt_work_factor", "max_work_factor"});
  if (!enc) return tl::unexpected(enc.error());
  cfg.encryption.secrets_file = cfg.paths.ha_config + "/secrets.yaml";
  if (const Item* i = enc->Get("secrets_file")) {
    SP_RETURN_IF_ERROR(Assign(cfg.encryption.secrets_file, GetPath(c, *i, false)));
  }
  c.secrets_file = cfg.encryption.secrets_file;
  if (const Item* i = enc->Get("passphrase_key")) {
    SP_RETURN_IF_ERROR(Assign(cfg.encryption.passphrase_key, GetString(c, *i, false)));
    if (cfg.encryption.passphrase_key.empty()) return Bad(c, i->mark, i->key, "must not be empty");
  }
  c.passphrase_key = cfg.encryption.passphrase_key;
  if (const Item* i = enc->Get("scrypt_work_factor")) {
    SP_RETURN_IF_ERROR(Assign(cfg.encryption.scrypt_work_factor, GetInt(c, *i, 15, 22)));
  }
  if (const Item* i = enc->Get("max_work_factor")) {
    SP_RETURN_IF_ERROR(Assign(cfg.encryption.max_work_factor, GetInt(c, *i, 15, 30)));
  }
  if (cfg.encryption.max_work_factor < cfg.encryption.scrypt_work_factor) {
    const Item at = enc->Sub("max_work_factor");
    return Bad(c, at.mark, "encryption.max_work_factor",
               "must be >= encryption.scrypt_work_factor (" +
                   std::to_string(cfg.encryption.scrypt_work_factor) + ")");
  }
  return {};
}

// retention: what prune keeps.
Status ParseRetention(const Ctx& c, const Item& item, Config& cfg) {
  auto ret = Section::Open(c, item, {"keep_last", "keep_daily", "max_total_bytes"});
  if (!ret) return tl::unexpected(ret.error());
  if (const Item* i = ret->Get("keep_last"))
    SP_RETURN_IF_ERROR(Assign(cfg.retention.keep_last, GetInt(c, *i, 1, 100000)));
  if (const Item* i = ret->Get("keep_daily"))
    SP_RETURN_IF_ERROR(Assign(cfg.retention.keep_daily, GetInt(c, *i, 0, 100000)));
  if (const Item* i = ret->Get("max_total_bytes")) {
    SP_RETURN_IF_ERROR(Assign(cfg.retention.max_total_bytes, GetSize(c, *i, 0, ~0ull)));
  }
  return {};
}

// rollback: the default conflict policy.
Status ParseRollback(const Ctx& c, const Item& item, Config& cfg) {
  auto rb = Section::Open(c, item, {"on_conflict"});
  if (!rb) return tl::unexpected(rb.error());
  if (const Item* i = rb->Get("on_conflict")) {
    auto v = GetStr(c, *i);
    if (!v) return tl::unexpected(v.error());
    const auto policy = ParseConflictPolicy(v->value);
    if (!policy) {
      return Bad(c, i->mark, i->key, "expected abort, overwrite or merge, got " + v->Show());
    }
    cfg.rollback.on_conflict = *policy;
  }
  return {};
}

// diff: what content diffs mask besides the built-in key names.
Status ParseDiff(const Ctx& c, const Item& item, Config& cfg) {
  auto d = Section::Open(c, item, {"sensitive_keys"});
  if (!d) return tl::unexpected(d.error());
  if (const Item* i = d->Get("sensitive_keys"))
    SP_RETURN_IF_ERROR(Assign(cfg.diff.sensitive_keys, GetStringList(c, *i)));
  return {};
}

// logging: the log level.
Status ParseLogging(const Ctx& c, const Item& item, Config& cfg) {
  auto lg = Section::Open(c, item, {"level"});
  if (!lg) return tl::unexpected(lg.error());
  if (const Item* i = lg->Get("level")) {
    auto v = GetStr(c, *i);
    if (!v) return tl::unexpected(v.error());
    static const char* kLevels[] = {"trace", "debug", "info", "warn", "error", "critical", "off"};
    const std::string level = Lower(v->value);
    if (std::find_if(std::begin(kLevels), std::end(kLevels),
                     [&](const char* l) { return level == l; }) == std::end(kLevels)) {
      return Bad(c, i->mark, i->key,
                 "expected trace, debug, info, warn, error, critical or off, got " + v->Show());
    }
    cfg.logging.level = level;
  }
  return {};
}

// What is never backed up: caches, logs, databases, and the trees and backup directory nested
// in one another.
void AddBuiltinExcludes(Config& cfg) {
  cfg.sources.ha_config.builtin_exclude = {
      "home-assistant_v2.db*", "**/*.log", "**/*.log.*", "backups/**", "tts/**", "deps/**",
      "**/__pycache__/**",     ".cache/**"};
  if (IsWithin(cfg.paths.backup_dir, cfg.paths.ha_config)) {
    cfg.sources.ha_config.builtin_exclude.push_back(
        RelativeTo(cfg.paths.backup_dir, cfg.paths.ha_config) + "/**");
  }
  if (IsWithin(cfg.paths.workspace, cfg.paths.ha_config)) {
    cfg.sources.ha_config.builtin_exclude.push_back(
        RelativeTo(cfg.paths.workspace, cfg.paths.ha_config) + "/**");
  }
  if (IsWithin(cfg.paths.backup_dir, cfg.paths.workspace)) {
    cfg.sources.workspace.builtin_exclude.push_back(
        RelativeTo(cfg.paths.backup_dir, cfg.paths.workspace) + "/**");
  }
}

Result<Config> Parse(const YAML::Node& root, const std::string& path) {
  Ctx c;
  c.file = path;
  c.dir = fs::path(path).parent_path();
  if (c.dir.empty()) c.dir = ".";
  if (c.dir.is_relative()) {
    std::error_code ec;
    fs::path abs = fs::absolute(c.dir, ec);
    if (!ec) c.dir = abs;
  }
  Config cfg;
  c.secrets = &cfg.secret_values;
  {
    std::error_code ec;
    fs::path abs = fs::absolute(path, ec);
    cfg.source_file = ec ? path : Normalize(abs);
  }

  auto top = Section::Open(c, Item{root, root.Mark(), ""},
                           {"paths", "encryption", "sources", "retention", "restart", "rollback",
                            "diff", "mqtt", "service", "logging"});
  if (!top) return tl::unexpected(top.error());

  SP_RETURN_IF_ERROR(ParsePaths(c, top->Sub("paths"), cfg));
  SP_RETURN_IF_ERROR(ParseEncryption(c, top->Sub("encryption"), cfg));
  SP_RETURN_IF_ERROR(ParseSources(c, top->Sub("sources"), cfg, cfg.sources));
  AddBuiltinExcludes(cfg);
  SP_RETURN_IF_ERROR(ParseRetention(c, top->Sub("retention"), cfg));
  if (const Item* i = top->Get("restart")) SP_RETURN_IF_ERROR(ParseRestart(c, *i, cfg.restart));
  SP_RETURN_IF_ERROR(ParseRollback(c, top->Sub("rollback"), cfg));
  SP_RETURN_IF_ERROR(ParseDiff(c, top->Sub("diff"), cfg));
  if (const Item* i = top->Get("mqtt")) {
    cfg.mqtt.emplace();
    SP_RETURN_IF_ERROR(ParseMqtt(c, *i, *cfg.mqtt));
  }
  cfg.service.state_file = cfg.paths.backup_dir + "/.service-state.json";
  SP_RETURN_IF_ERROR(ParseService(c, top->Sub("service"), cfg.service));
  SP_RETURN_IF_ERROR(ParseLogging(c, top->Sub("logging"), cfg));
  return cfg;
}

nlohmann::json TreeJson(const TreeSource& t) {
  return {{"include", t.include},
          {"exclude", t.exclude},
          {"builtin_exclude", t.builtin_exclude},
          {"max_file_size", t.max_file_size}};
}

// The `mqtt` part of ToJson; the password is never shown.
nlohmann::json MqttJson(const MqttConfig& m) {
  using nlohmann::json;
  json mj = {{"url", m.url},
             {"client_id", m.client_id},
             {"protocol", m.protocol == MqttProtocol::kV5     ? "5"
                          : m.protocol == MqttProtocol::kV311 ? "3.1.1"
                                                              : "auto"},
             {"keepalive", FormatDuration(m.keepalive)},
             {"tls",
              {{"enabled", MqttUsesTls(m)},
               {"ca_file", m.tls.ca_file},
               {"cert_file", m.tls.cert_file},
               {"key_file", m.tls.key_file},
               {"verify", m.tls.verify}}},
             {"base_topic", m.base_topic},
             {"discovery_prefix", m.discovery_prefix},
             {"node_id", m.node_id},
             {"mirror",
              {{"filters", m.mirror.filters},
               {"exclude", m.mirror.exclude},
               {"max_topics", m.mirror.max_topics},
               {"max_payload_bytes", m.mirror.max_payload_bytes}}},
             {"collect_wait", FormatDuration(m.collect_wait)},
             {"zigbee2mqtt_backup", m.zigbee2mqtt_backup},
             {"zigbee2mqtt_base_topic", m.zigbee2mqtt_base_topic},
             {"zigbee2mqtt_backup_timeout", FormatDuration(m.zigbee2mqtt_backup_timeout)}};
  if (!m.username.empty()) mj["username"] = m.username;
  if (m.password) mj["password"] = "<set>";
  return mj;
}

// The `service` part of ToJson.
nlohmann::json ServiceJson(const ServiceConfig& svc) {
  using nlohmann::json;
  json j = {{"confirm_timeout", FormatDuration(svc.confirm_timeout)},
            {"health_timeout", FormatDuration(svc.health_timeout)},
            {"update_timeout", FormatDuration(svc.update_timeout)},
            {"resolve_timeout", FormatDuration(svc.resolve_timeout)},
            {"auto_rollback", svc.auto_rollback},
            {"state_file", svc.state_file},
            {"schedule", {{"daily_at", nullptr}}}};
  if (svc.schedule.daily_at) {
    const auto mins = svc.schedule.daily_at->count();
    char buf[8];
    std::snprintf(buf, sizeof buf, "%02d:%02d", static_cast<int>(mins / 60),
                  static_cast<int>(mins % 60));
    j["schedule"]["daily_at"] = buf;
  } else {
    j["schedule"]["daily_at"] = "off";
  }
  return j;
}

}  // namespace

const char* SourceRootName(SourceRoot root) {
  return root == SourceRoot::kHaConfig ? "ha_config" : "workspace";
}

bool MqttUsesTls(const MqttConfig& mqtt) {
  const auto url = mqtt_names::ParseBrokerUrl(mqtt.url);
  return url && url->tls;
}

std::string FormatDuration(std::chrono::milliseconds d) {
  const std::int64_t ms = d.count();
  if (ms == 0) return "0s";
  if (ms % 3'600'000 == 0) return std::to_string(ms / 3'600'000) + "h";
  if (ms % 60'000 == 0) return std::to_string(ms / 60'000) + "m";
  if (ms % 1000 == 0) return std::to_string(ms / 1000) + "s";
  return std::to_string(ms) + "ms";
}

Result<Config> ParseConfig(const std::string& yaml_text, const std::string& path) {
  auto root = LoadDocument(yaml_text, path);
  if (!root) return tl::unexpected(std::move(root.error()));
  try {
    return Parse(*root, path);
  } catch (const std::exception& e) {
    // yaml-cpp throws on malformed trees we did not anticipate; never let it escape.
    return Fail(ErrorCode::kBadInput, path + ":1:1: invalid configuration: " + e.what());
  }
}

Result<Config> LoadConfig(const std::string& path) {
  // Never waits on a FIFO, never reads more than the cap (ReadFileBounded).
  auto text = ReadFileBounded(path, kMaxConfigFileBytes);
  if (!text) {
    const std::string why =
        text.error().code == ErrorCode::kNotFound ? std::strerror(ENOENT) : text.error().message;
    return Fail(ErrorCode::kBadInput, path + ": cannot read configuration file: " + why);
  }
  return ParseConfig(*text, path);
}

nlohmann::json ToJson(const Config& config) {
  using nlohmann::json;
  json j;
  j["source_file"] = config.source_file;
  j["paths"] = {{"ha_config", config.paths.ha_config},
                {"workspace", config.paths.workspace},
                {"backup_dir", config.paths.backup_dir}};
  j["encryption"] = {{"secrets_file", config.encryption.secrets_file},
                     {"passphrase_key", config.encryption.passphrase_key},
                     {"scrypt_work_factor", config.encryption.scrypt_work_factor},
                     {"max_work_factor", config.encryption.max_work_factor}};
  json logs = json::array();
  for (const LogSource& l : config.sources.logs)
    logs.push_back({{"path", l.path}, {"lines", l.lines}});
  j["sources"] = {{"ha_config", TreeJson(config.sources.ha_config)},
                  {"workspace", TreeJson(config.sources.workspace)},
                  {"environment",
                   {{"variables", config.sources.environment.variables},
                    {"python_site_packages", config.sources.environment.python_site_packages}}},
                  {"logs", logs}};
  j["retention"] = {{"keep_last", config.retention.keep_last},
                    {"keep_daily", config.retention.keep_daily},
                    {"max_total_bytes", config.retention.max_total_bytes}};
  json restart = json::array();
  for (const RestartConfig& r : config.restart) {
    json roots = json::array();
    for (SourceRoot root : r.when_changed) roots.push_back(SourceRootName(root));
    restart.push_back({{"name", r.name},
                       {"command", r.command},
                       {"timeout", FormatDuration(r.timeout)},
                       {"when_changed", roots}});
  }
  j["restart"] = restart;
  j["rollback"] = {{"on_conflict", ConflictPolicyName(config.rollback.on_conflict)}};
  j["diff"] = {{"sensitive_keys", config.diff.sensitive_keys}};
  j["mqtt"] = config.mqtt ? MqttJson(*config.mqtt) : nlohmann::json(nullptr);
  j["service"] = ServiceJson(config.service);
  j["logging"] = {{"level", config.logging.level}};
  return RedactJson(config, j);
}

std::string Redact(const Config& config, std::string_view text) {
  std::vector<const SecretValue*> secrets;
  for (const SecretValue& s : config.secret_values) {
    if (!s.value.empty()) secrets.push_back(&s);
  }
  // Longest first, so a secret that contains another is masked whole.
  std::stable_sort(secrets.begin(), secrets.end(),
                   [](const auto* a, const auto* b) { return a->value.size() > b->value.size(); });
  std::string out(text);
  for (const SecretValue* s : secrets) {
    const std::string mask = "(from !secret " + s->name + ")";
    for (std::size_t at = out.find(s->value); at != std::string::npos;
         at = out.find(s->value, at + mask.size())) {
      out.replace(at, s->value.size(), mask);
    }
  }
  return out;
}

nlohmann::json RedactJson(const Config& config, const nlohmann::json& j) {
  using nlohmann::json;
  if (config.secret_values.empty()) return j;
  if (j.is_string()) return Redact(config, j.get_ref<const std::string&>());
  if (j.is_array()) {
    json out = json::array();
    for (const auto& e : j) out.push_back(RedactJson(config, e));
    return out;
  }
  if (j.is_object()) {
    json out = json::object();
    for (const auto& [k, v] : j.items()) out[Redact(config, k)] = RedactJson(config, v);
    return out;
  }
  return j;
}

}  // namespace safepoint::config
