// Placeholder: replaced by the real `generate` subcommand.
#include "draftforge/cli/commands.h"

namespace draftforge::cli {

void AddGenerateCommand(CLI::App& app) {
  auto* command = app.add_subcommand("generate", "not built yet");
  command->callback([] { ExitOnError(Status::Unimplemented("generate is not implemented yet")); });
}

}  // namespace draftforge::cli
