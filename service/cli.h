#pragma once

namespace safepoint::service {

// Runs the `safepoint` command line; returns the process exit code (docs/cli.md).
int RunCli(int argc, char** argv);

}  // namespace safepoint::service
