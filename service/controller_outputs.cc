// The controller's outbound side: availability, discovery, the state topics, the list of safety
// points and the persisted state file.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <filesystem>

#include "core/base/io.h"
#include "service/controller.h"
#include "service/controller_internal.h"

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
  state.safety_points = safety_points_;
  state.selected = selected_;
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

void Controller::RefreshSafetyPoints() {
  auto list = backend_.List();
  if (!list) {
    spdlog::warn("cannot list safety points: {}", list.error().message);
    return;
  }
  std::vector<std::string> ids;
  for (auto it = list->rbegin(); it != list->rend(); ++it) ids.push_back(it->id);
  bool changed = ids != safety_points_;
  safety_points_ = std::move(ids);
  if (selected_ &&
      std::find(safety_points_.begin(), safety_points_.end(), *selected_) == safety_points_.end()) {
    selected_.reset();
  }
  if (!selected_ && !safety_points_.empty()) selected_ = safety_points_.front();
  if (changed) PublishDiscovery();
}

std::optional<BackupSummary> Controller::Newest() {
  auto list = backend_.List();
  if (!list) return std::nullopt;
  for (auto it = list->rbegin(); it != list->rend(); ++it) {
    if (it->manifest) return SummaryOf(*it->manifest);
  }
  return std::nullopt;
}

void Controller::Persist() {
  const std::string& path = config_.service.state_file;
  {
    std::error_code ec;
    auto parent = std::filesystem::path(path).parent_path();
    if (!parent.empty() && !std::filesystem::exists(parent, ec)) {
      std::filesystem::create_directories(parent, ec);
      std::filesystem::permissions(parent, std::filesystem::perms::owner_all, ec);
    }
  }
  const std::string tmp = path + ".tmp";
  std::string text = PersistedStateToJson(lifecycle_.Snapshot())
                         .dump(1, ' ', false, json::error_handler_t::replace) +
                     "\n";
  auto write = [&]() -> Status {
    (void)fs_.Remove(tmp);
    auto f = fs_.CreateFile(tmp, 0600);
    if (!f) return tl::unexpected(f.error());
    SP_RETURN_IF_ERROR(
        (*f)->Append({reinterpret_cast<const std::uint8_t*>(text.data()), text.size()}));
    SP_RETURN_IF_ERROR((*f)->Sync());
    SP_RETURN_IF_ERROR((*f)->Close());
    SP_RETURN_IF_ERROR(fs_.Rename(tmp, path));
    auto slash = path.rfind('/');
    return fs_.SyncDir(slash == std::string::npos ? "." : path.substr(0, slash));
  };
  if (auto st = write(); !st) {
    spdlog::error("cannot save the service state to {}: {}", path, st.error().message);
  }
}

void Controller::LoadPersisted() {
  // Never waits on a FIFO or reads a giant: the state file is a few hundred bytes.
  constexpr std::size_t kMaxStateFileBytes = 1 << 20;
  auto text = ReadFileBounded(config_.service.state_file, kMaxStateFileBytes);
  if (!text) {
    if (text.error().code != ErrorCode::kNotFound) {
      spdlog::error("service state: {}; starting idle", text.error().message);
    }
    return;
  }
  json j = json::parse(*text, nullptr, false);
  if (j.is_discarded()) {
    spdlog::error("service state {} is not valid JSON; starting idle", config_.service.state_file);
    return;
  }
  auto state = PersistedStateFromJson(j);
  if (!state) {
    spdlog::error("service state {}: {}; starting idle", config_.service.state_file,
                  state.error().message);
    return;
  }
  spdlog::info("resuming: state {}", StateName(state->state));
  Execute(lifecycle_.Restore(*state, clock_.Now()));
}

}  // namespace safepoint::service
