#pragma once

#include "core/base/clock.h"
#include "core/base/result.h"
#include "core/config/config.h"
#include "core/sources/entities.h"
#include "mqtt/client.h"

namespace safepoint::service {

// The MQTT client options of the configuration: url, client id (default safepoint-<node_id>),
// credentials, protocol, keepalive, TLS, and the last will `offline` on <base>/availability.
[[nodiscard]] mqtt::ClientOptions ClientOptionsFor(const config::MqttConfig& mqtt);

// For `safepoint backup` run by hand while the service is not there to mirror: connects to the
// configured broker, subscribes to the mirror filters and collects the retained states until
// the broker has been quiet for a moment or mqtt.collect_wait has passed (bounded either way).
// Zigbee2MQTT retains device states only with `retain: true` per device; without it the live
// mirror of `safepoint serve` is the complete source.
// Errors: the connection error (the caller decides whether to back up without entity states).
[[nodiscard]] Result<entities::EntitySnapshot> CollectRetainedStates(const config::Config& config,
                                                                     const Clock& clock);

}  // namespace safepoint::service
