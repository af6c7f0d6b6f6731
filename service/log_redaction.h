#pragma once

#include "core/config/config.h"

namespace safepoint::service {

// Wraps every sink of the default spdlog logger so that each log line passes through
// config::Redact: a configuration value that came from `!secret` never reaches a log.
// Call once, after the configuration is loaded and before any thread logs. `config` must outlive
// the logger (the CLI's CliContext owns it for the whole process).
void InstallLogRedaction(const config::Config& config);

}  // namespace safepoint::service
