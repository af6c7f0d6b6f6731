#include "service/cli_context.h"

namespace safepoint::service {

void AddServeCommand(CLI::App& /*app*/, CliContext& /*cli*/) {}

}  // namespace safepoint::service
