// `draftforge prepare`: chat conversations or pre-tokenized JSON/JSONL records
// to a prepared dataset directory, with the flag names of speculators'
// prepare_data.py.
#include <spdlog/spdlog.h>

#include "draftforge/cli/commands.h"
#include "draftforge/data/prepare.h"

namespace draftforge::cli {

void AddPrepareCommand(CLI::App& app) {
  auto options = std::make_shared<data::PrepareOptions>();
  auto max_samples = std::make_shared<int64_t>(0);
  auto unknown_roles = std::make_shared<std::string>("drop");
  auto no_sample = std::make_shared<bool>(false);
  auto no_progress = std::make_shared<bool>(false);
  auto* command = app.add_subcommand(
      "prepare",
      "Build a prepared dataset (Arrow shards, state.json, dataset_info.json, token_freq.pt) "
      "from chat conversations or pre-tokenized records");
  command->footer(
      "Chat input: a JSON array or JSONL file of ShareGPT {\"conversations\": [{\"from\", "
      "\"value\"}]} or OpenAI-style {\"messages\": [{\"role\", \"content\"}]} records "
      "(optional \"tools\"). --model must hold tokenizer.json and tokenizer_config.json "
      "(weights are not needed). Each conversation is rendered with the chat template and "
      "tokenized as transformers' apply_chat_template does; assistant content trains, taken from "
      "the template's {% generation %} markers, else from a pattern detected from the template, "
      "or from --assistant-pattern.\n"
      "Pre-tokenized input: objects {\"input_ids\": [int...], \"loss_mask\": [0/1 or "
      "bool...]}; without loss_mask every token trains. The first record of the first --data "
      "file decides which kind the run reads.\n"
      "The run fails, writing nothing, on: malformed JSON (reported as file:line), a missing "
      "tokenizer file, a template that does not compile, a pre-tokenized record without an "
      "integer-array input_ids, a token id outside [0, vocab_size) of --model (or negative), a "
      "loss_mask value other than 0/1/true/false, or when no row is left.\n"
      "A record is skipped and counted per reason in the summary on: empty input_ids, a "
      "loss_mask whose length differs from input_ids, a conversation with no message or no "
      "assistant turn, invalid UTF-8, a template that raises, or no trainable token after "
      "truncation.");

  command->add_option("--model", options->model_dir,
                      "Target model or tokenizer directory. Chat data needs its tokenizer.json and "
                      "tokenizer_config.json; token ids are checked against config.json vocab_size "
                      "when it exists");
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
      ->check(Seed())
      ->capture_default_str();
  command->add_option("--token-freq-path", options->token_freq_path,
                      "Where to write token_freq.pt (default OUTPUT/token_freq.pt); an existing "
                      "file is left untouched");
  command->add_flag("--overwrite", options->overwrite,
                    "Rewrite OUTPUT even if it already holds *.arrow shards (otherwise prepare "
                    "leaves it as is and exits 0); OUTPUT/token_freq.pt, d2t.npy and t2d.npy are "
                    "removed and token_freq.pt is written again");
  command->add_option("--num-workers,--num-preprocessing-workers", options->num_workers,
                      "Threads rendering and tokenizing chat records (0 = one per CPU); "
                      "pre-tokenized input is parsed by one thread")
      ->check(AtLeast(0));
  command->add_option("--assistant-pattern", options->assistant_pattern,
                      "Chat data: regex (PCRE2, '.' matches newlines) whose first group captures "
                      "assistant content in the rendered text; overrides the template's markers");
  command->add_option("--chat-template", options->chat_template_path,
                      "Chat data: Jinja template file used instead of the model's");
  command->add_option("--chat-template-kwargs", options->chat_template_kwargs,
                      "Chat data: JSON object of extra template variables, e.g. "
                      "'{\"enable_thinking\": false}'");
  command->add_option("--unknown-roles", *unknown_roles,
                      "Chat data: what to do with turns whose role is not user/human, "
                      "assistant/gpt, system or tool: drop them, or train on them as assistant")
      ->check(CLI::IsMember({"drop", "assistant"}))
      ->capture_default_str();
  command->add_flag("--turn-dropout", options->turn_dropout,
                    "Chat data: keep only the first N turns of each conversation, ending on an "
                    "assistant turn, with N drawn per conversation from --seed");
  command->add_flag("--no-sample", *no_sample, "Do not log the first row with its trained tokens marked");
  command->add_flag("--no-progress", *no_progress, "Hide the progress bar");

  command->callback([options, max_samples, no_progress, unknown_roles, no_sample] {
    options->unknown_roles_as_assistant = *unknown_roles == "assistant";
    options->show_sample = !*no_sample;
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
    if (!summary->mask_method.empty()) spdlog::info("loss masks came from {}", summary->mask_method);
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
