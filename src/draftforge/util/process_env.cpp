#include "draftforge/util/process_env.h"

#include <cstdlib>
#include <sstream>

namespace draftforge::util {

std::vector<std::string> AddEnvironmentDefaults(const std::vector<std::pair<std::string, std::string>>& defaults) {
  std::vector<std::string> added;
  for (const auto& [name, value] : defaults) {
    if (std::getenv(name.c_str()) != nullptr) continue;
    ::setenv(name.c_str(), value.c_str(), 1);
    added.push_back(name);
  }
  if (!added.empty()) {
    std::string list;
    if (const char* previous = std::getenv(kAddedEnvironmentVariable)) list = previous;
    for (const std::string& name : added) list += (list.empty() ? "" : ",") + name;
    ::setenv(kAddedEnvironmentVariable, list.c_str(), 1);
  }
  return added;
}

void RemoveAddedEnvironment() {
  const char* list = std::getenv(kAddedEnvironmentVariable);
  if (list == nullptr) return;
  std::istringstream names{std::string(list)};
  for (std::string name; std::getline(names, name, ',');) {
    if (!name.empty()) ::unsetenv(name.c_str());
  }
  ::unsetenv(kAddedEnvironmentVariable);
}

}  // namespace draftforge::util
