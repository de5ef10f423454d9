// Subcommands of the `draftforge` executable. Each Add*Command registers one
// subcommand with its flags; its callback runs the job and, on failure, logs
// the error and throws CLI::RuntimeError with a non-zero exit code.
#pragma once

#include <CLI/CLI.hpp>

#include "draftforge/util/status.h"

namespace draftforge::cli {

void AddPrepareCommand(CLI::App& app);
void AddVocabCommand(CLI::App& app);
void AddGenerateCommand(CLI::App& app);
void AddTrainCommand(CLI::App& app);
void AddDemoAssetsCommand(CLI::App& app);

// Logs a failed status as an error and throws CLI::RuntimeError(1); does
// nothing for OK.
void ExitOnError(const Status& status);

}  // namespace draftforge::cli
