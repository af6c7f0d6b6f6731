#include "service/log_redaction.h"

#include <spdlog/sinks/sink.h>
#include <spdlog/spdlog.h>

#include <memory>
#include <string>
#include <utility>

namespace safepoint::service {

namespace {

class RedactingSink final : public spdlog::sinks::sink {
 public:
  RedactingSink(std::shared_ptr<spdlog::sinks::sink> inner, const config::Config& config)
      : inner_(std::move(inner)), config_(config) {
    set_level(inner_->level());
  }

  void log(const spdlog::details::log_msg& msg) override {
    const std::string text =
        config::Redact(config_, std::string_view(msg.payload.data(), msg.payload.size()));
    spdlog::details::log_msg copy = msg;
    copy.payload = spdlog::string_view_t(text.data(), text.size());
    inner_->log(copy);
  }
  void flush() override { inner_->flush(); }
  void set_pattern(const std::string& pattern) override { inner_->set_pattern(pattern); }
  void set_formatter(std::unique_ptr<spdlog::formatter> formatter) override {
    inner_->set_formatter(std::move(formatter));
  }

 private:
  std::shared_ptr<spdlog::sinks::sink> inner_;
  const config::Config& config_;
};

}  // namespace

void InstallLogRedaction(const config::Config& config) {
  if (config.secret_values.empty()) return;
  auto logger = spdlog::default_logger();
  if (!logger) return;
  for (auto& sink : logger->sinks()) {
    sink = std::make_shared<RedactingSink>(sink, config);
  }
}

}  // namespace safepoint::service
