#include "mqtt/client.h"

#include <mqtt/async_client.h>
#include <sodium.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <exception>
#include <mutex>
#include <random>
#include <thread>

#include "core/base/mqtt_names.h"
#include "mqtt/diagnosis.h"
#include "mqtt/event_queue.h"

namespace safepoint::mqtt {

namespace paho = ::mqtt;
using internal::ConnackReason;
using internal::DiagnoseTls;
using internal::EventQueue;
using internal::IsAuthRefusal;
using internal::Readable;
using std::chrono::milliseconds;

namespace {

// Granularity at which blocking waits notice a shutdown request.
constexpr milliseconds kSlice{50};
// MQTT's limit on payload lengths.
constexpr std::size_t kMaxPayloadBytes = 268435455;

// Describes a Paho exception without secrets (Paho never puts the password in its messages).
std::string Describe(const paho::exception& e) {
  std::string text = e.get_message();
  if (text.empty()) text = e.get_error_str();
  if (text.empty()) text = "error " + std::to_string(e.get_return_code());
  return text;
}

}  // namespace

milliseconds ReconnectDelay(int attempt, milliseconds min, milliseconds max, double unit) {
  if (min.count() < 1) min = milliseconds(1);
  if (max < min) max = min;
  milliseconds base = min;
  for (int i = 0; i < attempt && base < max; ++i) base *= 2;
  base = std::min(base, max);
  unit = std::clamp(unit, 0.0, 1.0);
  const double low = static_cast<double>(base.count()) / 2.0;
  const auto jittered = milliseconds(
      static_cast<std::int64_t>(low + unit * (static_cast<double>(base.count()) - low)));
  return std::clamp(jittered, min, base);
}

class Client::Impl {
 public:
  explicit Impl(ClientOptions options)
      : options_(std::move(options)), events_(options_.max_queue), rng_(std::random_device{}()) {
    auto addr = mqtt_names::ParseBrokerUrl(options_.url);
    if (!addr) {
      init_error_ = Error{addr.error().code, "MQTT url '" + mqtt_names::RedactedUrl(options_.url) +
                                                 "': " + addr.error().message};
      return;
    }
    address_ = *addr;
    if (options_.protocol != 4 && options_.protocol != 5 && options_.protocol != kProtocolAuto) {
      init_error_ =
          Error{ErrorCode::kBadInput, "MQTT protocol must be 4 (3.1.1), 5 or 0 (auto), not " +
                                          std::to_string(options_.protocol)};
      return;
    }
    protocol_.store(options_.protocol == kProtocolAuto ? 5 : options_.protocol);
    if (options_.client_id.empty() || options_.client_id.size() > mqtt_names::kMaxTopicBytes) {
      init_error_ = Error{ErrorCode::kBadInput, "MQTT client id must not be empty"};
      return;
    }
    if (!options_.will_topic.empty()) {
      if (auto st = mqtt_names::CheckTopicName(options_.will_topic); !st) {
        init_error_ =
            Error{ErrorCode::kBadInput,
                  "invalid MQTT will topic '" + options_.will_topic + "': " + st.error().message};
        return;
      }
    }
    if (auto created = CreatePaho(protocol_.load()); !created) {
      init_error_ = created.error();
      return;
    }
    worker_ = std::thread([this] { ReconnectLoop(); });
  }

  // (Re)creates the Paho client for protocol `version`. Paho C fixes the protocol family at
  // creation: a client created for 3.1.1 cannot send a version 5 CONNECT. REQUIRES: not
  // connected; conn_mu_ held or the constructor running.
  Status CreatePaho(int version) {
    try {
      client_.reset();
      // Its buffer limit applies while connected, too: it bounds publishes not yet sent.
      paho::create_options create(version);
      create.set_send_while_disconnected(false);
      create.set_max_buffered_messages(
          static_cast<int>(std::clamp<std::size_t>(options_.max_pending_publishes, 1, 1000000)));
      client_ = std::make_unique<paho::async_client>(address_.paho_uri, options_.client_id, create,
                                                     nullptr);
      client_->set_connection_lost_handler(
          [this](const std::string& cause) { OnConnectionLost(cause); });
      client_->set_disconnected_handler([this](const paho::properties&, paho::ReasonCode code) {
        OnConnectionLost("broker sent DISCONNECT (" + ConnackReason(static_cast<int>(code)) + " " +
                         std::to_string(static_cast<int>(code)) + ")");
      });
      client_->set_message_callback([this](const paho::const_message_ptr& msg) { OnMessage(msg); });
    } catch (const paho::exception& e) {
      client_.reset();
      return Fail(ErrorCode::kBadInput,
                  "cannot create MQTT client for " + options_.url + ": " + Describe(e));
    }
    protocol_.store(version);
    return {};
  }

  ~Impl() {
    {
      std::lock_guard lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    Disconnect();
    if (worker_.joinable()) worker_.join();
    closing_.store(true);
    // Destroys the Paho client (MQTTAsync_destroy) before the queue it feeds.
    client_.reset();
  }

  Status Connect(milliseconds timeout) {
    if (init_error_) return tl::unexpected(*init_error_);
    std::lock_guard conn(conn_mu_);
    if (connected_.load()) return {};
    return ConnectOnce(timeout, /*cancellable=*/false);
  }

  Status Subscribe(const std::vector<std::pair<std::string, int>>& filters) {
    if (init_error_) return tl::unexpected(*init_error_);
    for (const auto& [filter, qos] : filters) {
      if (auto st = mqtt_names::CheckTopicFilter(filter); !st) {
        return Fail(ErrorCode::kBadInput,
                    "invalid MQTT topic filter '" + filter + "': " + st.error().message);
      }
      if (qos < 0 || qos > 2) {
        return Fail(ErrorCode::kBadInput,
                    "invalid MQTT QoS " + std::to_string(qos) + " for filter '" + filter + "'");
      }
    }
    if (filters.empty()) return {};
    std::lock_guard conn(conn_mu_);
    for (const auto& wanted : filters) {
      auto it = std::find_if(filters_.begin(), filters_.end(),
                             [&](const auto& f) { return f.first == wanted.first; });
      if (it == filters_.end()) {
        filters_.push_back(wanted);
      } else {
        it->second = wanted.second;
      }
    }
    if (!connected_.load()) return {};
    return SubscribeNow(filters);
  }

  Status Publish(const std::string& topic, std::string_view payload, int qos, bool retain) {
    if (init_error_) return tl::unexpected(*init_error_);
    if (auto st = mqtt_names::CheckTopicName(topic); !st) {
      return Fail(ErrorCode::kBadInput,
                  "invalid MQTT topic '" + topic + "': " + st.error().message);
    }
    if (qos < 0 || qos > 2) {
      return Fail(ErrorCode::kBadInput, "invalid MQTT QoS " + std::to_string(qos));
    }
    if (payload.size() > kMaxPayloadBytes) {
      return Fail(ErrorCode::kBadInput, "MQTT payload for '" + topic + "' is too large");
    }
    if (!connected_.load()) {
      return Fail(ErrorCode::kIo,
                  "not connected to " + options_.url + "; cannot publish to '" + topic + "'");
    }
    try {
      client_->publish(topic, payload.data(), payload.size(), qos, retain);
    } catch (const paho::exception& e) {
      return Fail(ErrorCode::kIo,
                  "cannot publish to '" + topic + "' on " + options_.url + ": " + Describe(e));
    }
    return {};
  }

  // NOLINTNEXTLINE(readability-identifier-naming)
  [[nodiscard]] int protocol() const { return protocol_.load(); }
  std::optional<Event> WaitEvent(milliseconds timeout) { return events_.Wait(timeout); }
  // NOLINTNEXTLINE(readability-identifier-naming): accessor, named like the public API
  [[nodiscard]] std::uint64_t dropped() const { return events_.dropped(); }
  // NOLINTNEXTLINE(readability-identifier-naming)
  [[nodiscard]] bool connected() const { return connected_.load(); }

  void Disconnect() {
    {
      std::lock_guard lock(mu_);
      reconnect_pending_ = false;
      want_connected_ = false;
    }
    cv_.notify_all();
    abort_attempts_.store(true);
    std::lock_guard conn(conn_mu_);
    abort_attempts_.store(false);
    if (!client_) return;
    const bool was_connected = connected_.exchange(false);
    if (!was_connected && !client_->is_connected()) return;
    try {
      auto token = client_->disconnect(static_cast<int>(options_.operation_timeout.count() / 2));
      if (!token->wait_for(options_.operation_timeout)) {
        spdlog::warn("mqtt: no clean disconnect from {} within {} ms", options_.url,
                     options_.operation_timeout.count());
      }
    } catch (const paho::exception& e) {
      spdlog::warn("mqtt: disconnect from {} failed: {}", options_.url, Describe(e));
    }
  }

 private:
  // Paho's callback thread.
  void OnConnectionLost(const std::string& cause) {
    if (closing_.load()) return;
    if (!connected_.exchange(false)) return;
    const std::string detail =
        "connection to " + options_.url + " lost" + (cause.empty() ? "" : ": " + cause);
    spdlog::warn("mqtt: {}; reconnecting", detail);
    events_.PushConnection(Event::Kind::kConnectionLost, detail);
    {
      std::lock_guard lock(mu_);
      if (want_connected_) reconnect_pending_ = true;
    }
    cv_.notify_all();
  }

  // Paho's callback thread: copy and enqueue, nothing else.
  void OnMessage(const paho::const_message_ptr& msg) {
    if (closing_.load() || !msg) return;
    Message message;
    message.topic = msg->get_topic();
    message.payload = msg->get_payload_str();
    message.retained = msg->is_retained();
    message.qos = msg->get_qos();
    events_.PushMessage(std::move(message));
  }

  // The reconnect thread: waits for a lost connection, then retries with backoff until
  // connected, stopped or disconnected by the owner.
  void ReconnectLoop() {
    std::unique_lock lock(mu_);
    int attempt = 0;
    while (true) {
      cv_.wait(lock, [&] { return stop_ || reconnect_pending_; });
      if (stop_) return;
      const double unit = std::uniform_real_distribution<double>(0.0, 1.0)(rng_);
      const milliseconds delay =
          ReconnectDelay(attempt, options_.reconnect_min, options_.reconnect_max, unit);
      if (cv_.wait_for(lock, delay, [&] { return stop_ || !reconnect_pending_; })) {
        attempt = 0;
        continue;
      }
      lock.unlock();
      Status status;
      {
        std::lock_guard conn(conn_mu_);
        bool still_pending;
        {
          std::lock_guard check(mu_);
          still_pending = reconnect_pending_ && !stop_;
        }
        if (still_pending && !connected_.load()) {
          status = ConnectOnce(options_.operation_timeout, /*cancellable=*/true);
        }
      }
      lock.lock();
      if (status) {
        attempt = 0;
      } else {
        attempt = std::min(attempt + 1, 30);
        spdlog::warn("mqtt: reconnect failed: {}", status.error().message);
      }
    }
  }

  // The TLS files exist and go together, checked before Paho reports a vague failure.
  [[nodiscard]] Status CheckTlsFiles() const {
    if (address_.tls) {
      for (const auto* path :
           {&options_.tls.ca_file, &options_.tls.cert_file, &options_.tls.key_file}) {
        if (!path->empty() && !Readable(*path)) {
          return Fail(ErrorCode::kBadInput, "cannot read TLS file " + *path);
        }
      }
      if (options_.tls.cert_file.empty() != options_.tls.key_file.empty()) {
        return Fail(ErrorCode::kBadInput,
                    "TLS client authentication needs both a certificate and a key file");
      }
    }
    return {};
  }

  // The CONNECT options for protocol `version`; Paho keeps a reference to `password`.
  [[nodiscard]] paho::connect_options ConnectOptions(
      int version, milliseconds timeout, const std::shared_ptr<std::string>& password) const {
    paho::connect_options connect_options;
    connect_options.set_mqtt_version(version);
    if (version == 5) {
      connect_options.set_clean_start(true);
    } else {
      connect_options.set_clean_session(true);
    }
    connect_options.set_keep_alive_interval(options_.keepalive);
    connect_options.set_connect_timeout(std::chrono::seconds(std::clamp<std::int64_t>(
        std::chrono::ceil<std::chrono::seconds>(timeout).count(), 1, 3600)));
    connect_options.set_automatic_reconnect(false);
    if (options_.username) connect_options.set_user_name(*options_.username);
    if (password) connect_options.set_password(paho::binary_ref(password));
    if (!options_.will_topic.empty()) {
      connect_options.set_will(
          paho::will_options(options_.will_topic, options_.will_payload, 1, options_.will_retain));
    }
    if (address_.tls) {
      paho::ssl_options ssl;
      if (!options_.tls.ca_file.empty()) ssl.set_trust_store(options_.tls.ca_file);
      if (!options_.tls.cert_file.empty()) ssl.set_key_store(options_.tls.cert_file);
      if (!options_.tls.key_file.empty()) ssl.set_private_key(options_.tls.key_file);
      ssl.set_enable_server_cert_auth(options_.tls.verify);
      ssl.set_verify(options_.tls.verify);
      connect_options.set_ssl(std::move(ssl));
    }
    return connect_options;
  }

  // One connect attempt plus resubscription. REQUIRES: conn_mu_ held.
  Status ConnectOnce(milliseconds timeout, bool cancellable) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    SP_RETURN_IF_ERROR(CheckTlsFiles());
    const int version = protocol_.load();
    // The password copy Paho needs; wiped when this attempt is over.
    std::shared_ptr<std::string> password;
    if (options_.password) password = std::make_shared<std::string>(options_.password->view());
    paho::connect_options connect_options = ConnectOptions(version, timeout, password);
    Status result = Attempt(connect_options, deadline, cancellable);
    connect_options = paho::connect_options();
    if (password) sodium_memzero(password->data(), password->size());
    if (!result && refused_version_ && version == 5 && options_.protocol == kProtocolAuto) {
      // A 3.1.1 broker: use 3.1.1 from now on.
      spdlog::info("mqtt: {} does not offer MQTT 5; using MQTT 3.1.1", options_.url);
      SP_RETURN_IF_ERROR(CreatePaho(4));
      const auto left =
          std::chrono::duration_cast<milliseconds>(deadline - std::chrono::steady_clock::now());
      return ConnectOnce(std::max(left, milliseconds(1000)), cancellable);
    }
    if (!result) return result;

    {
      std::lock_guard lock(mu_);
      want_connected_ = true;
      reconnect_pending_ = false;
    }
    connected_.store(true);
    spdlog::info("mqtt: connected to {}", options_.url);
    // A loss reported by Paho before connected_ was set went unnoticed; catch it here.
    if (!client_->is_connected()) OnConnectionLost("closed right after the broker accepted it");

    std::string detail = "connected to " + options_.url;
    if (!filters_.empty()) {
      Status subscribed = SubscribeNow(filters_);
      if (!subscribed && connected_.load()) {
        spdlog::warn("mqtt: {}", subscribed.error().message);
        detail += "; " + subscribed.error().message;
      }
    }
    // Lost again while subscribing: kConnectionLost is queued and the reconnect thread takes
    // over; the session was accepted, so this still counts as a successful connect.
    if (!connected_.load()) return {};
    events_.PushConnection(Event::Kind::kConnected, detail);
    return {};
  }

  // Sends CONNECT and waits for the outcome. REQUIRES: conn_mu_ held.
  Status Attempt(const paho::connect_options& connect_options,
                 std::chrono::steady_clock::time_point deadline, bool cancellable) {
    refused_version_ = false;
    try {
      paho::token_ptr token = client_->connect(connect_options);
      while (!token->wait_for(kSlice)) {
        const bool cancelled = cancellable && (abort_attempts_.load() || Stopping());
        if (cancelled || std::chrono::steady_clock::now() >= deadline) {
          try {
            client_->disconnect(0);
          } catch (const paho::exception&) {
            // Nothing to abort: the attempt already ended.
          }
          if (cancelled) return Fail(ErrorCode::kIo, "connect to " + options_.url + " cancelled");
          return Fail(ErrorCode::kIo, "no answer from MQTT broker " + options_.url + " in time");
        }
      }
      return {};
    } catch (const paho::exception& e) {
      return ConnectError(e);
    }
  }

  Status ConnectError(const paho::exception& e) {
    const int rc = e.get_return_code();
    const int reason = e.get_reason_code();
    // CONNACK "unacceptable protocol version" (3.1.1) or "unsupported protocol version" (5).
    refused_version_ = rc == 1 || rc == 0x84 || reason == 1 || reason == 0x84;
    std::string why = ConnackReason(rc > 0 ? rc : reason);
    if (!why.empty()) {
      const bool auth = IsAuthRefusal(rc > 0 ? rc : reason);
      return Fail(auth ? ErrorCode::kBadInput : ErrorCode::kIo,
                  "MQTT broker " + options_.url + " refused the connection: " + why +
                      (auth ? " (check the MQTT user name and password)" : ""));
    }
    why = Describe(e);
    if (address_.tls) {
      if (auto handshake = DiagnoseTls(address_, options_.tls,
                                       std::min(options_.operation_timeout, milliseconds(5000)));
          !handshake) {
        why = handshake.error().message;
      }
    }
    return Fail(ErrorCode::kIo, "cannot connect to MQTT broker " + options_.url + ": " + why);
  }

  // Subscribes `filters` now. The filters the broker refuses are forgotten (not asked for again
  // after a reconnect) and named in the error. REQUIRES: conn_mu_ held.
  Status SubscribeNow(const std::vector<std::pair<std::string, int>>& filters) {
    auto refused = protocol_.load() == 5 && !options_.retain_as_published.empty()
                       ? SubscribeEach(filters)
                       : SubscribeAll(filters);
    if (!refused) return tl::unexpected(std::move(refused.error()));
    Forget(*refused);
    if (!refused->empty()) {
      std::string list;
      for (const auto& name : *refused) list += (list.empty() ? "'" : ", '") + name + "'";
      return Fail(ErrorCode::kIo,
                  "MQTT broker " + options_.url + " refused subscription to " + list);
    }
    return {};
  }

  // One SUBSCRIBE for all filters; the filters the broker refused. REQUIRES: conn_mu_ held.
  Result<std::vector<std::string>> SubscribeAll(
      const std::vector<std::pair<std::string, int>>& filters) {
    std::vector<std::string> refused;
    std::vector<std::string> names;
    paho::iasync_client::qos_collection qos;
    for (const auto& [filter, q] : filters) {
      names.push_back(filter);
      qos.push_back(q);
    }
    try {
      auto token = client_->subscribe(paho::string_collection::create(names), qos);
      if (!token->wait_for(options_.operation_timeout)) {
        return Fail(ErrorCode::kIo, "no SUBACK from " + options_.url + " in time");
      }
      const auto codes = token->get_subscribe_response().get_reason_codes();
      for (std::size_t i = 0; i < codes.size() && i < names.size(); ++i) {
        if (static_cast<int>(codes[i]) >= 0x80) refused.push_back(names[i]);
      }
    } catch (const paho::exception& e) {
      // The broker refused the whole SUBSCRIBE.
      if (e.get_reason_code() >= 0x80 && connected_.load()) return names;
      return Fail(ErrorCode::kIo, "cannot subscribe on " + options_.url + ": " + Describe(e));
    }
    return refused;
  }

  // MQTT 5 with Retain As Published on some filters: one SUBSCRIBE per filter, each with its own
  // options. (Paho C++ 1.2 loses a list of subscribe options when it copies the response
  // options, and MQTTAsync_subscribeMany then dereferences a null list:
  // eclipse-paho/paho.mqtt.cpp#524.) The filters the broker refused. REQUIRES: conn_mu_ held.
  Result<std::vector<std::string>> SubscribeEach(
      const std::vector<std::pair<std::string, int>>& filters) {
    std::vector<std::string> refused;
    for (const auto& [filter, qos] : filters) {
      const bool keep =
          std::find(options_.retain_as_published.begin(), options_.retain_as_published.end(),
                    filter) != options_.retain_as_published.end();
      const paho::subscribe_options options(false,
                                            keep ? paho::subscribe_options::RETAIN_AS_PUBLISHED
                                                 : paho::subscribe_options::NO_RETAIN_AS_PUBLISHED);
      try {
        auto token = client_->subscribe(filter, qos, options);
        if (!token->wait_for(options_.operation_timeout)) {
          return Fail(ErrorCode::kIo, "no SUBACK from " + options_.url + " in time");
        }
        const auto codes = token->get_subscribe_response().get_reason_codes();
        if (!codes.empty() && static_cast<int>(codes.front()) >= 0x80) refused.push_back(filter);
      } catch (const paho::exception& e) {
        if (e.get_reason_code() >= 0x80 && connected_.load()) {
          refused.push_back(filter);
          continue;
        }
        return Fail(ErrorCode::kIo, "cannot subscribe on " + options_.url + ": " + Describe(e));
      }
    }
    return refused;
  }

  // Drops filters from the remembered set. REQUIRES: conn_mu_ held.
  void Forget(const std::vector<std::string>& names) {
    for (const auto& name : names) {
      std::erase_if(filters_, [&](const auto& f) { return f.first == name; });
    }
  }

  bool Stopping() {
    std::lock_guard lock(mu_);
    return stop_;
  }

  const ClientOptions options_;
  mqtt_names::BrokerUrl address_;
  std::optional<Error> init_error_;
  EventQueue events_;

  // Serializes connect attempts, (re)subscription and disconnect; guards filters_.
  std::mutex conn_mu_;
  std::vector<std::pair<std::string, int>> filters_;

  // Guards the reconnect state below; cv_ wakes the reconnect thread.
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  bool want_connected_ = false;     // the owner wants a connection (Connect succeeded)
  bool reconnect_pending_ = false;  // the connection dropped and is not back yet
  std::mt19937_64 rng_;             // jitter; used by the reconnect thread only

  std::atomic<bool> connected_{false};
  std::atomic<int> protocol_{4};  // the version of the current Paho client
  bool refused_version_ = false;  // the last attempt's CONNACK refused the protocol version
  std::atomic<bool> abort_attempts_{false};  // Disconnect() wants the running attempt to stop
  std::atomic<bool> closing_{false};         // destruction started: callbacks do nothing

  std::unique_ptr<paho::async_client> client_;
  std::thread worker_;
};

Client::Client(ClientOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {}
Client::~Client() = default;

Status Client::Connect(milliseconds timeout) { return impl_->Connect(timeout); }

Status Client::Subscribe(const std::vector<std::pair<std::string, int>>& filters) {
  return impl_->Subscribe(filters);
}

Status Client::Publish(const std::string& topic, std::string_view payload, int qos, bool retain) {
  return impl_->Publish(topic, payload, qos, retain);
}

Status Client::ClearRetained(const std::string& topic) {
  return impl_->Publish(topic, {}, 1, true);
}

std::optional<Event> Client::WaitEvent(milliseconds timeout) { return impl_->WaitEvent(timeout); }

std::uint64_t Client::dropped() const { return impl_->dropped(); }

bool Client::connected() const { return impl_->connected(); }

int Client::protocol() const { return impl_->protocol(); }

void Client::Disconnect() { impl_->Disconnect(); }

}  // namespace safepoint::mqtt
