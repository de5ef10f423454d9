#include <spdlog/spdlog.h>

#include "draftforge/cli/commands.h"

namespace draftforge::cli {

void ExitOnError(const Status& status) {
  if (status.ok()) return;
  spdlog::error("{}", status.ToString());
  throw CLI::RuntimeError(1);
}

}  // namespace draftforge::cli
