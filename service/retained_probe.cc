#include "service/retained_probe.h"

#include <random>
#include <utility>

namespace safepoint::service {

using std::chrono::milliseconds;
using std::chrono::steady_clock;

mqtt::ClientOptions ProbeClientOptions(mqtt::ClientOptions service_options) {
  mqtt::ClientOptions o = std::move(service_options);
  o.client_id += "-probe";
  o.will_topic.clear();
  o.protocol = 4;
  o.retain_as_published.clear();
  // Live messages on probed topics also arrive here; they are drained before each probe.
  o.max_queue = 1000;
  return o;
}

RetainedProbe::RetainedProbe(mqtt::ClientOptions options, std::string marker_topic,
                             milliseconds timeout)
    : client_(std::move(options)),
      marker_topic_(std::move(marker_topic)),
      timeout_(timeout),
      instance_(std::random_device{}()) {}

Result<std::optional<std::string>> RetainedProbe::Retained(const std::string& topic) {
  SP_RETURN_IF_ERROR(client_.Connect(timeout_));
  // Messages left from earlier probes (live copies, late markers) say nothing about now.
  while (client_.WaitEvent(milliseconds(0))) {
  }
  SP_RETURN_IF_ERROR(client_.Subscribe({{topic, 1}, {marker_topic_, 1}}));
  const std::string nonce = std::to_string(instance_) + "-" + std::to_string(++probes_);
  SP_RETURN_IF_ERROR(client_.Publish(marker_topic_, nonce, 1, false));
  return Collect(topic, nonce);
}

Result<std::optional<std::string>> RetainedProbe::Collect(const std::string& topic,
                                                          const std::string& nonce) {
  std::optional<std::string> retained;
  const auto deadline = steady_clock::now() + timeout_;
  while (true) {
    const auto left = std::chrono::duration_cast<milliseconds>(deadline - steady_clock::now());
    if (left <= milliseconds(0)) break;
    auto event = client_.WaitEvent(left);
    if (!event || event->kind != mqtt::Event::Kind::kMessage) continue;
    const mqtt::Message& m = event->message;
    if (m.topic == marker_topic_ && m.payload == nonce) return retained;
    if (m.topic == topic && m.retained && !m.payload.empty()) retained = m.payload;
  }
  return Fail(ErrorCode::kIo, "the broker did not answer within " +
                                  std::to_string(timeout_.count()) + " ms whether '" + topic +
                                  "' holds a retained message");
}

}  // namespace safepoint::service
