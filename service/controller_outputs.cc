// The controller's outbound side: availability, discovery, the state topics, the list of safety
// points and the persisted state file.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <set>

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
  if (auto st = transport_.Publish(topic, payload, qos, retain); !st) {
    ++stats_.publish_failures;
    spdlog::warn("publish to {} failed: {}", topic, st.error().message);
  }
}

void Controller::OnConnected() {
  published_.clear();  // the broker may have lost its retained messages
  Publish(Topic("availability"), "online", true);
  PublishDiscovery();
  Execute(std::vector<Action>{PublishStatus{lifecycle_.StatusJson()}});
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
