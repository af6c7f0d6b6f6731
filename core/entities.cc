#include "core/entities.h"

#include <sodium.h>

#include <algorithm>
#include <cstdio>
#include <ctime>
#include <map>
#include <optional>
#include <utility>

#include "core/secret.h"

namespace safepoint::entities {
namespace {

using nlohmann::json;

constexpr int kFormat = 1;

bool ValidUtf8(std::string_view s) {
  std::size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    std::size_t len = 0;
    std::uint32_t cp = 0;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xE0) == 0xC0) {
      len = 2;
      cp = c & 0x1Fu;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3;
      cp = c & 0x0Fu;
    } else if ((c & 0xF8) == 0xF0) {
      len = 4;
      cp = c & 0x07u;
    } else {
      return false;
    }
    if (i + len > s.size()) return false;
    for (std::size_t k = 1; k < len; ++k) {
      const auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3Fu);
    }
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
        cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
      return false;
    }
    i += len;
  }
  return true;
}

std::string Base64(std::string_view bytes) {
  InitSodium();
  std::string out(sodium_base64_ENCODED_LEN(bytes.size(), sodium_base64_VARIANT_ORIGINAL), '\0');
  sodium_bin2base64(out.data(), out.size(), reinterpret_cast<const unsigned char*>(bytes.data()),
                    bytes.size(), sodium_base64_VARIANT_ORIGINAL);
  out.resize(out.size() - 1);  // the terminating NUL
  return out;
}

std::optional<std::string> Unbase64(std::string_view text) {
  InitSodium();
  std::string out(text.size() / 4 * 3 + 3, '\0');
  std::size_t len = 0;
  if (sodium_base642bin(reinterpret_cast<unsigned char*>(out.data()), out.size(), text.data(),
                        text.size(), nullptr, &len, nullptr, sodium_base64_VARIANT_ORIGINAL) != 0) {
    return std::nullopt;
  }
  out.resize(len);
  return out;
}

// The fields that carry a payload; see docs/format-entities.md.
void PutPayload(const std::string& raw, json& rec) {
  if (!ValidUtf8(raw)) {
    rec["payload_b64"] = Base64(raw);
    return;
  }
  json parsed = json::parse(raw, nullptr, /*allow_exceptions=*/false);
  if (!parsed.is_discarded() && !parsed.is_string()) {
    std::string dumped;
    try {
      dumped = parsed.dump();
    } catch (const json::exception&) {
      rec["payload"] = raw;
      return;
    }
    rec["payload"] = std::move(parsed);
    if (dumped != raw) rec["payload_raw"] = raw;
    return;
  }
  rec["payload"] = raw;
}

Result<std::string> GetPayload(const json& rec, const std::string& where) {
  if (auto it = rec.find("payload_b64"); it != rec.end()) {
    if (!it->is_string()) return Fail(ErrorCode::kBadInput, where + ".payload_b64: not a string");
    auto bytes = Unbase64(it->get_ref<const std::string&>());
    if (!bytes) return Fail(ErrorCode::kBadInput, where + ".payload_b64: bad base64");
    return std::move(*bytes);
  }
  if (auto it = rec.find("payload_raw"); it != rec.end()) {
    if (!it->is_string()) return Fail(ErrorCode::kBadInput, where + ".payload_raw: not a string");
    return it->get<std::string>();
  }
  auto it = rec.find("payload");
  if (it == rec.end()) return Fail(ErrorCode::kBadInput, where + ": no payload");
  if (it->is_string()) return it->get<std::string>();
  return it->dump();
}

// Lower-cased, blank-trimmed text of an availability/state payload; a JSON string payload is
// unquoted, a JSON object payload yields its "state" member.
std::string StateText(const std::string& payload) {
  std::string s = payload;
  json parsed = json::parse(payload, nullptr, false);
  if (!parsed.is_discarded()) {
    if (parsed.is_string()) {
      s = parsed.get<std::string>();
    } else if (parsed.is_object()) {
      auto it = parsed.find("state");
      s = it != parsed.end() && it->is_string() ? it->get<std::string>() : "";
    }
  }
  const auto not_blank = [](unsigned char c) { return !std::isspace(c); };
  s.erase(s.begin(), std::find_if(s.begin(), s.end(), not_blank));
  s.erase(std::find_if(s.rbegin(), s.rend(), not_blank).base(), s.end());
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

bool EndsWith(std::string_view s, std::string_view suffix) {
  return s.size() > suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

// entity -> available, for the records that say something about availability.
std::map<std::string, bool> Availability(const EntitySnapshot& snap) {
  std::map<std::string, bool> out;
  for (const EntityRecord& r : snap.records) {
    if (EndsWith(r.topic, "/availability")) {
      const std::string s = StateText(r.payload);
      const std::string entity = r.topic.substr(0, r.topic.size() - 13);
      if (s == "online") out[entity] = true;
      if (s == "offline") out[entity] = false;
    } else if (EndsWith(r.topic, "/state")) {
      out[r.topic.substr(0, r.topic.size() - 6)] = StateText(r.payload) != "unavailable";
    }
  }
  return out;
}

std::vector<std::string_view> Levels(std::string_view s) {
  std::vector<std::string_view> out;
  std::size_t start = 0;
  while (true) {
    const std::size_t slash = s.find('/', start);
    if (slash == std::string_view::npos) {
      out.push_back(s.substr(start));
      return out;
    }
    out.push_back(s.substr(start, slash - start));
    start = slash + 1;
  }
}

}  // namespace

std::string FormatTime(std::chrono::system_clock::time_point t) {
  using namespace std::chrono;
  const auto ms = duration_cast<milliseconds>(t.time_since_epoch()).count();
  std::int64_t secs = ms / 1000;
  std::int64_t frac = ms % 1000;
  if (frac < 0) {
    frac += 1000;
    secs -= 1;
  }
  const auto tt = static_cast<std::time_t>(secs);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  char buf[80];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                static_cast<int>(frac));
  return buf;
}

std::optional<std::chrono::system_clock::time_point> ParseTime(std::string_view s) {
  // YYYY-MM-DDTHH:MM:SS[.f+]Z
  if (s.size() < 20 || s.back() != 'Z') return std::nullopt;
  auto num = [&](std::size_t pos, std::size_t len, int* out) {
    int v = 0;
    for (std::size_t i = pos; i < pos + len; ++i) {
      if (s[i] < '0' || s[i] > '9') return false;
      v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return true;
  };
  std::tm tm{};
  int year = 0, mon = 0, day = 0, hour = 0, min = 0, sec = 0;
  if (!num(0, 4, &year) || s[4] != '-' || !num(5, 2, &mon) || s[7] != '-' || !num(8, 2, &day) ||
      s[10] != 'T' || !num(11, 2, &hour) || s[13] != ':' || !num(14, 2, &min) || s[16] != ':' ||
      !num(17, 2, &sec)) {
    return std::nullopt;
  }
  if (mon < 1 || mon > 12 || day < 1 || day > 31 || hour > 23 || min > 59 || sec > 60) {
    return std::nullopt;
  }
  int ms = 0;
  std::size_t i = 19;
  if (s[i] == '.') {
    ++i;
    int digits = 0;
    while (i < s.size() - 1 && s[i] >= '0' && s[i] <= '9') {
      if (digits < 3) ms = ms * 10 + (s[i] - '0');
      ++digits;
      ++i;
    }
    if (digits == 0) return std::nullopt;
    for (int d = digits; d < 3; ++d) ms *= 10;
  }
  if (i != s.size() - 1) return std::nullopt;
  tm.tm_year = year - 1900;
  tm.tm_mon = mon - 1;
  tm.tm_mday = day;
  tm.tm_hour = hour;
  tm.tm_min = min;
  tm.tm_sec = sec;
  const std::time_t tt = timegm(&tm);
  return std::chrono::system_clock::time_point(std::chrono::seconds(tt)) +
         std::chrono::milliseconds(ms);
}

json ToJson(const EntitySnapshot& snapshot) {
  std::vector<const EntityRecord*> sorted;
  sorted.reserve(snapshot.records.size());
  for (const EntityRecord& r : snapshot.records) sorted.push_back(&r);
  std::stable_sort(sorted.begin(), sorted.end(), [](const EntityRecord* a, const EntityRecord* b) {
    return a->topic < b->topic;
  });
  json entities = json::array();
  for (const EntityRecord* r : sorted) {
    json rec = json::object();
    // Topics are UTF-8 by the MQTT spec; anything else is replaced rather than thrown on later.
    rec["topic"] = ValidUtf8(r->topic) ? r->topic : std::string("\xEF\xBF\xBD");
    PutPayload(r->payload, rec);
    rec["retained"] = r->retained;
    rec["received_at"] = FormatTime(r->received_at);
    entities.push_back(std::move(rec));
  }
  return {
      {"format", kFormat},
      {"captured_at", FormatTime(snapshot.captured_at)},
      {"source", snapshot.source},
      {"dropped", {{"topics", snapshot.dropped_topics}, {"payloads", snapshot.dropped_payloads}}},
      {"entities", std::move(entities)}};
}

Result<EntitySnapshot> EntitySnapshotFromJson(const json& j) {
  auto bad = [](const std::string& what) {
    return Fail(ErrorCode::kBadInput, "entities.json: " + what);
  };
  if (!j.is_object()) return bad("not a JSON object");
  auto format = j.find("format");
  if (format == j.end() || !format->is_number_integer() || format->get<std::int64_t>() != kFormat) {
    return bad("format: expected 1");
  }
  EntitySnapshot snap;
  auto captured = j.find("captured_at");
  if (captured == j.end() || !captured->is_string()) return bad("captured_at: missing");
  auto t = ParseTime(captured->get_ref<const std::string&>());
  if (!t) return bad("captured_at: not an ISO-8601 UTC time");
  snap.captured_at = *t;
  if (auto it = j.find("source"); it != j.end()) {
    if (!it->is_string()) return bad("source: not a string");
    snap.source = it->get<std::string>();
  }
  if (auto it = j.find("dropped"); it != j.end()) {
    if (!it->is_object()) return bad("dropped: not an object");
    for (const char* k : {"topics", "payloads"}) {
      auto v = it->find(k);
      if (v == it->end()) continue;
      if (!v->is_number_unsigned()) return bad(std::string("dropped.") + k + ": not a count");
      (std::string_view(k) == "topics" ? snap.dropped_topics : snap.dropped_payloads) =
          v->get<std::uint64_t>();
    }
  }
  auto ents = j.find("entities");
  if (ents == j.end() || !ents->is_array()) return bad("entities: missing or not a list");
  for (std::size_t i = 0; i < ents->size(); ++i) {
    const json& e = (*ents)[i];
    const std::string where = "entities[" + std::to_string(i) + "]";
    if (!e.is_object()) return bad(where + ": not an object");
    EntityRecord r;
    auto topic = e.find("topic");
    if (topic == e.end() || !topic->is_string()) return bad(where + ".topic: missing");
    r.topic = topic->get<std::string>();
    auto payload = GetPayload(e, where);
    if (!payload) return bad(payload.error().message);
    r.payload = std::move(*payload);
    if (auto it = e.find("retained"); it != e.end()) {
      if (!it->is_boolean()) return bad(where + ".retained: not a boolean");
      r.retained = it->get<bool>();
    }
    auto received = e.find("received_at");
    if (received == e.end() || !received->is_string()) return bad(where + ".received_at: missing");
    auto rt = ParseTime(received->get_ref<const std::string&>());
    if (!rt) return bad(where + ".received_at: not an ISO-8601 UTC time");
    r.received_at = *rt;
    snap.records.push_back(std::move(r));
  }
  return snap;
}

std::vector<std::string> UnavailableNow(const EntitySnapshot& before, const EntitySnapshot& now) {
  const auto was = Availability(before);
  const auto is = Availability(now);
  std::vector<std::string> out;
  for (const auto& [entity, available] : is) {
    if (available) continue;
    auto it = was.find(entity);
    if (it != was.end() && it->second) out.push_back(entity);
  }
  return out;  // std::map iteration order: sorted
}

bool TopicMatches(std::string_view filter, std::string_view topic) {
  if (filter.empty() || topic.empty()) return false;
  if (topic.front() == '$' && (filter.front() == '+' || filter.front() == '#')) return false;
  const std::vector<std::string_view> f = Levels(filter);
  const std::vector<std::string_view> t = Levels(topic);
  const std::size_t m = f.size();
  // on[i]: filter levels [0, i) matched the topic levels consumed so far.
  std::vector<bool> on(m + 1, false);
  on[0] = true;
  bool all = m == 1 && f[0] == "#";  // a trailing '#' reached: the rest of the topic matches
  for (std::string_view level : t) {
    if (all) return true;
    std::vector<bool> next(m + 1, false);
    for (std::size_t i = 0; i < m; ++i) {
      if (!on[i]) continue;
      if (f[i] == "#") {
        next[i] = true;      // a middle '#' keeps consuming...
        next[i + 1] = true;  // ...or stops after at least one level
      } else if (f[i] == "+" || f[i] == level) {
        next[i + 1] = true;
      }
    }
    on.swap(next);
    if (on[m - 1] && f[m - 1] == "#") all = true;
    if (std::none_of(on.begin(), on.end(), [](bool b) { return b; }) && !all) return false;
  }
  return all || on[m];
}

bool MirrorAccepts(const config::MirrorConfig& mirror, std::string_view topic) {
  const auto matches = [&](const std::string& f) { return TopicMatches(f, topic); };
  return std::any_of(mirror.filters.begin(), mirror.filters.end(), matches) &&
         std::none_of(mirror.exclude.begin(), mirror.exclude.end(), matches);
}

}  // namespace safepoint::entities
