// Environment variables that draftforge adds to its own process.
//
// The executable re-executes itself once with thread-pool settings that
// libraries read at load time (see cli/main.cpp). Processes of other programs
// that draftforge starts, such as `vllm serve`, must not inherit them: the
// command draftforge prints for the user would then start a differently
// configured process than the one it ran.
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace draftforge::util {

// Name of the variable that lists, comma separated, the variables draftforge
// added (only those the user had not set).
inline constexpr const char* kAddedEnvironmentVariable = "DRAFTFORGE_ADDED_ENV";

// Sets each `name` that is unset to its value and records the names it set in
// kAddedEnvironmentVariable. Returns the names it set.
std::vector<std::string> AddEnvironmentDefaults(const std::vector<std::pair<std::string, std::string>>& defaults);

// Unsets the variables listed in kAddedEnvironmentVariable and the list
// itself, so that the next program started gets the user's environment.
void RemoveAddedEnvironment();

}  // namespace draftforge::util
