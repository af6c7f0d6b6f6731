#include "service/backend.h"

#include <spdlog/spdlog.h>

#include <exception>
#include <new>

#include "core/base/utf8.h"
#include "core/rollback/rollback.h"

namespace safepoint::service {

namespace {

// Every call is one Operations call: the CLI and the service share the store facade.
class OperationsBackend final : public Backend {
 public:
  OperationsBackend(const config::Config& config, FileSystem& fs, const Clock& clock)
      : ops_(config, fs, clock) {}

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
  Status RecordFingerprint(const std::string& id, bool keep_existing) override {
    return ops_.RecordFingerprint(id, keep_existing);
  }
  RollbackOutcome Rollback(const std::string& id, ConflictPolicy policy,
                           const store::ProgressFn& progress) override;
  Result<entities::EntitySnapshot> EntitiesOf(const std::string& id) override {
    return ops_.EntitiesOf(id);
  }
  Result<diff::Report> ContentDiff(const std::string& id, const std::optional<std::string>& path,
                                   bool hunks) override {
    rollback::ContentDiffRequest request;
    request.id = id;
    if (path) request.paths.push_back(*path);
    request.options.hunks = hunks;
    return ops_.ContentDiff(std::move(request));
  }
  // Completes (or reverts) a rollback a crash interrupted; after a restart that is the one the
  // service was running.
  Status RecoverInterrupted() override {
    auto notes = ops_.Recover();
    if (!notes) return tl::unexpected(notes.error());
    return {};
  }
  std::vector<std::string> TakeRecoveryNotes() override { return ops_.TakeRecovered(); }

 private:
  Operations ops_;
};

RollbackOutcome OperationsBackend::Rollback(const std::string& id, ConflictPolicy policy,
                                            const store::ProgressFn& progress) {
  auto report = ops_.Rollback(id, policy, /*dry_run=*/false, progress);
  if (!report) return RollbackOutcome::Failed(report.error());
  if (report->stopped) {
    // Shown in the status and events as text: a name that is not plain text is quoted.
    std::vector<std::string> conflicts = report->plan.Conflicts();
    for (auto& c : conflicts) c = QuoteName(c);
    return RollbackOutcome::Conflicts(std::move(conflicts));
  }
  for (const auto& e : report->errors) spdlog::error("after the rollback to {}: {}", id, e);
  for (const auto& d : report->differences) spdlog::info("rollback to {}: {}", id, d);
  return RollbackOutcome::Ok(report->restored + report->written_beside,
                             report->pre_rollback_id.empty()
                                 ? std::nullopt
                                 : std::optional<std::string>(report->pre_rollback_id));
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
  Result<diff::Report> ContentDiff(const std::string& id, const std::optional<std::string>& path,
                                   bool hunks) override {
    return Guarded("diff", [&] { return inner_->ContentDiff(id, path, hunks); });
  }
  Status RecoverInterrupted() override {
    return Guarded("recovery", [&] { return inner_->RecoverInterrupted(); });
  }
  std::vector<std::string> TakeRecoveryNotes() override {
    try {
      return inner_->TakeRecoveryNotes();
    } catch (const std::exception&) {
      return {};  // only moves a vector out; the log already holds every line
    }
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
