#include "core/format/manifest.h"

#include <array>
#include <cctype>
#include <limits>
#include <unordered_map>

#include "core/base/json_name.h"
#include "core/base/utf8.h"

namespace safepoint::manifest {

namespace {

using nlohmann::json;

constexpr std::array<std::string_view, 5> kRoots = {"ha_config", "workspace", "state",
                                                    "environment", "logs"};

bool IsHex64(const std::string& s) {
  if (s.size() != 64) return false;
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

std::vector<std::string_view> SplitPath(std::string_view path) {
  std::vector<std::string_view> parts;
  std::size_t start = 0;
  while (start <= path.size()) {
    std::size_t slash = path.find('/', start);
    if (slash == std::string_view::npos) slash = path.size();
    parts.push_back(path.substr(start, slash - start));
    start = slash + 1;
  }
  return parts;
}

// Field readers that turn type errors into kCorrupt with the field name.
class Reader {
 public:
  explicit Reader(std::string where) : where_(std::move(where)) {}

  template <typename T>
  bool Get(const json& obj, const char* key, T& out, bool required = true) {
    auto it = obj.find(key);
    if (it == obj.end() || it->is_null()) {
      if (required) Error(std::string("missing field '") + key + "'");
      return !required;
    }
    try {
      if constexpr (std::is_same_v<T, std::string>) {
        if (!it->is_string()) throw std::runtime_error("not a string");
      } else if constexpr (std::is_same_v<T, bool>) {
        if (!it->is_boolean()) throw std::runtime_error("not a boolean");
      } else if constexpr (std::is_integral_v<T> && std::is_unsigned_v<T>) {
        if (!it->is_number_unsigned()) throw std::runtime_error("not an unsigned integer");
        // Checked before the conversion, which would wrap (2^32 + 420 is no mode 0644).
        if constexpr (sizeof(T) < sizeof(std::uint64_t)) {
          if (it->get<std::uint64_t>() > std::numeric_limits<T>::max()) {
            throw std::runtime_error("out of range");
          }
        }
      } else if constexpr (std::is_integral_v<T>) {
        if (!it->is_number_integer()) throw std::runtime_error("not an integer");
        bool fits = true;
        if (it->is_number_unsigned()) {
          fits =
              it->get<std::uint64_t>() <= static_cast<std::uint64_t>(std::numeric_limits<T>::max());
        } else if constexpr (sizeof(T) < sizeof(std::int64_t)) {
          const std::int64_t v = it->get<std::int64_t>();
          fits = v >= std::numeric_limits<T>::min() && v <= std::numeric_limits<T>::max();
        }
        if (!fits) throw std::runtime_error("out of range");
      }
      out = it->get<T>();
      return true;
    } catch (const std::exception& e) {
      Error(std::string("field '") + key + "': " + e.what());
      return false;
    }
  }

  void Error(std::string msg) {
    if (error_.empty()) error_ = where_ + ": " + msg;
  }
  [[nodiscard]] bool ok() const { return error_.empty(); }
  [[nodiscard]] const std::string& error() const { return error_; }

 private:
  std::string where_;
  std::string error_;
};

// The optional "update" object: the update a safety point was taken before.
void ReadUpdate(const json& j, Reader& r, Manifest& m) {
  auto it = j.find("update");
  if (it == j.end() || it->is_null()) return;
  if (!it->is_object()) {
    r.Error("field 'update': not an object");
    return;
  }
  UpdateRef u;
  r.Get(*it, "update_id", u.update_id);
  r.Get(*it, "target", u.target, false);
  r.Get(*it, "from_version", u.from_version, false);
  r.Get(*it, "to_version", u.to_version, false);
  m.update = u;
}

// The required "encryption" object with its "kdf".
void ReadEncryption(const json& j, Reader& r, Manifest& m) {
  auto enc = j.find("encryption");
  if (enc == j.end() || !enc->is_object()) {
    r.Error("missing field 'encryption'");
    return;
  }
  r.Get(*enc, "scheme", m.encryption);
  r.Get(*enc, "key_id", m.key_id, false);
  auto kdf = enc->find("kdf");
  if (kdf == enc->end() || !kdf->is_object()) {
    r.Error("missing field 'encryption.kdf'");
    return;
  }
  r.Get(*kdf, "name", m.kdf.name);
  r.Get(*kdf, "work_factor", m.kdf.work_factor);
  r.Get(*kdf, "r", m.kdf.r);
  r.Get(*kdf, "p", m.kdf.p);
}

// An optional file description ("payload" or "index"): name, size and SHA-256.
void ReadFileRef(const json& j, const std::string& key, Reader& r, std::optional<Payload>& out) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return;
  if (!it->is_object()) {
    r.Error("field '" + key + "': not an object");
    return;
  }
  Payload p;
  r.Get(*it, "name", p.name);
  r.Get(*it, "size", p.size);
  r.Get(*it, "sha256", p.sha256);
  if (r.ok() && !IsHex64(p.sha256)) r.Error(key + " sha256 is not 64 hex digits");
  out = p;
}

// The "summary" of a format 2 manifest.json: counts instead of entries.
void ReadSummary(const json& j, Reader& r, Manifest& m) {
  m.entries_listed = false;
  auto sum = j.find("summary");
  if (sum == j.end() || !sum->is_object()) {
    r.Error("missing field 'summary'");
  } else {
    r.Get(*sum, "files", m.listed_files);
    r.Get(*sum, "bytes", m.listed_bytes);
    r.Get(*sum, "entries", m.listed_entries);
    r.Get(*sum, "warnings", m.listed_warnings);
  }
  if (r.ok() && !m.index) r.Error("missing field 'index'");
}

// The optional "warnings" list of strings.
void ReadWarnings(const json& j, Reader& r, Manifest& m) {
  auto it = j.find("warnings");
  if (it == j.end() || it->is_null()) return;
  if (!it->is_array()) {
    r.Error("field 'warnings': not an array");
    return;
  }
  for (const auto& w : *it) {
    if (!w.is_string()) {
      r.Error("field 'warnings': not a list of strings");
      return;
    }
    m.warnings.push_back(w.get<std::string>());
  }
}

// The optional "stamp" of a file entry: [dev, ino, mtime_ns, ctime_ns], integers in range.
void ReadStamp(const json& je, Reader& r, Entry& e) {
  auto it = je.find("stamp");
  if (it == je.end()) return;
  const auto in_range = [](const json& v, bool is_signed) {
    if (v.is_number_unsigned()) {
      return !is_signed || v.get<std::uint64_t>() <=
                               static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
    }
    return is_signed && v.is_number_integer();
  };
  if (!it->is_array() || it->size() != 4 || !in_range((*it)[0], false) ||
      !in_range((*it)[1], false) || !in_range((*it)[2], true) || !in_range((*it)[3], true)) {
    r.Error("entry " + QuoteName(e.path) + ": bad stamp (four integers expected)");
    return;
  }
  e.stamp = Stamp{(*it)[0].get<std::uint64_t>(), (*it)[1].get<std::uint64_t>(),
                  (*it)[2].get<std::int64_t>(), (*it)[3].get<std::int64_t>()};
}

// One of "entries". Empty when reading stops here (the error is in `r`); an entry returned may
// still have set an error in `r`.
std::optional<Entry> ReadEntry(const json& je, Reader& r) {
  if (!je.is_object()) {
    r.Error("entry is not an object");
    return std::nullopt;
  }
  Entry e;
  std::string type;
  if (auto path = GetName(je, "path", "manifest entry"); path) {
    e.path = std::move(*path);
  } else {
    r.Error(path.error().message);
    return std::nullopt;
  }
  r.Get(je, "type", type);
  r.Get(je, "mode", e.mode);
  r.Get(je, "mtime", e.mtime);
  r.Get(je, "uid", e.uid);
  r.Get(je, "gid", e.gid);
  if (!r.ok()) return std::nullopt;
  if (type == "file") {
    e.type = EntryType::kFile;
    r.Get(je, "size", e.size);
    r.Get(je, "sha256", e.sha256);
    if (r.ok() && !IsHex64(e.sha256)) r.Error("entry " + QuoteName(e.path) + ": bad sha256");
    if (r.ok()) ReadStamp(je, r, e);
  } else if (type == "symlink") {
    e.type = EntryType::kSymlink;
    if (auto link = GetName(je, "link", "manifest entry " + e.path); link) {
      e.link_target = std::move(*link);
    } else {
      r.Error(link.error().message);
    }
  } else if (type == "dir") {
    e.type = EntryType::kDirectory;
  } else {
    r.Error("entry " + QuoteName(e.path) + ": unknown type '" + type + "'");
  }
  if (!r.ok()) return std::nullopt;
  if (e.mode > 07777) r.Error("entry " + QuoteName(e.path) + ": mode out of range");
  if (auto st = CheckArchivePath(e.path); !st) r.Error(st.error().message);
  if (r.ok() && e.type == EntryType::kSymlink) {
    if (auto st = CheckLinkTarget(e.path, e.link_target); !st) r.Error(st.error().message);
  }
  return e;
}

}  // namespace

std::string_view EntryTypeName(EntryType type) {
  switch (type) {
    case EntryType::kFile:
      return "file";
    case EntryType::kSymlink:
      return "symlink";
    case EntryType::kDirectory:
      return "dir";
  }
  return "file";
}

std::size_t Manifest::EntryCount() const {
  return entries_listed ? entries.size() : static_cast<std::size_t>(listed_entries);
}

std::size_t Manifest::WarningCount() const {
  return entries_listed ? warnings.size() : static_cast<std::size_t>(listed_warnings);
}

std::uint64_t Manifest::TotalBytes() const {
  if (!entries_listed) return listed_bytes;
  std::uint64_t total = 0;
  for (const auto& e : entries) total += e.size;
  return total;
}

std::size_t Manifest::FileCount() const {
  if (!entries_listed) return static_cast<std::size_t>(listed_files);
  std::size_t n = 0;
  for (const auto& e : entries) n += e.type == EntryType::kFile ? 1 : 0;
  return n;
}

void DropEntries(Manifest& m) {
  if (!m.entries_listed) return;
  m.listed_files = m.FileCount();
  m.listed_bytes = m.TotalBytes();
  m.listed_entries = m.EntryCount();
  m.listed_warnings = m.WarningCount();
  m.entries_listed = false;
  std::vector<Entry>().swap(m.entries);
}

Result<Manifest> Parse(std::string_view text) {
  // Each entry is read as soon as its object closes and dropped from the tree (returning false
  // discards it), so a manifest of 100k entries never holds 100k JSON objects at once.
  Manifest m;
  Reader entry_reader("manifest");
  std::string top_key;
  auto on_event = [&](int depth, json::parse_event_t event, json& parsed) {
    if (event == json::parse_event_t::key && depth == 1) {
      top_key = parsed.is_string() ? parsed.get<std::string>() : std::string();
      if (top_key == "entries" && !m.entries.empty()) entry_reader.Error("two entry lists");
    } else if (event == json::parse_event_t::object_end && depth == 2 && top_key == "entries") {
      if (entry_reader.ok()) {
        if (auto e = ReadEntry(parsed, entry_reader); e && entry_reader.ok()) {
          m.entries.push_back(std::move(*e));
        }
      }
      return false;
    }
    return true;
  };
  json j = json::parse(text.begin(), text.end(), on_event, /*allow_exceptions=*/false);
  if (j.is_discarded()) return Fail(ErrorCode::kCorrupt, "manifest: not valid JSON");
  if (!j.is_object()) return Fail(ErrorCode::kCorrupt, "manifest: not a JSON object");
  Reader r("manifest");
  r.Get(j, "format", m.format);
  if (r.ok() && (m.format < kOldestFormatVersion || m.format > kFormatVersion)) {
    return Fail(ErrorCode::kUnsupported,
                "manifest: format " + std::to_string(m.format) + " is not supported by this build");
  }
  r.Get(j, "id", m.id);
  r.Get(j, "created_at", m.created_at);
  r.Get(j, "created_unix", m.created_unix);
  r.Get(j, "reason", m.reason);
  r.Get(j, "producer", m.producer, false);
  if (r.ok() && !IsValidId(m.id)) r.Error("invalid id");
  ReadUpdate(j, r, m);
  ReadEncryption(j, r, m);
  ReadFileRef(j, "payload", r, m.payload);
  ReadFileRef(j, "index", r, m.index);
  auto entries = j.find("entries");
  if (r.ok() && m.format >= 2 && entries == j.end()) {
    ReadSummary(j, r, m);
    if (!r.ok()) return Fail(ErrorCode::kCorrupt, r.error());
    return m;
  }
  ReadWarnings(j, r, m);
  if (entries == j.end() || !entries->is_array()) {
    r.Error("missing field 'entries'");
  } else if (!entry_reader.ok()) {
    r.Error(entry_reader.error().substr(std::string_view("manifest: ").size()));
  } else if (!entries->empty()) {
    r.Error("entry is not an object");  // what is left in the list was no object
  }
  if (!r.ok()) return Fail(ErrorCode::kCorrupt, r.error());
  SP_RETURN_IF_ERROR(CheckEntries(m.entries));
  return m;
}

Status CheckEntries(const std::vector<Entry>& entries) {
  std::unordered_map<std::string_view, EntryType> types;
  types.reserve(entries.size());
  for (const auto& e : entries) {
    SP_RETURN_IF_ERROR(CheckArchivePath(e.path));
    if (e.type == EntryType::kSymlink) SP_RETURN_IF_ERROR(CheckLinkTarget(e.path, e.link_target));
    if (!types.emplace(e.path, e.type).second) {
      return Fail(ErrorCode::kCorrupt, "manifest: entry " + QuoteName(e.path) + " appears twice");
    }
  }
  for (const auto& e : entries) {
    const std::string_view path = e.path;
    for (std::size_t slash = path.find('/'); slash != std::string_view::npos;
         slash = path.find('/', slash + 1)) {
      auto it = types.find(path.substr(0, slash));
      if (it != types.end() && it->second != EntryType::kDirectory) {
        return Fail(ErrorCode::kCorrupt, "manifest: entry " + QuoteName(e.path) + " lies below " +
                                             std::string(path.substr(0, slash)) +
                                             ", which is not a directory");
      }
    }
  }
  return {};
}

Status CheckConsistent(const Manifest& inner, const Manifest& outer) {
  auto differ = [](const std::string& what) {
    return Fail(ErrorCode::kCorrupt,
                "manifest.json and the archive's MANIFEST.json differ in " + what);
  };
  if (inner.id != outer.id) return differ("id");
  if (inner.created_at != outer.created_at || inner.created_unix != outer.created_unix) {
    return differ("creation time");
  }
  if (inner.reason != outer.reason) return differ("reason");
  if (inner.update != outer.update) return differ("update");
  if (inner.encryption != outer.encryption || inner.kdf != outer.kdf) return differ("encryption");
  if (inner.format != outer.format) return differ("format");
  if (!outer.entries_listed) {
    if (inner.EntryCount() != outer.EntryCount()) return differ("entry count");
    if (inner.FileCount() != outer.FileCount()) return differ("file count");
    if (inner.TotalBytes() != outer.TotalBytes()) return differ("total size");
    if (inner.WarningCount() != outer.WarningCount()) return differ("warning count");
    return {};
  }
  if (inner.warnings != outer.warnings) return differ("warnings");
  if (inner.entries.size() != outer.entries.size()) return differ("entry count");
  for (std::size_t i = 0; i < inner.entries.size(); ++i) {
    if (!(inner.entries[i] == outer.entries[i])) return differ("entry " + inner.entries[i].path);
  }
  return {};
}

bool IsValidId(std::string_view id) {
  // YYYY-MM-DD_HH-MM-SS
  constexpr std::string_view kShape = "dddd-dd-dd_dd-dd-dd";
  if (id.size() < kShape.size()) return false;
  for (std::size_t i = 0; i < kShape.size(); ++i) {
    char c = id[i];
    if (kShape[i] == 'd') {
      if (c < '0' || c > '9') return false;
    } else if (c != kShape[i]) {
      return false;
    }
  }
  auto num = [&](std::size_t pos, std::size_t len) {
    int v = 0;
    for (std::size_t i = pos; i < pos + len; ++i) v = v * 10 + (id[i] - '0');
    return v;
  };
  int month = num(5, 2), day = num(8, 2), hour = num(11, 2), minute = num(14, 2),
      second = num(17, 2);
  const int year = num(0, 4);
  const bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
  constexpr int kDays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  if (month < 1 || month > 12) return false;
  const int days = kDays[month - 1] + (month == 2 && leap ? 1 : 0);
  if (day < 1 || day > days || hour > 23 || minute > 59 || second > 59) return false;
  std::string_view rest = id.substr(kShape.size());
  if (rest.empty()) return true;
  if (rest[0] != '-' || rest.size() < 2 || rest.size() > 4 || rest[1] == '0') return false;
  for (char c : rest.substr(1)) {
    if (c < '0' || c > '9') return false;
  }
  int n = 0;
  for (char c : rest.substr(1)) n = n * 10 + (c - '0');
  return n >= 2;
}

Status CheckArchivePath(std::string_view path) {
  auto bad = [&](const char* why) {
    std::string shown(path.substr(0, 200));
    for (char& c : shown) {
      if (static_cast<unsigned char>(c) < 0x20) c = '?';
    }
    return Fail(ErrorCode::kCorrupt, "unsafe archive path '" + shown + "': " + why);
  };
  if (path.empty()) return bad("empty");
  if (path.size() > 4096) return bad("too long");
  if (path.front() == '/') return bad("absolute");
  if (path.find('\0') != std::string_view::npos) return bad("contains NUL");
  if (path == kInnerName) return {};
  auto parts = SplitPath(path);
  for (auto part : parts) {
    if (part.empty()) return bad("empty component");
    if (part == "." || part == "..") return bad("'.' or '..' component");
  }
  for (auto root : kRoots) {
    if (parts[0] == root) return {};
  }
  return bad("outside the known roots");
}

PathSelection::PathSelection(const std::vector<std::string>& paths)
    : matched_(paths.size(), false) {
  for (std::string_view want : paths) {
    while (want.size() > 1 && want.back() == '/') want.remove_suffix(1);
    paths_.emplace_back(want);
  }
}

bool PathSelection::Selects(std::string_view path) {
  if (paths_.empty()) return true;
  bool selected = false;
  for (std::size_t i = 0; i < paths_.size(); ++i) {
    const std::string& want = paths_[i];
    if (path == want ||
        (path.size() > want.size() && path.starts_with(want) && path[want.size()] == '/')) {
      matched_[i] = true;
      selected = true;
    }
  }
  return selected;
}

Status PathSelection::AllMatched(const std::string& where) const {
  for (std::size_t i = 0; i < paths_.size(); ++i) {
    if (!matched_[i]) {
      return Fail(ErrorCode::kNotFound,
                  "no entry of " + where + " matches " + QuoteNameInText(paths_[i]));
    }
  }
  return {};
}

Status CheckLinkTarget(std::string_view path, std::string_view target) {
  auto bad = [&](const char* why) {
    return Fail(ErrorCode::kCorrupt, "link " + QuoteName(path.substr(0, 200)) + " -> " +
                                         QuoteName(target.substr(0, 200)) + ": " + why);
  };
  if (target.empty()) return bad("empty target");
  if (target.front() == '/') return bad("absolute target leaves the root");
  if (target.find('\0') != std::string_view::npos) return bad("target contains NUL");
  auto parts = SplitPath(path);
  if (parts.size() < 2) return bad("link at a root");
  // Depth of the link's directory below its top-level root.
  long depth = static_cast<long>(parts.size()) - 2;
  for (auto part : SplitPath(target)) {
    if (part.empty() || part == ".") continue;
    if (part == "..") {
      if (--depth < 0) return bad("target leaves the root");
    } else {
      ++depth;
    }
  }
  return {};
}

}  // namespace safepoint::manifest
