// Logging setup shared by the CLI and the library (spdlog, default logger).
#pragma once

#include <spdlog/spdlog.h>

#include <string>
#include <vector>

#include "draftforge/util/status.h"

namespace draftforge {

// The accepted log level names, lowercase.
const std::vector<std::string>& LogLevelNames();

// Configures the default spdlog logger to write to stderr with timestamps at
// `level`, one of LogLevelNames() in any letter case. Invalid for any other
// name, which then leaves the logger unchanged.
Status InitLogging(const std::string& level);

}  // namespace draftforge
