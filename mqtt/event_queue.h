#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <optional>
#include <string>

#include "mqtt/client.h"

namespace safepoint::mqtt::internal {

// Bounded event queue. Producers: Paho's callback thread and the reconnect thread.
class EventQueue {
 public:
  explicit EventQueue(std::size_t max_messages)
      : max_messages_(std::max<std::size_t>(1, max_messages)) {}

  void PushMessage(Message message) {
    {
      std::lock_guard lock(mu_);
      if (messages_ >= max_messages_) {
        const auto oldest = std::find_if(events_.begin(), events_.end(), [](const Event& e) {
          return e.kind == Event::Kind::kMessage;
        });
        events_.erase(oldest);
        --messages_;
        dropped_.fetch_add(1, std::memory_order_relaxed);
      }
      Event event;
      event.kind = Event::Kind::kMessage;
      event.message = std::move(message);
      events_.push_back(std::move(event));
      ++messages_;
    }
    cv_.notify_one();
  }

  void PushConnection(Event::Kind kind, std::string detail) {
    {
      std::lock_guard lock(mu_);
      Event event;
      event.kind = kind;
      event.detail = std::move(detail);
      events_.push_back(std::move(event));
    }
    cv_.notify_one();
  }

  std::optional<Event> Wait(std::chrono::milliseconds timeout) {
    std::unique_lock lock(mu_);
    if (!cv_.wait_for(lock, timeout, [&] { return !events_.empty(); })) return std::nullopt;
    Event event = std::move(events_.front());
    events_.pop_front();
    if (event.kind == Event::Kind::kMessage) --messages_;
    return event;
  }

  // NOLINTNEXTLINE(readability-identifier-naming): accessor
  [[nodiscard]] std::uint64_t dropped() const { return dropped_.load(std::memory_order_relaxed); }

 private:
  const std::size_t max_messages_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Event> events_;
  std::size_t messages_ = 0;  // kMessage entries in events_
  std::atomic<std::uint64_t> dropped_{0};
};

}  // namespace safepoint::mqtt::internal
