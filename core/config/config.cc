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
#include "core/base/utf8.h"

namespace safepoint::config {
namespace {

namespace fs = std::filesystem;
using std::chrono::milliseconds;

// The configuration file: a few KiB in practice.
constexpr std::size_t kMaxConfigFileBytes = 1 << 20;
constexpr std::int64_t kMaxDurationMs = 366LL * 24 * 3600 * 1000;

// ---------------------------------------------------------------------------------------------
// YAML helpers.

struct Ctx {
  std::string file;            // for messages
  fs::path dir;                // relative paths resolve against it
  std::string secrets_file;    // set once encryption.secrets_file is known
  std::string passphrase_key;  // likewise encryption.passphrase_key
  // Where values that came from `!secret` are recorded (Config::secret_values).
  std::vector<SecretValue>* secrets = nullptr;
};

std::string Where(const Ctx& c, const YAML::Mark& m) {
  if (m.is_null()) return c.file + ":1:1";
  return c.file + ":" + std::to_string(m.line + 1) + ":" + std::to_string(m.column + 1);
}

tl::unexpected<Error> Bad(const Ctx& c, const YAML::Mark& m, const std::string& key,
                          const std::string& what) {
  return Fail(ErrorCode::kBadInput, Where(c, m) + ": key '" + key + "': " + what);
}

// A value with its position: the value node's mark, or the key's mark for an empty value.
struct Item {
  YAML::Node node;
  YAML::Mark mark;
  std::string key;  // full dotted key path
};

const char* TypeName(const YAML::Node& n) {
  switch (n.Type()) {
    case YAML::NodeType::Null:
      return "nothing";
    case YAML::NodeType::Scalar:
      return "a scalar";
    case YAML::NodeType::Sequence:
      return "a list";
    case YAML::NodeType::Map:
      return "a map";
    default:
      return "an undefined value";
  }
}

// A YAML mapping checked against its allowed keys.
class Section {
 public:
  [[nodiscard]] static Result<Section> Open(const Ctx& c, const Item& item,
                                            std::initializer_list<std::string_view> allowed) {
    Section s;
    s.key_ = item.key;
    s.mark_ = item.mark;
    if (!item.node || item.node.IsNull()) return s;
    if (!item.node.IsMap()) {
      return Bad(c, item.mark, item.key.empty() ? "<top level>" : item.key,
                 std::string("expected a map, got ") + TypeName(item.node));
    }
    for (const auto& kv : item.node) {
      // Copies: yaml-cpp's iterator yields a temporary pair; a reference into it would dangle.
      const YAML::Node k = kv.first;
      if (!k.IsScalar()) return Bad(c, k.Mark(), item.key, "keys must be strings");
      const std::string name = k.Scalar();
      const std::string full = s.Key(name);
      if (std::find(allowed.begin(), allowed.end(), name) == allowed.end()) {
        std::string known;
        for (std::string_view a : allowed) {
          known += known.empty() ? "" : ", ";
          known += a;
        }
        return Bad(c, k.Mark(), full, "unknown key (known here: " + known + ")");
      }
      if (s.items_.count(name) != 0) return Bad(c, k.Mark(), full, "duplicate key");
      const YAML::Node v = kv.second;
      s.items_[name] = Item{v, v.IsNull() ? k.Mark() : v.Mark(), full};
    }
    return s;
  }

  [[nodiscard]] const Item* Get(const std::string& name) const {
    auto it = items_.find(name);
    return it == items_.end() ? nullptr : &it->second;
  }
  [[nodiscard]] std::string Key(const std::string& name) const {
    return key_.empty() ? name : key_ + "." + name;
  }
  // An Item for a missing sub-section, positioned at this section.
  [[nodiscard]] Item Sub(const std::string& name) const {
    if (const Item* i = Get(name)) return *i;
    return Item{YAML::Node(), mark_, Key(name)};
  }
  [[nodiscard]] const YAML::Mark& mark() const { return mark_; }

 private:
  std::string key_;
  YAML::Mark mark_ = YAML::Mark::null_mark();
  std::map<std::string, Item> items_;
};

struct Str {
  std::string value;
  bool secret = false;
  // How to mention the value in an error message.
  [[nodiscard]] std::string Show() const {
    return secret ? "(value from !secret)" : "'" + value + "'";
  }
};

Result<Str> GetStr(const Ctx& c, const Item& item, bool allow_secret = true) {
  const YAML::Node& n = item.node;
  if (n.IsNull()) return Bad(c, item.mark, item.key, "missing value");
  if (!n.IsScalar()) {
    return Bad(c, item.mark, item.key, std::string("expected a scalar, got ") + TypeName(n));
  }
  const std::string& tag = n.Tag();
  if (tag == "!secret") {
    if (!allow_secret) return Bad(c, item.mark, item.key, "!secret is not allowed for this key");
    const std::string name = n.Scalar();
    if (name.empty()) return Bad(c, item.mark, item.key, "!secret needs a name");
    if (name == c.passphrase_key) {
      // It would be sent to the broker, or shown wherever this setting is used.
      return Bad(c, item.mark, item.key,
                 "!secret " + name +
                     " is the backup passphrase; it only encrypts safety points "
                     "and may not be used for another setting");
    }
    auto secret = ReadSecretsFileValue(c.secrets_file, name);
    if (!secret) {
      return Bad(c, item.mark, item.key, "secret '" + name + "': " + secret.error().message);
    }
    std::string value(secret->view());
    if (c.secrets != nullptr) c.secrets->push_back(SecretValue{item.key, name, value});
    return Str{std::move(value), true};
  }
  if (!tag.empty() && tag != "?" && tag != "!" && tag != "tag:yaml.org,2002:str" &&
      tag != "tag:yaml.org,2002:int" && tag != "tag:yaml.org,2002:bool") {
    return Bad(c, item.mark, item.key, "unsupported tag '" + tag + "'");
  }
  if (!IsValidUtf8(n.Scalar())) return Bad(c, item.mark, item.key, "not valid UTF-8");
  return Str{n.Scalar(), false};
}

Result<std::string> GetString(const Ctx& c, const Item& item, bool allow_secret = true) {
  auto s = GetStr(c, item, allow_secret);
  if (!s) return tl::unexpected(s.error());
  return std::move(s->value);
}

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& ch : out) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  return out;
}

bool ParseUint(std::string_view s, std::uint64_t* out) {
  if (s.empty()) return false;
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), *out);
  return ec == std::errc() && ptr == s.data() + s.size();
}

Result<std::int64_t> GetInt(const Ctx& c, const Item& item, std::int64_t lo, std::int64_t hi) {
  auto s = GetStr(c, item);
  if (!s) return tl::unexpected(s.error());
  std::int64_t v = 0;
  const std::string& t = s->value;
  auto [ptr, ec] = std::from_chars(t.data(), t.data() + t.size(), v);
  if (t.empty() || ec != std::errc() || ptr != t.data() + t.size()) {
    return Bad(c, item.mark, item.key, "expected an integer, got " + s->Show());
  }
  if (v < lo || v > hi) {
    return Bad(c, item.mark, item.key,
               "out of range: " + (s->secret ? s->Show() : std::to_string(v)) + " (allowed " +
                   std::to_string(lo) + ".." + std::to_string(hi) + ")");
  }
  return v;
}

Result<bool> GetBool(const Ctx& c, const Item& item) {
  auto s = GetStr(c, item);
  if (!s) return tl::unexpected(s.error());
  const std::string v = Lower(s->value);
  if (v == "true" || v == "yes" || v == "on") return true;
  if (v == "false" || v == "no" || v == "off") return false;
  return Bad(c, item.mark, item.key, "expected true or false, got " + s->Show());
}

// "500ms", "120s", "2m", "1h30m", "1d" or an integer number of seconds.
std::optional<milliseconds> ParseDuration(std::string_view s) {
  std::uint64_t secs = 0;
  if (ParseUint(s, &secs)) {
    if (secs > static_cast<std::uint64_t>(kMaxDurationMs / 1000)) return std::nullopt;
    return milliseconds(static_cast<std::int64_t>(secs) * 1000);
  }
  if (s.empty()) return std::nullopt;
  std::int64_t total = 0;
  std::size_t i = 0;
  while (i < s.size()) {
    std::size_t j = i;
    while (j < s.size() && s[j] >= '0' && s[j] <= '9') ++j;
    std::uint64_t num = 0;
    if (!ParseUint(s.substr(i, j - i), &num) || num > static_cast<std::uint64_t>(kMaxDurationMs)) {
      return std::nullopt;
    }
    while (j < s.size() && s[j] == ' ') ++j;
    std::size_t u = j;
    while (u < s.size() && std::isalpha(static_cast<unsigned char>(s[u]))) ++u;
    const std::string unit = Lower(s.substr(j, u - j));
    std::int64_t scale = 0;
    if (unit == "ms")
      scale = 1;
    else if (unit == "s")
      scale = 1000;
    else if (unit == "m")
      scale = 60'000;
    else if (unit == "h")
      scale = 3'600'000;
    else if (unit == "d")
      scale = 86'400'000;
    else
      return std::nullopt;
    total += static_cast<std::int64_t>(num) * scale;
    if (total > kMaxDurationMs) return std::nullopt;
    i = u;
    while (i < s.size() && s[i] == ' ') ++i;
  }
  return milliseconds(total);
}

Result<milliseconds> GetDuration(const Ctx& c, const Item& item, milliseconds lo, milliseconds hi) {
  auto s = GetStr(c, item);
  if (!s) return tl::unexpected(s.error());
  auto d = ParseDuration(s->value);
  if (!d) {
    return Bad(c, item.mark, item.key,
               "expected a duration like \"500ms\", \"120s\", \"2m\", \"1h\" or integer seconds, "
               "got " +
                   s->Show());
  }
  if (*d < lo || *d > hi) {
    return Bad(c, item.mark, item.key,
               "out of range: " + FormatDuration(*d) + " (allowed " + FormatDuration(lo) + ".." +
                   FormatDuration(hi) + ")");
  }
  return *d;
}

// Integer bytes or "<n>[ ]<unit>" (B, KB, MB, GB, TB, KiB, MiB, GiB, TiB; case-insensitive).
std::optional<std::uint64_t> ParseSize(std::string_view s) {
  std::uint64_t v = 0;
  if (ParseUint(s, &v)) return v;
  std::size_t j = 0;
  while (j < s.size() && s[j] >= '0' && s[j] <= '9') ++j;
  if (!ParseUint(s.substr(0, j), &v)) return std::nullopt;
  while (j < s.size() && s[j] == ' ') ++j;
  const std::string unit = Lower(s.substr(j));
  static const std::pair<const char*, std::uint64_t> kUnits[] = {
      {"b", 1},
      {"kb", 1000ull},
      {"mb", 1000ull * 1000},
      {"gb", 1000ull * 1000 * 1000},
      {"tb", 1000ull * 1000 * 1000 * 1000},
      {"kib", 1ull << 10},
      {"mib", 1ull << 20},
      {"gib", 1ull << 30},
      {"tib", 1ull << 40},
  };
  for (const auto& [name, scale] : kUnits) {
    if (unit == name) {
      std::uint64_t out = 0;
      if (__builtin_mul_overflow(v, scale, &out)) return std::nullopt;
      return out;
    }
  }
  return std::nullopt;
}

Result<std::uint64_t> GetSize(const Ctx& c, const Item& item, std::uint64_t lo, std::uint64_t hi) {
  auto s = GetStr(c, item);
  if (!s) return tl::unexpected(s.error());
  auto v = ParseSize(s->value);
  if (!v) {
    return Bad(c, item.mark, item.key,
               "expected a size like 52428800, \"50MiB\" or \"10 MB\", got " + s->Show());
  }
  if (*v < lo || *v > hi) {
    return Bad(c, item.mark, item.key,
               "out of range: " + std::to_string(*v) + " bytes (allowed " + std::to_string(lo) +
                   ".." + std::to_string(hi) + ")");
  }
  return *v;
}

// A list of scalars; an empty value is an empty list. Each element is an Item "key[i]".
Result<std::vector<Item>> GetList(const Ctx& c, const Item& item) {
  std::vector<Item> out;
  if (item.node.IsNull()) return out;
  if (!item.node.IsSequence()) {
    return Bad(c, item.mark, item.key, std::string("expected a list, got ") + TypeName(item.node));
  }
  for (std::size_t i = 0; i < item.node.size(); ++i) {
    const YAML::Node e = item.node[i];
    out.push_back(
        Item{e, e.IsNull() ? item.mark : e.Mark(), item.key + "[" + std::to_string(i) + "]"});
  }
  return out;
}

Result<std::vector<std::string>> GetStringList(const Ctx& c, const Item& item,
                                               bool allow_empty_strings = false) {
  auto items = GetList(c, item);
  if (!items) return tl::unexpected(items.error());
  std::vector<std::string> out;
  for (const Item& e : *items) {
    auto s = GetString(c, e);
    if (!s) return tl::unexpected(s.error());
    if (s->empty() && !allow_empty_strings) return Bad(c, e.mark, e.key, "must not be empty");
    out.push_back(std::move(*s));
  }
  return out;
}

std::string Normalize(const fs::path& p) {
  std::string s = p.lexically_normal().string();
  while (s.size() > 1 && s.back() == '/') s.pop_back();
  return s;
}

std::string ResolvePath(const Ctx& c, const std::string& p) {
  fs::path path(p);
  if (path.is_absolute()) return Normalize(path);
  return Normalize(c.dir / path);
}

Result<std::string> GetPath(const Ctx& c, const Item& item, bool allow_secret = true) {
  auto s = GetString(c, item, allow_secret);
  if (!s) return tl::unexpected(s.error());
  if (s->empty()) return Bad(c, item.mark, item.key, "empty path");
  if (s->find('\0') != std::string::npos) return Bad(c, item.mark, item.key, "NUL in path");
  return ResolvePath(c, *s);
}

// `child` equals `parent` or lies below it (lexically; both normalized and absolute).
bool IsWithin(const std::string& child, const std::string& parent) {
  if (child == parent) return true;
  if (parent == "/") return true;
  return child.size() > parent.size() && child.compare(0, parent.size(), parent) == 0 &&
         child[parent.size()] == '/';
}

std::string RelativeTo(const std::string& child, const std::string& parent) {
  return fs::path(child).lexically_relative(parent).string();
}

// Assigns the value of a Result to `out`, or returns its error.
template <typename T, typename U>
Status Assign(T& out, Result<U>&& r) {
  if (!r) return tl::unexpected(std::move(r.error()));
  out = static_cast<T>(std::move(*r));
  return {};
}

Result<std::vector<std::string>> GetGlobList(const Ctx& c, const Item& item) {
  auto items = GetList(c, item);
  if (!items) return tl::unexpected(items.error());
  std::vector<std::string> out;
  for (const Item& e : *items) {
    auto s = GetStr(c, e);
    if (!s) return tl::unexpected(s.error());
    const std::string problem = sources::GlobPatternProblem(s->value);
    if (!problem.empty()) return Bad(c, e.mark, e.key, "bad glob " + s->Show() + ": " + problem);
    out.push_back(std::move(s->value));
  }
  return out;
}

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

// MQTT topic filter validity. `extended` allows '#' as a middle level (mirror excludes).
std::string TopicFilterProblem(std::string_view f, bool extended) {
  if (f.empty()) return "empty topic filter";
  if (f.size() > 65535) return "topic filter too long";
  if (f.find('\0') != std::string_view::npos) return "NUL in topic filter";
  std::size_t start = 0;
  while (true) {
    const std::size_t slash = f.find('/', start);
    const std::string_view level =
        f.substr(start, slash == std::string_view::npos ? std::string_view::npos : slash - start);
    const bool last = slash == std::string_view::npos;
    if (level.find_first_of("+#") != std::string_view::npos && level.size() != 1) {
      return "'+' and '#' must be a whole level";
    }
    if (level == "#" && !last && !extended) return "'#' must be the last level";
    if (last) break;
    start = slash + 1;
  }
  return "";
}

std::string TopicProblem(std::string_view t) {
  if (t.empty()) return "must not be empty";
  if (t.find_first_of("+#") != std::string_view::npos) return "must not contain '+' or '#'";
  if (t.front() == '/' || t.back() == '/') return "must not start or end with '/'";
  if (t.find("//") != std::string_view::npos) return "must not contain empty levels";
  if (t.find('\0') != std::string_view::npos) return "must not contain NUL";
  return "";
}

// Checks "scheme://host[:port][/path]" with a scheme Paho understands.
std::string UrlProblem(const std::string& url) {
  const std::size_t sep = url.find("://");
  if (sep == std::string::npos) return "expected scheme://host[:port]";
  const std::string scheme = Lower(url.substr(0, sep));
  static const char* kSchemes[] = {"mqtt", "tcp", "mqtts", "ssl", "ws", "wss"};
  if (std::find_if(std::begin(kSchemes), std::end(kSchemes),
                   [&](const char* s) { return scheme == s; }) == std::end(kSchemes)) {
    return "unsupported scheme '" + scheme + "' (use mqtt, tcp, mqtts, ssl, ws or wss)";
  }
  std::string rest = url.substr(sep + 3);
  const std::size_t slash = rest.find('/');
  if (slash != std::string::npos) {
    if (scheme != "ws" && scheme != "wss") return "a path is only allowed for ws/wss";
    rest = rest.substr(0, slash);
  }
  std::string host = rest;
  std::string port;
  if (!rest.empty() && rest[0] == '[') {
    const std::size_t close = rest.find(']');
    if (close == std::string::npos) return "unterminated IPv6 address";
    host = rest.substr(0, close + 1);
    if (close + 1 < rest.size()) {
      if (rest[close + 1] != ':') return "unexpected text after the IPv6 address";
      port = rest.substr(close + 2);
      if (port.empty()) return "empty port";
    }
  } else if (const std::size_t colon = rest.rfind(':'); colon != std::string::npos) {
    host = rest.substr(0, colon);
    port = rest.substr(colon + 1);
    if (port.empty()) return "empty port";
  }
  if (host.empty() || host == "[]") return "missing host";
  if (host.find('@') != std::string::npos) {
    return "credentials in the url are not supported; use mqtt.username / mqtt.password";
  }
  if (!port.empty()) {
    std::uint64_t p = 0;
    if (!ParseUint(port, &p) || p == 0 || p > 65535) return "bad port";
  }
  return "";
}

Result<std::string> GetReadableFile(const Ctx& c, const Item& item) {
  auto p = GetPath(c, item);
  if (!p) return tl::unexpected(p.error());
  if (::access(p->c_str(), R_OK) != 0) {
    const int err = errno;
    const std::string shown = item.node.Tag() == "!secret" ? "(value from !secret)" : *p;
    return Bad(c, item.mark, item.key, "cannot read " + shown + ": " + std::strerror(err));
  }
  return p;
}

Status ParseMqtt(const Ctx& c, const Item& item, MqttConfig& m) {
  auto s =
      Section::Open(c, item,
                    {"url", "client_id", "username", "password", "protocol", "keepalive", "tls",
                     "base_topic", "discovery_prefix", "node_id", "mirror", "collect_wait",
                     "zigbee2mqtt_backup", "zigbee2mqtt_base_topic", "zigbee2mqtt_backup_timeout"});
  if (!s) return tl::unexpected(s.error());
  if (const Item* i = s->Get("url")) {
    auto u = GetStr(c, *i);
    if (!u) return tl::unexpected(u.error());
    const std::string problem = UrlProblem(u->value);
    if (!problem.empty()) return Bad(c, i->mark, i->key, "bad url " + u->Show() + ": " + problem);
    m.url = u->value;
  }
  if (const Item* i = s->Get("node_id")) {
    SP_RETURN_IF_ERROR(Assign(m.node_id, GetString(c, *i)));
    const bool ok =
        !m.node_id.empty() && std::all_of(m.node_id.begin(), m.node_id.end(), [](char ch) {
          return std::isalnum(static_cast<unsigned char>(ch)) || ch == '_' || ch == '-';
        });
    if (!ok) return Bad(c, i->mark, i->key, "must match [a-zA-Z0-9_-]+");
  }
  m.client_id = "safepoint-" + m.node_id;
  if (const Item* i = s->Get("client_id")) {
    SP_RETURN_IF_ERROR(Assign(m.client_id, GetString(c, *i)));
    if (m.client_id.empty() || m.client_id.size() > 65535) {
      return Bad(c, i->mark, i->key, "must be 1..65535 characters");
    }
  }
  if (const Item* i = s->Get("username")) SP_RETURN_IF_ERROR(Assign(m.username, GetString(c, *i)));
  if (const Item* i = s->Get("password")) {
    auto p = GetString(c, *i);
    if (!p) return tl::unexpected(p.error());
    m.password = std::move(*p);
  }
  if (const Item* i = s->Get("protocol")) {
    auto p = GetStr(c, *i);
    if (!p) return tl::unexpected(p.error());
    if (p->value == "auto") {
      m.protocol = MqttProtocol::kAuto;
    } else if (p->value == "3.1.1" || p->value == "311") {
      m.protocol = MqttProtocol::kV311;
    } else if (p->value == "5" || p->value == "5.0") {
      m.protocol = MqttProtocol::kV5;
    } else {
      return Bad(c, i->mark, i->key, "expected auto, \"3.1.1\" or 5, got " + p->Show());
    }
  }
  if (const Item* i = s->Get("keepalive")) {
    SP_RETURN_IF_ERROR(Assign(
        m.keepalive, GetDuration(c, *i, std::chrono::seconds(1), std::chrono::seconds(65535))));
  }
  auto tls = Section::Open(c, s->Sub("tls"), {"ca_file", "cert_file", "key_file", "verify"});
  if (!tls) return tl::unexpected(tls.error());
  if (const Item* i = tls->Get("ca_file"))
    SP_RETURN_IF_ERROR(Assign(m.tls.ca_file, GetReadableFile(c, *i)));
  if (const Item* i = tls->Get("cert_file"))
    SP_RETURN_IF_ERROR(Assign(m.tls.cert_file, GetReadableFile(c, *i)));
  if (const Item* i = tls->Get("key_file"))
    SP_RETURN_IF_ERROR(Assign(m.tls.key_file, GetReadableFile(c, *i)));
  if (const Item* i = tls->Get("verify")) SP_RETURN_IF_ERROR(Assign(m.tls.verify, GetBool(c, *i)));
  if (m.tls.cert_file.empty() != m.tls.key_file.empty()) {
    const Item sub = s->Sub("tls");
    return Bad(c, sub.mark, sub.key, "cert_file and key_file must be set together");
  }
  if (const Item* i = s->Get("tls"); i != nullptr && !MqttUsesTls(m)) {
    return Bad(c, i->mark, i->key, "tls is set but mqtt.url does not use mqtts, ssl or wss");
  }
  for (const auto& [name, field] :
       {std::pair<const char*, std::string*>{"base_topic", &m.base_topic},
        {"discovery_prefix", &m.discovery_prefix},
        {"zigbee2mqtt_base_topic", &m.zigbee2mqtt_base_topic}}) {
    if (const Item* i = s->Get(name)) {
      auto t = GetString(c, *i);
      if (!t) return tl::unexpected(t.error());
      const std::string problem = TopicProblem(*t);
      if (!problem.empty()) return Bad(c, i->mark, i->key, problem);
      *field = *t;
    }
  }
  auto mirror =
      Section::Open(c, s->Sub("mirror"), {"filters", "exclude", "max_topics", "max_payload_bytes"});
  if (!mirror) return tl::unexpected(mirror.error());
  for (const char* name : {"filters", "exclude"}) {
    const Item* i = mirror->Get(name);
    if (i == nullptr) continue;
    const bool extended = std::string_view(name) == "exclude";
    auto items = GetList(c, *i);
    if (!items) return tl::unexpected(items.error());
    std::vector<std::string> list;
    for (const Item& e : *items) {
      auto f = GetStr(c, e);
      if (!f) return tl::unexpected(f.error());
      const std::string problem = TopicFilterProblem(f->value, extended);
      if (!problem.empty()) return Bad(c, e.mark, e.key, f->Show() + ": " + problem);
      list.push_back(std::move(f->value));
    }
    (extended ? m.mirror.exclude : m.mirror.filters) = std::move(list);
  }
  if (const Item* i = mirror->Get("max_topics")) {
    SP_RETURN_IF_ERROR(Assign(m.mirror.max_topics, GetInt(c, *i, 1, 10'000'000)));
  }
  if (const Item* i = mirror->Get("max_payload_bytes")) {
    SP_RETURN_IF_ERROR(Assign(m.mirror.max_payload_bytes, GetSize(c, *i, 1, 16ull << 20)));
  }
  if (const Item* i = s->Get("collect_wait")) {
    SP_RETURN_IF_ERROR(
        Assign(m.collect_wait, GetDuration(c, *i, milliseconds(0), std::chrono::hours(1))));
  }
  if (const Item* i = s->Get("zigbee2mqtt_backup")) {
    SP_RETURN_IF_ERROR(Assign(m.zigbee2mqtt_backup, GetBool(c, *i)));
  }
  if (const Item* i = s->Get("zigbee2mqtt_backup_timeout")) {
    SP_RETURN_IF_ERROR(
        Assign(m.zigbee2mqtt_backup_timeout,
               GetDuration(c, *i, std::chrono::seconds(1), std::chrono::minutes(10))));
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
                            "mqtt", "service", "logging"});
  if (!top) return tl::unexpected(top.error());

  // paths
  auto paths = Section::Open(c, top->Sub("paths"), {"ha_config", "workspace", "backup_dir"});
  if (!paths) return tl::unexpected(paths.error());
  cfg.paths.ha_config = "/config";
  const Item* ha_item = paths->Get("ha_config");
  if (ha_item != nullptr)
    SP_RETURN_IF_ERROR(Assign(cfg.paths.ha_config, GetPath(c, *ha_item, false)));
  cfg.paths.workspace = cfg.paths.ha_config + "/.openclaw/workspace";
  const Item* ws_item = paths->Get("workspace");
  if (ws_item != nullptr)
    SP_RETURN_IF_ERROR(Assign(cfg.paths.workspace, GetPath(c, *ws_item, false)));
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

  // encryption
  auto enc =
      Section::Open(c, top->Sub("encryption"),
                    {"secrets_file", "passphrase_key", "scrypt_work_factor", "max_work_factor"});
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

  // sources
  SP_RETURN_IF_ERROR(ParseSources(c, top->Sub("sources"), cfg, cfg.sources));
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

  // retention
  auto ret =
      Section::Open(c, top->Sub("retention"), {"keep_last", "keep_daily", "max_total_bytes"});
  if (!ret) return tl::unexpected(ret.error());
  if (const Item* i = ret->Get("keep_last"))
    SP_RETURN_IF_ERROR(Assign(cfg.retention.keep_last, GetInt(c, *i, 1, 100000)));
  if (const Item* i = ret->Get("keep_daily"))
    SP_RETURN_IF_ERROR(Assign(cfg.retention.keep_daily, GetInt(c, *i, 0, 100000)));
  if (const Item* i = ret->Get("max_total_bytes")) {
    SP_RETURN_IF_ERROR(Assign(cfg.retention.max_total_bytes, GetSize(c, *i, 0, ~0ull)));
  }

  // restart
  if (const Item* i = top->Get("restart")) SP_RETURN_IF_ERROR(ParseRestart(c, *i, cfg.restart));

  // rollback
  auto rb = Section::Open(c, top->Sub("rollback"), {"on_conflict"});
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

  // mqtt
  if (const Item* i = top->Get("mqtt")) {
    cfg.mqtt.emplace();
    SP_RETURN_IF_ERROR(ParseMqtt(c, *i, *cfg.mqtt));
  }

  // service
  cfg.service.state_file = cfg.paths.backup_dir + "/.service-state.json";
  SP_RETURN_IF_ERROR(ParseService(c, top->Sub("service"), cfg.service));

  // logging
  auto lg = Section::Open(c, top->Sub("logging"), {"level"});
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
  return cfg;
}

nlohmann::json TreeJson(const TreeSource& t) {
  return {{"include", t.include},
          {"exclude", t.exclude},
          {"builtin_exclude", t.builtin_exclude},
          {"max_file_size", t.max_file_size}};
}

}  // namespace

const char* SourceRootName(SourceRoot root) {
  return root == SourceRoot::kHaConfig ? "ha_config" : "workspace";
}

bool MqttUsesTls(const MqttConfig& mqtt) {
  const std::size_t sep = mqtt.url.find("://");
  const std::string scheme = Lower(mqtt.url.substr(0, sep == std::string::npos ? 0 : sep));
  return scheme == "mqtts" || scheme == "ssl" || scheme == "wss";
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
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::ParserException& e) {
    const std::string where = e.mark.is_null() ? path + ":1:1"
                                               : path + ":" + std::to_string(e.mark.line + 1) +
                                                     ":" + std::to_string(e.mark.column + 1);
    return Fail(ErrorCode::kBadInput, where + ": YAML syntax error: " + e.msg);
  } catch (const std::exception& e) {
    return Fail(ErrorCode::kBadInput, path + ":1:1: cannot parse YAML: " + e.what());
  }
  try {
    return Parse(root, path);
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
  if (config.mqtt) {
    const MqttConfig& m = *config.mqtt;
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
    j["mqtt"] = mj;
  } else {
    j["mqtt"] = nullptr;
  }
  j["service"] = {{"confirm_timeout", FormatDuration(config.service.confirm_timeout)},
                  {"health_timeout", FormatDuration(config.service.health_timeout)},
                  {"update_timeout", FormatDuration(config.service.update_timeout)},
                  {"resolve_timeout", FormatDuration(config.service.resolve_timeout)},
                  {"auto_rollback", config.service.auto_rollback},
                  {"state_file", config.service.state_file},
                  {"schedule", {{"daily_at", nullptr}}}};
  if (config.service.schedule.daily_at) {
    const auto mins = config.service.schedule.daily_at->count();
    char buf[8];
    std::snprintf(buf, sizeof buf, "%02d:%02d", static_cast<int>(mins / 60),
                  static_cast<int>(mins % 60));
    j["service"]["schedule"]["daily_at"] = buf;
  } else {
    j["service"]["schedule"]["daily_at"] = "off";
  }
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
