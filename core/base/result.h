#pragma once

#include <string>
#include <string_view>
#include <tl/expected.hpp>
#include <utility>

namespace safepoint {

// The error categories every layer reports. Each maps to one CLI exit code (see ExitCodeFor) and
// one MQTT error string (see ErrorCodeName); docs/cli.md and docs/mqtt-api.md list them.
enum class ErrorCode {
  kBadInput,         // malformed config, id, payload, argument
  kNotFound,         // unknown safety point id, missing file
  kWrongPassphrase,  // the scrypt stanza does not open with this passphrase
  kCorrupt,          // truncated, tampered or inconsistent safety point
  kConflict,         // rollback stopped: files changed locally since the safety point
  kBusy,             // another operation holds the store lock
  kNoSpace,          // ENOSPC / EDQUOT while writing
  kIo,               // any other operating-system error
  kUnsupported,      // valid input we do not handle (e.g. X25519 age recipients)
  kInternal,         // a broken invariant; a bug
};

// A failure with a human-readable message. Messages never contain secrets.
struct Error {
  ErrorCode code;
  std::string message;
};

// Result<T> is must-use: ignoring a failure is a compile-time warning.
template <typename T>
using Result = tl::expected<T, Error>;

// Result<void> with a readable name.
using Status = tl::expected<void, Error>;

// Builds the unexpected side of a Result: `return Fail(ErrorCode::kBadInput, "...")`.
[[nodiscard]] inline tl::unexpected<Error> Fail(ErrorCode code, std::string message) {
  return tl::unexpected<Error>(Error{code, std::move(message)});
}

// Stable lower-case name of an error code, as used in MQTT responses and --json output.
[[nodiscard]] constexpr std::string_view ErrorCodeName(ErrorCode code) {
  switch (code) {
    case ErrorCode::kBadInput:
      return "bad_input";
    case ErrorCode::kNotFound:
      return "not_found";
    case ErrorCode::kWrongPassphrase:
      return "wrong_passphrase";
    case ErrorCode::kCorrupt:
      return "corrupt";
    case ErrorCode::kConflict:
      return "conflict";
    case ErrorCode::kBusy:
      return "busy";
    case ErrorCode::kNoSpace:
      return "no_space";
    case ErrorCode::kIo:
      return "io";
    case ErrorCode::kUnsupported:
      return "unsupported";
    case ErrorCode::kInternal:
      return "internal";
  }
  return "internal";
}

// Process exit codes of the CLI. 0 is success; 1 is reserved for "unexpected" failures.
[[nodiscard]] constexpr int ExitCodeFor(ErrorCode code) {
  switch (code) {
    case ErrorCode::kBadInput:
      return 2;
    case ErrorCode::kNotFound:
      return 3;
    case ErrorCode::kWrongPassphrase:
      return 4;
    case ErrorCode::kCorrupt:
      return 5;
    case ErrorCode::kConflict:
      return 6;
    case ErrorCode::kBusy:
      return 7;
    case ErrorCode::kNoSpace:
      return 8;
    case ErrorCode::kIo:
      return 9;
    case ErrorCode::kUnsupported:
      return 10;
    case ErrorCode::kInternal:
      return 1;
  }
  return 1;
}

}  // namespace safepoint

// Propagates the error of an expression returning Result/Status; otherwise continues.
#define SP_RETURN_IF_ERROR(expr)                                           \
  do {                                                                     \
    auto sp_status_ = (expr);                                              \
    if (!sp_status_) return tl::unexpected(std::move(sp_status_.error())); \
  } while (0)
