// `draftforge generate`: offline hidden-states generation with the embedded
// CPU engine (flags named after speculators' data_generation_offline script).
#include <fmt/ranges.h>
#include <spdlog/spdlog.h>

#include <filesystem>
#include <set>

#include "draftforge/cli/commands.h"
#include "draftforge/data/token_dataset.h"
#include "draftforge/engine/llama_model.h"
#include "draftforge/hidden_states/generate.h"

namespace draftforge::cli {
namespace {

struct GenerateFlags {
  std::string model_dir;
  std::string data_dir;
  std::string output_dir;  // empty: DATA/hidden_states
  std::vector<int64_t> layer_ids;
  int64_t max_samples = 0;
  bool max_samples_set = false;
  int64_t start_index = 0;
  bool validate_outputs = false;
  std::string dtype;  // empty: the model's torch_dtype
  std::string endpoint;
};

Result<torch::Dtype> ParseHiddenStatesDtype(const std::string& name, const std::string& source) {
  if (name == "float32") return torch::kFloat32;
  if (name == "bfloat16") return torch::kBFloat16;
  if (name == "float16") return torch::kFloat16;
  return Status::Invalid("{} '{}' is not supported; use float32, bfloat16 or float16", source, name);
}

// The stored dtype: --hidden-states-dtype, else the model's torch_dtype as
// vLLM writes the model dtype.
Result<torch::Dtype> ChooseDtype(const GenerateFlags& flags, const engine::ModelConfig& config) {
  if (!flags.dtype.empty()) return ParseHiddenStatesDtype(flags.dtype, "--hidden-states-dtype");
  if (config.torch_dtype.empty()) {
    spdlog::warn("{}/config.json has no torch_dtype; storing hidden states as float32 (pass "
                 "--hidden-states-dtype to choose)",
                 flags.model_dir);
    return torch::kFloat32;
  }
  return ParseHiddenStatesDtype(config.torch_dtype,
                                fmt::format("{}/config.json torch_dtype", flags.model_dir));
}

// --layer-ids, else vLLM's default [2, N/2, N-3, N], which repeats ids for
// small N.
Result<std::vector<int64_t>> ChooseLayerIds(const GenerateFlags& flags, int64_t num_layers) {
  if (!flags.layer_ids.empty()) return flags.layer_ids;
  std::vector<int64_t> defaults = engine::DefaultLayerIds(num_layers);
  std::set<int64_t> distinct(defaults.begin(), defaults.end());
  if (distinct.size() != defaults.size() || defaults.front() < 0) {
    return Status::Invalid("the default layer ids [2, N/2, N-3, N] are [{}] for this model's {} "
                           "decoder layers and repeat; pass --layer-ids with 4 distinct ids in "
                           "0..{}, e.g. --layer-ids 1 2 3 {}",
                           fmt::join(defaults, ", "), num_layers, num_layers, num_layers);
  }
  return defaults;
}

Status RunGenerate(const GenerateFlags& flags) {
  if (!flags.endpoint.empty()) {
    return Status::Unimplemented("--endpoint {}: generation through a vLLM server is not built yet; "
                                 "omit --endpoint to use the embedded CPU engine with --model",
                                 flags.endpoint);
  }
  if (flags.model_dir.empty()) {
    return Status::Invalid("--model is required: pass the Hugging Face model directory");
  }
  DF_ASSIGN_OR_RAISE(auto model, engine::LlamaModel::Load(flags.model_dir));
  DF_ASSIGN_OR_RAISE(torch::Dtype dtype, ChooseDtype(flags, model->config()));
  DF_ASSIGN_OR_RAISE(std::vector<int64_t> layer_ids,
                     ChooseLayerIds(flags, model->config().num_hidden_layers));
  DF_ASSIGN_OR_RAISE(data::TokenDataset dataset, data::TokenDataset::Open(flags.data_dir));

  hidden_states::GenerateOptions options;
  options.output_dir = flags.output_dir.empty()
                           ? (std::filesystem::path(flags.data_dir) / "hidden_states").string()
                           : flags.output_dir;
  options.layer_ids = layer_ids;
  if (flags.max_samples_set) options.max_samples = flags.max_samples;
  options.start_index = flags.start_index;
  options.validate_outputs = flags.validate_outputs;
  options.dtype = dtype;
  DF_ASSIGN_OR_RAISE(hidden_states::GenerateSummary summary,
                     hidden_states::GenerateHiddenStates(dataset, *model, options));

  const double seconds = std::max(summary.seconds, 1e-9);
  spdlog::info("generate: wrote {} files ({} tokens, {:.1f} MiB) to {} in {:.1f} s: {:.1f} "
               "samples/s, {:.0f} tokens/s; {} existing files kept{}",
               summary.generated, summary.tokens, summary.bytes / 1048576.0, options.output_dir,
               summary.seconds, summary.generated / seconds, summary.tokens / seconds,
               summary.existing,
               summary.invalid_existing > 0
                   ? fmt::format(", {} invalid existing files regenerated", summary.invalid_existing)
                   : std::string());
  return Status::OK();
}

}  // namespace

void AddGenerateCommand(CLI::App& app) {
  auto flags = std::make_shared<GenerateFlags>();
  auto* command = app.add_subcommand(
      "generate",
      "Compute hidden-states files hs_<row>.safetensors for a prepared dataset with the embedded "
      "CPU engine (resumable: existing files are skipped)");

  command->add_option("--model", flags->model_dir,
                      "Hugging Face model directory (config.json and safetensors weights)");
  command->add_option("--preprocessed-data", flags->data_dir,
                      "Prepared dataset directory written by `draftforge prepare`")
      ->required();
  command->add_option("--output", flags->output_dir,
                      "Output directory for hs_<row>.safetensors (default: "
                      "<preprocessed-data>/hidden_states)");
  command->add_option("--layer-ids", flags->layer_ids,
                      "Layer ids to capture, distinct, in 0..N (k = residual stream after k "
                      "decoder layers; default: 2 N/2 N-3 N)")
      ->expected(1, -1);

  auto* max_samples = command->add_option(
      "--max-samples", flags->max_samples,
      "Stop once the output directory contains this many files, existing ones included (default: "
      "all rows)");
  max_samples->check(AtLeast(0));
  command->add_option("--start-idx", flags->start_index,
                      "First dataset row to generate (0-based); earlier rows are skipped")
      ->capture_default_str()
      ->check(AtLeast(0));

  command->add_flag("--validate-outputs", flags->validate_outputs,
                    "Re-read and check every written file, and check existing files (invalid ones "
                    "are regenerated)");
  command->add_option("--hidden-states-dtype", flags->dtype,
                      "Stored dtype of hidden_states: float32, bfloat16 or float16 (default: the "
                      "model's torch_dtype)");
  command->add_option("--endpoint", flags->endpoint,
                      "vLLM server URL, e.g. http://localhost:8000/v1 (not supported yet)");

  command->callback([flags, max_samples] {
    flags->max_samples_set = max_samples->count() > 0;
    ExitOnError(RunGenerate(*flags));
  });
}

}  // namespace draftforge::cli
