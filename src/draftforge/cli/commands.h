// Subcommands of the `draftforge` executable. Each Add*Command registers one
// subcommand with its flags; its callback runs the job and, on failure, logs
// the error and throws CLI::RuntimeError with a non-zero exit code.
#pragma once

#include <CLI/CLI.hpp>
#include <c10/core/ScalarType.h>

#include <string>
#include <vector>

#include "draftforge/util/status.h"

namespace draftforge::cli {

void AddPrepareCommand(CLI::App& app);
void AddVocabCommand(CLI::App& app);
void AddGenerateCommand(CLI::App& app);
void AddTrainCommand(CLI::App& app);
void AddDemoAssetsCommand(CLI::App& app);
void AddLaunchVllmCommand(CLI::App& app);
void AddServeCommand(CLI::App& app);
void AddEvalCommand(CLI::App& app);

// Logs a failed status as an error and throws CLI::RuntimeError(1); does
// nothing for OK.
void ExitOnError(const Status& status);

// Validator for an integer flag that must be at least `minimum`; its error
// reads "must be an integer >= 0, got -3".
CLI::Validator AtLeast(int64_t minimum);

// Validator for a seed flag: a decimal integer in 0..2^64-1, as NumPy accepts
// it. CLI11 would otherwise wrap "-1" and saturate values above the range.
CLI::Validator Seed();

// Arguments after "--" that ParseAndRun set aside for launch-vllm.
std::vector<std::string>& PassthroughArgs();

// Parses `argv` with `app` and runs the chosen subcommand. Returns the exit
// code: CLI11's for parse errors and RuntimeError, and 1 with one logged error
// line for any other exception (std::exception, c10::Error), so an
// exception never aborts the process with a stack trace.
int ParseAndRun(CLI::App& app, int argc, const char* const* argv);

}  // namespace draftforge::cli
