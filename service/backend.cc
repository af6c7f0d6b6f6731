#include "service/backend.h"

#include <spdlog/spdlog.h>

#include <exception>
#include <new>

#include "core/base/utf8.h"
#include "core/format/archive.h"
#include "core/rollback/fingerprint.h"
#include "core/rollback/rollback.h"

namespace safepoint::service {

namespace {

class OperationsBackend final : public Backend {
 public:
  OperationsBackend(const config::Config& config, FileSystem& fs, const Clock& clock)
      : config_(config), fs_(fs), clock_(clock), ops_(config, fs, clock) {}

  Result<manifest::Manifest> Backup(const std::string& reason,
                                    const std::optional<manifest::UpdateRef>& update,
                                    const store::ProgressFn& progress,
                                    const entities::EntitySnapshot& entities,
                                    const snapshot::LiveState& live) override {
    return ops_.Backup(reason, update, progress, entities, live);
  }
  Status Delete(const std::string& id) override { return ops_.Delete(id); }
  Result<std::vector<store::Listing>> List() override { return ops_.store().List(); }
  Result<std::vector<Operations::VerifyResult>> Verify(
      const std::vector<std::string>& ids) override {
    return ops_.Verify(ids);
  }
  Result<store::PruneReport> Prune(std::function<bool(const std::string& id)> in_use) override {
    return ops_.Prune(std::move(in_use));
  }
  Status RecordFingerprint(const std::string& id, bool keep_existing) override;
  RollbackOutcome Rollback(const std::string& id, ConflictPolicy policy,
                           const store::ProgressFn& progress) override;
  Result<entities::EntitySnapshot> EntitiesOf(const std::string& id) override;
  Status RecoverInterrupted() override;

 private:
  const config::Config& config_;
  FileSystem& fs_;
  const Clock& clock_;
  Operations ops_;
};

// Collects state/entities.json while a safety point is verified.
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

Result<entities::EntitySnapshot> OperationsBackend::EntitiesOf(const std::string& id) {
  auto lock = ops_.store().Lock(store::LockMode::kShared);
  if (!lock) return tl::unexpected(lock.error());
  auto passphrase = config::LoadPassphrase(config_);
  if (!passphrase) return tl::unexpected(passphrase.error());
  EntitiesVisitor visitor;
  auto report = ops_.store().Read(id, *passphrase, visitor);
  if (!report) return tl::unexpected(report.error());
  if (visitor.text().empty()) {
    return Fail(ErrorCode::kNotFound, "safety point " + id + " holds no entity states");
  }
  auto j = nlohmann::json::parse(visitor.text(), nullptr, false);
  if (j.is_discarded()) return Fail(ErrorCode::kCorrupt, "state/entities.json is not JSON");
  return entities::EntitySnapshotFromJson(j);
}

Status OperationsBackend::RecordFingerprint(const std::string& id, bool keep_existing) {
  auto lock = ops_.store().Lock(store::LockMode::kExclusive);
  if (!lock) return tl::unexpected(lock.error());
  SP_RETURN_IF_ERROR(
      rollback::RecoverInterrupted(config_, ops_.store(), fs_, ops_.PassphraseSource()));
  if (keep_existing) {
    auto existing = rollback::FingerprintRecorded(ops_.store(), id);
    if (!existing) return tl::unexpected(existing.error());
    if (*existing) return {};
  }
  auto passphrase = config::LoadPassphrase(config_);
  if (!passphrase) return tl::unexpected(passphrase.error());
  return rollback::RecordFingerprint(config_, ops_.store(), fs_, clock_, *passphrase, id);
}

RollbackOutcome OperationsBackend::Rollback(const std::string& id, ConflictPolicy policy,
                                            const store::ProgressFn& progress) {
  auto lock = ops_.store().Lock(store::LockMode::kExclusive);
  if (!lock) return RollbackOutcome::Failed(lock.error());
  // Completes (or reverts) a rollback a crash interrupted; after a restart that is the one
  // the service was running.
  auto notes = rollback::Recover(config_, ops_.store(), fs_, ops_.PassphraseSource());
  if (!notes) return RollbackOutcome::Failed(notes.error());
  for (const auto& n : *notes) spdlog::info("recovery: {}", n);
  auto passphrase = config::LoadPassphrase(config_);
  if (!passphrase) return RollbackOutcome::Failed(passphrase.error());
  auto report = rollback::Rollback(config_, ops_.store(), fs_, clock_, *passphrase, id, policy,
                                   false, progress);
  if (!report) {
    if (report.error().code == ErrorCode::kConflict) {
      auto plan = rollback::MakePlan(config_, ops_.store(), *passphrase, id, policy);
      if (plan) return RollbackOutcome::Conflicts(plan->Conflicts());
    }
    return RollbackOutcome::Failed(report.error());
  }
  for (const auto& e : report->errors) spdlog::error("after the rollback to {}: {}", id, e);
  for (const auto& d : report->differences) spdlog::info("rollback to {}: {}", id, d);
  return RollbackOutcome::Ok(report->restored + report->written_beside,
                             report->pre_rollback_id.empty()
                                 ? std::nullopt
                                 : std::optional<std::string>(report->pre_rollback_id));
}

Status OperationsBackend::RecoverInterrupted() {
  auto lock = ops_.store().Lock(store::LockMode::kExclusive);
  if (!lock) return tl::unexpected(lock.error());
  auto notes = rollback::Recover(config_, ops_.store(), fs_, ops_.PassphraseSource());
  if (!notes) return tl::unexpected(notes.error());
  for (const auto& n : *notes) spdlog::info("recovery: {}", n);
  return {};
}

// What an exception (std::bad_alloc above all) thrown inside an operation becomes: an error
// of that operation, reported like any other.
Error ErrorFromException(const char* operation) {
  try {
    throw;
  } catch (const std::bad_alloc&) {
    return Error{ErrorCode::kInternal, std::string(operation) + ": out of memory"};
  } catch (const std::exception& e) {
    return Error{ErrorCode::kInternal,
                 std::string(operation) + ": internal error: " + SanitizeUtf8(e.what())};
  } catch (...) {
    return Error{ErrorCode::kInternal, std::string(operation) + ": internal error"};
  }
}

template <class F>
auto Guarded(const char* operation, F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (...) {
    return tl::unexpected(ErrorFromException(operation));
  }
}

class ExceptionSafeBackend final : public Backend {
 public:
  explicit ExceptionSafeBackend(std::unique_ptr<Backend> inner) : inner_(std::move(inner)) {}

  Result<manifest::Manifest> Backup(const std::string& reason,
                                    const std::optional<manifest::UpdateRef>& update,
                                    const store::ProgressFn& progress,
                                    const entities::EntitySnapshot& entities,
                                    const snapshot::LiveState& live) override {
    return Guarded("safety point",
                   [&] { return inner_->Backup(reason, update, progress, entities, live); });
  }
  Status Delete(const std::string& id) override {
    return Guarded("delete", [&] { return inner_->Delete(id); });
  }
  Result<std::vector<store::Listing>> List() override {
    return Guarded("list", [&] { return inner_->List(); });
  }
  Result<std::vector<Operations::VerifyResult>> Verify(
      const std::vector<std::string>& ids) override {
    return Guarded("verify", [&] { return inner_->Verify(ids); });
  }
  Result<store::PruneReport> Prune(std::function<bool(const std::string& id)> in_use) override {
    return Guarded("retention", [&] { return inner_->Prune(std::move(in_use)); });
  }
  Status RecordFingerprint(const std::string& id, bool keep_existing) override {
    return Guarded("fingerprint", [&] { return inner_->RecordFingerprint(id, keep_existing); });
  }
  RollbackOutcome Rollback(const std::string& id, ConflictPolicy policy,
                           const store::ProgressFn& progress) override {
    try {
      return inner_->Rollback(id, policy, progress);
    } catch (...) {
      return RollbackOutcome::Failed(ErrorFromException("rollback"));
    }
  }
  Result<entities::EntitySnapshot> EntitiesOf(const std::string& id) override {
    return Guarded("entity states", [&] { return inner_->EntitiesOf(id); });
  }
  Status RecoverInterrupted() override {
    return Guarded("recovery", [&] { return inner_->RecoverInterrupted(); });
  }

 private:
  std::unique_ptr<Backend> inner_;
};

}  // namespace

std::unique_ptr<Backend> ExceptionSafe(std::unique_ptr<Backend> backend) {
  return std::make_unique<ExceptionSafeBackend>(std::move(backend));
}

std::unique_ptr<Backend> MakeBackend(const config::Config& config, FileSystem& fs,
                                     const Clock& clock) {
  return std::make_unique<OperationsBackend>(config, fs, clock);
}

}  // namespace safepoint::service
