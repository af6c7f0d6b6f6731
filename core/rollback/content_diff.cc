#include "core/rollback/content_diff.h"

#include <algorithm>
#include <deque>
#include <optional>
#include <unordered_map>

#include "core/base/io.h"
#include "core/base/utf8.h"
#include "core/rollback/internal.h"
#include "core/rollback/path_args.h"
#include "core/rollback/rollback.h"

namespace safepoint::rollback {

namespace {

using manifest::EntryType;

// A secrets file larger than this is not read for values to mask (its own lines are still
// masked whole, as every secrets file's are).
constexpr std::size_t kMaxSecretsBytes = 1u << 20;

struct Item {
  std::string path;
  diff::Side before;
  diff::Side after;
};

diff::Side SideOf(const std::optional<PathState>& state) {
  diff::Side s;
  if (!state) return s;
  s.present = true;
  s.type = state->type;
  s.size = state->size;
  s.mode = state->mode;
  s.link_target = state->link_target;
  return s;
}

// Keeps the contents of the wanted files of a safety point as it is read.
class Capture final : public store::EntryVisitor {
 public:
  // Several places may want the same file (a changed secrets file is compared and learned).
  void Want(const std::string& path, std::optional<std::string>* into) {
    wanted_[path].push_back(into);
  }
  [[nodiscard]] bool Empty() const { return wanted_.empty(); }

  Status Begin(const manifest::Entry& entry) override {
    auto it = wanted_.find(entry.path);
    into_ = it != wanted_.end() && entry.type == EntryType::kFile ? &it->second : nullptr;
    buffer_.clear();
    if (into_) buffer_.reserve(entry.size);
    return {};
  }
  Status Data(std::span<const std::uint8_t> data) override {
    if (into_) buffer_.append(reinterpret_cast<const char*>(data.data()), data.size());
    return {};
  }
  Status End(const manifest::Entry&) override {
    if (into_) {
      for (std::size_t i = 1; i < into_->size(); ++i) *(*into_)[i] = buffer_;
      *into_->front() = std::move(buffer_);
    }
    into_ = nullptr;
    buffer_ = std::string();
    return {};
  }

 private:
  std::unordered_map<std::string, std::vector<std::optional<std::string>*>> wanted_;
  std::vector<std::optional<std::string>*>* into_ = nullptr;
  std::string buffer_;
};

// Marks which sides are read: both sides of a file within the per-file limit, while the
// contents held stay within the total budget.
void Budget(std::vector<Item>& items, const diff::Options& options, Capture* before,
            Capture* after) {
  std::uint64_t used = 0;
  for (auto& item : items) {
    const bool a_file = item.before.present && item.before.type == EntryType::kFile;
    const bool b_file = item.after.present && item.after.type == EntryType::kFile;
    if (!a_file && !b_file) continue;
    if ((item.before.present && !a_file) || (item.after.present && !b_file)) continue;
    const std::uint64_t a = a_file ? item.before.size : 0;
    const std::uint64_t b = b_file ? item.after.size : 0;
    if (a > options.max_file_bytes || b > options.max_file_bytes) continue;
    if (used + a + b > options.max_total_bytes) continue;
    used += a + b;
    if (a_file) before->Want(item.path, &item.before.content);
    if (b_file && after) after->Want(item.path, &item.after.content);
    if (b_file && !after) item.after.content = std::string();  // read from the live tree
  }
}

// The secrets files of a safety point, for their values.
void WantSecrets(const manifest::Manifest& m, Capture& capture,
                 std::deque<std::optional<std::string>>& texts) {
  for (const auto& e : m.entries) {
    if (e.type == EntryType::kFile && e.size <= kMaxSecretsBytes &&
        diff::Masker::IsSecretsFile(e.path)) {
      capture.Want(e.path, &texts.emplace_back());
    }
  }
}

Status ReadCaptured(const store::Store& store, const Secret& passphrase, const std::string& id,
                    Capture& capture, const Secret& file_key) {
  if (capture.Empty()) return {};
  auto r = store.Read(id, passphrase, capture, &file_key);
  if (!r) return tl::unexpected(r.error());
  return {};
}

// A side of a safety point's entry: its state and its owner (both points record one).
diff::Side SideOfEntry(const manifest::Entry& e) {
  diff::Side s = SideOf(StateOf(e));
  s.owner = std::make_pair(e.uid, e.gid);
  return s;
}

// The changed paths between the entries of two safety points (an owner changed alone too).
std::vector<Item> ChangedBetween(const manifest::Manifest& a, const manifest::Manifest& b,
                                 manifest::PathSelection& filter, std::size_t* unchanged) {
  std::unordered_map<std::string_view, const manifest::Entry*> old_entries;
  for (const auto& e : a.entries) old_entries.emplace(e.path, &e);
  std::vector<Item> items;
  for (const auto& e : b.entries) {
    auto it = old_entries.find(e.path);
    const bool same = it != old_entries.end() && StateOf(*it->second) == StateOf(e) &&
                      it->second->uid == e.uid && it->second->gid == e.gid;
    if (!filter.Selects(e.path)) {
      if (it != old_entries.end()) old_entries.erase(it);
      continue;
    }
    if (same) {
      ++*unchanged;
    } else {
      items.push_back({e.path, it == old_entries.end() ? diff::Side{} : SideOfEntry(*it->second),
                       SideOfEntry(e)});
    }
    if (it != old_entries.end()) old_entries.erase(it);
  }
  for (const auto& [path, e] : old_entries) {
    if (filter.Selects(path)) items.push_back({e->path, SideOfEntry(*e), diff::Side{}});
  }
  return items;
}

// The changed paths between a safety point and the live trees, as a rollback plans them.
Result<std::vector<Item>> ChangedLive(const config::Config& config, const manifest::Manifest& m,
                                      internal::LiveCollection& live,
                                      manifest::PathSelection& filter, diff::Report& report) {
  auto current = live.Take();
  if (!current) return tl::unexpected(current.error());
  auto plan = internal::PlanWith(config, m, std::nullopt, Policy::kOverwrite, *current);
  if (!plan) return tl::unexpected(plan.error());
  report.warnings = plan->warnings;
  std::vector<Item> items;
  for (const auto& e : plan->entries) {
    if (!filter.Selects(e.path) || e.implicit_dir) continue;
    if (e.change == Change::kUnchanged) {
      ++report.unchanged;
      continue;
    }
    Item item{e.path, SideOf(e.target), SideOf(e.current)};
    // What the plan compares, the diff shows: as root, the owner too.
    if (e.current_owner && internal::RunningAsRoot()) {
      item.before.owner = std::make_pair(e.uid, e.gid);
      item.after.owner = std::make_pair(e.current_owner->uid, e.current_owner->gid);
    }
    items.push_back(std::move(item));
  }
  return items;
}

// Reads the live side of the files Budget chose.
void ReadLive(const config::Config& config, std::vector<Item>& items,
              const diff::Options& options) {
  const internal::Roots roots{config.paths.ha_config, config.paths.workspace};
  for (auto& item : items) {
    if (!item.after.content) continue;
    auto text = ReadFileBounded(roots.Abs(item.path), options.max_file_bytes);
    if (text) {
      item.after.content = std::move(*text);
      item.after.size = item.after.content->size();
    } else {
      item.after.content.reset();
      item.after.unread = "cannot read it: " + text.error().message;
    }
  }
}

}  // namespace

Result<diff::Report> ContentDiff(const config::Config& config, const store::Store& store,
                                 const Secret& passphrase, const ContentDiffRequest& request) {
  auto archive_paths = ArchivePathsOf(request.paths, &config);
  if (!archive_paths) return tl::unexpected(archive_paths.error());
  manifest::PathSelection filter(*archive_paths);
  diff::Report report;
  report.old_label = request.id;
  report.new_label = request.other_id ? *request.other_id : "live";
  // Against the live trees, they are walked while the safety point loads.
  std::optional<internal::LiveCollection> live;
  if (!request.other_id) live.emplace(config);
  Secret key_a;
  auto a = store.Load(request.id, passphrase, nullptr, &key_a);
  if (!a) return tl::unexpected(a.error());
  Secret key_b;
  std::optional<manifest::Manifest> b;
  if (request.other_id) {
    auto loaded = store.Load(*request.other_id, passphrase, nullptr, &key_b);
    if (!loaded) return tl::unexpected(loaded.error());
    b = std::move(*loaded);
  }
  std::vector<Item> items;
  if (b) {
    items = ChangedBetween(*a, *b, filter, &report.unchanged);
  } else {
    auto changed = ChangedLive(config, *a, *live, filter, report);
    if (!changed) return tl::unexpected(changed.error());
    items = std::move(*changed);
  }
  SP_RETURN_IF_ERROR(
      filter.AllMatched(b ? "safety points " + request.id + " and " + *request.other_id
                          : "safety point " + request.id + " or the live trees"));
  std::sort(items.begin(), items.end(),
            [](const Item& x, const Item& y) { return x.path < y.path; });

  Capture before;
  Capture after;
  Budget(items, request.options, &before, b ? &after : nullptr);
  std::deque<std::optional<std::string>> secrets;
  WantSecrets(*a, before, secrets);
  if (b) WantSecrets(*b, after, secrets);
  SP_RETURN_IF_ERROR(ReadCaptured(store, passphrase, request.id, before, key_a));
  if (b) SP_RETURN_IF_ERROR(ReadCaptured(store, passphrase, *request.other_id, after, key_b));
  if (!b) {
    ReadLive(config, items, request.options);
    if (auto text = ReadFileBounded(config.encryption.secrets_file, kMaxSecretsBytes)) {
      secrets.emplace_back(std::move(*text));
    }
  }

  diff::Masker masker(request.sensitive_keys);
  for (const auto& text : secrets) {
    if (text) masker.AddSecretsText(*text);
  }
  for (const auto& item : items) {
    report.files.push_back(
        diff::DiffFile(item.path, item.before, item.after, masker, request.options));
  }
  return report;
}

}  // namespace safepoint::rollback
