#pragma once

#include <chrono>
#include <cstddef>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "core/config/config.h"

// Restarting the services affected by a rollback (config `restart:`; docs/rollback.md).
namespace safepoint::restart {

// How many lines of combined stdout/stderr an Outcome keeps.
inline constexpr std::size_t kTailLines = 20;
// Longer output lines are cut to this many bytes (a marker "..." is appended).
inline constexpr std::size_t kMaxLineBytes = 1000;
// Default pause between SIGTERM and SIGKILL after a timeout.
inline constexpr std::chrono::milliseconds kDefaultKillGrace{5000};

// What running one restart command did.
struct Outcome {
  std::string name;
  std::vector<std::string> command;
  // true when the command exited with status 0 within its timeout.
  bool ok = false;
  // Exit status when it exited normally, -1 otherwise.
  int exit_code = -1;
  // The signal that ended it (0 when it exited normally or never started).
  int signal = 0;
  // true when the timeout expired (it then got SIGTERM and, after the grace, SIGKILL).
  bool timed_out = false;
  std::chrono::milliseconds duration{0};
  // The last kTailLines lines of combined stdout and stderr (without line endings).
  std::vector<std::string> output_tail;
  // Why it failed ("" when ok): "exited with status 3", "timed out after 2s", "cannot start ...".
  std::string error;
};

// Runs `restart.command` (argv[0] looked up in PATH, never through a shell) in its own process
// group, stdin from /dev/null, stdout and stderr captured together. The child inherits this
// process's environment, which never holds the passphrase (it only lives in sodium memory).
// When restart.timeout expires the whole process group gets SIGTERM, then SIGKILL after
// `kill_grace`. Never throws; failures are described in the Outcome.
// Thread-safety: safe to call from several threads (no shared state).
[[nodiscard]] Outcome Execute(const config::RestartConfig& restart,
                              std::chrono::milliseconds kill_grace = kDefaultKillGrace);

// True when `restart` must run after a restore that changed files under `changed_roots`.
[[nodiscard]] bool IsAffected(const config::RestartConfig& restart,
                              const std::set<config::SourceRoot>& changed_roots);

// Runs, in configuration order, every restart affected by `changed_roots`; one Outcome each.
// A failing restart does not stop the ones after it.
[[nodiscard]] std::vector<Outcome> RunAffected(
    const std::vector<config::RestartConfig>& restarts,
    const std::set<config::SourceRoot>& changed_roots,
    std::chrono::milliseconds kill_grace = kDefaultKillGrace);

// {name, command, ok, exit_code, signal, timed_out, duration_ms, output_tail, error?}
[[nodiscard]] nlohmann::json ToJson(const Outcome& outcome);

}  // namespace safepoint::restart
