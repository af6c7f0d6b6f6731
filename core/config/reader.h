#pragma once

// Reading typed values from the configuration's YAML with `file:line:column: key 'a.b': ...`
// messages, for config.cc and mqtt_config.cc. Not part of any interface: config.h is.

#include <yaml-cpp/yaml.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/base/result.h"
#include "core/config/config.h"

namespace safepoint::config::internal {

namespace fs = std::filesystem;
using std::chrono::milliseconds;

// The longest duration any setting takes: a year.
inline constexpr std::int64_t kMaxDurationMs = 366LL * 24 * 3600 * 1000;

struct Ctx {
  std::string file;            // for messages
  fs::path dir;                // relative paths resolve against it
  std::string secrets_file;    // set once encryption.secrets_file is known
  std::string passphrase_key;  // likewise encryption.passphrase_key
  // Where values that came from `!secret` are recorded (Config::secret_values).
  std::vector<SecretValue>* secrets = nullptr;
};

// The one YAML document of a configuration file. kBadInput `FILE:LINE:COL: ...` for a NUL byte
// (YAML allows none; yaml-cpp would read it as an escape), a syntax error, or a second document
// (`---`), which would otherwise be ignored.
[[nodiscard]] Result<YAML::Node> LoadDocument(const std::string& yaml_text,
                                              const std::string& path);

[[nodiscard]] std::string Where(const Ctx& c, const YAML::Mark& m);

[[nodiscard]] tl::unexpected<Error> Bad(const Ctx& c, const YAML::Mark& m, const std::string& key,
                                        const std::string& what);

// A value with its position: the value node's mark, or the key's mark for an empty value.
struct Item {
  YAML::Node node;
  YAML::Mark mark;
  std::string key;  // full dotted key path
};

[[nodiscard]] const char* TypeName(const YAML::Node& n);

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

[[nodiscard]] Result<Str> GetStr(const Ctx& c, const Item& item, bool allow_secret = true);

[[nodiscard]] Result<std::string> GetString(const Ctx& c, const Item& item,
                                            bool allow_secret = true);

[[nodiscard]] std::string Lower(std::string_view s);

[[nodiscard]] bool ParseUint(std::string_view s, std::uint64_t* out);

[[nodiscard]] Result<std::int64_t> GetInt(const Ctx& c, const Item& item, std::int64_t lo,
                                          std::int64_t hi);

[[nodiscard]] Result<bool> GetBool(const Ctx& c, const Item& item);

// "500ms", "120s", "2m", "1h30m", "1d" or an integer number of seconds.
[[nodiscard]] std::optional<milliseconds> ParseDuration(std::string_view s);

[[nodiscard]] Result<milliseconds> GetDuration(const Ctx& c, const Item& item, milliseconds lo,
                                               milliseconds hi);

// Integer bytes or "<n>[ ]<unit>" (B, KB, MB, GB, TB, KiB, MiB, GiB, TiB; case-insensitive).
[[nodiscard]] std::optional<std::uint64_t> ParseSize(std::string_view s);

[[nodiscard]] Result<std::uint64_t> GetSize(const Ctx& c, const Item& item, std::uint64_t lo,
                                            std::uint64_t hi);

// A list of scalars; an empty value is an empty list. Each element is an Item "key[i]".
[[nodiscard]] Result<std::vector<Item>> GetList(const Ctx& c, const Item& item);

[[nodiscard]] Result<std::vector<std::string>> GetStringList(const Ctx& c, const Item& item,
                                                             bool allow_empty_strings = false);

[[nodiscard]] std::string Normalize(const fs::path& p);

[[nodiscard]] std::string ResolvePath(const Ctx& c, const std::string& p);

[[nodiscard]] Result<std::string> GetPath(const Ctx& c, const Item& item, bool allow_secret = true);

// `child` equals `parent` or lies below it (both normalized and absolute). The symlinks in the
// existing part of each are resolved first: a backup dir reached through a symlink into
// ha_config is inside ha_config.
[[nodiscard]] bool IsWithin(const std::string& child, const std::string& parent);

// `child` relative to `parent` (IsWithin holds), symlinks resolved as there.
[[nodiscard]] std::string RelativeTo(const std::string& child, const std::string& parent);

// Assigns the value of a Result to `out`, or returns its error.
template <typename T, typename U>
Status Assign(T& out, Result<U>&& r) {
  if (!r) return tl::unexpected(std::move(r.error()));
  out = static_cast<T>(std::move(*r));
  return {};
}

[[nodiscard]] Result<std::vector<std::string>> GetGlobList(const Ctx& c, const Item& item);

// mqtt: (mqtt_config.cc).
[[nodiscard]] Status ParseMqtt(const Ctx& c, const Item& item, MqttConfig& m);

}  // namespace safepoint::config::internal
