// Logging setup shared by the CLI and the library (spdlog, default logger).
#pragma once

#include <spdlog/spdlog.h>

#include <string>

namespace draftforge {

// Configures the default spdlog logger to write to stderr with timestamps at
// `level` ("trace", "debug", "info", "warn", "error").
void InitLogging(const std::string& level);

}  // namespace draftforge
