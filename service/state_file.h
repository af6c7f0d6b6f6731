#pragma once

#include <string>

#include "core/base/fs.h"
#include "core/base/result.h"
#include "service/lifecycle.h"

// The service's state file (`service.state_file`): the lifecycle's persisted state as JSON,
// written by the service after every change and read at its start, and by the CLI to learn which
// safety point the running service uses.
namespace safepoint::service {

// Writes `state` atomically (mode 0600), creating missing parent directories (mode 0700).
[[nodiscard]] Status WriteStateFile(FileSystem& fs, const std::string& path,
                                    const PersistedState& state);

// Reads the state file. kNotFound when there is none; kCorrupt when it is not JSON or not a
// state the lifecycle can resume from; kIo when it cannot be read. Reads at most 1 MiB and never
// waits on a FIFO (the file is a few hundred bytes).
[[nodiscard]] Result<PersistedState> ReadStateFile(const std::string& path);

}  // namespace safepoint::service
