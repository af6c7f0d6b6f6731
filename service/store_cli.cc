// The store commands of the CLI: backup, list, show, verify, extract, decrypt, delete, prune,
// and `config check` (docs/cli.md).
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "core/base/fs.h"
#include "core/base/json_name.h"
#include "core/base/utf8.h"
#include "core/config/config.h"
#include "core/sources/snapshot.h"
#include "core/store/store.h"
#include "service/cli_context.h"
#include "service/collect.h"
#include "service/commands.h"
#include "service/lifecycle.h"
#include "service/operations.h"
#include "service/payload.h"
#include "service/state_file.h"

namespace safepoint::service {

namespace {

using nlohmann::json;

// The arguments the commands take; CLI11 writes them before a command's callback runs.
struct Args {
  std::string id;
  std::string reason = "manual";
  bool all = false;
  std::string to;
  std::vector<std::string> paths;
};

// True when the running service uses safety point `id` now (a pending update, a rollback), as
// its state file says. Read at each call: a use the service starts meanwhile is seen.
bool UsedByService(const config::Config& config, const std::string& id) {
  const auto state = ReadStateFile(config.service.state_file);
  if (!state) return false;  // the service starts idle without a readable state file
  const bool busy = state->state != State::kIdle && state->state != State::kError;
  return busy && state->backup_id == id;
}

void AddBackup(CLI::App& app, CliContext& cli, const std::shared_ptr<Args>& a) {
  auto* backup = app.add_subcommand("backup", "take a safety point now");
  backup->add_option("--reason", a->reason, "why (shown in list and in the manifest)");
  backup->callback(cli.Run([&cli, a](Operations& ops) {
    const std::string& reason = a->reason;
    // The same rule as the MQTT `backup` command's: one line of at most 256 bytes.
    if (auto st = payload::CheckText("--reason", reason, kMaxReasonLength, payload::TextKind::kLine);
        !st) {
      return cli.Failed(st.error());
    }
    if (!IsValidUtf8(reason)) {
      return cli.Failed({ErrorCode::kBadInput, "'--reason' is not valid UTF-8"});
    }
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
    // Retention may verify the newest safety point (scrypt's memory again): the entries of this
    // one are not needed any more.
    manifest::DropEntries(*m);
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
}

void AddList(CLI::App& app, CliContext& cli) {
  auto* list = app.add_subcommand("list", "list safety points, oldest first");
  list->callback(cli.Run([&cli](Operations& ops) {
    auto all = ops.store().List();
    if (!all) return cli.Failed(all.error());
    json arr = json::array();
    std::string human;
    for (const auto& l : *all) {
      arr.push_back(ListingJson(l));
      // The columns have a fixed width; the reason (any length, quoted) and the problem follow.
      char columns[96];
      if (l.manifest) {
        std::snprintf(columns, sizeof columns, "%-22s %6zu files %10s  ", l.id.c_str(),
                      l.manifest->FileCount(), HumanBytes(l.manifest->TotalBytes()).c_str());
        // Masked before it is quoted: a secret's quoted form would not be recognised.
        human += columns + QuoteName(cli.Redact(l.manifest->reason)) + "\n";
      } else {
        std::snprintf(columns, sizeof columns, "%-22s ", l.id.c_str());
        human += columns + ("(unreadable: " + l.problem + ")\n");
      }
    }
    if (all->empty()) human = "no safety points yet\n";
    return cli.Ok(arr, human);
  }));
}

void AddShow(CLI::App& app, CliContext& cli, const std::shared_ptr<Args>& a) {
  auto* show = app.add_subcommand("show", "show a safety point's manifest");
  show->add_option("id", a->id, "safety point id")->required();
  show->callback(cli.Run([&cli, a](Operations& ops) {
    auto m = ops.Show(a->id);
    if (!m) return cli.Failed(m.error());
    std::string human = "id:         " + m->id + "\nformat:     " + std::to_string(m->format) +
                        (m->format == 1 ? " (entry list in plaintext manifest.json)" : "") +
                        "\ncreated:    " + m->created_at + "\nreason:     " + QuoteName(cli.Redact(m->reason)) + "\n";
    if (m->update) {
      human += "update:     " + m->update->update_id + " (" + m->update->target + " " +
               m->update->from_version + " -> " + m->update->to_version + ")\n";
    }
    human += "files:      " + std::to_string(m->FileCount()) + " (" + HumanBytes(m->TotalBytes()) +
             ")\npayload:    " + m->payload->name + " (" + HumanBytes(m->payload->size) +
             ")\nsha256:     " + m->payload->sha256 + "\nencryption: " + m->encryption +
             ", work factor " + std::to_string(m->kdf.work_factor) + ", key id " + m->key_id + "\n";
    // One form only: at 100k entries each of them is tens of megabytes.
    if (!cli.json_output) {
      for (const auto& e : m->entries) {
        human += "  " + std::string(manifest::EntryTypeName(e.type)) + "  " + QuoteName(e.path);
        if (e.type == manifest::EntryType::kSymlink) human += " -> " + QuoteName(e.link_target);
        if (e.type == manifest::EntryType::kFile) human += "  (" + std::to_string(e.size) + " B)";
        human += "\n";
      }
      for (const auto& w : m->warnings) human += "warning: " + w + "\n";
      return cli.Ok(json::object(), human);
    }
    // The whole manifest: the entries (as in MANIFEST.json) and the outer fields.
    json j = manifest::ToJson(*m, /*inner=*/true);
    std::vector<manifest::Entry>().swap(m->entries);  // printed from `j` now
    j["encryption"]["key_id"] = m->key_id;
    j["payload"] = {
        {"name", m->payload->name}, {"size", m->payload->size}, {"sha256", m->payload->sha256}};
    if (m->index) {
      j["index"] = {
          {"name", m->index->name}, {"size", m->index->size}, {"sha256", m->index->sha256}};
    }
    return cli.Ok(j, human);
  }));
}

void AddVerify(CLI::App& app, CliContext& cli, const std::shared_ptr<Args>& a) {
  auto* verify = app.add_subcommand("verify", "decrypt and check a safety point (or --all)");
  verify->add_option("id", a->id, "safety point id");
  verify->add_flag("--all", a->all, "verify every safety point");
  verify->callback(cli.Run([&cli, a](Operations& ops) {
    const std::string& id = a->id;
    const bool verify_all = a->all;
    if (verify_all == !id.empty()) {
      return cli.Failed({ErrorCode::kBadInput, "verify takes either an id or --all"});
    }
    auto results = ops.Verify(verify_all ? std::vector<std::string>{} : std::vector{id});
    if (!results) return cli.Failed(results.error());
    const VerifyAnswer answer = VerifyAnswerOf(*results);
    std::string human;
    for (const auto& r : *results) {
      human += r.error ? r.id + ": FAILED: " + r.error->message + "\n"
                       : r.id + ": ok (" + std::to_string(r.report.entries) + " entries, " +
                             HumanBytes(r.report.bytes) + ")\n";
    }
    if (answer.first_error) return cli.FailedWith(*answer.first_error, answer.results, human);
    if (results->empty()) human = "no safety points to verify\n";
    return cli.Ok(answer.results, human);
  }));
}

void AddExtract(CLI::App& app, CliContext& cli, const std::shared_ptr<Args>& a) {
  auto* extract = app.add_subcommand("extract", "copy files out of a safety point into DIR");
  extract->add_option("id", a->id, "safety point id")->required();
  extract->add_option("--to", a->to, "destination directory")->required();
  extract->add_option("paths", a->paths, "archive paths (e.g. ha_config/configuration.yaml)");
  extract->callback(cli.Run([&cli, a](Operations& ops) {
    const std::string& id = a->id;
    const std::string& to = a->to;
    const std::vector<std::string>& paths = a->paths;
    if (to.empty()) return cli.Failed({ErrorCode::kBadInput, "--to needs a directory"});
    std::vector<std::string> warnings;
    auto n = ops.Extract(id, to, paths, &warnings);
    if (!n) return cli.Failed(n.error());
    json data = {{"id", id}, {"extracted", *n}, {"warnings", warnings}};
    PutName(data, "to", to);  // "to_b64" when the directory's name is not UTF-8
    std::string human = "extracted " + std::to_string(*n) + (*n == 1 ? " entry" : " entries") +
                        " of " + id + " into " + QuoteName(to) + "\n";
    for (const auto& w : warnings) human += "warning: " + w + "\n";
    return cli.Ok(data, human);
  }));
}

void AddDecrypt(CLI::App& app, CliContext& cli, const std::shared_ptr<Args>& a) {
  auto* decrypt = app.add_subcommand("decrypt", "write the decrypted payload (tar.zst) to stdout");
  decrypt->add_option("id", a->id, "safety point id")->required();
  decrypt->callback(cli.Run([&cli, a](Operations& ops) {
    const std::string& id = a->id;
    if (::isatty(STDOUT_FILENO) != 0) {
      return cli.Failed({ErrorCode::kBadInput,
                         "refusing to write a tar.zst to a terminal; redirect stdout, e.g. "
                         "`safepoint decrypt ID > payload.tar.zst`"});
    }
    FdSink out(STDOUT_FILENO, "stdout");
    if (auto st = ops.Decrypt(id, out); !st) return cli.Failed(st.error());
    return 0;
  }));
}

void AddDelete(CLI::App& app, CliContext& cli, const std::shared_ptr<Args>& a) {
  auto* del = app.add_subcommand("delete", "delete a safety point");
  del->add_option("id", a->id, "safety point id")->required();
  del->callback(cli.Run([&cli, a](Operations& ops) {
    const std::string& id = a->id;
    // Never the safety point of the service's update or rollback in progress: the update's
    // way back (the service's own `delete` command refuses it too).
    if (UsedByService(ops.config(), id)) {
      return cli.Failed({ErrorCode::kBusy, "safety point " + id +
                                               " belongs to the service's operation in "
                                               "progress; it can be deleted once that ends"});
    }
    if (auto st = ops.Delete(id); !st) return cli.Failed(st.error());
    return cli.Ok(json{{"id", id}, {"deleted", true}}, "deleted " + id);
  }));
}

void AddPrune(CLI::App& app, CliContext& cli) {
  auto* prune = app.add_subcommand("prune", "apply the retention policy");
  prune->callback(cli.Run([&cli](Operations& ops) {
    // Never deleting the safety point the service uses, as after a backup.
    auto r = ops.Prune([&](const std::string& id) { return UsedByService(ops.config(), id); });
    if (!r) return cli.Failed(r.error());
    std::string human =
        "kept " + std::to_string(r->kept.size()) + ", deleted " + std::to_string(r->deleted.size());
    for (const auto& d : r->deleted) human += "\n  deleted " + d;
    // No safety point is verified (decrypted) when nothing is deleted: `protected` is null then.
    const json protected_id = r->protected_id.empty() ? json(nullptr) : json(r->protected_id);
    return cli.Ok(json{{"deleted", r->deleted}, {"kept", r->kept}, {"protected", protected_id}},
                  human);
  }));
}

void AddConfigCheck(CLI::App& app, CliContext& cli) {
  auto* cfg = app.add_subcommand("config", "configuration commands");
  cfg->require_subcommand(1);
  auto* check = cfg->add_subcommand("check", "validate the configuration, print the sources");
  check->callback([&cli] {
    if (auto st = cli.Load(); !st) {
      cli.rc = cli.Failed(st.error());
      return;
    }
    json resolved = config::ToJson(*cli.config);
    // The passphrase must be present and readable, but is never printed.
    auto pass = config::LoadPassphrase(*cli.config);
    if (!pass) {
      cli.rc = cli.Failed(pass.error());
      return;
    }
    auto request = snapshot::Collect(*cli.config, std::nullopt);
    if (!request) {
      cli.rc = cli.Failed(request.error());
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
    cli.rc = cli.Ok(out, human);
  });
}

}  // namespace

void AddStoreCommands(CLI::App& app, CliContext& cli) {
  // One set of arguments for all: CLI11 runs one subcommand, and the options live as long as
  // the callbacks that hold them.
  auto args = std::make_shared<Args>();
  AddBackup(app, cli, args);
  AddList(app, cli);
  AddShow(app, cli, args);
  AddVerify(app, cli, args);
  AddExtract(app, cli, args);
  AddDecrypt(app, cli, args);
  AddDelete(app, cli, args);
  AddPrune(app, cli);
  AddConfigCheck(app, cli);
}

}  // namespace safepoint::service
