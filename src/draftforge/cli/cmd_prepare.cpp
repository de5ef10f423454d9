// `draftforge prepare`: pre-tokenized JSON/JSONL records to a prepared dataset
// directory, with the flag names of speculators' prepare_data.py.
#include <spdlog/spdlog.h>

#include "draftforge/cli/commands.h"
#include "draftforge/data/prepare.h"

namespace draftforge::cli {

void AddPrepareCommand(CLI::App& app) {
  auto options = std::make_shared<data::PrepareOptions>();
  auto max_samples = std::make_shared<int64_t>(0);
  auto num_workers = std::make_shared<int>(1);
  auto no_progress = std::make_shared<bool>(false);
  auto* command = app.add_subcommand(
      "prepare",
      "Build a prepared dataset (Arrow shards, state.json, dataset_info.json, token_freq.pt) "
      "from pre-tokenized records");
  command->footer(
      "Input: a JSON array or JSONL file of objects {\"input_ids\": [int...], \"loss_mask\": "
      "[0/1 or bool...]}; without loss_mask every token trains. Other fields are ignored.\n"
      "The run fails, writing nothing, on: malformed JSON (reported as file:line), a record "
      "without an integer-array input_ids, chat records with 'conversations' or 'messages' "
      "(chat templates are not supported yet), a token id outside [0, vocab_size) of --model "
      "(or negative), a loss_mask value other than 0/1/true/false, or when no row is left.\n"
      "A record is skipped and counted in the summary on: empty input_ids, a loss_mask whose "
      "length differs from input_ids, or no trainable token after truncation.");

  command->add_option("--model", options->model_dir,
                      "Target model directory; when given, token ids are checked against its "
                      "config.json vocab_size");
  command->add_option("--data", options->data_files,
                      "Input file (JSON array or JSONL); repeat for several sources")
      ->required();
  command->add_option("--output", options->output_dir, "Output dataset directory")->required();
  command->add_option("--seq-length", options->seq_length,
                      "Truncate each row to at most this many tokens")
      ->capture_default_str();
  command->add_option("--max-samples", *max_samples,
                      "Keep at most this many rows in total (0 = all)")
      ->check(AtLeast(0));
  command->add_option("--seed", options->seed,
                      "Seed of the per-source shuffle that precedes --max-samples selection")
      ->capture_default_str();
  command->add_option("--token-freq-path", options->token_freq_path,
                      "Where to write token_freq.pt (default OUTPUT/token_freq.pt); an existing "
                      "file is left untouched");
  command->add_flag("--overwrite", options->overwrite,
                    "Rewrite OUTPUT even if it already holds *.arrow shards (otherwise prepare "
                    "leaves it as is and exits 0)");
  command->add_option("--num-workers,--num-preprocessing-workers", *num_workers,
                      "Accepted for compatibility with prepare_data.py; parsing is single-threaded");
  command->add_flag("--no-progress", *no_progress, "Hide the progress bar");

  command->callback([options, max_samples, no_progress] {
    if (*max_samples > 0) options->max_samples = *max_samples;
    options->show_progress = !*no_progress;
    auto summary = data::RunPrepare(*options);
    ExitOnError(summary.status());
    if (summary->output_existed) {
      spdlog::info("{} already contains *.arrow shards; nothing done (pass --overwrite to "
                   "rebuild it)",
                   options->output_dir);
      return;
    }
    spdlog::info("wrote {}: {}", options->output_dir, summary->ToString());
    if (summary->token_freq_written) {
      spdlog::info("wrote token frequencies to {}", summary->token_freq_path);
    } else {
      spdlog::warn("{} exists and was left untouched; delete it to recount frequencies for the "
                   "new rows",
                   summary->token_freq_path);
    }
  });
}

}  // namespace draftforge::cli
