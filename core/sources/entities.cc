#include "core/sources/entities.h"

#include <fcntl.h>
#include <sodium.h>
#include <zstd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <map>
#include <optional>
#include <utility>

#include "core/base/io.h"
#include "core/base/json_depth.h"
#include "core/base/secret.h"
#include "core/base/time_text.h"
#include "core/base/utf8.h"

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

// Buffers small writes into 64 KiB blocks for the sink, and counts the bytes.
class BufferedWriter {
 public:
  explicit BufferedWriter(ByteSink& out) : out_(out) { buf_.reserve(kBlock); }
  Status Put(std::string_view s) {
    bytes_ += s.size();
    while (!s.empty()) {
      const std::size_t n = std::min(s.size(), kBlock - buf_.size());
      buf_.append(s.substr(0, n));
      s.remove_prefix(n);
      if (buf_.size() == kBlock) SP_RETURN_IF_ERROR(Flush());
    }
    return {};
  }
  Status Flush() {
    if (buf_.empty()) return {};
    auto st = out_.Write({reinterpret_cast<const std::uint8_t*>(buf_.data()), buf_.size()});
    buf_.clear();
    return st;
  }
  [[nodiscard]] std::uint64_t bytes() const { return bytes_; }

 private:
  static constexpr std::size_t kBlock = 64 * 1024;
  ByteSink& out_;
  std::string buf_;
  std::uint64_t bytes_ = 0;
};

// `s` (valid UTF-8) as a JSON string literal, written piecewise; the same escapes as
// nlohmann/json's dump(): \" \\ \b \f \n \r \t, other control characters as \u00XX.
Status PutString(BufferedWriter& w, std::string_view s) {
  SP_RETURN_IF_ERROR(w.Put("\""));
  std::size_t run = 0;  // start of the bytes not yet written
  for (std::size_t i = 0; i < s.size(); ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c != '"' && c != '\\') continue;
    SP_RETURN_IF_ERROR(w.Put(s.substr(run, i - run)));
    run = i + 1;
    switch (c) {
      case '"':
        SP_RETURN_IF_ERROR(w.Put("\\\""));
        break;
      case '\\':
        SP_RETURN_IF_ERROR(w.Put("\\\\"));
        break;
      case '\b':
        SP_RETURN_IF_ERROR(w.Put("\\b"));
        break;
      case '\f':
        SP_RETURN_IF_ERROR(w.Put("\\f"));
        break;
      case '\n':
        SP_RETURN_IF_ERROR(w.Put("\\n"));
        break;
      case '\r':
        SP_RETURN_IF_ERROR(w.Put("\\r"));
        break;
      case '\t':
        SP_RETURN_IF_ERROR(w.Put("\\t"));
        break;
      default: {
        char esc[8];
        std::snprintf(esc, sizeof esc, "\\u%04x", static_cast<unsigned>(c));
        SP_RETURN_IF_ERROR(w.Put(esc));
      }
    }
  }
  SP_RETURN_IF_ERROR(w.Put(s.substr(run)));
  return w.Put("\"");
}

// Standard base64 of `bytes` as a JSON string, in pieces (a multiple of 3 input bytes each).
Status PutBase64(BufferedWriter& w, std::string_view bytes) {
  constexpr std::size_t kPiece = 48 * 1024;
  SP_RETURN_IF_ERROR(w.Put("\""));
  for (std::size_t i = 0; i < bytes.size(); i += kPiece) {
    SP_RETURN_IF_ERROR(w.Put(Base64(bytes.substr(i, kPiece))));
  }
  return w.Put("\"");
}

// Why a payload that looks like JSON was not parsed.
enum class Unparsed { kNo, kTooLarge, kTooDeep };

// Writes the fields that carry a payload; see docs/format-entities.md.
Status PutPayload(BufferedWriter& w, std::string_view raw, Unparsed* unparsed) {
  *unparsed = Unparsed::kNo;
  if (!ValidUtf8(raw)) {
    SP_RETURN_IF_ERROR(w.Put("\"payload_b64\":"));
    return PutBase64(w, raw);
  }
  const auto first = raw.find_first_not_of(" \t\r\n");
  const bool may_be_json = first != std::string_view::npos;
  if (may_be_json && JsonNestedDeeperThan(raw, kMaxParsedDepth)) {
    *unparsed = Unparsed::kTooDeep;
  } else if (may_be_json && raw.size() > kMaxParsedBytes) {
    *unparsed = Unparsed::kTooLarge;
  } else if (may_be_json) {
    json parsed = json::parse(raw, nullptr, /*allow_exceptions=*/false);
    if (!parsed.is_discarded() && !parsed.is_string()) {
      // Parsed text is UTF-8, so dump() cannot throw.
      const std::string dumped = parsed.dump();
      SP_RETURN_IF_ERROR(w.Put("\"payload\":"));
      SP_RETURN_IF_ERROR(w.Put(dumped));
      if (dumped == raw) return {};
      SP_RETURN_IF_ERROR(w.Put(",\"payload_raw\":"));
      return PutString(w, raw);
    }
  }
  SP_RETURN_IF_ERROR(w.Put("\"payload\":"));
  return PutString(w, raw);
}

std::string Plural(std::uint64_t n, const char* one, const char* many) {
  return std::to_string(n) + " " + (n == 1 ? one : many);
}

// A topic for a warning: UTF-8, at most 200 bytes.
std::string WarningTopic(std::string_view topic) {
  constexpr std::size_t kMax = 200;
  return topic.size() > kMax ? SanitizeUtf8(topic.substr(0, kMax)) + "..." : SanitizeUtf8(topic);
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
  json parsed = payload.size() > kMaxParsedBytes || JsonNestedDeeperThan(payload, kMaxParsedDepth)
                    ? json(json::value_t::discarded)
                    : json::parse(payload, nullptr, false);
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
  std::string scratch;
  auto state = [&scratch](const EntityRecord& r) {
    auto bytes = PayloadBytes(r, scratch);
    return bytes ? StateText(std::string(*bytes)) : std::string();
  };
  for (const EntityRecord& r : snap.records) {
    if (EndsWith(r.topic, "/availability")) {
      const std::string s = state(r);
      const std::string entity = r.topic.substr(0, r.topic.size() - 13);
      if (s == "online") out[entity] = true;
      if (s == "offline") out[entity] = false;
    } else if (EndsWith(r.topic, "/state")) {
      out[r.topic.substr(0, r.topic.size() - 6)] = state(r) != "unavailable";
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

std::optional<std::chrono::system_clock::time_point> ParseTime(std::string_view s) {
  if (s.empty() || s.back() != 'Z') return std::nullopt;
  auto t = ParseIsoTime(s);
  if (!t) return std::nullopt;
  return std::chrono::floor<std::chrono::milliseconds>(*t);
}

Result<WriteReport> WriteJson(const EntitySnapshot& snapshot, ByteSink& out) {
  std::vector<const EntityRecord*> sorted;
  sorted.reserve(snapshot.records.size());
  for (const EntityRecord& r : snapshot.records) sorted.push_back(&r);
  std::stable_sort(sorted.begin(), sorted.end(), [](const EntityRecord* a, const EntityRecord* b) {
    return a->topic < b->topic;
  });
  BufferedWriter w(out);
  const json head = {
      {"format", kFormat},
      {"captured_at", FormatMillisTime(snapshot.captured_at)},
      {"source", snapshot.source},
      {"dropped", {{"topics", snapshot.dropped_topics}, {"payloads", snapshot.dropped_payloads}}}};
  // The small members as dump(1) would indent them; then one compact line per entity, so the
  // size of the document is linear in the payloads whatever their nesting.
  std::string text = head.dump(1, ' ', false, json::error_handler_t::replace);
  text.pop_back();  // the closing brace
  while (!text.empty() && text.back() == '\n') text.pop_back();
  SP_RETURN_IF_ERROR(w.Put(text + ",\n \"entities\": ["));
  WriteReport report;
  std::uint64_t too_large = 0;
  std::uint64_t too_deep = 0;
  std::string first_too_large;
  std::string first_too_deep;
  std::string scratch;
  for (const EntityRecord* r : sorted) {
    SP_RETURN_IF_ERROR(w.Put(report.entities == 0 ? "\n  {\"topic\":" : ",\n  {\"topic\":"));
    // Topics are UTF-8 by the MQTT spec; anything else is replaced rather than thrown on later.
    SP_RETURN_IF_ERROR(PutString(w, ValidUtf8(r->topic) ? r->topic : "\xEF\xBF\xBD"));
    SP_RETURN_IF_ERROR(w.Put(","));
    Unparsed unparsed = Unparsed::kNo;
    auto bytes = PayloadBytes(*r, scratch);
    if (!bytes) return Fail(bytes.error().code, r->topic + ": " + bytes.error().message);
    SP_RETURN_IF_ERROR(PutPayload(w, *bytes, &unparsed));
    if (unparsed == Unparsed::kTooLarge && too_large++ == 0) first_too_large = r->topic;
    if (unparsed == Unparsed::kTooDeep && too_deep++ == 0) first_too_deep = r->topic;
    SP_RETURN_IF_ERROR(w.Put(r->retained ? ",\"retained\":true" : ",\"retained\":false"));
    SP_RETURN_IF_ERROR(w.Put(",\"received_at\":\"" + FormatMillisTime(r->received_at) + "\"}"));
    ++report.entities;
  }
  SP_RETURN_IF_ERROR(w.Put(report.entities == 0 ? "]\n}\n" : "\n ]\n}\n"));
  SP_RETURN_IF_ERROR(w.Flush());
  report.bytes = w.bytes();
  if (too_deep > 0) {
    report.warnings.push_back(
        "entity mirror: " + Plural(too_deep, "payload", "payloads") + " nested deeper than " +
        std::to_string(kMaxParsedDepth) +
        " levels stored as text, not parsed (first: " + WarningTopic(first_too_deep) + ")");
  }
  if (too_large > 0) {
    report.warnings.push_back(
        "entity mirror: " + Plural(too_large, "payload", "payloads") + " larger than " +
        std::to_string(kMaxParsedBytes) +
        " bytes stored as text, not parsed (first: " + WarningTopic(first_too_large) + ")");
  }
  if (snapshot.dropped_payloads > 0) {
    report.warnings.push_back(
        "entity mirror: " + Plural(snapshot.dropped_payloads, "message", "messages") +
        " larger than mqtt.mirror.max_payload_bytes dropped since the service started (last: " +
        WarningTopic(snapshot.last_dropped_payload) + ")");
  }
  if (snapshot.dropped_topics > 0) {
    report.warnings.push_back(
        "entity mirror: " + Plural(snapshot.dropped_topics, "new topic", "new topics") +
        " dropped since the service started: mqtt.mirror.max_topics reached");
  }
  return report;
}

namespace {}  // namespace

Result<WriteReport> WriteJsonFile(const EntitySnapshot& snapshot, const std::string& path) {
  const int fd =
      ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY, 0600);
  if (fd < 0) {
    const int err = errno;
    return Fail(ErrorCode::kIo, "cannot create " + path + ": " + std::strerror(err));
  }
  Fd closer(fd);
  FdSink sink(fd, path);
  return WriteJson(snapshot, sink);
}

json ToJson(const EntitySnapshot& snapshot) {
  StringSink sink;
  auto report = WriteJson(snapshot, sink);
  if (!report) return json(json::value_t::discarded);  // a StringSink does not fail
  return json::parse(sink.text, nullptr, false);
}

KeptPayload KeepPayload(std::string_view payload) {
  if (payload.size() >= kCompressFromBytes) {
    struct FreeCctx {
      void operator()(ZSTD_CCtx* c) const { ZSTD_freeCCtx(c); }
    };
    // One context per thread: the mirror compresses on the service's state thread.
    thread_local std::unique_ptr<ZSTD_CCtx, FreeCctx> cctx(ZSTD_createCCtx());
    std::string frame(ZSTD_compressBound(payload.size()), '\0');
    const std::size_t n = cctx ? ZSTD_compressCCtx(cctx.get(), frame.data(), frame.size(),
                                                   payload.data(), payload.size(), 1)
                               : 0;
    if (cctx && !ZSTD_isError(n) && n <= payload.size() - payload.size() / 8) {
      frame.resize(n);
      frame.shrink_to_fit();
      return {std::make_shared<const std::string>(std::move(frame)), true};
    }
  }
  return {std::make_shared<const std::string>(payload), false};
}

Result<std::string_view> PayloadBytes(const EntityRecord& r, std::string& scratch) {
  if (!r.payload) return std::string_view();
  if (!r.compressed) return std::string_view(*r.payload);
  const auto size = ZSTD_getFrameContentSize(r.payload->data(), r.payload->size());
  if (size == ZSTD_CONTENTSIZE_ERROR || size == ZSTD_CONTENTSIZE_UNKNOWN || size > (1ull << 30)) {
    return Fail(ErrorCode::kInternal, "a mirrored payload's zstd frame has no valid size");
  }
  scratch.resize(static_cast<std::size_t>(size));
  const std::size_t n =
      ZSTD_decompress(scratch.data(), scratch.size(), r.payload->data(), r.payload->size());
  if (ZSTD_isError(n) || n != scratch.size()) {
    return Fail(ErrorCode::kInternal, "a mirrored payload does not decompress");
  }
  return std::string_view(scratch);
}

EntitySnapshot AvailabilityOnly(const EntitySnapshot& snapshot) {
  EntitySnapshot out;
  out.captured_at = snapshot.captured_at;
  out.source = snapshot.source;
  for (const EntityRecord& r : snapshot.records) {
    if (EndsWith(r.topic, "/availability") || EndsWith(r.topic, "/state")) out.records.push_back(r);
  }
  return out;
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
    r.payload = std::make_shared<const std::string>(std::move(*payload));
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
