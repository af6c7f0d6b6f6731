#pragma once

// Integer fields of JSON objects, read without an undefined conversion: nlohmann's get<int>() of
// a float beyond the type's range (a number beyond 2^64 parses as a float) is undefined
// behaviour, and of a large integer it wraps silently.

#include <cstdint>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <type_traits>

namespace safepoint {

// obj[key] as T when it is an integer (not a float) within T's range; otherwise throws
// json::type_error, as nlohmann's own reads do (callers catch json::exception).
template <typename T>
T IntegerField(const nlohmann::json& obj, const char* key) {
  static_assert(std::is_integral_v<T>);
  const auto& v = obj.at(key);
  if (v.is_number_unsigned()) {  // nlohmann keeps every non-negative integer as unsigned
    const auto n = v.get<std::uint64_t>();
    if (n <= static_cast<std::uint64_t>(std::numeric_limits<T>::max())) return static_cast<T>(n);
  } else if (v.is_number_integer() && std::is_signed_v<T>) {
    const auto n = v.get<std::int64_t>();
    if (n >= static_cast<std::int64_t>(std::numeric_limits<T>::min())) return static_cast<T>(n);
  }
  throw nlohmann::json::type_error::create(
      302, std::string("field '") + key + "' is not an integer in range", &v);
}

}  // namespace safepoint
