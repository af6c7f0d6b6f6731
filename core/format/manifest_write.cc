// Writing manifests: ToJson and Serialize (reading them is manifest.cc).
#include <array>
#include <charconv>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <vector>

#include "core/base/json_name.h"
#include "core/base/utf8.h"
#include "core/format/manifest.h"

namespace safepoint::manifest {

using nlohmann::json;

namespace {

json EntryToJson(const Entry& e) {
  json j = json::object();
  PutName(j, "path", e.path);
  j["type"] = EntryTypeName(e.type);
  j["mode"] = e.mode;
  j["mtime"] = e.mtime;
  j["uid"] = e.uid;
  j["gid"] = e.gid;
  if (e.type == EntryType::kFile) {
    j["size"] = e.size;
    j["sha256"] = e.sha256;
    if (e.stamp) {
      j["stamp"] = json::array({e.stamp->dev, e.stamp->ino, e.stamp->mtime_ns, e.stamp->ctime_ns});
    }
  }
  if (e.type == EntryType::kSymlink) PutName(j, "link", e.link_target);
  return j;
}

// The manifest without its entries and warnings: the fields every form shares.
json HeaderJson(const Manifest& m, bool inner) {
  json j;
  j["format"] = m.format;
  j["id"] = m.id;
  j["created_at"] = m.created_at;
  j["created_unix"] = m.created_unix;
  j["reason"] = m.reason;
  if (m.update) {
    j["update"] = {{"update_id", m.update->update_id},
                   {"target", m.update->target},
                   {"from_version", m.update->from_version},
                   {"to_version", m.update->to_version}};
  } else {
    j["update"] = nullptr;
  }
  j["producer"] = m.producer;
  j["encryption"] = {
      {"scheme", m.encryption},
      {"kdf",
       {{"name", m.kdf.name}, {"work_factor", m.kdf.work_factor}, {"r", m.kdf.r}, {"p", m.kdf.p}}}};
  if (!inner) {
    j["encryption"]["key_id"] = m.key_id;
    if (m.payload) {
      j["payload"] = {
          {"name", m.payload->name}, {"size", m.payload->size}, {"sha256", m.payload->sha256}};
    }
    if (m.index) {
      j["index"] = {{"name", m.index->name}, {"size", m.index->size}, {"sha256", m.index->sha256}};
    }
  }
  j["summary"] = {{"files", m.FileCount()}, {"bytes", m.TotalBytes()}};
  if (!inner && m.format >= 2) {
    // Only counts: every path, size, time and hash stays inside the encryption.
    j["summary"]["entries"] = m.EntryCount();
    j["summary"]["warnings"] = m.WarningCount();
  }
  return j;
}

bool ListsEntries(const Manifest& m, bool inner) { return inner || m.format < 2; }

std::string Dump(const json& j, int indent) {
  return j.dump(indent, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace

json ToJson(const Manifest& m, bool inner) {
  json j = HeaderJson(m, inner);
  if (!ListsEntries(m, inner)) return j;
  json entries = json::array();
  for (const auto& e : m.entries) entries.push_back(EntryToJson(e));
  j["entries"] = std::move(entries);
  j["warnings"] = m.warnings;
  return j;
}

namespace {

// From this many entries on, Serialize writes the entry list on two threads.
constexpr std::size_t kEntriesOnTwoThreads = 8192;

// Enough room for the text of entries [begin, end) (fields, a hash and a stamp; names up to 4/3
// longer as base64), so that the text of 100k entries is not copied into a buffer twice its
// size while it grows.
std::size_t TextEstimate(const std::vector<Entry>& entries, std::size_t begin, std::size_t end) {
  std::size_t estimate = 0;
  for (std::size_t i = begin; i < end; ++i) {
    estimate += 256 + (entries[i].path.size() + entries[i].link_target.size()) * 4 / 3;
  }
  return estimate;
}

// Appends UTF-8 text `s` as a JSON string, as Dump writes it: as it is, with '"', '\\' and
// control characters escaped.
void AppendUtf8String(std::string_view s, std::string& out) {
  out += '"';
  std::size_t plain = 0;  // start of the bytes not yet appended
  for (std::size_t i = 0; i < s.size(); ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c != '"' && c != '\\') continue;
    out.append(s, plain, i - plain);
    plain = i + 1;
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\f':
        out += "\\f";
        break;
      case '\r':
        out += "\\r";
        break;
      default: {
        static constexpr char kHex[] = "0123456789abcdef";
        out += "\\u00";
        out += kHex[c >> 4];
        out += kHex[c & 15];
      }
    }
  }
  out.append(s, plain);
  out += '"';
}

// Appends `s` as a JSON string, as Dump writes it; text that is not UTF-8 (never a name, which
// PutName gives as base64) goes through the JSON library, which replaces it.
void AppendString(std::string_view s, std::string& out) {
  if (IsValidUtf8(s)) {
    AppendUtf8String(s, out);
  } else {
    out += Dump(json(std::string(s)), -1);
  }
}

template <typename Int>
void AppendInt(Int value, std::string& out) {
  std::array<char, 24> buf{};
  const auto [end, ec] = std::to_chars(buf.data(), buf.data() + buf.size(), value);
  out.append(buf.data(), end);
}

// Appends `,"key":value` for a name (PutName: text, or base64 under key_b64).
void AppendName(std::string_view key, const std::string& name, std::string& out) {
  if (IsValidUtf8(name)) {
    out += ",\"";
    out += key;
    out += "\":";
    AppendUtf8String(name, out);
    return;
  }
  json j = json::object();
  PutName(j, std::string(key), name);
  for (const auto& [k, v] : j.items()) {
    out += ',';
    AppendString(k, out);
    out += ':';
    out += Dump(v, -1);
  }
}

// Appends Dump(EntryToJson(e), -1) without building the JSON object: the members in the
// object's (sorted) key order. The text of a long list is most of a backup's manifest time.
void AppendEntry(const Entry& e, std::string& out) {
  out += "{\"gid\":";
  AppendInt(e.gid, out);
  if (e.type == EntryType::kSymlink) AppendName("link", e.link_target, out);
  out += ",\"mode\":";
  AppendInt(e.mode, out);
  out += ",\"mtime\":";
  AppendInt(e.mtime, out);
  AppendName("path", e.path, out);
  if (e.type == EntryType::kFile) {
    out += ",\"sha256\":";
    AppendString(e.sha256, out);
    out += ",\"size\":";
    AppendInt(e.size, out);
    if (e.stamp) {
      out += ",\"stamp\":[";
      AppendInt(e.stamp->dev, out);
      out += ',';
      AppendInt(e.stamp->ino, out);
      out += ',';
      AppendInt(e.stamp->mtime_ns, out);
      out += ',';
      AppendInt(e.stamp->ctime_ns, out);
      out += ']';
    }
  }
  out += ",\"type\":";
  AppendString(EntryTypeName(e.type), out);
  out += ",\"uid\":";
  AppendInt(e.uid, out);
  out += '}';
}

// Appends entries [begin, end) of the list, each on one line (JSON escapes newlines in strings)
// after its separator.
void AppendEntries(const std::vector<Entry>& entries, std::size_t begin, std::size_t end,
                   std::string& out) {
  for (std::size_t i = begin; i < end; ++i) {
    out += i == 0 ? "\n  " : ",\n  ";
    AppendEntry(entries[i], out);
  }
}

}  // namespace

std::string Serialize(const Manifest& m, bool inner) {
  // Names that are not UTF-8 are base64 (PutName); free text such as a warning may hold any
  // bytes and is replaced where it is not UTF-8.
  json head = HeaderJson(m, inner);
  if (!ListsEntries(m, inner)) return Dump(head, 1) + "\n";
  // The value of ToJson(m, inner), without a JSON tree of every entry: the entries are written
  // one by one into the place of an empty list, each on one line of its own (the header stays
  // indented for people; entries without indentation are 40 % less text to read and parse).
  head["entries"] = json::array();
  head["warnings"] = m.warnings;
  const std::string text = Dump(head, 1);
  constexpr std::string_view kSlot = "\n \"entries\": []";
  const std::size_t slot = text.find(kSlot);
  if (slot == std::string::npos) return Dump(ToJson(m, inner), 1) + "\n";  // not reached
  // A long list is written in two halves, the second on a thread of its own.
  const std::size_t n = m.entries.size();
  std::size_t half = n >= kEntriesOnTwoThreads ? n / 2 : n;
  std::string out;
  std::string tail;
  out.reserve(text.size() + TextEstimate(m.entries, 0, half));
  out.append(text, 0, slot);
  out += "\n \"entries\": [";
  std::thread helper;
  if (half < n) {
    try {
      helper = std::thread([&] {
        tail.reserve(TextEstimate(m.entries, half, n));
        AppendEntries(m.entries, half, n, tail);
      });
    } catch (const std::system_error&) {
      half = n;  // no second thread: this one writes them all
    }
  }
  AppendEntries(m.entries, 0, half, out);
  if (helper.joinable()) {
    helper.join();
    out += tail;
    std::string().swap(tail);
  }
  out += m.entries.empty() ? "]" : "\n ]";
  out.append(text, slot + kSlot.size());
  out += "\n";
  return out;
}

}  // namespace safepoint::manifest
