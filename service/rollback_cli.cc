#include "service/cli_context.h"

namespace safepoint::service {

void AddRollbackCommands(CLI::App& /*app*/, CliContext& /*cli*/) {}

}  // namespace safepoint::service
