// The entity mirror under hostile payloads (issue 9, finding 4): what it keeps, what
// state/entities.json then holds (exact bytes), and the warnings the safety point gets.
#include "service/mirror.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <nlohmann/json.hpp>
#include <string>

#include "core/base/io.h"
#include "core/base/json_depth.h"
#include "core/sources/entities.h"

namespace safepoint::service {
namespace {

using nlohmann::json;

std::chrono::system_clock::time_point At(std::int64_t ms) {
  return std::chrono::system_clock::time_point(std::chrono::milliseconds(ms));
}

const auto kReceived = At(1714564800123);  // 2024-05-01T12:00:00.123Z
const auto kCaptured = At(1714564800500);  // 2024-05-01T12:00:00.500Z

struct Written {
  std::string text;
  entities::WriteReport report;
};

Written Write(const entities::EntitySnapshot& snap) {
  StringSink sink;
  auto r = entities::WriteJson(snap, sink);
  EXPECT_TRUE(r) << r.error().message;
  return {sink.text, r ? *r : entities::WriteReport{}};
}

// The document around one entity line, as WriteJson lays it out.
std::string Document(const std::string& entity_line, std::uint64_t dropped_payloads = 0) {
  return "{\n \"captured_at\": \"2024-05-01T12:00:00.500Z\",\n \"dropped\": {\n  \"payloads\": " +
         std::to_string(dropped_payloads) +
         ",\n  \"topics\": 0\n },\n \"format\": 1,\n \"source\": \"mqtt\",\n \"entities\": [\n  " +
         entity_line + "\n ]\n}\n";
}

std::string Nested(std::size_t levels) {
  return std::string(levels, '[') + std::string(levels, ']');
}

// The payload a reader gets back from the written document.
std::string ReadBack(const std::string& text, const std::string& topic) {
  auto snap = entities::EntitySnapshotFromJson(json::parse(text));
  EXPECT_TRUE(snap) << snap.error().message;
  if (!snap) return {};
  for (const auto& r : snap->records) {
    if (r.topic == topic) return r.payload ? *r.payload : std::string();
  }
  ADD_FAILURE() << "no " << topic;
  return {};
}

TEST(EntityMirror, SixtyFourKilobytesOfNestingAreKeptAsTextNotParsed) {
  // Finding 4 as reported: 64 KB of [[[...]]] on zigbee2mqtt/x, default limits.
  EntityMirror mirror{config::MirrorConfig{}};
  const std::string deep = Nested(32 * 1024);
  ASSERT_EQ(deep.size(), 65536u);
  ASSERT_TRUE(mirror.Offer("zigbee2mqtt/x", deep, true, kReceived));
  const Written w = Write(mirror.Snapshot(kCaptured));
  EXPECT_EQ(w.text, Document("{\"topic\":\"zigbee2mqtt/x\",\"payload\":\"" + deep +
                             "\",\"retained\":true,\"received_at\":\"2024-05-01T12:00:00.123Z\"}"));
  // Linear, not quadratic: the document is the payload plus a fixed frame (was 1 GB).
  EXPECT_LT(w.text.size(), deep.size() + 512);
  EXPECT_EQ(w.report.bytes, w.text.size());
  EXPECT_EQ(w.report.entities, 1u);
  EXPECT_EQ(w.report.warnings,
            std::vector<std::string>{"entity mirror: 1 payload nested deeper than 64 levels "
                                     "stored as text, not parsed (first: zigbee2mqtt/x)"});
  EXPECT_EQ(ReadBack(w.text, "zigbee2mqtt/x"), deep);
}

TEST(EntityMirror, HundredThousandLevelsAreKeptAsTextNotParsed) {
  config::MirrorConfig cfg;
  cfg.max_payload_bytes = 1 << 20;
  EntityMirror mirror{cfg};
  const std::string deep = "{\"a\":" + Nested(100000) + "}";
  ASSERT_TRUE(mirror.Offer("zigbee2mqtt/deep", deep, false, kReceived));
  ASSERT_TRUE(mirror.Offer("zigbee2mqtt/ok", "{\"state\":\"ON\"}", false, kReceived));
  const Written w = Write(mirror.Snapshot(kCaptured));
  const json doc = json::parse(w.text);
  ASSERT_EQ(doc["entities"].size(), 2u);
  EXPECT_EQ(doc["entities"][0], (json{{"topic", "zigbee2mqtt/deep"},
                                      {"payload", deep},
                                      {"retained", false},
                                      {"received_at", "2024-05-01T12:00:00.123Z"}}));
  EXPECT_EQ(doc["entities"][1]["payload"], (json{{"state", "ON"}}));  // parsed as before
  EXPECT_EQ(w.report.warnings,
            std::vector<std::string>{"entity mirror: 1 payload nested deeper than 64 levels "
                                     "stored as text, not parsed (first: zigbee2mqtt/deep)"});
  EXPECT_EQ(ReadBack(w.text, "zigbee2mqtt/deep"), deep);
  // 64 levels are still parsed; 65 are not.
  EXPECT_FALSE(JsonNestedDeeperThan(Nested(64), 64));
  EXPECT_TRUE(JsonNestedDeeperThan(Nested(65), 64));
  EXPECT_FALSE(JsonNestedDeeperThan("[\"[[[[[[\"]", 1));  // brackets in strings
  EXPECT_FALSE(JsonNestedDeeperThan("[\"\\\"[[\"]", 1));  // after an escaped quote
}

TEST(EntityMirror, TenMegabytePayloadIsDroppedWithAWarningUnderTheDefaultLimit) {
  EntityMirror mirror{config::MirrorConfig{}};  // max_payload_bytes 65536
  ASSERT_TRUE(mirror.Offer("zigbee2mqtt/big", "{\"state\":\"ON\"}", true, kReceived));
  const std::string big = "{\"a\":\"" + std::string(10 * 1024 * 1024 - 8, 'x') + "\"}";
  ASSERT_EQ(big.size(), 10u * 1024 * 1024);
  EXPECT_FALSE(mirror.Offer("zigbee2mqtt/big", big, true, At(1714564801000)));
  EXPECT_EQ(mirror.dropped_payloads(), 1u);
  const Written w = Write(mirror.Snapshot(kCaptured));
  // The topic keeps its previous payload, with the time it was received.
  EXPECT_EQ(w.text, Document("{\"topic\":\"zigbee2mqtt/big\",\"payload\":{\"state\":\"ON\"},"
                             "\"retained\":true,\"received_at\":\"2024-05-01T12:00:00.123Z\"}",
                             1));
  EXPECT_EQ(w.report.warnings,
            std::vector<std::string>{
                "entity mirror: 1 message larger than mqtt.mirror.max_payload_bytes dropped since "
                "the service started (last: zigbee2mqtt/big (10485760 bytes))"});
}

TEST(EntityMirror, TenMegabytePayloadWithinARaisedLimitIsKeptAsTextExactly) {
  config::MirrorConfig cfg;
  cfg.max_payload_bytes = 16 << 20;
  EntityMirror mirror{cfg};
  // Every control character and quote, so the streamed escaping is exercised at size.
  std::string big = "{\"a\":\"";
  while (big.size() < 10 * 1024 * 1024 - 2) big += "x\"\\\n\t\x01\x1f\x7f\xc3\xa9";
  big += "\"}";
  ASSERT_TRUE(mirror.Offer("zigbee2mqtt/big", big, true, kReceived));
  StringSink sink;
  auto r = entities::WriteJson(mirror.Snapshot(kCaptured), sink);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->warnings,
            std::vector<std::string>{"entity mirror: 1 payload larger than 65536 bytes stored as "
                                     "text, not parsed (first: zigbee2mqtt/big)"});
  // Handed to the sink in blocks of 64 KiB, never as one string of the whole document.
  EXPECT_GT(sink.writes, static_cast<int>(sink.text.size() / (64 * 1024)));
  // The same escapes as nlohmann/json's dump().
  EXPECT_EQ(sink.text,
            Document("{\"topic\":\"zigbee2mqtt/big\",\"payload\":" + json(big).dump() +
                     ",\"retained\":true,\"received_at\":\"2024-05-01T12:00:00.123Z\"}"));
  EXPECT_EQ(ReadBack(sink.text, "zigbee2mqtt/big"), big);
}

TEST(EntityMirror, InvalidUtf8PayloadIsStoredAsBase64) {
  EntityMirror mirror{config::MirrorConfig{}};
  const std::string bytes("{\"state\":\"\xff\xfe\"}\x00", 15);
  ASSERT_TRUE(mirror.Offer("zigbee2mqtt/bin", bytes, false, kReceived));
  const Written w = Write(mirror.Snapshot(kCaptured));
  EXPECT_EQ(w.text, Document("{\"topic\":\"zigbee2mqtt/bin\",\"payload_b64\":"
                             "\"eyJzdGF0ZSI6Iv/+In0A\",\"retained\":false,"
                             "\"received_at\":\"2024-05-01T12:00:00.123Z\"}"));
  EXPECT_TRUE(w.report.warnings.empty());
  EXPECT_EQ(ReadBack(w.text, "zigbee2mqtt/bin"), bytes);
}

TEST(EntityMirror, NonJsonPayloadIsStoredAsText) {
  EntityMirror mirror{config::MirrorConfig{}};
  const std::string text = "ON [not json} \"quoted\"\n";
  ASSERT_TRUE(mirror.Offer("zigbee2mqtt/plain", text, false, kReceived));
  const Written w = Write(mirror.Snapshot(kCaptured));
  EXPECT_EQ(w.text, Document("{\"topic\":\"zigbee2mqtt/plain\",\"payload\":"
                             "\"ON [not json} \\\"quoted\\\"\\n\",\"retained\":false,"
                             "\"received_at\":\"2024-05-01T12:00:00.123Z\"}"));
  EXPECT_TRUE(w.report.warnings.empty());
  EXPECT_EQ(ReadBack(w.text, "zigbee2mqtt/plain"), text);
}

TEST(EntityMirror, SnapshotSharesPayloadsAndKeepsThemWhenTheTopicChanges) {
  EntityMirror mirror{config::MirrorConfig{}};
  ASSERT_TRUE(mirror.Offer("zigbee2mqtt/a", "one", false, kReceived));
  const auto first = mirror.Snapshot(kCaptured);
  const auto second = mirror.Snapshot(kCaptured);
  ASSERT_EQ(first.records.size(), 1u);
  EXPECT_EQ(first.records[0].payload.get(), second.records[0].payload.get());  // not a copy
  ASSERT_TRUE(mirror.Offer("zigbee2mqtt/a", "two", false, kReceived));
  EXPECT_EQ(*first.records[0].payload, "one");
  EXPECT_EQ(*mirror.Snapshot(kCaptured).records[0].payload, "two");
}

// A Zigbee2MQTT-like state of `size` bytes: JSON whose keys repeat, as large devices send.
std::string DeviceState(std::size_t size, unsigned seed) {
  std::string s = "{\"friendly_name\":\"Küchenlicht 🌙 厨房\",\"state\":\"ON\",\"linkquality\":" +
                  std::to_string(seed % 255);
  for (unsigned i = 0; s.size() + 40 < size; ++i) {
    s += ",\"endpoint_" + std::to_string(i) +
         "\":{\"power\":" + std::to_string((seed * 7 + i) % 997) + "}";
  }
  s += ",\"pad\":\"" + std::string(size > s.size() + 10 ? size - s.size() - 10 : 0, 'x') + "\"}";
  return s;
}

// Payloads of 512 bytes and more are kept compressed when that pays; what a safety point gets
// is byte for byte what it would get from the payloads as received, and reading them back gives
// the bytes received.
TEST(EntityMirror, LargePayloadsAreKeptCompressedAndWrittenExactly) {
  EntityMirror mirror{config::MirrorConfig{}};
  entities::EntitySnapshot as_received;
  as_received.captured_at = kCaptured;
  std::size_t kept_bytes = 0;
  std::size_t received_bytes = 0;
  std::string incompressible(4096, '\0');
  unsigned x = 12345;
  for (char& c : incompressible) {
    x = x * 1103515245u + 12345u;
    c = static_cast<char>(x >> 24);
  }
  const std::vector<std::pair<std::string, std::string>> messages = {
      {"zigbee2mqtt/small", "{\"state\":\"OFF\"}"},
      {"zigbee2mqtt/edge", DeviceState(entities::kCompressFromBytes, 1)},
      {"zigbee2mqtt/big", DeviceState(32 * 1024, 2)},
      {"zigbee2mqtt/noise", incompressible},
  };
  for (const auto& [topic, payload] : messages) {
    ASSERT_TRUE(mirror.Offer(topic, payload, false, kReceived)) << topic;
    as_received.records.push_back(entities::EntityRecord{
        topic, std::make_shared<const std::string>(payload), false, kReceived});
    received_bytes += payload.size();
  }
  const auto snap = mirror.Snapshot(kCaptured);
  std::string scratch;
  for (const auto& r : snap.records) {
    kept_bytes += r.payload->size();
    const auto& expected = std::find_if(messages.begin(), messages.end(), [&](const auto& m) {
                             return m.first == r.topic;
                           })->second;
    auto bytes = entities::PayloadBytes(r, scratch);
    ASSERT_TRUE(bytes) << bytes.error().message;
    EXPECT_EQ(*bytes, expected) << r.topic;
    EXPECT_EQ(r.compressed, r.topic == "zigbee2mqtt/edge" || r.topic == "zigbee2mqtt/big")
        << r.topic;
  }
  EXPECT_LT(kept_bytes, received_bytes / 2);
  EXPECT_EQ(Write(snap).text, Write(as_received).text);
  EXPECT_EQ(ReadBack(Write(snap).text, "zigbee2mqtt/noise"), incompressible);
}

TEST(EntityMirror, ACorruptCompressedPayloadFailsTheWriteNamingTheTopic) {
  entities::EntitySnapshot snap;
  snap.captured_at = kCaptured;
  snap.records.push_back(entities::EntityRecord{
      "zigbee2mqtt/broken", std::make_shared<const std::string>("not a zstd frame"), false,
      kReceived, /*compressed=*/true});
  StringSink sink;
  auto r = entities::WriteJson(snap, sink);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::kInternal);
  EXPECT_NE(r.error().message.find("zigbee2mqtt/broken"), std::string::npos) << r.error().message;
}

TEST(EntityMirror, AvailabilityOnlyKeepsWhatTheHealthCheckReads) {
  config::MirrorConfig cfg;
  cfg.filters = {"#"};
  cfg.exclude = {};
  EntityMirror mirror{cfg};
  ASSERT_TRUE(mirror.Offer("zigbee2mqtt/lamp", "{\"state\":\"ON\"}", false, kReceived));
  ASSERT_TRUE(mirror.Offer("zigbee2mqtt/lamp/availability", "online", false, kReceived));
  ASSERT_TRUE(mirror.Offer("statestream/light/hall/state", "on", false, kReceived));
  const auto only = entities::AvailabilityOnly(mirror.Snapshot(kCaptured));
  ASSERT_EQ(only.records.size(), 2u);
  EXPECT_EQ(only.records[0].topic, "statestream/light/hall/state");
  EXPECT_EQ(only.records[1].topic, "zigbee2mqtt/lamp/availability");
}

}  // namespace
}  // namespace safepoint::service
