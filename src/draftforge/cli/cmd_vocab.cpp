// Placeholder: replaced by the real `vocab` subcommand.
#include "draftforge/cli/commands.h"

namespace draftforge::cli {

void AddVocabCommand(CLI::App& app) {
  auto* command = app.add_subcommand("vocab", "not built yet");
  command->callback([] { ExitOnError(Status::Unimplemented("vocab is not implemented yet")); });
}

}  // namespace draftforge::cli
