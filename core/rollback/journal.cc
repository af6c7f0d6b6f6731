#include "core/rollback/journal.h"

#include <array>
#include <utility>

#include "core/base/json_int.h"
#include "core/base/json_name.h"
#include "core/format/manifest.h"

namespace safepoint::rollback::journal {

namespace {

using nlohmann::json;

constexpr std::array<std::pair<OpKind, std::string_view>, 5> kOpNames = {{
    {OpKind::kMoveAside, "move_aside"},
    {OpKind::kMakeDir, "mkdir"},
    {OpKind::kPlaceFile, "file"},
    {OpKind::kPlaceLink, "link"},
    {OpKind::kSetAttrs, "attrs"},
}};

constexpr std::array<std::pair<Phase, std::string_view>, 4> kPhaseNames = {{
    {Phase::kApplying, "applying"},
    {Phase::kReverting, "reverting"},
    {Phase::kDone, "done"},
    {Phase::kReverted, "reverted"},
}};

std::string_view OpName(OpKind kind) {
  for (const auto& [k, name] : kOpNames) {
    if (k == kind) return name;
  }
  return "?";
}

bool IsStagedName(const std::string& s) {
  if (s.empty() || s.size() > 20) return false;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
  }
  return true;
}

// kCorrupt, "rollback journal: <what>".
tl::unexpected<Error> Corrupt(const std::string& what) {
  return Fail(ErrorCode::kCorrupt, "rollback journal: " + what);
}

// One entry of "ops"; json::exception for a missing or mistyped field.
Result<Op> ParseOp(const json& o) {
  Op op;
  const auto name = o.at("op").get<std::string>();
  bool found = false;
  for (const auto& [k, n] : kOpNames) {
    if (n == name) {
      op.kind = k;
      found = true;
    }
  }
  if (!found) return Corrupt("unknown op '" + name + "'");
  auto path = GetName(o, "path", "rollback journal");
  if (!path) return tl::unexpected(path.error());
  op.path = std::move(*path);
  if (!op.path.starts_with("ha_config/") && !op.path.starts_with("workspace/")) {
    return Corrupt("op outside the restored roots: " + op.path);
  }
  SP_RETURN_IF_ERROR(manifest::CheckArchivePath(op.path));
  switch (op.kind) {
    case OpKind::kMoveAside:
      break;
    case OpKind::kMakeDir:
      op.mode = IntegerField<std::uint32_t>(o, "mode");
      break;
    case OpKind::kPlaceFile:
      op.staged = o.at("staged").get<std::string>();
      if (!IsStagedName(op.staged)) return Corrupt("bad staged name");
      op.sha256 = o.at("sha256").get<std::string>();
      op.size = IntegerField<std::uint64_t>(o, "size");
      op.mode = IntegerField<std::uint32_t>(o, "mode");
      op.uid = IntegerField<std::uint32_t>(o, "uid");
      op.gid = IntegerField<std::uint32_t>(o, "gid");
      op.mtime = IntegerField<std::int64_t>(o, "mtime");
      break;
    case OpKind::kPlaceLink:
      if (auto t = GetName(o, "link_target", "rollback journal"); t) {
        op.link_target = std::move(*t);
      } else {
        return tl::unexpected(t.error());
      }
      SP_RETURN_IF_ERROR(manifest::CheckLinkTarget(op.path, op.link_target));
      op.uid = IntegerField<std::uint32_t>(o, "uid");
      op.gid = IntegerField<std::uint32_t>(o, "gid");
      break;
    case OpKind::kSetAttrs:
      op.mode = IntegerField<std::uint32_t>(o, "mode");
      op.uid = IntegerField<std::uint32_t>(o, "uid");
      op.gid = IntegerField<std::uint32_t>(o, "gid");
      break;
  }
  return op;
}

}  // namespace

std::string_view PhaseName(Phase phase) {
  for (const auto& [p, name] : kPhaseNames) {
    if (p == phase) return name;
  }
  return "?";
}

json ToJson(const Journal& j) {
  json ops = json::array();
  for (const auto& op : j.ops) {
    json o = {{"op", OpName(op.kind)}};
    PutName(o, "path", op.path);
    switch (op.kind) {
      case OpKind::kMoveAside:
        break;
      case OpKind::kMakeDir:
        o["mode"] = op.mode;
        break;
      case OpKind::kPlaceFile:
        o["staged"] = op.staged;
        o["sha256"] = op.sha256;
        o["size"] = op.size;
        o["mode"] = op.mode;
        o["uid"] = op.uid;
        o["gid"] = op.gid;
        o["mtime"] = op.mtime;
        break;
      case OpKind::kPlaceLink:
        PutName(o, "link_target", op.link_target);
        o["uid"] = op.uid;
        o["gid"] = op.gid;
        break;
      case OpKind::kSetAttrs:
        o["mode"] = op.mode;
        o["uid"] = op.uid;
        o["gid"] = op.gid;
        break;
    }
    ops.push_back(std::move(o));
  }
  return {{"format", kFormat},
          {"rollback_id", j.rollback_id},
          {"id", j.id},
          {"pre_rollback_id", j.pre_rollback_id},
          {"policy", j.policy},
          {"phase", PhaseName(j.phase)},
          {"created_at", j.created_at},
          {"roots", {{"ha_config", j.ha_config_root}, {"workspace", j.workspace_root}}},
          {"rename", {{"ha_config", j.rename_ha_config}, {"workspace", j.rename_workspace}}},
          {"changed_roots", j.changed_roots},
          {"ops", ops},
          {"error", j.error},
          {"revert_attempts", j.revert_attempts}};
}

Result<Journal> Parse(std::string_view text) {
  try {
    json in = json::parse(text);
    if (IntegerField<int>(in, "format") != kFormat) return Corrupt("unsupported format");
    Journal j;
    j.rollback_id = in.at("rollback_id").get<std::string>();
    j.id = in.at("id").get<std::string>();
    j.pre_rollback_id = in.at("pre_rollback_id").get<std::string>();
    j.policy = in.at("policy").get<std::string>();
    const auto phase = in.at("phase").get<std::string>();
    bool known = false;
    for (const auto& [p, name] : kPhaseNames) {
      if (name == phase) {
        j.phase = p;
        known = true;
      }
    }
    if (!known) return Corrupt("unknown phase '" + phase + "'");
    j.created_at = in.at("created_at").get<std::string>();
    j.ha_config_root = in.at("roots").at("ha_config").get<std::string>();
    j.workspace_root = in.at("roots").at("workspace").get<std::string>();
    j.rename_ha_config = in.at("rename").at("ha_config").get<bool>();
    j.rename_workspace = in.at("rename").at("workspace").get<bool>();
    j.changed_roots = in.at("changed_roots").get<std::vector<std::string>>();
    j.error = in.at("error").get<std::string>();
    j.revert_attempts = IntegerField<int>(in, "revert_attempts");
    if (!manifest::IsValidId(j.id) || !manifest::IsValidId(j.pre_rollback_id)) {
      return Corrupt("bad safety point id");
    }
    if (j.ha_config_root.empty() || j.ha_config_root.front() != '/' || j.workspace_root.empty() ||
        j.workspace_root.front() != '/') {
      return Corrupt("roots must be absolute");
    }
    for (const auto& o : in.at("ops")) {
      auto op = ParseOp(o);
      if (!op) return tl::unexpected(op.error());
      j.ops.push_back(std::move(*op));
    }
    return j;
  } catch (const json::exception& e) {
    return Corrupt(e.what());
  }
}

}  // namespace safepoint::rollback::journal
