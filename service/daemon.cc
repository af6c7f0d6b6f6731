#include "service/daemon.h"

#include <spdlog/spdlog.h>

#include "core/base/utf8.h"
#include "mqtt/client.h"
#include "service/collect.h"
#include "service/retained_probe.h"

namespace safepoint::service {

using std::chrono::milliseconds;
using std::chrono::seconds;

std::unique_ptr<mqtt::Transport> MqttTransportFor(const config::MqttConfig& mqtt) {
  mqtt::ClientOptions options = ClientOptionsFor(mqtt);
  // Where MQTT 5 is used, a command published retained arrives flagged retained also live.
  const std::string& base = mqtt.base_topic;
  options.retain_as_published = {base + "/cmd/+", base + "/update/request",
                                 base + "/update/result"};
  return std::make_unique<mqtt::Client>(std::move(options));
}

Controller::RetainedCheckFactory RetainedProbeFactory(const config::MqttConfig& mqtt) {
  return [mqtt]() -> std::unique_ptr<RetainedCheck> {
    mqtt::ClientOptions options = ProbeClientOptions(ClientOptionsFor(mqtt));
    const std::string marker = mqtt.base_topic + "/probe/" + options.client_id;
    return std::make_unique<RetainedProbe>(std::move(options), marker, seconds(5));
  };
}

Daemon::Daemon(const config::Config& config, FileSystem& fs, const Clock& clock,
               std::unique_ptr<Backend> backend, std::unique_ptr<mqtt::Transport> transport,
               Controller::RetainedCheckFactory retained_check)
    : clock_(clock),
      backend_(ExceptionSafe(std::move(backend))),
      transport_(std::move(transport)),
      controller_(config, fs, clock, *backend_, *transport_, *this, std::move(retained_check)) {
  worker_ = std::thread([this] {
    for (;;) {
      Job job;
      {
        std::unique_lock lock(worker_mu_);
        worker_cv_.wait(lock, [this] { return worker_stop_ || !jobs_.empty(); });
        if (jobs_.empty()) return;
        job = std::move(jobs_.front());
        jobs_.pop_front();
      }
      // The controller's wrapper catches what the job throws; this is the last line of defence
      // of the worker thread (an exception leaving it would end the process).
      try {
        Post(job());
      } catch (const std::exception& e) {
        spdlog::error("internal error on the worker thread: {}", SanitizeUtf8(e.what()));
      }
    }
  });
}

Daemon::~Daemon() {
  {
    std::lock_guard lock(worker_mu_);
    worker_stop_ = true;
  }
  worker_cv_.notify_all();
  if (worker_.joinable()) worker_.join();
  pump_stop_ = true;
  if (pump_.joinable()) pump_.join();
}

void Daemon::Post(std::function<void()> fn) {
  {
    std::lock_guard lock(mu_);
    queue_.push_back(std::move(fn));
  }
  cv_.notify_one();
}

void Daemon::Run(Job job) {
  {
    std::lock_guard lock(worker_mu_);
    jobs_.push_back(std::move(job));
  }
  worker_cv_.notify_one();
}

Status Daemon::ConnectWithRetry(const std::atomic<bool>& stop) {
  for (int attempt = 0; !stop; ++attempt) {
    auto st = transport_->Connect(seconds(10));
    if (st) return {};
    // Bad credentials or TLS verification failures will not heal by themselves, but the broker
    // may be restarting with a fixed configuration: keep trying, loudly.
    auto delay = mqtt::ReconnectDelay(attempt, milliseconds(500), seconds(30),
                                      std::uniform_real_distribution<double>(0, 1)(rng_));
    spdlog::warn("cannot connect to the MQTT broker ({}); retrying in {} ms", st.error().message,
                 delay.count());
    auto until = clock_.Monotonic() + delay;
    while (!stop && clock_.Monotonic() < until) std::this_thread::sleep_for(milliseconds(100));
  }
  return Fail(ErrorCode::kIo, "stopped before connecting");
}

int Daemon::Run(const std::atomic<bool>& stop) {
  if (auto st = controller_.Prepare(); !st) {
    spdlog::error("{}", st.error().message);
    return ExitCodeFor(st.error().code);
  }
  if (auto st = ConnectWithRetry(stop); !st) return 0;
  controller_.Start();
  pump_ = std::thread([this] {
    while (!pump_stop_) {
      try {
        auto ev = transport_->WaitEvent(milliseconds(500));
        if (ev) Post([this, e = std::move(*ev)] { controller_.HandleEvent(e); });
      } catch (const std::exception& e) {
        // Out of memory for a huge message: that message is lost, the service is not.
        spdlog::error("internal error while receiving: {}", SanitizeUtf8(e.what()));
      }
    }
  });
  // The first kConnected event from the transport announces us (availability, discovery,
  // status).
  while (!(stop && !controller_.WorkerBusy())) {
    auto now = clock_.Now();
    auto wake = controller_.NextWake(now);
    std::deque<std::function<void()>> batch;
    {
      std::unique_lock lock(mu_);
      auto wait = std::min<std::chrono::system_clock::duration>(wake - now, seconds(1));
      cv_.wait_for(lock, wait, [this] { return !queue_.empty(); });
      batch.swap(queue_);
    }
    for (auto& fn : batch) controller_.RunSafely(fn);
    controller_.RunSafely([this] { controller_.Tick(); });
  }
  controller_.Stop();
  pump_stop_ = true;
  if (pump_.joinable()) pump_.join();
  transport_->Disconnect();
  return 0;
}

}  // namespace safepoint::service
