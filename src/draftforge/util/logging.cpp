#include "draftforge/util/logging.h"

#include <fmt/ranges.h>
#include <spdlog/sinks/stdout_color_sinks.h>

#include <algorithm>
#include <cctype>

namespace draftforge {

const std::vector<std::string>& LogLevelNames() {
  static const std::vector<std::string> names = {"trace", "debug", "info", "warn", "error"};
  return names;
}

Status InitLogging(const std::string& level) {
  std::string name = level;
  std::transform(name.begin(), name.end(), name.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  const auto& names = LogLevelNames();
  // spdlog::level::from_str maps unknown names to "off", which would hide
  // every message, errors included.
  if (std::find(names.begin(), names.end(), name) == names.end()) {
    return Status::Invalid("--log-level '{}' is invalid; use one of {}", level,
                           fmt::join(names, ", "));
  }
  auto logger = spdlog::get("draftforge");
  if (!logger) logger = spdlog::stderr_color_mt("draftforge");
  logger->set_pattern("%Y-%m-%d %H:%M:%S.%e %^%l%$ %v");
  logger->set_level(spdlog::level::from_str(name));
  spdlog::set_default_logger(logger);
  return Status::OK();
}

}  // namespace draftforge
