#pragma once

#include <optional>
#include <string>
#include <vector>

#include "core/base/result.h"
#include "core/base/secret.h"
#include "core/config/config.h"
#include "core/diff/patch.h"
#include "core/store/store.h"

// `safepoint diff --patch`: what changed in the files between a safety point and the live trees
// (or a second safety point), line by line, secrets masked (core/diff/mask.h).
namespace safepoint::rollback {

struct ContentDiffRequest {
  std::string id;                       // the older side
  std::optional<std::string> other_id;  // the newer side; nullopt: the live trees
  // Only these paths and what lies below them, as users type them (ArchivePathsOf: "packages",
  // "ha_config/packages", "/config/packages"). Empty: all.
  std::vector<std::string> paths;
  diff::Options options;
  std::vector<std::string> sensitive_keys;  // more key-name fragments to mask
};

// Reads the safety point's entry list (one scrypt each), finds the changed paths (against the
// live trees as a rollback plans them, or against the second safety point's entries), then reads
// the payload once (verified, with the key the entry list unwrapped: no second scrypt) keeping
// only the changed files' contents and the secrets files, and compares them.
// Errors: as Store::Load and Store::Read (kBadInput, kNotFound, kCorrupt, kWrongPassphrase),
// kBadInput for a path filter ArchivePathsOf refuses, kNotFound for one that matches nothing,
// and PlanFor's for the live trees.
[[nodiscard]] Result<diff::Report> ContentDiff(const config::Config& config,
                                               const store::Store& store, const Secret& passphrase,
                                               const ContentDiffRequest& request);

}  // namespace safepoint::rollback
