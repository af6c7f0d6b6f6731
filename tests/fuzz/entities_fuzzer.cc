// Fuzzes the entity mirror from ingest to the stored document: service::EntityMirror::Offer (what
// the service does with every message on a mirrored topic), entities::WriteJson (the safety
// point's state/entities.json) and entities::EntitySnapshotFromJson (its reader, also used on
// the entities.json of a safety point read back for the health check). docs/format-entities.md.
//
// Input: byte 0 picks the mode.
// - Even: the rest is a sequence of MQTT messages (topic, retained flag, payload of any bytes)
//   offered to a mirror with small limits. Invariants: the mirror holds what an independent model
//   of the documented rules holds (filters and excludes, an empty payload clears the topic, a
//   payload over max_payload_bytes is dropped and counted, a new topic beyond max_topics is
//   dropped and counted); the written document is valid JSON, no larger than a fixed multiple of
//   what came in, and reads back to every payload byte for byte; a snapshot compared with itself
//   reports nothing unavailable.
// - Odd: the rest is an entities.json document. Invariants: the reader's errors are kBadInput; an
//   accepted document writes and reads back to the same topics, flags and payload bytes, and
//   writing that again gives the same bytes.

#include <fuzzer/FuzzedDataProvider.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <tuple>
#include <vector>

#include "core/base/io.h"
#include "core/base/utf8.h"
#include "core/sources/entities.h"
#include "service/mirror.h"
#include "tests/fuzz/fuzz_util.h"

namespace safepoint::fuzz {
namespace {

using nlohmann::json;
using Clock = std::chrono::system_clock;

std::string Write(const entities::EntitySnapshot& snapshot) {
  StringSink sink;
  auto report = entities::WriteJson(snapshot, sink);
  if (!report) Violated("entities: WriteJson failed on a memory sink");
  if (report->bytes != sink.text.size()) Violated("entities: reported size differs");
  return sink.text;
}

entities::EntitySnapshot Read(const std::string& text, std::string_view what) {
  const json j = json::parse(text, nullptr, false);
  if (j.is_discarded()) Violated(std::string(what) + ": written entities.json is not JSON");
  auto s = entities::EntitySnapshotFromJson(j);
  if (!s) {
    std::fprintf(stderr, "%s\n", s.error().message.c_str());
    Violated(std::string(what) + ": written entities.json does not read back");
  }
  return *s;
}

using Row = std::tuple<std::string, std::string, bool>;  // topic, payload, retained

// The bytes a record received (the mirror keeps large payloads compressed).
std::string Bytes(const entities::EntityRecord& r) {
  std::string scratch;
  auto bytes = entities::PayloadBytes(r, scratch);
  if (!bytes) Violated("entities: a kept payload does not read back");
  return std::string(*bytes);
}

std::vector<Row> Rows(const entities::EntitySnapshot& s, bool written) {
  std::vector<Row> rows;
  for (const auto& r : s.records) {
    // Topics are UTF-8 by the MQTT spec; the writer replaces any other topic with U+FFFD.
    std::string topic = !written || IsValidUtf8(r.topic) ? r.topic : "\xEF\xBF\xBD";
    rows.emplace_back(std::move(topic), Bytes(r), r.retained);
  }
  std::sort(rows.begin(), rows.end());
  return rows;
}

void Ingest(FuzzedDataProvider& in) {
  config::MirrorConfig limits;
  limits.max_topics = 1 + in.ConsumeIntegralInRange<std::uint64_t>(0, 15);
  limits.max_payload_bytes = in.ConsumeBool() ? 64 : entities::kMaxParsedBytes + 16;
  service::EntityMirror mirror(limits);
  struct Kept {
    std::string payload;
    bool retained;
    Clock::time_point at;
  };
  std::map<std::string, Kept> model;
  std::uint64_t dropped_topics = 0;
  std::uint64_t dropped_payloads = 0;
  std::size_t in_bytes = 0;
  const Clock::time_point start{std::chrono::milliseconds(1777636800123)};
  for (int i = 0; i < 64 && in.remaining_bytes() > 0; ++i) {
    const int prefix = in.ConsumeIntegralInRange(0, 3);
    std::string topic = prefix == 0   ? "zigbee2mqtt/"
                        : prefix == 1 ? "zigbee2mqtt/bridge/"
                        : prefix == 2 ? "homeassistant/"
                                      : "";
    topic += in.ConsumeRandomLengthString(64);
    const bool retained = in.ConsumeBool();
    const std::string payload = in.ConsumeRandomLengthString(entities::kMaxParsedBytes + 32);
    const Clock::time_point at = start + std::chrono::milliseconds(i);
    in_bytes += topic.size() + payload.size();
    const bool kept = mirror.Offer(topic, payload, retained, at);
    // The model: docs/format-entities.md, "Limits".
    bool want = entities::MirrorAccepts(limits, topic);
    if (want && payload.empty()) {
      model.erase(topic);
    } else if (want && payload.size() > limits.max_payload_bytes) {
      ++dropped_payloads;
      want = false;
    } else if (want && model.count(topic) == 0 && model.size() >= limits.max_topics) {
      ++dropped_topics;
      want = false;
    } else if (want) {
      model[topic] = Kept{payload, retained, at};
    }
    if (kept != want) Violated("entities: Offer kept a message the rules drop, or dropped one");
  }
  const auto snapshot = mirror.Snapshot(start + std::chrono::seconds(1));
  if (snapshot.dropped_topics != dropped_topics || snapshot.dropped_payloads != dropped_payloads) {
    Violated("entities: dropped counters differ from the rules");
  }
  if (snapshot.records.size() != model.size()) Violated("entities: the mirror holds another set");
  for (const auto& r : snapshot.records) {
    auto it = model.find(r.topic);
    if (it == model.end() || !r.payload || Bytes(r) != it->second.payload ||
        r.retained != it->second.retained || r.received_at != it->second.at) {
      Violated("entities: a mirrored record differs from the last accepted message");
    }
  }

  const std::string text = Write(snapshot);
  if (text.size() > 16 * in_bytes + 512 * (snapshot.records.size() + 1)) {
    Violated("entities: the document grows faster than the payloads");
  }
  const auto back = Read(text, "mirror");
  if (Rows(back, false) != Rows(snapshot, true)) {
    Violated("entities: a payload did not come back byte for byte");
  }
  for (const auto& r : back.records) {
    auto it = model.find(r.topic);
    if (it != model.end() && r.received_at != it->second.at) {
      Violated("entities: a receive time (whole milliseconds) changed");
    }
  }
  if (!entities::UnavailableNow(snapshot, snapshot).empty()) {
    Violated("entities: a snapshot reports entities unavailable against itself");
  }
}

void Document(std::string_view text) {
  const json j = json::parse(text, nullptr, false);
  if (j.is_discarded()) return;
  auto s = entities::EntitySnapshotFromJson(j);
  if (!s) {
    ExpectCode(s.error(), {ErrorCode::kBadInput}, "EntitySnapshotFromJson");
    return;
  }
  const std::string once = Write(*s);
  const auto back = Read(once, "document");
  if (Rows(back, false) != Rows(*s, true)) Violated("entities: a payload did not come back");
  if (Write(back) != once) Violated("entities: writing a read document is unstable");
  (void)entities::UnavailableNow(*s, back);
}

}  // namespace
}  // namespace safepoint::fuzz

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace safepoint::fuzz;
  if (size < 1) return 0;
  if ((data[0] & 1) == 0) {
    FuzzedDataProvider in(data + 1, size - 1);
    Ingest(in);
  } else {
    Document(std::string_view(reinterpret_cast<const char*>(data) + 1, size - 1));
  }
  return 0;
}
