// Typed values from YAML, with positions in every message.
#include "core/config/reader.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <filesystem>
#include <initializer_list>
#include <optional>
#include <set>
#include <sstream>
#include <string_view>
#include <utility>

#include "core/base/glob.h"
#include "core/base/io.h"
#include "core/base/paths.h"
#include "core/base/utf8.h"
#include "core/config/config.h"

namespace safepoint::config::internal {

std::string Where(const Ctx& c, const YAML::Mark& m) {
  if (m.is_null()) return c.file + ":1:1";
  return c.file + ":" + std::to_string(m.line + 1) + ":" + std::to_string(m.column + 1);
}

namespace {

// Where a document's first node starts (its start when it has none); nothing else is kept.
class FirstMarks final : public YAML::EventHandler {
 public:
  YAML::Mark mark = YAML::Mark::null_mark();

  void OnDocumentStart(const YAML::Mark& m) override { mark = m; }
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark& m, YAML::anchor_t) override { Node(m); }
  void OnAlias(const YAML::Mark& m, YAML::anchor_t) override { Node(m); }
  void OnScalar(const YAML::Mark& m, const std::string&, YAML::anchor_t,
                const std::string&) override {
    Node(m);
  }
  void OnSequenceStart(const YAML::Mark& m, const std::string&, YAML::anchor_t,
                       YAML::EmitterStyle::value) override {
    Node(m);
  }
  void OnSequenceEnd() override {}
  void OnMapStart(const YAML::Mark& m, const std::string&, YAML::anchor_t,
                  YAML::EmitterStyle::value) override {
    Node(m);
  }
  void OnMapEnd() override {}

 private:
  void Node(const YAML::Mark& m) {
    if (!seen_node_) mark = m;
    seen_node_ = true;
  }
  bool seen_node_ = false;
};

}  // namespace

Result<YAML::Node> LoadDocument(const std::string& yaml_text, const std::string& path) {
  const auto at = [&](std::size_t line, std::size_t column) {
    return path + ":" + std::to_string(line) + ":" + std::to_string(column);
  };
  if (const std::size_t nul = yaml_text.find('\0'); nul != std::string::npos) {
    const std::size_t line_start = yaml_text.rfind('\n', nul);
    const std::size_t column = line_start == std::string::npos ? nul + 1 : nul - line_start;
    const auto line =
        std::count(yaml_text.begin(), yaml_text.begin() + static_cast<std::ptrdiff_t>(nul), '\n');
    return Fail(ErrorCode::kBadInput,
                at(static_cast<std::size_t>(line) + 1, column) + ": NUL byte in the file");
  }
  YAML::Node document;
  std::optional<YAML::Mark> second;
  try {
    document = YAML::Load(yaml_text);
    // Whether a second document follows: the parser is asked twice at most. (yaml-cpp's LoadAll
    // loops without end on some malformed input, as the config fuzzer found.)
    std::istringstream in(yaml_text);
    YAML::Parser parser(in);
    FirstMarks first, next;
    if (parser.HandleNextDocument(first) && parser.HandleNextDocument(next)) second = next.mark;
  } catch (const YAML::ParserException& e) {
    const std::string where = e.mark.is_null() ? at(1, 1) : at(e.mark.line + 1, e.mark.column + 1);
    return Fail(ErrorCode::kBadInput, where + ": YAML syntax error: " + e.msg);
  } catch (const std::exception& e) {
    return Fail(ErrorCode::kBadInput, at(1, 1) + ": cannot parse YAML: " + e.what());
  }
  if (second) {
    return Fail(ErrorCode::kBadInput,
                (second->is_null() ? at(1, 1) : at(second->line + 1, second->column + 1)) +
                    ": a second YAML document (after '---'); the configuration is one document");
  }
  return document;
}

tl::unexpected<Error> Bad(const Ctx& c, const YAML::Mark& m, const std::string& key,
                          const std::string& what) {
  return Fail(ErrorCode::kBadInput, Where(c, m) + ": key '" + key + "': " + what);
}

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

Result<Str> GetStr(const Ctx& c, const Item& item, bool allow_secret) {
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

Result<std::string> GetString(const Ctx& c, const Item& item, bool allow_secret) {
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
                                               bool allow_empty_strings) {
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

Result<std::string> GetPath(const Ctx& c, const Item& item, bool allow_secret) {
  auto s = GetString(c, item, allow_secret);
  if (!s) return tl::unexpected(s.error());
  if (s->empty()) return Bad(c, item.mark, item.key, "empty path");
  if (s->find('\0') != std::string::npos) return Bad(c, item.mark, item.key, "NUL in path");
  return ResolvePath(c, *s);
}

bool IsWithin(const std::string& child_path, const std::string& parent_path) {
  const std::string child = ResolvedPath(child_path);
  const std::string parent = ResolvedPath(parent_path);
  if (child == parent) return true;
  if (parent == "/") return true;
  return child.size() > parent.size() && child.compare(0, parent.size(), parent) == 0 &&
         child[parent.size()] == '/';
}

std::string RelativeTo(const std::string& child, const std::string& parent) {
  return fs::path(ResolvedPath(child)).lexically_relative(ResolvedPath(parent)).string();
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

}  // namespace safepoint::config::internal
