#include "core/diff/patch.h"

#include <cstdio>

#include "core/base/human.h"
#include "core/base/json_name.h"
#include "core/base/utf8.h"

namespace safepoint::diff {

namespace {

using nlohmann::json;

std::string Octal(std::uint32_t mode) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%04o", mode & 07777u);
  return buf;
}

bool Binary(const std::optional<std::string>& content) {
  return content && content->find('\0') != std::string::npos;
}

std::string Sizes(const Side& before, const Side& after) {
  if (!before.present) return HumanBytes(after.size);
  if (!after.present) return HumanBytes(before.size);
  return HumanBytes(before.size) + " -> " + HumanBytes(after.size);
}

// What keeps two files from being compared line by line, if anything.
std::optional<std::string> NotRead(const Side& side, const Options& options) {
  if (!side.present || side.content) return std::nullopt;
  if (!side.unread.empty()) return side.unread;
  if (side.size > options.max_file_bytes) {
    return "too large to compare (" + HumanBytes(side.size) + "; the limit is " +
           HumanBytes(options.max_file_bytes) + ")";
  }
  return "not compared: the diff's memory budget (" + HumanBytes(options.max_total_bytes) +
         ") is spent";
}

void CompareText(FileDiff& d, const std::string& path, const Side& before, const Side& after,
                 const Masker& masker, const Options& options) {
  const std::string empty;
  const std::string& a = before.present ? *before.content : empty;
  const std::string& b = after.present ? *after.content : empty;
  const std::string ma = masker.Mask(path, a);
  const std::string mb = masker.Mask(path, b);
  if (ma == mb) {
    if (a != b) d.notes.emplace_back("only masked values differ");
    return;
  }
  TextDiff t = UnifiedDiff(ma, mb, options.context);
  d.added = t.added;
  d.removed = t.removed;
  if (options.hunks) d.hunks = std::move(t.hunks);
}

}  // namespace

std::string_view FileChangeName(FileChange change) {
  switch (change) {
    case FileChange::kModified:
      return "modified";
    case FileChange::kAdded:
      return "added";
    case FileChange::kDeleted:
      return "deleted";
  }
  return "modified";
}

FileDiff DiffFile(const std::string& path, const Side& before, const Side& after,
                  const Masker& masker, const Options& options) {
  FileDiff d;
  d.path = path;
  d.change = !before.present  ? FileChange::kAdded
             : !after.present ? FileChange::kDeleted
                              : FileChange::kModified;
  const Side& shown = after.present ? after : before;
  d.type = std::string(manifest::EntryTypeName(shown.type));
  d.old_size = before.present ? before.size : 0;
  d.new_size = after.present ? after.size : 0;
  using manifest::EntryType;
  if (before.present && after.present && before.type != after.type) {
    d.notes.push_back(std::string(manifest::EntryTypeName(before.type)) + " -> " + d.type);
  }
  if (before.present && after.present && before.type == after.type &&
      before.type != EntryType::kSymlink && before.mode != after.mode) {
    d.notes.push_back("mode " + Octal(before.mode) + " -> " + Octal(after.mode));
  }
  if (before.present && after.present && before.owner && after.owner &&
      *before.owner != *after.owner) {
    const auto text = [](const std::pair<std::uint32_t, std::uint32_t>& o) {
      return std::to_string(o.first) + ":" + std::to_string(o.second);
    };
    d.notes.push_back("owner " + text(*before.owner) + " -> " + text(*after.owner));
  }
  const bool a_file = !before.present || before.type == EntryType::kFile;
  const bool b_file = !after.present || after.type == EntryType::kFile;
  if (!a_file || !b_file) {
    if (!before.present || !after.present) {  // "directory added", "symlink deleted"
      const std::string kind = shown.type == EntryType::kDirectory ? "directory" : d.type;
      d.notes.push_back(kind + " " + std::string(FileChangeName(d.change)));
    }
    if (shown.type == EntryType::kSymlink || before.type == EntryType::kSymlink) {
      const std::string from = before.present ? before.link_target : "";
      const std::string to = after.present ? after.link_target : "";
      if (from != to) d.notes.push_back("link " + QuoteName(from) + " -> " + QuoteName(to));
    }
    return d;
  }
  for (const Side* side : {&before, &after}) {
    if (auto why = NotRead(*side, options)) {
      d.notes.push_back("text or binary, " + Sizes(before, after) + ", " + *why);
      return d;
    }
  }
  if (Binary(before.content) || Binary(after.content)) {
    d.binary = true;
    if (before.content != after.content) d.notes.push_back("binary, " + Sizes(before, after));
    return d;
  }
  CompareText(d, path, before, after, masker, options);
  return d;
}

std::string RenderFile(const Report& report, const FileDiff& f) {
  std::string out;
  if (!f.notes.empty()) {
    out += QuoteName(f.path) + ":";
    for (std::size_t i = 0; i < f.notes.size(); ++i) out += (i ? "; " : " ") + f.notes[i];
    out += "\n";
  }
  if (f.hunks.empty()) return out;
  // Names as git writes them (quoted when they must be), which patch(1) and git apply read; as
  // git does, a name with a space ends with a tab, where patch(1) expects a date after it. A name
  // ending in a space is quoted: patch(1) drops trailing blanks of a name that is not.
  const auto name = [](const std::string& label, const std::string& path) {
    const std::string full = label + "/" + path;
    std::string quoted = QuoteName(full);
    if (quoted.front() != '"' && full.back() == ' ') quoted = "\"" + quoted + "\"";
    return quoted + (quoted.front() != '"' && full.find(' ') != std::string::npos ? "\t" : "");
  };
  out += "--- " + (f.change == FileChange::kAdded ? "/dev/null" : name(report.old_label, f.path));
  out += "\n+++ " +
         (f.change == FileChange::kDeleted ? "/dev/null" : name(report.new_label, f.path)) + "\n";
  for (const auto& h : f.hunks) {
    out += HunkHeader(h) + "\n";
    for (const auto& line : h.lines) out += line + "\n";
  }
  return out;
}

std::string RenderPatch(const Report& report) {
  std::string out;
  for (const auto& f : report.files) out += RenderFile(report, f);
  return out;
}

std::string RenderSummary(const Report& report) {
  std::string out;
  std::size_t added = 0;
  std::size_t removed = 0;
  for (const auto& f : report.files) {
    out += std::string(FileChangeName(f.change)) + " " + QuoteName(f.path);
    if (f.added || f.removed) {
      out += " (+" + std::to_string(f.added) + " -" + std::to_string(f.removed) + ")";
    }
    for (const auto& n : f.notes) out += "; " + n;
    out += "\n";
    added += f.added;
    removed += f.removed;
  }
  out += std::to_string(report.files.size()) + " changed between " + report.old_label + " and " +
         report.new_label + " (+" + std::to_string(added) + " -" + std::to_string(removed) +
         " lines), " + std::to_string(report.unchanged) + " unchanged\n";
  for (const auto& w : report.warnings) out += "warning: " + w + "\n";
  return out;
}

json ToJson(const Report& report, bool with_hunks) {
  json files = json::array();
  std::size_t counts[3] = {0, 0, 0};
  std::size_t added = 0;
  std::size_t removed = 0;
  for (const auto& f : report.files) {
    ++counts[static_cast<int>(f.change)];
    added += f.added;
    removed += f.removed;
    json j = json::object();
    PutName(j, "path", f.path);  // "path_b64" when the name is not UTF-8
    j.update({{"change", FileChangeName(f.change)},
              {"type", f.type},
              {"binary", f.binary},
              {"old_size", f.old_size},
              {"new_size", f.new_size},
              {"added", f.added},
              {"removed", f.removed},
              {"notes", f.notes}});
    if (with_hunks) {
      json hunks = json::array();
      for (const auto& h : f.hunks) {
        hunks.push_back({{"old_start", h.old_start},
                         {"old_count", h.old_count},
                         {"new_start", h.new_start},
                         {"new_count", h.new_count},
                         {"header", HunkHeader(h)},
                         {"lines", h.lines}});
      }
      j["hunks"] = std::move(hunks);
    }
    files.push_back(std::move(j));
  }
  return {{"old", report.old_label},
          {"new", report.new_label},
          {"unchanged", report.unchanged},
          {"summary",
           {{"modified", counts[0]},
            {"added", counts[1]},
            {"deleted", counts[2]},
            {"lines_added", added},
            {"lines_removed", removed}}},
          {"files", std::move(files)},
          {"warnings", report.warnings}};
}

}  // namespace safepoint::diff
