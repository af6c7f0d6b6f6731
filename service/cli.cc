#include "service/cli.h"

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/base/utf8.h"
#include "service/cli_context.h"
#include "service/operations.h"

namespace safepoint::service {

store::ProgressFn TerminalProgress(const char* what, bool in_bytes) {
  if (::isatty(STDERR_FILENO) == 0) return {};
  return [what, in_bytes, last = -1](std::uint64_t done, std::uint64_t total) mutable {
    int pct = total == 0 ? 100 : static_cast<int>(done * 100 / total);
    if (pct == last) return;
    last = pct;
    if (in_bytes) {
      std::fprintf(stderr, "\r%s: %3d%% (%s of %s)\033[K", what, pct, HumanBytes(done).c_str(),
                   HumanBytes(total).c_str());
    } else {
      std::fprintf(stderr, "\r%s: %3d%%\033[K", what, pct);
    }
    if (pct == 100) std::fputc('\n', stderr);
  };
}

namespace {

using nlohmann::json;

std::string DefaultConfigPath() {
  const char* env = std::getenv("SAFEPOINT_CONFIG");
  if (env != nullptr && *env != '\0') return env;
  return "/etc/safepoint/safepoint.yaml";
}

std::vector<CLI::App*> Subcommands(CLI::App& app) {
  return app.get_subcommands([](CLI::App*) { return true; });
}

// The command words that name nothing ("frob", or "config frob") and the command whose
// subcommands were expected there, when a word that is neither an option nor an option's value
// stands where a command is expected. CLI11 itself would report only that one is required.
std::optional<std::pair<std::string, CLI::App*>> UnknownCommand(CLI::App& app, int argc,
                                                                char** argv) {
  CLI::App* at = &app;
  std::string words;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "--") return std::nullopt;
    if (arg == "-c" || arg == "--config") {
      ++i;  // its value
      continue;
    }
    if (arg.starts_with("-")) continue;
    words += (words.empty() ? "" : " ") + std::string(arg);
    CLI::App* next = nullptr;
    for (CLI::App* sub : Subcommands(*at)) {
      if (sub->check_name(std::string(arg))) next = sub;
    }
    if (next == nullptr) return std::pair(words, at);
    if (Subcommands(*next).empty()) return std::nullopt;  // the rest are its arguments
    at = next;
  }
  return std::nullopt;
}

// The names of the commands, for the message about an unknown one.
std::string CommandNames(CLI::App& app) {
  std::string out;
  for (const CLI::App* sub : Subcommands(app)) {
    out += (out.empty() ? "" : ", ") + sub->get_name();
  }
  return out;
}

}  // namespace

int RunCli(int argc, char** argv) {
  // Log lines go to stderr: stdout carries results (and --json output) only.
  auto logger = spdlog::stderr_color_mt("safepoint");
  spdlog::set_default_logger(logger);
  spdlog::set_pattern("%Y-%m-%d %H:%M:%S.%e %^%l%$ %v");
  spdlog::set_level(spdlog::level::warn);
  CliContext cli;
  cli.config_path = DefaultConfigPath();
  CLI::App app{"safepoint: encrypted, verified safety points for Home Assistant updates"};
  app.set_version_flag("--version", std::string(kVersion));
  app.require_subcommand(1);
  // `safepoint <command> --config FILE --json` and `safepoint --config FILE <command>` both work.
  app.fallthrough(true);
  app.add_option("-c,--config", cli.config_path,
                 "configuration file (default $SAFEPOINT_CONFIG or /etc/safepoint/safepoint.yaml)");
  app.add_flag("--json", cli.json_output, "machine-readable output on stdout");

  AddStoreCommands(app, cli);
  AddRollbackCommands(app, cli);
  AddServeCommand(app, cli);

  // An argument error is bad input like any other: one line `safepoint: <message>` on stderr and,
  // with --json, the answer in JSON too (the flag may come after the argument that failed, so
  // look at argv itself).
  const auto argument_error = [&](const std::string& message) {
    // One line even when an argument CLI11 quotes holds a line feed.
    std::string line;
    for (const char c : PrintableText(message))
      line += c == '\n' ? std::string("\\n") : std::string(1, c);
    std::cerr << "safepoint: " << line << "\n";
    bool json_output = false;
    for (int i = 1; i < argc && std::string_view(argv[i]) != "--"; ++i) {
      if (std::string_view(argv[i]) == "--json") json_output = true;
    }
    if (json_output) {
      std::cout << json{{"status", "error"},
                        {"error",
                         {{"code", ErrorCodeName(ErrorCode::kBadInput)}, {"message", message}}}}
                       .dump(-1, ' ', false, json::error_handler_t::replace)
                << "\n";
    }
    return ExitCodeFor(ErrorCode::kBadInput);
  };
  if (const auto unknown = UnknownCommand(app, argc, argv)) {
    const std::string message = "unknown command '" + QuoteName(unknown->first) +
                                "' (commands: " + CommandNames(*unknown->second) + "; see --help)";
    return argument_error(message);
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help, --version: printed on stdout
    // CLI11's own text would be its message and a second line; ours is the one line.
    return argument_error(std::string(e.what()) + " (see --help)");
  } catch (const std::exception& e) {
    // A bug, not the user's fault: say so instead of aborting.
    std::cerr << "safepoint: internal error: " << e.what() << "\n";
    return ExitCodeFor(ErrorCode::kInternal);
  }
  return cli.rc;
}

}  // namespace safepoint::service
