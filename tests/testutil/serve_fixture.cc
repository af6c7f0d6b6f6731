#include "tests/testutil/serve_fixture.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sodium.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

namespace safepoint::testing {

namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;
namespace fs = std::filesystem;

std::string UniqueClientId() {
  return "observer-" + std::to_string(::getpid()) + "-" + std::to_string(randombytes_random());
}

}  // namespace

nlohmann::json Received::Json() const { return nlohmann::json::parse(payload, nullptr, false); }

// --- Observer --------------------------------------------------------------------------------

Observer::Observer(const std::string& url, std::vector<std::string> filters,
                   ObserverOptions options) {
  mqtt::ClientOptions o;
  o.url = url;
  o.client_id = UniqueClientId();
  o.username = options.username;
  if (options.password) o.password = Secret(std::string_view(*options.password));
  o.tls.ca_file = options.ca_file;
  o.reconnect_max = std::chrono::seconds(1);
  o.will_topic.clear();
  client_ = std::make_unique<mqtt::Client>(std::move(o));
  if (auto st = client_->Connect(milliseconds(10000)); !st) {
    ADD_FAILURE() << "observer cannot connect: " << st.error().message;
    return;
  }
  std::vector<std::pair<std::string, int>> subs;
  for (auto& f : filters) subs.emplace_back(std::move(f), 1);
  if (auto st = client_->Subscribe(subs); !st) {
    ADD_FAILURE() << "observer cannot subscribe: " << st.error().message;
    return;
  }
  ok_ = true;
  pump_ = std::thread([this] {
    while (!stop_) {
      auto ev = client_->WaitEvent(milliseconds(50));
      if (!ev || ev->kind != mqtt::Event::Kind::kMessage) continue;
      {
        std::lock_guard lock(mu_);
        messages_.push_back(Received{std::move(ev->message.topic), std::move(ev->message.payload),
                                     ev->message.retained, Clock::now()});
      }
      cv_.notify_all();
    }
  });
}

Observer::~Observer() {
  stop_ = true;
  if (pump_.joinable()) pump_.join();
  if (client_) client_->Disconnect();
}

std::size_t Observer::Mark() {
  std::lock_guard lock(mu_);
  return messages_.size();
}

std::optional<Received> Observer::NextRaw(const std::string& topic, std::size_t* cursor,
                                          milliseconds timeout,
                                          const std::function<bool(const std::string&)>& pred) {
  const auto deadline = Clock::now() + timeout;
  std::unique_lock lock(mu_);
  while (true) {
    for (std::size_t i = *cursor; i < messages_.size(); ++i) {
      const auto& m = messages_[i];
      if (m.topic != topic) continue;
      if (pred && !pred(m.payload)) continue;
      *cursor = i + 1;
      return m;
    }
    if (cv_.wait_until(lock, deadline) == std::cv_status::timeout) {
      // One last look at what arrived with the timeout.
      for (std::size_t i = *cursor; i < messages_.size(); ++i) {
        const auto& m = messages_[i];
        if (m.topic == topic && (!pred || pred(m.payload))) {
          *cursor = i + 1;
          return m;
        }
      }
      return std::nullopt;
    }
  }
}

std::optional<Received> Observer::Next(const std::string& topic, std::size_t* cursor,
                                       milliseconds timeout,
                                       const std::function<bool(const nlohmann::json&)>& pred) {
  return NextRaw(topic, cursor, timeout, [&](const std::string& payload) {
    if (!pred) return true;
    const auto j = nlohmann::json::parse(payload, nullptr, false);
    return !j.is_discarded() && pred(j);
  });
}

std::vector<Received> Observer::All(const std::string& topic, std::size_t from) {
  std::lock_guard lock(mu_);
  std::vector<Received> out;
  for (std::size_t i = from; i < messages_.size(); ++i) {
    if (messages_[i].topic == topic) out.push_back(messages_[i]);
  }
  return out;
}

std::vector<Received> Observer::Since(std::size_t from) {
  std::lock_guard lock(mu_);
  if (from >= messages_.size()) return {};
  return {messages_.begin() + static_cast<std::ptrdiff_t>(from), messages_.end()};
}

bool Observer::WaitCount(const std::string& topic_prefix, std::size_t from, std::size_t count,
                         milliseconds timeout) {
  std::unique_lock lock(mu_);
  return cv_.wait_for(lock, timeout, [&] {
    std::size_t n = 0;
    for (std::size_t i = from; i < messages_.size(); ++i) {
      if (messages_[i].topic.starts_with(topic_prefix)) ++n;
    }
    return n >= count;
  });
}

bool Observer::Publish(const std::string& topic, const std::string& payload, bool retain, int qos) {
  if (!client_) return false;
  if (auto st = client_->Publish(topic, payload, qos, retain); !st) {
    ADD_FAILURE() << "observer cannot publish to " << topic << ": " << st.error().message;
    return false;
  }
  return true;
}

// --- ServeHarness ----------------------------------------------------------------------------

ServeHarness::ServeHarness() {
  ha_ = dir_.Sub("config");
  backups_ = dir_.Sub("backups");
  config_ = dir_.Sub("safepoint.yaml");
  WriteFile(ha_ + "/configuration.yaml",
            "homeassistant:\n  name: Home\n  unit_system: metric\nautomation: !include "
            "automations.yaml\nscript: !include scripts.yaml\n");
  WriteFile(ha_ + "/automations.yaml", "- id: '1700000000001'\n  alias: Hall light at dusk\n");
  WriteFile(ha_ + "/scripts.yaml", "good_night:\n  sequence: []\n");
  WriteFile(
      ha_ + "/.storage/core.entity_registry",
      R"({"version":1,"minor_version":14,"key":"core.entity_registry","data":{"entities":[]}})");
  WriteSecrets(ha_ + "/secrets.yaml", kPassphrase,
               "mqtt_password: \"" + std::string(kMqttPassword) + "\"\n");
}

ServeHarness::~ServeHarness() {
  if (process_) Kill();
}

void ServeHarness::WriteConfig(const ServeConfig& c) {
  std::ostringstream y;
  y << "paths:\n  ha_config: " << ha_ << "\n  workspace: " << dir_.Sub("ws")
    << "\n  backup_dir: " << backups_ << "\n"
    << "encryption:\n  scrypt_work_factor: 15\n"
    << "sources:\n  logs: []\n"
    << "rollback:\n  on_conflict: " << c.on_conflict << "\n"
    << "mqtt:\n  url: " << c.url << "\n"
    << c.mqtt_extra << "service:\n  confirm_timeout: " << c.confirm_timeout
    << "\n  health_timeout: " << c.health_timeout
    << "\n  auto_rollback: " << (c.auto_rollback ? "true" : "false")
    << (c.update_timeout.empty() ? "" : "\n  update_timeout: " + c.update_timeout)
    << (c.resolve_timeout.empty() ? "" : "\n  resolve_timeout: " + c.resolve_timeout)
    << "\n  schedule:\n    daily_at: \"off\"\n"
    << c.extra;
  WriteFile(config_, y.str(), 0600);
}

void ServeHarness::Start() {
  if (process_) {
    ADD_FAILURE() << "the service is already running";
    return;
  }
  process_ = std::make_unique<SpawnedProcess>(
      std::vector<std::string>{SAFEPOINT_BINARY, "--config", config_, "serve"});
}

void ServeHarness::Kill() {
  if (!process_) return;
  (void)process_->Signal(SIGKILL);
  old_output_ += process_->output();
  process_.reset();
}

int ServeHarness::Stop() {
  if (!process_) return -1;
  const int status = process_->Signal(SIGTERM, milliseconds(20000));
  old_output_ += process_->output();
  process_.reset();
  return status;
}

pid_t ServeHarness::pid() const { return process_ ? process_->pid() : -1; }

std::string ServeHarness::Output() {
  return old_output_ + (process_ ? process_->output() : std::string());
}

bool ServeHarness::Alive() const {
  if (!process_ || process_->pid() <= 0) return false;
  std::ifstream in("/proc/" + std::to_string(process_->pid()) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const auto close = stat.rfind(')');
  if (close == std::string::npos || close + 2 >= stat.size()) return false;
  const char state = stat[close + 2];
  return state != 'Z' && state != 'X';
}

std::map<std::string, std::string> ServeHarness::Tree() const {
  std::map<std::string, std::string> out;
  for (const auto& e : fs::recursive_directory_iterator(ha_)) {
    if (!e.is_regular_file() || e.is_symlink()) continue;
    out[fs::relative(e.path(), ha_).string()] = ReadFile(e.path().string()).value_or("");
  }
  return out;
}

ProcessResult ServeHarness::Cli(const std::vector<std::string>& args) const {
  std::vector<std::string> argv = {SAFEPOINT_BINARY, "--config", config_};
  argv.insert(argv.end(), args.begin(), args.end());
  return RunProcess(argv, "", {}, std::chrono::seconds(120));
}

std::optional<ProcStat> ReadProcStat(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const auto close = stat.rfind(')');
  if (close == std::string::npos) return std::nullopt;
  std::istringstream fields(stat.substr(close + 2));
  std::vector<std::string> f;
  for (std::string s; fields >> s;) f.push_back(s);
  // After the command name: state(0) ... utime(11) stime(12) ... rss(21) in pages.
  if (f.size() < 22) return std::nullopt;
  ProcStat out;
  out.cpu_ticks = std::stoull(f[11]) + std::stoull(f[12]);
  out.rss_bytes = std::stoull(f[21]) * static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
  return out;
}

}  // namespace safepoint::testing
