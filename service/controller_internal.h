#pragma once

// What the controller's source files share (controller.cc, controller_messages.cc,
// controller_outputs.cc). Not part of any interface.

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace safepoint::service::controller_internal {

inline constexpr std::string_view kHomeAssistantStatus = "homeassistant/status";

template <class... Ts>
struct Overloaded : Ts... {
  using Ts::operator()...;
};
template <class... Ts>
Overloaded(Ts...) -> Overloaded<Ts...>;

// JSON text of a payload. Text that came from a message may not be UTF-8; it is replaced
// rather than allowed to throw on the state thread.
inline std::string Dump(const nlohmann::json& j) {
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

// `s` cut to `max` bytes with control characters replaced, for a log line.
inline std::string Printable(std::string_view s, std::size_t max = 80) {
  std::string out;
  for (char c : s.substr(0, max)) {
    out += (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) ? '?' : c;
  }
  if (s.size() > max) out += "...";
  return out;
}

}  // namespace safepoint::service::controller_internal
