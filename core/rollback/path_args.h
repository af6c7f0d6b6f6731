#pragma once

#include <string>
#include <vector>

#include "core/base/result.h"
#include "core/config/config.h"

// The paths users give `diff` and `extract`, as they type them, in archive form.
namespace safepoint::rollback {

// Each path in archive form ("ha_config/packages/x.yaml"):
// - empty and "." components and trailing slashes are dropped ("./packages//x.yaml/"); "."
//   itself is ha_config;
// - a path whose first component is none of the format's roots (ha_config, workspace, state,
//   environment, logs) lies below ha_config ("packages/x.yaml"); to name a directory of
//   ha_config called like a root, write "ha_config/logs";
// - with `config`, an absolute path inside paths.ha_config or paths.workspace is taken relative
//   to it ("/config/packages/x.yaml"), the symlinks of its directories resolved as the
//   configuration's own directories are; its last component is followed only when the path does
//   not lie inside a tree otherwise (a link inside a tree is named as itself).
// kBadInput naming the path for an empty one, a ".." component, an absolute path outside those
// directories (or any absolute path without `config`), or a name of more than 4096 bytes.
[[nodiscard]] Result<std::vector<std::string>> ArchivePathsOf(
    const std::vector<std::string>& paths, const config::Config* config = nullptr);

}  // namespace safepoint::rollback
