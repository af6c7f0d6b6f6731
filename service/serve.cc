#include <signal.h>
#include <spdlog/spdlog.h>

#include <atomic>

#include "service/cli_context.h"
#include "service/daemon.h"

namespace safepoint::service {

namespace {

std::atomic<bool> g_stop{false};  // set by SIGTERM/SIGINT; the only process-wide state

extern "C" void OnStopSignal(int /*sig*/) { g_stop = true; }

}  // namespace

void AddServeCommand(CLI::App& app, CliContext& cli) {
  auto* serve = app.add_subcommand("serve", "run the MQTT service (Home Assistant integration)");
  serve->callback([&cli] {
    if (auto st = cli.Load(); !st) {
      cli.rc = cli.Failed(st.error());
      return;
    }
    const auto& config = *cli.config;
    if (!config.mqtt) {
      cli.rc = cli.Failed(
          {ErrorCode::kBadInput, config.source_file + ": `serve` needs an `mqtt:` section"});
      return;
    }
    spdlog::set_level(spdlog::level::from_str(config.logging.level));
    struct sigaction sa {};
    sa.sa_handler = OnStopSignal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, nullptr);
    sigaction(SIGINT, &sa, nullptr);
    signal(SIGPIPE, SIG_IGN);
    Daemon daemon(config, cli.fs, cli.clock, MakeBackend(config, cli.fs, cli.clock),
                  MqttTransportFor(*config.mqtt), RetainedProbeFactory(*config.mqtt));
    cli.rc = daemon.Run(g_stop);
  });
}

}  // namespace safepoint::service
