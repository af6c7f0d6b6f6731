#include "service/diff_answer.h"

#include "core/base/json_name.h"
#include "core/base/utf8.h"

namespace safepoint::service {

namespace {

using nlohmann::json;

std::string Counts(const diff::FileDiff& f) {
  if (f.binary) return "binary";
  if (f.added == 0 && f.removed == 0) {
    return f.change == diff::FileChange::kModified ? (f.notes.empty() ? "changed" : f.notes[0])
                                                   : std::string(diff::FileChangeName(f.change));
  }
  return "+" + std::to_string(f.added) + " -" + std::to_string(f.removed);
}

}  // namespace

json ChangedFilesJson(const diff::Report& report, std::size_t max) {
  json files = json::array();
  for (const auto& f : report.files) {
    if (files.size() >= max) break;
    json file = json::object();
    PutName(file, "path", f.path);  // "path_b64" when the name is not UTF-8
    file.update({{"change", diff::FileChangeName(f.change)},
                 {"type", f.type},
                 {"binary", f.binary},
                 {"added", f.added},
                 {"removed", f.removed},
                 {"notes", f.notes}});
    files.push_back(std::move(file));
  }
  return files;
}

std::string ChangesMessage(const diff::Report& report, std::string_view lead,
                           std::size_t max_named) {
  const std::size_t n = report.files.size();
  if (n == 0) return std::string(lead) + " no file.";
  std::string out = std::string(lead) + " " + std::to_string(n) + (n == 1 ? " file: " : " files: ");
  for (std::size_t i = 0; i < n && i < max_named; ++i) {
    if (i) out += ", ";
    out += QuoteName(report.files[i].path) + " (" + Counts(report.files[i]) + ")";
  }
  if (n > max_named) out += " and " + std::to_string(n - max_named) + " more";
  return out + ".";
}

json DiffAnswer(const diff::Report& report, const std::optional<std::string>& path) {
  const json full = diff::ToJson(report, /*with_hunks=*/false);
  json data = {{"backup_id", report.old_label},
               {"against", report.new_label},
               {"unchanged", report.unchanged},
               {"summary", full["summary"]},
               {"files", ChangedFilesJson(report, kMaxDiffFilesListed)},
               {"files_total", report.files.size()},
               {"files_cut", report.files.size() > kMaxDiffFilesListed},
               {"warnings", report.warnings},
               {"message", ChangesMessage(report, "Changed since safety point " + report.old_label + ":")}};
  if (!path) return data;
  std::string patch = diff::RenderPatch(report);
  data["patch_bytes"] = patch.size();
  data["patch_cut"] = patch.size() > kMaxDiffPatchBytes;
  if (patch.size() > kMaxDiffPatchBytes) {
    const std::size_t end = patch.rfind('\n', kMaxDiffPatchBytes - 1);
    patch.resize(end == std::string::npos ? 0 : end + 1);
    patch += "[cut: the patch has " + std::to_string(data["patch_bytes"].get<std::size_t>()) +
             " bytes; `safepoint diff " + report.old_label + " --patch " + *path +
             "` shows it whole]\n";
  }
  data["patch"] = std::move(patch);
  return data;
}

}  // namespace safepoint::service
