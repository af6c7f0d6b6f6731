#pragma once

#include <sys/types.h>

#include <chrono>
#include <string>
#include <vector>

namespace safepoint::testing {

struct ProcessResult {
  int exit_code = -1;  // -1 when killed by a signal
  int signal = 0;
  // The child's peak resident set (wait4's ru_maxrss), in KiB. It includes this process's
  // resident set at the spawn, so measure from a small test process.
  long max_rss_kib = 0;
  std::string out;
  std::string err;
};

// Runs argv (no shell) with optional stdin data and extra "NAME=value" environment entries,
// collecting stdout and stderr. Kills the child after `timeout`.
ProcessResult RunProcess(const std::vector<std::string>& argv, const std::string& stdin_data = "",
                         const std::vector<std::string>& env = {},
                         std::chrono::milliseconds timeout = std::chrono::seconds(120));

// Starts argv in the background with stdout/stderr to /dev/null; returns its pid.
pid_t SpawnProcess(const std::vector<std::string>& argv);

// Runs the safepoint binary under test with these arguments.
ProcessResult RunSafepoint(const std::vector<std::string>& args, const std::string& stdin_data = "");

}  // namespace safepoint::testing
