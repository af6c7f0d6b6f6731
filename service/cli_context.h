#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

#include "core/base/clock.h"
#include "core/base/fs.h"
#include "core/base/human.h"
#include "core/base/result.h"
#include "core/base/utf8.h"
#include "core/config/config.h"
#include "service/log_redaction.h"
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
  // Values that came from `!secret` are masked (config::Redact) in both. `human` is made safe
  // for a terminal (PrintableText) unless `verbatim` (a patch, whose lines are file contents).
  int Ok(const nlohmann::json& data, const std::string& raw_human, bool verbatim = false) const {
    if (json_output) {
      std::cout << nlohmann::json{{"status", "ok"}, {"data", RedactJson(data)}}.dump(
                       -1, ' ', false, nlohmann::json::error_handler_t::replace)
                << "\n";
      return 0;
    }
    const std::string human = verbatim ? Redact(raw_human) : PrintableText(Redact(raw_human));
    if (!human.empty()) {
      std::cout << human;
      if (human.back() != '\n') std::cout << "\n";
    }
    return 0;
  }

  // Prints an error (JSON on stdout with --json; always a line on stderr). Returns the exit code.
  int Failed(const Error& error) const {
    const std::string message = PrintableText(Redact(error.message));
    if (json_output) {
      std::cout << nlohmann::json{{"status", "error"},
                                  {"error",
                                   {{"code", ErrorCodeName(error.code)}, {"message", message}}}}
                       .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)
                << "\n";
    }
    std::cerr << "safepoint: " << message << "\n";
    return ExitCodeFor(error.code);
  }

  // Failed with data: --json prints {"status":"error","error":{..},"data":DATA}; without it,
  // `human` (when given) goes to stdout first. Masked as Ok and Failed are.
  int FailedWith(const Error& error, const nlohmann::json& data,
                 const std::string& human = "") const {
    const std::string message = PrintableText(Redact(error.message));
    if (json_output) {
      std::cout << nlohmann::json{{"status", "error"},
                                  {"error",
                                   {{"code", ErrorCodeName(error.code)}, {"message", message}}},
                                  {"data", RedactJson(data)}}
                       .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)
                << "\n";
    } else if (!human.empty()) {
      std::cout << PrintableText(Redact(human));
    }
    std::cerr << "safepoint: " << message << "\n";
    return ExitCodeFor(error.code);
  }

  // Masks `!secret` values once the configuration is loaded.
  [[nodiscard]] std::string Redact(std::string_view text) const {
    return config ? config::Redact(*config, text) : std::string(text);
  }
  [[nodiscard]] nlohmann::json RedactJson(const nlohmann::json& j) const {
    return config ? config::RedactJson(*config, j) : j;
  }

  // Loads the configuration once; from then on log lines are redacted too.
  Status Load() {
    if (config) return {};
    auto c = config::LoadConfig(config_path);
    if (!c) return tl::unexpected(c.error());
    config = std::move(*c);
    InstallLogRedaction(*config);
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

// A progress line on stderr when stderr is a terminal (an empty function otherwise). With
// `in_bytes`, (done, total) are bytes and are shown too; otherwise only the percentage.
[[nodiscard]] store::ProgressFn TerminalProgress(const char* what, bool in_bytes = true);

// Registered by service/store_cli.cc: backup, list, show, verify, extract, decrypt, delete,
// prune, config check.
void AddStoreCommands(CLI::App& app, CliContext& cli);
// Registered by service/rollback_cli.cc: diff, fingerprint, rollback.
void AddRollbackCommands(CLI::App& app, CliContext& cli);
// Registered by service/serve.cc: serve.
void AddServeCommand(CLI::App& app, CliContext& cli);

}  // namespace safepoint::service
