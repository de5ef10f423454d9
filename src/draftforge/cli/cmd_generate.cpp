// `draftforge generate`: offline hidden-states generation with the embedded
// CPU engine, or through vLLM / `draftforge serve` servers with --endpoint
// (flags named after speculators' data_generation_offline script).
#include <fmt/ranges.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <optional>
#include <set>

#include "draftforge/cli/commands.h"
#include "draftforge/data/token_dataset.h"
#include "draftforge/engine/llama_model.h"
#include "draftforge/hidden_states/generate.h"
#include "draftforge/hidden_states/remote_generate.h"
#include "draftforge/hidden_states/vllm_client.h"

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
  std::vector<std::string> endpoints;
  int concurrency = 32;
  double timeout_seconds = 120;
  int max_retries = 3;
  double retry_backoff_seconds = 1;
  double lock_timeout_seconds = 60;
};

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

std::string OutputDir(const GenerateFlags& flags) {
  return flags.output_dir.empty() ? (std::filesystem::path(flags.data_dir) / "hidden_states").string()
                                  : flags.output_dir;
}

std::chrono::milliseconds Milliseconds(double seconds) {
  return std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000.0));
}

// Logs the failed samples, at most 20 of them, and returns the run's error.
Status ReportFailures(const std::vector<hidden_states::SampleFailure>& failures) {
  if (failures.empty()) return Status::OK();
  constexpr size_t kListed = 20;
  for (size_t i = 0; i < failures.size() && i < kListed; ++i) {
    spdlog::error("failed sample: row {}: {}", failures[i].row, failures[i].reason);
  }
  if (failures.size() > kListed) {
    spdlog::error("... and {} more failed samples (all are logged above)", failures.size() - kListed);
  }
  return Status::Network("{} samples failed and have no file; fix the cause reported above and "
                         "rerun the same command, which requests only the missing rows",
                         failures.size());
}

// generate --endpoint: the model's config.json, when --model is a local
// directory, supplies the default layer ids, hidden size and dtype; for a
// model only the server has, --layer-ids and --hidden-states-dtype are needed.
Status RunRemoteGenerate(const GenerateFlags& flags) {
  std::optional<engine::ModelConfig> config;
  std::string settings_model = flags.model_dir;
  std::error_code error;
  if (!flags.model_dir.empty() &&
      std::filesystem::exists(std::filesystem::path(flags.model_dir) / "config.json", error)) {
    DF_ASSIGN_OR_RAISE(config, engine::ModelConfig::Load(flags.model_dir));
    settings_model = std::filesystem::weakly_canonical(flags.model_dir, error).string();
  }
  std::vector<int64_t> layer_ids = flags.layer_ids;
  if (layer_ids.empty()) {
    if (!config) {
      return Status::Invalid("--layer-ids is required with --endpoint unless --model is a local "
                             "model directory: pass the layer ids the server captures");
    }
    DF_ASSIGN_OR_RAISE(layer_ids, ChooseLayerIds(flags, config->num_hidden_layers));
  }
  std::sort(layer_ids.begin(), layer_ids.end());
  if (!config && flags.dtype.empty()) {
    return Status::Invalid("--hidden-states-dtype is required with --endpoint unless --model is a "
                           "local model directory: pass the dtype the server runs the model in "
                           "(bfloat16 for most vLLM deployments)");
  }
  DF_ASSIGN_OR_RAISE(torch::Dtype dtype,
                     hidden_states::ChooseHiddenStatesDtype(flags.dtype, config ? config->torch_dtype : "",
                                             flags.model_dir));
  DF_ASSIGN_OR_RAISE(data::TokenDataset dataset, data::TokenDataset::Open(flags.data_dir));

  hidden_states::ClientOptions client_options;
  client_options.endpoints = flags.endpoints;
  client_options.expected_model = flags.model_dir;
  client_options.timeout = Milliseconds(flags.timeout_seconds);
  client_options.max_retries = flags.max_retries;
  client_options.backoff = Milliseconds(flags.retry_backoff_seconds);
  client_options.lock_timeout = Milliseconds(flags.lock_timeout_seconds);
  client_options.num_layers = static_cast<int64_t>(layer_ids.size());
  client_options.layer_ids = layer_ids;
  if (config) client_options.hidden_size = config->hidden_size;
  client_options.dtype = dtype;
  DF_ASSIGN_OR_RAISE(auto client, hidden_states::HiddenStatesClient::Connect(client_options));

  // vLLM's API does not report which layers its connector captures, so only
  // their number can be checked against the files.
  spdlog::info("generate: recording layer ids {} in the settings file; the servers must have been started "
               "with the same ids (launch-vllm --layers), because files only show their layer count ({})",
               fmt::join(layer_ids, " "), layer_ids.size());

  hidden_states::RemoteGenerateOptions options;
  options.output_dir = OutputDir(flags);
  if (flags.max_samples_set) options.max_samples = flags.max_samples;
  options.start_index = flags.start_index;
  options.validate_outputs = flags.validate_outputs;
  options.concurrency = flags.concurrency;
  options.num_endpoints = static_cast<int>(flags.endpoints.size());
  options.settings.model_dir = settings_model.empty() ? client->model() : settings_model;
  options.settings.layer_ids = layer_ids;
  options.settings.dtype = hidden_states::DtypeName(dtype);
  if (config) options.hidden_size = config->hidden_size;
  DF_ASSIGN_OR_RAISE(hidden_states::RemoteGenerateSummary summary,
                     hidden_states::GenerateHiddenStatesFromServers(dataset, *client, options));

  const double seconds = std::max(summary.seconds, 1e-9);
  spdlog::info("generate: moved {} files ({} tokens, {:.1f} MiB) to {} in {:.1f} s: {:.1f} "
               "samples/s, {:.0f} tokens/s; {} needed retries, {} failed; {} existing files "
               "kept{}",
               summary.generated, summary.tokens, summary.bytes / 1048576.0, options.output_dir,
               summary.seconds, summary.generated / seconds, summary.tokens / seconds,
               summary.retried, summary.failures.size(), summary.existing,
               summary.invalid_existing > 0
                   ? fmt::format(", {} invalid existing files requested again",
                                 summary.invalid_existing)
                   : std::string());
  return ReportFailures(summary.failures);
}

Status RunGenerate(const GenerateFlags& flags) {
  if (!flags.endpoints.empty()) return RunRemoteGenerate(flags);
  if (flags.model_dir.empty()) {
    return Status::Invalid("--model is required: pass the Hugging Face model directory");
  }
  DF_ASSIGN_OR_RAISE(auto model, engine::LlamaModel::Load(flags.model_dir));
  DF_ASSIGN_OR_RAISE(torch::Dtype dtype, hidden_states::ChooseHiddenStatesDtype(flags.dtype, model->config().torch_dtype,
                                                                 flags.model_dir));
  DF_ASSIGN_OR_RAISE(std::vector<int64_t> layer_ids,
                     ChooseLayerIds(flags, model->config().num_hidden_layers));
  DF_ASSIGN_OR_RAISE(data::TokenDataset dataset, data::TokenDataset::Open(flags.data_dir));

  hidden_states::GenerateOptions options;
  options.output_dir = OutputDir(flags);
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
      "CPU engine, or through vLLM servers with --endpoint (resumable: existing files are "
      "skipped)");

  command->add_option("--model", flags->model_dir,
                      "Hugging Face model directory (config.json and safetensors weights); with "
                      "--endpoint, the model id the servers must serve (a directory also "
                      "supplies default layer ids, hidden size and dtype)");
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
  command->add_option("--endpoint", flags->endpoints,
                      "Base URL of a vLLM server started with `draftforge launch-vllm`, or of "
                      "`draftforge serve`, e.g. http://127.0.0.1:8000/v1; repeat to spread the "
                      "work over several servers. The servers' output directory must be on a "
                      "file system this machine can read");
  command->add_option("--concurrency", flags->concurrency, "Requests in flight per endpoint")
      ->capture_default_str()
      ->check(AtLeast(1));
  command->add_option("--timeout", flags->timeout_seconds,
                      "Seconds to wait for a server's response before retrying")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  command->add_option("--max-retries", flags->max_retries,
                      "Retries per sample after timeouts, connection errors, HTTP 5xx or damaged "
                      "files; then the sample is reported as failed")
      ->capture_default_str()
      ->check(AtLeast(0));
  command->add_option("--retry-backoff", flags->retry_backoff_seconds,
                      "Seconds before the first retry; each further retry waits twice as long")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  command->add_option("--lock-timeout", flags->lock_timeout_seconds,
                      "Seconds to wait for the server to finish writing a file (its .lock file)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);

  command->callback([flags, max_samples] {
    flags->max_samples_set = max_samples->count() > 0;
    ExitOnError(RunGenerate(*flags));
  });
}

}  // namespace draftforge::cli
