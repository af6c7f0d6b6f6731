#include "service/state_file.h"

#include <nlohmann/json.hpp>

#include "core/base/io.h"

namespace safepoint::service {

Status WriteStateFile(FileSystem& fs, const std::string& path, const PersistedState& state) {
  if (const auto slash = path.rfind('/'); slash != std::string::npos && slash > 0) {
    SP_RETURN_IF_ERROR(MakeDirs(fs, path.substr(0, slash), 0700));
  }
  const std::string text =
      PersistedStateToJson(state).dump(1, ' ', false, nlohmann::json::error_handler_t::replace) +
      "\n";
  return WriteFileAtomically(fs, path, text, 0600);
}

Result<PersistedState> ReadStateFile(const std::string& path) {
  constexpr std::size_t kMaxStateFileBytes = 1 << 20;
  auto text = ReadFileBounded(path, kMaxStateFileBytes);
  if (!text) return tl::unexpected(text.error());
  const nlohmann::json j = nlohmann::json::parse(*text, nullptr, false);
  if (j.is_discarded()) return Fail(ErrorCode::kCorrupt, path + " is not valid JSON");
  auto state = PersistedStateFromJson(j);
  if (!state) return Fail(ErrorCode::kCorrupt, path + ": " + state.error().message);
  return state;
}

}  // namespace safepoint::service
