#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <random>
#include <thread>

#include "core/base/clock.h"
#include "core/base/fs.h"
#include "core/config/config.h"
#include "mqtt/transport.h"
#include "service/backend.h"
#include "service/controller.h"

namespace safepoint::service {

// `safepoint serve`: the threads around the Controller, which decides everything.
//
// Threads: Paho's callback thread only enqueues (mqtt::Client); a pump thread moves transport
// events into this daemon's queue; a worker thread runs the long operations (backup, rollback,
// verify, prune) one at a time and posts their results back; the state thread (Run) takes the
// queue and runs every closure of it, the ticks included, through the Controller.
class Daemon final : private JobRunner {
 public:
  Daemon(const config::Config& config, FileSystem& fs, const Clock& clock,
         std::unique_ptr<Backend> backend, std::unique_ptr<mqtt::Transport> transport,
         Controller::RetainedCheckFactory retained_check);
  ~Daemon() override;
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

  // Runs until `stop` becomes true; then finishes the running operation, publishes `offline`
  // and disconnects. Returns a process exit code.
  int Run(const std::atomic<bool>& stop);

  [[nodiscard]] const DaemonStats& stats() const { return controller_.stats(); }

 private:
  // JobRunner: the worker thread and the state thread's queue.
  void Run(Job job) override;
  void Post(std::function<void()> fn) override;

  // Connects, retrying with backoff until it succeeds or `stop` is set.
  Status ConnectWithRetry(const std::atomic<bool>& stop);

  const Clock& clock_;
  std::unique_ptr<Backend> backend_;
  std::unique_ptr<mqtt::Transport> transport_;
  Controller controller_;
  std::mt19937 rng_{std::random_device{}()};

  // The state thread's queue.
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_;

  // The worker.
  std::mutex worker_mu_;
  std::condition_variable worker_cv_;
  std::deque<Job> jobs_;
  bool worker_stop_ = false;
  std::thread worker_;
  std::atomic<bool> pump_stop_{false};
  std::thread pump_;
};

// The service's MQTT connection as the configuration describes it (Retain As Published on the
// command topics where MQTT 5 is used).
[[nodiscard]] std::unique_ptr<mqtt::Transport> MqttTransportFor(const config::MqttConfig& mqtt);
// Makes the MQTT 3.1.1 retained check: a second connection (RetainedProbe).
[[nodiscard]] Controller::RetainedCheckFactory RetainedProbeFactory(const config::MqttConfig& mqtt);

}  // namespace safepoint::service
