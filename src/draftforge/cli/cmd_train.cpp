// Placeholder: replaced by the real `train` subcommand.
#include "draftforge/cli/commands.h"

namespace draftforge::cli {

void AddTrainCommand(CLI::App& app) {
  auto* command = app.add_subcommand("train", "not built yet");
  command->callback([] { ExitOnError(Status::Unimplemented("train is not implemented yet")); });
}

}  // namespace draftforge::cli
