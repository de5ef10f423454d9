// `draftforge eval`: acceptance length, per-position acceptance and speed of
// an EAGLE-3 draft with the embedded verifier, without vLLM.
#include <spdlog/spdlog.h>

#include <filesystem>
#include <iostream>

#include "draftforge/cli/commands.h"
#include "draftforge/eval/run_eval.h"
#include "draftforge/util/fs.h"

namespace draftforge::cli {
namespace {

struct EvalCommandOptions {
  std::string verifier;
  std::string draft;
  std::string prompts;
  std::string tokenizer;
  std::string output;
  int64_t num_speculative_tokens = 3;
  int64_t max_new_tokens = 128;
  int64_t max_prompts = 0;
  bool no_greedy = false;
  bool ignore_eos = false;
};

Status RunEvalCommand(const EvalCommandOptions& options) {
  // The report is written after every decode, so a bad path fails first.
  if (!options.output.empty()) {
    std::error_code error;
    if (std::filesystem::is_directory(options.output, error)) {
      return Status::Invalid("--output {} is a directory; pass a file path such as {}/report.json", options.output,
                             options.output);
    }
    const std::filesystem::path parent = std::filesystem::path(options.output).parent_path();
    if (!parent.empty()) DF_RETURN_NOT_OK(CreateDirectories(parent.string()));
  }
  DF_ASSIGN_OR_RAISE(std::unique_ptr<engine::LlamaModel> verifier, engine::LlamaModel::Load(options.verifier));
  const std::string tokenizer_dir = options.tokenizer.empty() ? options.verifier : options.tokenizer;
  DF_ASSIGN_OR_RAISE(std::vector<eval::Prompt> prompts,
                     eval::ReadPrompts(options.prompts, options.max_prompts, tokenizer_dir));

  eval::EvalOptions eval_options;
  eval_options.decode.num_speculative_tokens = options.num_speculative_tokens;
  eval_options.decode.max_new_tokens = options.max_new_tokens;
  if (!options.ignore_eos) eval_options.decode.stop_token_ids = eval::ConfigEosTokenIds(*verifier);
  eval_options.compare_greedy = !options.no_greedy;
  spdlog::info("eval: {} prompts from {}, K = {}, up to {} new tokens each{}", prompts.size(), options.prompts,
               options.num_speculative_tokens, options.max_new_tokens,
               eval_options.compare_greedy ? ", with plain greedy decoding for comparison" : "");

  DF_ASSIGN_OR_RAISE(eval::EvalReport report, eval::RunEval(*verifier, options.draft, prompts, eval_options));
  std::cout << report.ConsoleTable() << std::flush;
  if (!options.output.empty()) {
    nlohmann::json json = report.ToJson();
    json["verifier"] = options.verifier;
    json["draft"] = options.draft;
    json["prompts"] = options.prompts;
    DF_RETURN_NOT_OK(WriteFileAtomic(options.output, json.dump(2) + "\n"));
    spdlog::info("wrote {}", options.output);
  }
  nlohmann::json summary = report.ToJson();
  if (summary.contains("lossless") && !summary["lossless"]["equal"].get<bool>()) {
    return Status::Internal("{} of {} speculative outputs differ from plain greedy decoding; speculation must be "
                            "lossless, so this is a bug (or a float32 tie between the top two logits)",
                            summary["lossless"]["mismatches"].get<int64_t>(),
                            summary["lossless"]["compared"].get<int64_t>());
  }
  return Status::OK();
}

}  // namespace

void AddEvalCommand(CLI::App& app) {
  auto options = std::make_shared<EvalCommandOptions>();
  auto* command = app.add_subcommand(
      "eval", "Measure a draft's acceptance length with the embedded verifier (greedy speculative decoding)");
  command->add_option("--verifier,--verifier-name-or-path", options->verifier, "Verifier model directory")
      ->required();
  command->add_option("--draft", options->draft, "Draft checkpoint directory (config.json + model.safetensors)")
      ->required();
  command->add_option("--prompts", options->prompts,
                      "JSONL prompts with 'input_ids' or 'messages'; an optional 'prefix_len' cuts input_ids "
                      "and keeps the rest as the expected continuation")
      ->required();
  command->add_option("--tokenizer", options->tokenizer,
                      "Directory with tokenizer.json and tokenizer_config.json for 'messages' prompts "
                      "(default: the verifier directory)");
  command->add_option("--num-speculative-tokens", options->num_speculative_tokens,
                      "Draft tokens proposed per verification step (K)")
      ->capture_default_str()
      ->check(AtLeast(1));
  command->add_option("--max-new-tokens", options->max_new_tokens, "Tokens generated per prompt at most")
      ->capture_default_str()
      ->check(AtLeast(1));
  command->add_option("--max-prompts", options->max_prompts, "Use only the first N prompts (0 = all)")
      ->capture_default_str()
      ->check(AtLeast(0));
  command->add_option("--output", options->output, "Write the JSON report to this file");
  command->add_flag("--no-greedy", options->no_greedy,
                    "Skip plain greedy decoding (no lossless check, no speed baseline)");
  command->add_flag("--ignore-eos", options->ignore_eos,
                    "Do not stop at the verifier's eos_token_id; always generate --max-new-tokens");
  command->callback([options] { ExitOnError(RunEvalCommand(*options)); });
}

}  // namespace draftforge::cli
