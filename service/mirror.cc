#include "service/mirror.h"

namespace safepoint::service {

bool EntityMirror::Offer(const std::string& topic, const std::string& payload, bool retained,
                         std::chrono::system_clock::time_point now) {
  if (!entities::MirrorAccepts(config_, topic)) return false;
  if (payload.empty()) {
    topics_.erase(topic);
    return true;
  }
  if (payload.size() > config_.max_payload_bytes) {
    ++dropped_payloads_;
    last_dropped_payload_ = topic + " (" + std::to_string(payload.size()) + " bytes)";
    return false;
  }
  auto it = topics_.find(topic);
  if (it == topics_.end()) {
    if (topics_.size() >= config_.max_topics) {
      ++dropped_topics_;
      return false;
    }
    it = topics_.emplace(topic, Value{}).first;
  }
  // A new string, never changed in place: snapshots taken earlier keep the one they share.
  auto kept = entities::KeepPayload(payload);
  it->second.payload = std::move(kept.bytes);
  it->second.compressed = kept.compressed;
  it->second.retained = retained;
  it->second.received_at = now;
  return true;
}

entities::EntitySnapshot EntityMirror::Snapshot(std::chrono::system_clock::time_point now) const {
  entities::EntitySnapshot s;
  s.captured_at = now;
  s.source = "mqtt";
  s.dropped_topics = dropped_topics_;
  s.dropped_payloads = dropped_payloads_;
  s.last_dropped_payload = last_dropped_payload_;
  s.records.reserve(topics_.size());
  for (const auto& [topic, v] : topics_) {
    s.records.push_back(
        entities::EntityRecord{topic, v.payload, v.retained, v.received_at, v.compressed});
  }
  return s;
}

}  // namespace safepoint::service
