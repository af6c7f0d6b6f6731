#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "core/clock.h"
#include "core/config.h"
#include "core/fs.h"
#include "core/result.h"
#include "service/operations.h"

namespace safepoint::service {

// Shared state of one CLI invocation; subcommands registered in other files use it.
struct CliContext {
  std::string config_path;
  bool json_output = false;
  std::optional<config::Config> config;
  PosixFileSystem fs;
  RealClock clock;
  int rc = 0;

  // Prints a success result: `data` as JSON with --json, else `human`. Returns 0.
  int Ok(const nlohmann::json& data, const std::string& human) const {
    if (json_output) {
      std::cout << nlohmann::json{{"status", "ok"}, {"data", data}}.dump(
                       -1, ' ', false, nlohmann::json::error_handler_t::replace)
                << "\n";
    } else if (!human.empty()) {
      std::cout << human;
      if (human.back() != '\n') std::cout << "\n";
    }
    return 0;
  }

  // Prints an error (JSON on stdout with --json; always a line on stderr). Returns the exit code.
  int Failed(const Error& error) const {
    if (json_output) {
      std::cout << nlohmann::json{{"status", "error"},
                                  {"error",
                                   {{"code", ErrorCodeName(error.code)},
                                    {"message", error.message}}}}
                       .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)
                << "\n";
    }
    std::cerr << "safepoint: " << error.message << "\n";
    return ExitCodeFor(error.code);
  }

  // Loads the configuration once.
  Status Load() {
    if (config) return {};
    auto c = config::LoadConfig(config_path);
    if (!c) return tl::unexpected(c.error());
    config = std::move(*c);
    return {};
  }

  // Wraps a subcommand body taking Operations& and returning an exit code.
  template <typename Body>
  std::function<void()> Run(Body body) {
    return [this, body] {
      if (auto st = Load(); !st) {
        rc = Failed(st.error());
        return;
      }
      Operations ops(*config, fs, clock);
      rc = body(ops);
    };
  }
};

// "1.6 KB"-style sizes (decimal units).
[[nodiscard]] std::string HumanBytes(std::uint64_t bytes);

// A progress line on stderr when stderr is a terminal (an empty function otherwise). With
// `in_bytes`, (done, total) are bytes and are shown too; otherwise only the percentage.
[[nodiscard]] store::ProgressFn TerminalProgress(const char* what, bool in_bytes = true);

// Registered by service/rollback_cli.cc: diff, fingerprint, rollback.
void AddRollbackCommands(CLI::App& app, CliContext& cli);
// Registered by service/serve.cc: serve.
void AddServeCommand(CLI::App& app, CliContext& cli);

}  // namespace safepoint::service
