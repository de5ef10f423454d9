// Placeholder: replaced by the real `prepare` subcommand.
#include "draftforge/cli/commands.h"

namespace draftforge::cli {

void AddPrepareCommand(CLI::App& app) {
  auto* command = app.add_subcommand("prepare", "not built yet");
  command->callback([] { ExitOnError(Status::Unimplemented("prepare is not implemented yet")); });
}

}  // namespace draftforge::cli
