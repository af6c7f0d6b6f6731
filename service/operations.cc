#include "service/operations.h"

#include <malloc.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <utility>

#include "core/rollback/fingerprint.h"
#include "core/rollback/path_args.h"
#include "core/rollback/rollback.h"
#include "core/sources/snapshot.h"

namespace safepoint::service {

namespace {

// <backup_dir>/.tmp-entities-XXXXXX/entities.json, removed on destruction.
class EntitiesTempFile {
 public:
  static Result<EntitiesTempFile> Create(const std::string& backup_dir) {
    std::string dir = backup_dir + "/.tmp-entities-XXXXXX";
    if (::mkdtemp(dir.data()) == nullptr) {  // mode 0700
      const int err = errno;
      return Fail(err == ENOSPC ? ErrorCode::kNoSpace : ErrorCode::kIo,
                  "cannot create a temp dir in " + backup_dir + ": " + std::strerror(err));
    }
    return EntitiesTempFile(std::move(dir));
  }
  EntitiesTempFile(EntitiesTempFile&& other) noexcept : dir_(std::move(other.dir_)) {
    other.dir_.clear();
  }
  EntitiesTempFile& operator=(EntitiesTempFile&&) = delete;
  EntitiesTempFile(const EntitiesTempFile&) = delete;
  EntitiesTempFile& operator=(const EntitiesTempFile&) = delete;
  ~EntitiesTempFile() {
    if (dir_.empty()) return;
    (void)::unlink(path().c_str());
    (void)::rmdir(dir_.c_str());
  }
  [[nodiscard]] std::string path() const { return dir_ + "/entities.json"; }

 private:
  explicit EntitiesTempFile(std::string dir) : dir_(std::move(dir)) {}
  std::string dir_;
};

}  // namespace

store::Options StoreOptionsFor(const config::Config& config) {
  store::Options o;
  o.backup_dir = config.paths.backup_dir;
  o.work_factor = config.encryption.scrypt_work_factor;
  o.max_work_factor = config.encryption.max_work_factor;
  o.producer = "safepoint " + std::string(kVersion);
  return o;
}

nlohmann::json SummaryJson(const manifest::Manifest& m, const store::Store& store) {
  nlohmann::json j = {{"id", m.id},
                      {"created_at", m.created_at},
                      {"reason", m.reason},
                      {"files", m.FileCount()},
                      {"bytes", m.TotalBytes()},
                      {"warnings", m.warnings}};
  if (m.payload) {
    j["payload"] = store.DirOf(m.id) + "/" + m.payload->name;
    j["payload_bytes"] = m.payload->size;
    j["sha256"] = m.payload->sha256;
  }
  if (m.update) j["update_id"] = m.update->update_id;
  return j;
}

Operations::Operations(const config::Config& config, FileSystem& fs, const Clock& clock)
    : config_(config), fs_(fs), clock_(clock), store_(StoreOptionsFor(config), fs, clock) {}

Result<Operations::ExclusiveLock> Operations::LockExclusive() {
  auto lock = store_.Lock(store::LockMode::kExclusive);
  if (!lock) return tl::unexpected(lock.error());
  // A rollback a crash interrupted is completed (or reverted) before anything else writes.
  auto notes = rollback::Recover(config_, store_, fs_, PassphraseSource());
  if (!notes) return tl::unexpected(notes.error());
  for (const auto& n : *notes) spdlog::warn("recovered an interrupted rollback: {}", n);
  recovered_.insert(recovered_.end(), notes->begin(), notes->end());
  SP_RETURN_IF_ERROR(store_.CleanLeftovers());
  return ExclusiveLock{std::move(*lock), std::move(*notes)};
}

Status Operations::RecordFingerprint(const std::string& id, bool keep_existing) {
  auto lock = LockExclusive();
  if (!lock) return tl::unexpected(lock.error());
  if (keep_existing) {
    auto existing = rollback::FingerprintRecorded(store_, id);
    if (!existing) return tl::unexpected(existing.error());
    if (*existing) return {};
  }
  auto passphrase = config::LoadPassphrase(config_);
  if (!passphrase) return tl::unexpected(passphrase.error());
  return rollback::RecordFingerprint(config_, store_, fs_, clock_, *passphrase, id);
}

Result<rollback::Report> Operations::Rollback(
    const std::string& id, rollback::Policy policy, bool dry_run, const store::ProgressFn& progress,
    const std::function<bool(const rollback::Plan&)>& confirm) {
  auto lock = LockExclusive();
  if (!lock) return tl::unexpected(lock.error());
  auto passphrase = config::LoadPassphrase(config_);
  if (!passphrase) return tl::unexpected(passphrase.error());
  if (confirm) {
    auto plan = rollback::MakePlan(config_, store_, *passphrase, id, policy);
    if (!plan) return tl::unexpected(plan.error());
    if (!plan->WouldStop() && !confirm(*plan)) {
      return Fail(ErrorCode::kBadInput, "not confirmed; nothing was changed");
    }
  }
  // LockExclusive has finished interrupted rollbacks under this lock: no second recovery.
  return rollback::Rollback(config_, store_, fs_, clock_, *passphrase, id, policy, dry_run,
                            progress, rollback::Recovery::kDoneByCaller);
}

Result<std::vector<std::string>> Operations::Recover() {
  auto lock = LockExclusive();
  if (!lock) return tl::unexpected(lock.error());
  return std::move(lock->recovered);
}

std::vector<std::string> Operations::TakeRecovered() { return std::exchange(recovered_, {}); }

namespace {

// Collects state/entities.json while a safety point is read.
class EntitiesVisitor final : public store::EntryVisitor {
 public:
  Status Begin(const manifest::Entry& e) override {
    active_ = e.path == "state/entities.json";
    return {};
  }
  Status Data(std::span<const std::uint8_t> data) override {
    if (active_) text_.append(reinterpret_cast<const char*>(data.data()), data.size());
    return {};
  }
  Status End(const manifest::Entry&) override {
    active_ = false;
    return {};
  }
  [[nodiscard]] const std::string& text() const { return text_; }

 private:
  bool active_ = false;
  std::string text_;
};

}  // namespace

Result<rollback::Plan> Operations::Plan(const std::string& id, rollback::Policy policy) {
  auto lock = store_.Lock(store::LockMode::kShared);
  if (!lock) return tl::unexpected(lock.error());
  auto passphrase = config::LoadPassphrase(config_);
  if (!passphrase) return tl::unexpected(passphrase.error());
  return rollback::MakePlan(config_, store_, *passphrase, id, policy);
}

Result<diff::Report> Operations::ContentDiff(rollback::ContentDiffRequest request) {
  auto lock = store_.Lock(store::LockMode::kShared);
  if (!lock) return tl::unexpected(lock.error());
  auto passphrase = config::LoadPassphrase(config_);
  if (!passphrase) return tl::unexpected(passphrase.error());
  request.sensitive_keys.insert(request.sensitive_keys.end(), config_.diff.sensitive_keys.begin(),
                                config_.diff.sensitive_keys.end());
  return rollback::ContentDiff(config_, store_, *passphrase, request);
}

Result<manifest::Manifest> Operations::Show(const std::string& id) {
  auto summary = store_.Show(id);
  if (!summary || summary->entries_listed) return summary;
  auto passphrase = config::LoadPassphrase(config_);
  if (!passphrase) return tl::unexpected(passphrase.error());
  return store_.Load(id, *passphrase);
}

Result<entities::EntitySnapshot> Operations::EntitiesOf(const std::string& id) {
  auto lock = store_.Lock(store::LockMode::kShared);
  if (!lock) return tl::unexpected(lock.error());
  auto passphrase = config::LoadPassphrase(config_);
  if (!passphrase) return tl::unexpected(passphrase.error());
  EntitiesVisitor visitor;
  auto report = store_.Read(id, *passphrase, visitor);
  if (!report) return tl::unexpected(report.error());
  if (visitor.text().empty()) {
    return Fail(ErrorCode::kNotFound, "safety point " + id + " holds no entity states");
  }
  auto j = nlohmann::json::parse(visitor.text(), nullptr, false);
  if (j.is_discarded()) return Fail(ErrorCode::kCorrupt, "state/entities.json is not JSON");
  return entities::EntitySnapshotFromJson(j);
}

Result<manifest::Manifest> Operations::Backup(
    const std::string& reason, const std::optional<manifest::UpdateRef>& update,
    const store::ProgressFn& progress, const std::optional<entities::EntitySnapshot>& entities,
    const snapshot::LiveState& live) {
  auto lock = LockExclusive();
  if (!lock) return tl::unexpected(lock.error());
  auto passphrase = config::LoadPassphrase(config_);
  if (!passphrase) return tl::unexpected(passphrase.error());
  // scrypt takes one core from here on; the entity states are written and the trees walked on
  // the other meanwhile.
  auto kdf = store_.StartKeyDerivation(*passphrase);
  if (!kdf) return tl::unexpected(kdf.error());
  // state/entities.json can be as large as the mirror: it is written streaming to a private
  // temp dir in the backup dir (0700; a crash leaves it to CleanLeftovers like any .tmp-*),
  // then archived from there, so the backup holds no copy of it in memory.
  std::optional<EntitiesTempFile> entities_file;
  entities::WriteReport written;
  if (entities) {
    auto file = EntitiesTempFile::Create(config_.paths.backup_dir);
    if (!file) return tl::unexpected(file.error());
    entities_file.emplace(std::move(*file));
    auto w = entities::WriteJsonFile(*entities, entities_file->path());
    if (!w) return tl::unexpected(w.error());
    written = std::move(*w);
  }
  auto request = snapshot::Collect(
      config_, entities_file ? std::optional<std::string>(entities_file->path()) : std::nullopt,
      live);
  if (!request) return tl::unexpected(request.error());
  for (auto& w : written.warnings) request->warnings.push_back(std::move(w));
  request->reason = reason;
  request->update = update;
  // The walk's own lists are freed; their pages go back to the system while scrypt holds its
  // memory.
  ::malloc_trim(0);
  return store_.Backup(*request, *passphrase, progress, std::move(*kdf));
}

Result<std::vector<Operations::VerifyResult>> Operations::Verify(
    const std::vector<std::string>& ids) {
  auto lock = store_.Lock(store::LockMode::kShared);
  if (!lock) return tl::unexpected(lock.error());
  auto passphrase = config::LoadPassphrase(config_);
  if (!passphrase) return tl::unexpected(passphrase.error());
  std::vector<std::string> todo = ids;
  if (todo.empty()) {
    auto all = store_.List();
    if (!all) return tl::unexpected(all.error());
    for (const auto& l : *all) todo.push_back(l.id);
  }
  std::vector<VerifyResult> out;
  for (const auto& id : todo) {
    VerifyResult r;
    r.id = id;
    auto report = store_.Verify(id, *passphrase);
    if (report) {
      r.report = *report;
    } else {
      // A malformed or unknown id given by the user is their error, not a damaged store.
      if (!ids.empty() && (report.error().code == ErrorCode::kBadInput ||
                           report.error().code == ErrorCode::kNotFound)) {
        return tl::unexpected(report.error());
      }
      r.error = report.error();
    }
    out.push_back(std::move(r));
  }
  return out;
}

Result<std::size_t> Operations::Extract(const std::string& id, const std::string& dest,
                                        const std::vector<std::string>& paths,
                                        std::vector<std::string>* warnings) {
  auto lock = store_.Lock(store::LockMode::kShared);
  if (!lock) return tl::unexpected(lock.error());
  auto archive_paths = rollback::ArchivePathsOf(paths, &config_);
  if (!archive_paths) return tl::unexpected(archive_paths.error());
  auto passphrase = config::LoadPassphrase(config_);
  if (!passphrase) return tl::unexpected(passphrase.error());
  return store_.Extract(id, *passphrase, dest, *archive_paths, warnings);
}

Status Operations::Decrypt(const std::string& id, ByteSink& out) {
  auto lock = store_.Lock(store::LockMode::kShared);
  if (!lock) return tl::unexpected(lock.error());
  auto passphrase = config::LoadPassphrase(config_);
  if (!passphrase) return tl::unexpected(passphrase.error());
  return store_.Decrypt(id, *passphrase, out);
}

Status Operations::Delete(const std::string& id) {
  auto lock = LockExclusive();
  if (!lock) return tl::unexpected(lock.error());
  return store_.Delete(id);
}

Result<store::PruneReport> Operations::Prune(std::function<bool(const std::string& id)> in_use) {
  auto lock = LockExclusive();
  auto passphrase = lock ? config::LoadPassphrase(config_) : Result<Secret>(Secret());
  if (!lock || !passphrase) {
    // No retention now: the last backup's file key is not kept for a later one either.
    store_.ForgetWritten();
    return tl::unexpected(!lock ? lock.error() : passphrase.error());
  }
  store::Retention r;
  r.keep_last = static_cast<int>(config_.retention.keep_last);
  r.keep_daily = static_cast<int>(config_.retention.keep_daily);
  r.max_total_bytes = config_.retention.max_total_bytes;
  r.in_use = std::move(in_use);
  return store_.Prune(r, *passphrase);
}

nlohmann::json VerifyResultJson(const Operations::VerifyResult& r) {
  if (r.error) {
    return {{"id", r.id},
            {"ok", false},
            {"error", ErrorCodeName(r.error->code)},
            {"message", r.error->message}};
  }
  return {{"id", r.id}, {"ok", true}, {"entries", r.report.entries}, {"bytes", r.report.bytes}};
}

nlohmann::json ListingJson(const store::Listing& l) {
  nlohmann::json j = {{"id", l.id}};
  if (l.manifest) {
    const auto& m = *l.manifest;
    j["created_at"] = m.created_at;
    j["reason"] = m.reason;
    j["files"] = m.FileCount();
    j["bytes"] = m.TotalBytes();
    j["payload_bytes"] = m.payload ? m.payload->size : 0;
    j["update"] = m.update ? nlohmann::json(m.update->update_id) : nlohmann::json(nullptr);
  } else {
    j["problem"] = l.problem;
  }
  return j;
}

VerifyAnswer VerifyAnswerOf(const std::vector<Operations::VerifyResult>& results) {
  VerifyAnswer answer{nlohmann::json::array(), std::nullopt};
  for (const auto& r : results) {
    answer.results.push_back(VerifyResultJson(r));
    if (r.error && !answer.first_error) answer.first_error = r.error;
  }
  return answer;
}

}  // namespace safepoint::service
