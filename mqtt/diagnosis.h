#pragma once

#include <chrono>
#include <string>

#include "core/base/mqtt_names.h"
#include "core/base/result.h"
#include "mqtt/client.h"

// Explaining why a connection to the broker failed, for the client's error messages: Paho says
// little ("TCP/TLS connect failure", a bare CONNACK code).
namespace safepoint::mqtt::internal {

// True when `path` can be opened for reading.
[[nodiscard]] bool Readable(const std::string& path);

// Repeats the TLS handshake with OpenSSL alone to explain why Paho's connect failed (Paho 1.2
// reports only "TCP/TLS connect failure", and its TLS error callback is unsafe to use: it
// keeps a pointer to a copy of the options that is gone by the time the handshake runs).
// Succeeds when the handshake does; otherwise the error says why it did not (kIo).
[[nodiscard]] Status DiagnoseTls(const mqtt_names::BrokerUrl& addr, const ClientOptions::Tls& tls,
                                 std::chrono::milliseconds timeout);

// The broker's reason for refusing a connection, from the CONNACK code (3.1.1) or reason
// code (5). Empty when the failure was not a refusal.
[[nodiscard]] std::string ConnackReason(int code);

// True for the refusals that mean wrong credentials (bad user name or password, not
// authorized).
[[nodiscard]] bool IsAuthRefusal(int code);

}  // namespace safepoint::mqtt::internal
