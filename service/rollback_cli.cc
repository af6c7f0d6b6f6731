#include <unistd.h>

#include <CLI/CLI.hpp>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "core/base/io.h"
#include "core/diff/patch.h"
#include "core/rollback/fingerprint.h"
#include "core/rollback/rollback.h"
#include "service/cli_context.h"
#include "service/commands.h"

// `safepoint diff`, `fingerprint`, `rollback` and `recover` (docs/rollback.md).
namespace safepoint::service {

namespace {

using nlohmann::json;

struct RollbackArgs {
  std::string id;
  std::vector<std::string> diff_args;  // diff: [ID2] [PATH...] after the ID
  bool patch = false;
  std::string on_conflict;
  bool dry_run = false;
  bool yes = false;
};

Result<rollback::Policy> PolicyFrom(const std::string& name, const config::Config& config) {
  if (name.empty()) return config.rollback.on_conflict;
  if (const auto policy = ParseConflictPolicy(name)) return *policy;
  return Fail(ErrorCode::kBadInput,
              "--on-conflict must be abort, overwrite or merge, not '" + name + "'");
}

std::string DescribeReport(const rollback::Report& r) {
  std::string out;
  if (r.dry_run) {
    out += rollback::Describe(r.plan);
    out += "dry run: safety point " + r.id + " verified; nothing was changed\n";
  } else if (r.rollback_id.empty() || r.record_dir.empty()) {
    out += "nothing to roll back: the files already match safety point " + r.id + "\n";
  } else {
    out +=
        "Rolled back to safety point " + r.id + "\n- restored: " + std::to_string(r.restored) +
        "\n- kept local, safety-point version written beside: " + std::to_string(r.written_beside) +
        "\n- moved aside: " + std::to_string(r.moved_aside) + " (into " + r.record_dir +
        "/moved)\n- undo with: safepoint rollback " + r.pre_rollback_id +
        " --on-conflict overwrite\n";
  }
  for (const auto& d : r.differences) out += "- not restored: " + d + "\n";
  for (const auto& o : r.restarts) {
    out += "- restart " + o.name + ": " + (o.ok ? "ok" : o.error) + " (" +
           std::to_string(o.duration.count()) + " ms)\n";
    if (!o.ok) {
      for (const auto& line : o.output_tail) out += "    " + line + "\n";
    }
  }
  return out;
}

bool Confirm(const rollback::Plan& plan) {
  std::cerr << rollback::Describe(plan);
  std::cerr << "Roll back to safety point " << plan.id << "? A pre-rollback safety point is "
            << "taken first. [y/N] " << std::flush;
  std::string answer;
  if (!std::getline(std::cin, answer)) return false;
  return answer == "y" || answer == "Y" || answer == "yes";
}

// `safepoint diff ID [ID2] [--patch] [PATH...]`: what changed in the files since safety point
// ID, line by line (--patch, a second id or paths), else the plan of a rollback to ID.
void AddDiff(CLI::App& app, CliContext& cli, const std::shared_ptr<RollbackArgs>& args) {
  auto* diff = app.add_subcommand(
      "diff",
      "show what changed since a safety point (or between two) and what a rollback would do");
  diff->add_option("id", args->id, "safety point id")->required();
  diff->add_option("paths", args->diff_args,
                   "optionally a second safety point id, then paths to limit the diff to (after "
                   "--, a path may start with a dash)");
  diff->add_flag("--patch", args->patch,
                 "unified diffs of the changed files (secrets shown as ***)");
  diff->add_option("--on-conflict", args->on_conflict,
                   "policy to plan with: abort, overwrite or merge (default: config)");
  diff->callback(cli.Run([&cli, args](Operations& ops) {
    const auto& a = args->diff_args;
    rollback::ContentDiffRequest request;
    request.id = args->id;
    std::size_t next = 0;
    if (!a.empty() && IsValidBackupId(a[0])) request.other_id = a[next++];
    request.paths.assign(a.begin() + static_cast<std::ptrdiff_t>(next), a.end());
    if (!args->patch && !request.other_id && request.paths.empty()) {
      auto policy = PolicyFrom(args->on_conflict, ops.config());
      if (!policy) return cli.Failed(policy.error());
      auto plan = ops.Plan(request.id, *policy);
      if (!plan) return cli.Failed(plan.error());
      return cli.Ok(rollback::ToJson(*plan), rollback::Describe(*plan));
    }
    request.options.hunks = args->patch;
    auto report = ops.ContentDiff(std::move(request));
    if (!report) return cli.Failed(report.error());
    // A patch is printed as it is: its lines are the files' own (names are quoted in it).
    return cli.Ok(diff::ToJson(*report, args->patch),
                  args->patch ? diff::RenderPatch(*report) : diff::RenderSummary(*report),
                  /*verbatim=*/args->patch);
  }));
}

// `safepoint fingerprint ID`: records the post-update state by hand.
void AddFingerprint(CLI::App& app, CliContext& cli, const std::shared_ptr<RollbackArgs>& args) {
  auto* fp = app.add_subcommand("fingerprint",
                                "record the post-update state (hashes only) for a safety point");
  fp->add_option("id", args->id, "safety point id")->required();
  fp->callback(cli.Run([&cli, args](Operations& ops) {
    if (auto st = ops.RecordFingerprint(args->id, /*keep_existing=*/false); !st) {
      return cli.Failed(st.error());
    }
    // Parsed without its key: only the count is shown.
    auto text = ReadFileBounded(
        ops.store().DirOf(args->id) + "/" + std::string(rollback::kFingerprintName), 256u << 20);
    if (!text) return cli.Failed(text.error());
    auto f = rollback::ParseFingerprint(*text);
    if (!f) return cli.Failed(f.error());
    const std::size_t n = f->size();
    const std::string path =
        ops.store().DirOf(args->id) + "/" + std::string(rollback::kFingerprintName);
    return cli.Ok(json{{"id", args->id}, {"paths", n}, {"file", path}},
                  "recorded the fingerprint of " + std::to_string(n) + " paths for " + args->id);
  }));
}

// `safepoint rollback ID`: asks (or takes --yes), then rolls back.
void AddRollback(CLI::App& app, CliContext& cli, const std::shared_ptr<RollbackArgs>& args) {
  auto* rb = app.add_subcommand("rollback", "restore the files of a safety point");
  rb->add_option("id", args->id, "safety point id")->required();
  rb->add_option("--on-conflict", args->on_conflict,
                 "files changed locally since the safety point: abort (default), overwrite, or "
                 "merge (keep local, write <file>.safepoint-<id> beside)");
  rb->add_flag("--dry-run", args->dry_run, "verify and show the plan; change nothing");
  rb->add_flag("--yes", args->yes, "do not ask for confirmation");
  rb->callback(cli.Run([&cli, args](Operations& ops) {
    auto policy = PolicyFrom(args->on_conflict, ops.config());
    if (!policy) return cli.Failed(policy.error());
    const bool interactive = ::isatty(STDIN_FILENO) != 0;
    if (!args->dry_run && !args->yes && !interactive) {
      return cli.Failed({ErrorCode::kBadInput,
                         "rollback changes files: confirm with --yes (or look first with "
                         "--dry-run)"});
    }
    // Asked under the store lock, about the plan the rollback then carries out.
    std::function<bool(const rollback::Plan&)> confirm;
    if (!args->dry_run && !args->yes) confirm = Confirm;
    auto report = ops.Rollback(
        args->id, *policy, args->dry_run,
        args->dry_run ? store::ProgressFn{} : TerminalProgress("rolling back", false), confirm);
    if (!report) return cli.Failed(report.error());
    if (report->stopped) {
      return cli.FailedWith({ErrorCode::kConflict, rollback::ConflictMessage(report->plan)},
                            json{{"plan", rollback::ToJson(report->plan)}});
    }
    if (report->dry_run && report->plan.WouldStop()) {
      return cli.FailedWith({ErrorCode::kConflict,
                             "dry run: the rollback would stop on " +
                                 std::to_string(report->plan.Count(rollback::Change::kConflict)) +
                                 " conflicts; nothing was changed"},
                            rollback::ToJson(*report), DescribeReport(*report));
    }
    for (const auto& e : report->errors) std::cerr << "safepoint: warning: " << e << "\n";
    return cli.Ok(rollback::ToJson(*report), DescribeReport(*report));
  }));
}

// `safepoint recover`: finishes an interrupted rollback.
void AddRecover(CLI::App& app, CliContext& cli) {
  auto* recover = app.add_subcommand(
      "recover", "finish an interrupted rollback (every exclusive command does this first)");
  recover->callback(cli.Run([&cli](Operations& ops) {
    auto notes = ops.Recover();
    if (!notes) return cli.Failed(notes.error());
    std::string human;
    for (const auto& n : *notes) human += n + "\n";
    if (notes->empty()) human = "nothing to recover\n";
    return cli.Ok(json{{"recovered", *notes}}, human);
  }));
}

}  // namespace

void AddRollbackCommands(CLI::App& app, CliContext& cli) {
  auto args = std::make_shared<RollbackArgs>();
  AddDiff(app, cli, args);
  AddFingerprint(app, cli, args);
  AddRollback(app, cli, args);
  AddRecover(app, cli);
}

}  // namespace safepoint::service
