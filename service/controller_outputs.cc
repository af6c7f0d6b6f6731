// The controller's outbound side: availability, discovery, the state topics, the list of safety
// points and the persisted state file.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <set>
#include <utility>

#include "core/base/io.h"
#include "core/rollback/rollback.h"
#include "service/controller.h"
#include "service/controller_internal.h"
#include "service/state_file.h"

namespace safepoint::service {

using controller_internal::Dump;
using nlohmann::json;

std::string Controller::Topic(const std::string& suffix) const {
  return mqtt_config_.base_topic + "/" + suffix;
}

void Controller::Publish(const std::string& topic, const std::string& payload, bool retain,
                         int qos) {
  // Behind what waits already: a subscriber sees answers, events and decisions in order.
  if (!retain && !outbox_.empty()) {
    FlushOutbox(/*log_failure=*/false);
    if (!outbox_.empty()) {
      Hold(topic, payload, qos);
      return;
    }
  }
  if (auto st = transport_.Publish(topic, payload, qos, retain); !st) {
    ++stats_.publish_failures;
    // Retained topics are published again on every connect (OnConnected) as they are then; a
    // message the broker would never take (kBadInput: too large, a bad topic) is not held.
    const bool hold = !retain && st.error().code == ErrorCode::kIo;
    spdlog::warn("publish to {} failed: {}{}", topic, st.error().message,
                 hold ? "; sent once connected again" : "");
    if (hold) Hold(topic, payload, qos);
  }
}

void Controller::Hold(const std::string& topic, const std::string& payload, int qos) {
  outbox_.push_back({topic, payload, qos});
  outbox_bytes_ += topic.size() + payload.size();
  while (outbox_.size() > kOutboxMessages || outbox_bytes_ > kOutboxBytes) {
    const Held& oldest = outbox_.front();
    ++stats_.messages_dropped;
    spdlog::error(
        "not connected to the broker for too long: dropped a message to {} ({} "
        "held, at most {} or {} bytes)",
        oldest.topic, outbox_.size() - 1, kOutboxMessages, kOutboxBytes);
    outbox_bytes_ -= oldest.topic.size() + oldest.payload.size();
    outbox_.pop_front();
  }
}

void Controller::FlushOutbox(bool log_failure) {
  while (!outbox_.empty()) {
    const Held& next = outbox_.front();
    if (auto st = transport_.Publish(next.topic, next.payload, next.qos, false); !st) {
      if (log_failure) {
        spdlog::warn("publish to {} failed again: {}; kept for the next connect", next.topic,
                     st.error().message);
      }
      return;
    }
    outbox_bytes_ -= next.topic.size() + next.payload.size();
    outbox_.pop_front();
  }
}

void Controller::OnConnected() {
  published_.clear();  // the broker may have lost its retained messages
  Publish(Topic("availability"), "online", true);
  PublishDiscovery();
  Execute(std::vector<Action>{PublishStatus{lifecycle_.StatusJson()}});
  // What recovery did at start, once Home Assistant sees the service online.
  ReportRecovery(std::exchange(recovered_at_start_, {}));
  // What fell due while the connection was down, oldest first, after the state it led to.
  if (!outbox_.empty())
    spdlog::info("sending {} messages held while not connected", outbox_.size());
  FlushOutbox(/*log_failure=*/true);
}

discovery::DiscoveryState Controller::DiscoveryStateNow() const {
  discovery::DiscoveryState state;
  state.safety_points = safety_points_.ids();
  state.selected = safety_points_.selected();
  state.decision_pending = lifecycle_.state() == State::kAwaitingConfirmation;
  state.conflict_pending = lifecycle_.state() == State::kAwaitingConflictResolution;
  return state;
}

void Controller::PublishDiscovery() {
  if (!started_) return;
  Publish(discovery::DiscoveryTopic(discovery_options_),
          Dump(discovery::DeviceDiscovery(discovery_options_, DiscoveryStateNow())), true);
  PublishStateTopics();
}

void Controller::PublishStateTopics() {
  if (!started_) return;
  for (const auto& [topic, payload] :
       discovery::StateTopics(discovery_options_, DiscoveryStateNow())) {
    auto it = published_.find(topic);
    if (it != published_.end() && it->second == payload) continue;  // retained already
    Publish(topic, payload, true);
    published_[topic] = payload;
  }
}

void Controller::RefreshSafetyPoints(bool last_backup) {
  auto list = backend_.List();
  if (!list) {
    spdlog::warn("cannot list the safety points: {}", list.error().message);
    return;
  }
  std::vector<std::string> ids;
  std::set<std::string> pre_rollback;
  for (auto it = list->rbegin(); it != list->rend(); ++it) {
    ids.push_back(it->id);
    if (it->manifest && it->manifest->reason.starts_with(rollback::kPreRollbackReason)) {
      pre_rollback.insert(it->id);
    }
  }
  if (safety_points_.Update(std::move(ids), pre_rollback)) PublishDiscovery();
  if (!last_backup) return;
  std::optional<BackupSummary> newest;
  for (auto it = list->rbegin(); it != list->rend() && !newest; ++it) {
    if (it->manifest) newest = SummaryOf(*it->manifest);
  }
  Execute(lifecycle_.SetLastBackup(std::move(newest)));
}

void Controller::Persist() {
  if (auto st = WriteStateFile(fs_, config_.service.state_file, lifecycle_.Snapshot()); !st) {
    spdlog::error("cannot save the service state to {}: {}", config_.service.state_file,
                  st.error().message);
  }
}

void Controller::LoadPersisted() {
  auto state = ReadStateFile(config_.service.state_file);
  if (!state) {
    if (state.error().code != ErrorCode::kNotFound) {
      spdlog::error("service state: {}; starting idle", state.error().message);
    }
    return;
  }
  spdlog::info("resuming: state {}", StateName(state->state));
  Execute(lifecycle_.Restore(*state, clock_.Now()));
}

}  // namespace safepoint::service
