#include "service/cli.h"

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "core/base/fs.h"
#include "core/config/config.h"
#include "core/sources/snapshot.h"
#include "core/store/store.h"
#include "service/cli_context.h"
#include "service/collect.h"
#include "service/lifecycle.h"
#include "service/operations.h"

namespace safepoint::service {

namespace {

using nlohmann::json;

// True when the running service uses safety point `id` now (a pending update, a rollback), as
// its state file says. Read at each call: a use the service starts meanwhile is seen.
bool UsedByService(const config::Config& config, const std::string& id) {
  std::ifstream in(config.service.state_file);
  if (!in.good()) return false;
  std::stringstream text;
  text << in.rdbuf();
  const json j = json::parse(text.str(), nullptr, false);
  if (j.is_discarded()) return false;
  const auto state = PersistedStateFromJson(j);
  if (!state) return false;  // the service starts idle from such a file
  const bool busy = state->state != State::kIdle && state->state != State::kError;
  return busy && state->backup_id == id;
}

}  // namespace

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

std::string DefaultConfigPath() {
  const char* env = std::getenv("SAFEPOINT_CONFIG");
  if (env != nullptr && *env != '\0') return env;
  return "/etc/safepoint/safepoint.yaml";
}

json ListingJson(const store::Listing& l) {
  json j = {{"id", l.id}};
  if (l.manifest) {
    const auto& m = *l.manifest;
    j["created_at"] = m.created_at;
    j["reason"] = m.reason;
    j["files"] = m.FileCount();
    j["bytes"] = m.TotalBytes();
    j["payload_bytes"] = m.payload ? m.payload->size : 0;
    j["update"] = m.update ? json(m.update->update_id) : json(nullptr);
  } else {
    j["problem"] = l.problem;
  }
  return j;
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

  int& rc = cli.rc;
  auto run = [&cli](auto&& body) { return cli.Run(body); };

  // backup
  std::string reason = "manual";
  auto* backup = app.add_subcommand("backup", "take a safety point now");
  backup->add_option("--reason", reason, "why (shown in list and in the manifest)");
  backup->callback(run([&](Operations& ops) {
    std::optional<entities::EntitySnapshot> entities;
    if (cli.config->mqtt) {
      auto collected = CollectRetainedStates(*cli.config, cli.clock);
      if (collected) {
        entities = std::move(*collected);
      } else {
        std::cerr << "safepoint: warning: no entity states ("
                  << cli.Redact(collected.error().message) << "); backing up the files\n";
      }
    }
    auto m = ops.Backup(reason, std::nullopt, TerminalProgress("backing up"), entities);
    if (!m) return cli.Failed(m.error());
    std::string human =
        "Safety point " + m->id + " created\n" +
        "- Files backed up: " + std::to_string(m->FileCount()) + " (total ~" +
        HumanBytes(m->TotalBytes()) + ")\n" + "- Stored at: " + ops.store().DirOf(m->id) + "/" +
        m->payload->name + " (" + HumanBytes(m->payload->size) + ")\n" +
        "- Encryption: age v1, scrypt work factor " + std::to_string(m->kdf.work_factor) + "\n";
    for (const auto& w : m->warnings) human += "- warning: " + w + "\n";
    json summary = SummaryJson(*m, ops.store());
    // Retention after every new safety point, never deleting one the service uses.
    auto pruned = ops.Prune([&](const std::string& id) { return UsedByService(*cli.config, id); });
    if (pruned) {
      summary["pruned"] = pruned->deleted;
      for (const auto& d : pruned->deleted) human += "- retention deleted " + d + "\n";
    } else {
      std::cerr << "safepoint: warning: retention failed: " << pruned.error().message << "\n";
    }
    return cli.Ok(summary, human);
  }));

  // list
  auto* list = app.add_subcommand("list", "list safety points, oldest first");
  list->callback(run([&](Operations& ops) {
    auto all = ops.store().List();
    if (!all) return cli.Failed(all.error());
    json arr = json::array();
    std::string human;
    for (const auto& l : *all) {
      arr.push_back(ListingJson(l));
      char line[512];
      if (l.manifest) {
        std::snprintf(line, sizeof line, "%-22s %6zu files %10s  %s\n", l.id.c_str(),
                      l.manifest->FileCount(), HumanBytes(l.manifest->TotalBytes()).c_str(),
                      l.manifest->reason.c_str());
      } else {
        std::snprintf(line, sizeof line, "%-22s (unreadable: %s)\n", l.id.c_str(),
                      l.problem.c_str());
      }
      human += line;
    }
    if (all->empty()) human = "no safety points yet\n";
    return cli.Ok(arr, human);
  }));

  // show
  std::string id;
  auto* show = app.add_subcommand("show", "show a safety point's manifest");
  show->add_option("id", id, "safety point id")->required();
  show->callback(run([&](Operations& ops) {
    // Format 2 keeps the entry list encrypted: reading it takes the passphrase (one scrypt).
    auto summary = ops.store().Show(id);
    if (!summary) return cli.Failed(summary.error());
    Result<manifest::Manifest> m = summary;
    if (!summary->entries_listed) {
      auto passphrase = config::LoadPassphrase(ops.config());
      if (!passphrase) return cli.Failed(passphrase.error());
      m = ops.store().Load(id, *passphrase);
      if (!m) return cli.Failed(m.error());
    }
    std::string human = "id:         " + m->id + "\nformat:     " + std::to_string(m->format) +
                        (m->format == 1 ? " (entry list in plaintext manifest.json)" : "") +
                        "\ncreated:    " + m->created_at + "\nreason:     " + m->reason + "\n";
    if (m->update) {
      human += "update:     " + m->update->update_id + " (" + m->update->target + " " +
               m->update->from_version + " -> " + m->update->to_version + ")\n";
    }
    human += "files:      " + std::to_string(m->FileCount()) + " (" + HumanBytes(m->TotalBytes()) +
             ")\npayload:    " + m->payload->name + " (" + HumanBytes(m->payload->size) +
             ")\nsha256:     " + m->payload->sha256 + "\nencryption: " + m->encryption +
             ", work factor " + std::to_string(m->kdf.work_factor) + ", key id " + m->key_id + "\n";
    for (const auto& e : m->entries) {
      human += "  " + std::string(manifest::EntryTypeName(e.type)) + "  " + e.path;
      if (e.type == manifest::EntryType::kSymlink) human += " -> " + e.link_target;
      if (e.type == manifest::EntryType::kFile) human += "  (" + std::to_string(e.size) + " B)";
      human += "\n";
    }
    for (const auto& w : m->warnings) human += "warning: " + w + "\n";
    // The whole manifest: the entries (as in MANIFEST.json) and the outer fields.
    json j = manifest::ToJson(*m, /*inner=*/true);
    j["encryption"]["key_id"] = m->key_id;
    j["payload"] = {
        {"name", m->payload->name}, {"size", m->payload->size}, {"sha256", m->payload->sha256}};
    if (m->index) {
      j["index"] = {
          {"name", m->index->name}, {"size", m->index->size}, {"sha256", m->index->sha256}};
    }
    return cli.Ok(j, human);
  }));

  // verify
  bool verify_all = false;
  auto* verify = app.add_subcommand("verify", "decrypt and check a safety point (or --all)");
  verify->add_option("id", id, "safety point id");
  verify->add_flag("--all", verify_all, "verify every safety point");
  verify->callback(run([&](Operations& ops) {
    if (verify_all == !id.empty()) {
      return cli.Failed({ErrorCode::kBadInput, "verify takes either an id or --all"});
    }
    auto results = ops.Verify(verify_all ? std::vector<std::string>{} : std::vector{id});
    if (!results) return cli.Failed(results.error());
    json arr = json::array();
    std::string human;
    std::optional<Error> first_error;
    for (const auto& r : *results) {
      if (r.error) {
        arr.push_back({{"id", r.id},
                       {"ok", false},
                       {"error", ErrorCodeName(r.error->code)},
                       {"message", r.error->message}});
        human += r.id + ": FAILED: " + r.error->message + "\n";
        if (!first_error) first_error = r.error;
      } else {
        arr.push_back(
            {{"id", r.id}, {"ok", true}, {"entries", r.report.entries}, {"bytes", r.report.bytes}});
        human += r.id + ": ok (" + std::to_string(r.report.entries) + " entries, " +
                 HumanBytes(r.report.bytes) + ")\n";
      }
    }
    if (first_error) return cli.FailedWith(*first_error, arr, human);
    if (results->empty()) human = "no safety points to verify\n";
    return cli.Ok(arr, human);
  }));

  // extract
  std::string to;
  std::vector<std::string> paths;
  auto* extract = app.add_subcommand("extract", "copy files out of a safety point into DIR");
  extract->add_option("id", id, "safety point id")->required();
  extract->add_option("--to", to, "destination directory")->required();
  extract->add_option("paths", paths, "archive paths (e.g. ha_config/configuration.yaml)");
  extract->callback(run([&](Operations& ops) {
    if (to.empty()) return cli.Failed({ErrorCode::kBadInput, "--to needs a directory"});
    auto n = ops.Extract(id, to, paths);
    if (!n) return cli.Failed(n.error());
    return cli.Ok(json{{"id", id}, {"to", to}, {"extracted", *n}},
                  "extracted " + std::to_string(*n) + " entries of " + id + " into " + to);
  }));

  // decrypt
  auto* decrypt = app.add_subcommand("decrypt", "write the decrypted payload (tar.zst) to stdout");
  decrypt->add_option("id", id, "safety point id")->required();
  decrypt->callback(run([&](Operations& ops) {
    if (::isatty(STDOUT_FILENO) != 0) {
      return cli.Failed({ErrorCode::kBadInput,
                         "refusing to write a tar.zst to a terminal; redirect stdout, e.g. "
                         "`safepoint decrypt ID > payload.tar.zst`"});
    }
    FdSink out(STDOUT_FILENO, "stdout");
    if (auto st = ops.Decrypt(id, out); !st) return cli.Failed(st.error());
    return 0;
  }));

  // delete
  auto* del = app.add_subcommand("delete", "delete a safety point");
  del->add_option("id", id, "safety point id")->required();
  del->callback(run([&](Operations& ops) {
    if (auto st = ops.Delete(id); !st) return cli.Failed(st.error());
    return cli.Ok(json{{"id", id}, {"deleted", true}}, "deleted " + id);
  }));

  // prune
  auto* prune = app.add_subcommand("prune", "apply the retention policy");
  prune->callback(run([&](Operations& ops) {
    auto r = ops.Prune();
    if (!r) return cli.Failed(r.error());
    std::string human =
        "kept " + std::to_string(r->kept.size()) + ", deleted " + std::to_string(r->deleted.size());
    for (const auto& d : r->deleted) human += "\n  deleted " + d;
    // No safety point is verified (decrypted) when nothing is deleted: `protected` is null then.
    const json protected_id = r->protected_id.empty() ? json(nullptr) : json(r->protected_id);
    return cli.Ok(json{{"deleted", r->deleted}, {"kept", r->kept}, {"protected", protected_id}},
                  human);
  }));

  // config check
  auto* cfg = app.add_subcommand("config", "configuration commands");
  cfg->require_subcommand(1);
  auto* check = cfg->add_subcommand("check", "validate the configuration, print the sources");
  check->callback([&] {
    if (auto st = cli.Load(); !st) {
      rc = cli.Failed(st.error());
      return;
    }
    json resolved = config::ToJson(*cli.config);
    // The passphrase must be present and readable, but is never printed.
    auto pass = config::LoadPassphrase(*cli.config);
    if (!pass) {
      rc = cli.Failed(pass.error());
      return;
    }
    auto request = snapshot::Collect(*cli.config, std::nullopt);
    if (!request) {
      rc = cli.Failed(request.error());
      return;
    }
    std::uint64_t bytes = 0;
    std::size_t files = 0;
    for (const auto& e : request->entries) {
      if (e.header.type == manifest::EntryType::kFile) {
        ++files;
        bytes += e.content ? e.content->size() : e.header.size;
      }
    }
    json out = {{"config", resolved},
                {"sources", {{"files", files}, {"bytes", bytes}, {"warnings", request->warnings}}}};
    std::string human = "configuration " + cli.config->source_file + " is valid\n" +
                        resolved.dump(2, ' ', false, json::error_handler_t::replace) +
                        "\nsources: " + std::to_string(files) + " files, " + HumanBytes(bytes) +
                        "\n";
    for (const auto& w : request->warnings) human += "warning: " + w + "\n";
    rc = cli.Ok(out, human);
  });

  AddRollbackCommands(app, cli);
  AddServeCommand(app, cli);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);
    if (code == 0) return 0;  // --help, --version
    // An argument error is bad input like any other: with --json it is answered in JSON too
    // (the flag may come after the argument that failed, so look at argv itself).
    bool json_output = cli.json_output;
    for (int i = 1; i < argc && std::string_view(argv[i]) != "--"; ++i) {
      if (std::string_view(argv[i]) == "--json") json_output = true;
    }
    if (json_output) {
      std::cout << json{{"status", "error"},
                        {"error",
                         {{"code", ErrorCodeName(ErrorCode::kBadInput)}, {"message", e.what()}}}}
                       .dump(-1, ' ', false, json::error_handler_t::replace)
                << "\n";
    }
    return ExitCodeFor(ErrorCode::kBadInput);
  } catch (const std::exception& e) {
    // A bug, not the user's fault: say so instead of aborting.
    std::cerr << "safepoint: internal error: " << e.what() << "\n";
    return ExitCodeFor(ErrorCode::kInternal);
  }
  return rc;
}

}  // namespace safepoint::service
