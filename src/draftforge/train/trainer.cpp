#include "draftforge/train/trainer.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <csignal>
#if defined(__GLIBC__)
#include <malloc.h>
#endif
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <memory>

#include "draftforge/data/token_dataset.h"
#include "draftforge/data/vocab_mapping.h"
#include "draftforge/engine/model_config.h"
#include "draftforge/hidden_states/generate.h"
#include "draftforge/io/token_freq.h"
#include "draftforge/train/batch_loader.h"
#include "draftforge/train/checkpoint.h"
#include "draftforge/train/distributed.h"
#include "draftforge/train/eagle3_model.h"
#include "draftforge/train/online_hidden_states.h"
#include "draftforge/train/tensorboard.h"
#include "draftforge/train/sampler.h"
#include "draftforge/train/schedule.h"
#include "draftforge/train/ttt.h"
#include "draftforge/train/verifier_weights.h"
#include "draftforge/util/fs.h"
#include "draftforge/util/progress.h"

namespace draftforge::train {
namespace fs = std::filesystem;
namespace {

// Loads d2t/t2d and checks them against the verifier vocabulary and
// --draft-vocab-size. Every error ends with `advice`, the remedy.
Result<data::VocabMapping> LoadCheckedVocabMapping(const TrainOptions& options, const std::string& d2t_path,
                                                   const std::string& t2d_path, int64_t vocab_size,
                                                   const std::string& advice) {
  DF_ASSIGN_OR_RAISE(data::VocabMapping mapping, data::LoadVocabMapping(d2t_path, t2d_path));
  Status valid = data::ValidateVocabMapping(mapping, vocab_size);
  if (!valid.ok()) {
    return Status::Invalid("vocabulary mapping {} and {} does not fit the verifier vocabulary of {} ids: {}; {}",
                           d2t_path, t2d_path, vocab_size, valid.message(), advice);
  }
  if (options.draft_vocab_size && *options.draft_vocab_size != mapping.draft_vocab_size()) {
    return Status::Invalid("--draft-vocab-size {} differs from the draft vocabulary size {} of {} and {}; {}",
                           *options.draft_vocab_size, mapping.draft_vocab_size(), d2t_path, t2d_path, advice);
  }
  if (mapping.draft_vocab_size() == vocab_size) {
    return Status::Invalid("vocabulary mapping {} and {} keeps all {} verifier ids, which means no mapping; {}",
                           d2t_path, t2d_path, vocab_size, advice);
  }
  return mapping;
}

// Vocabulary mapping in this order: --d2t-path/--t2d-path; <data>/d2t.npy and
// t2d.npy; none when --draft-vocab-size equals the verifier vocabulary size;
// built from token_freq.pt (--token-freq-path or <data>/token_freq.pt) when
// --draft-vocab-size is given, then cached as .npy files in <data>; otherwise
// none (Vd = V).
Result<std::optional<data::VocabMapping>> ResolveVocabMapping(const TrainOptions& options, int64_t vocab_size) {
  if (options.d2t_path.empty() != options.t2d_path.empty()) {
    return Status::Invalid("pass both --d2t-path and --t2d-path or neither (got d2t '{}', t2d '{}')",
                           options.d2t_path, options.t2d_path);
  }
  if (options.draft_vocab_size && *options.draft_vocab_size > vocab_size) {
    return Status::Invalid("--draft-vocab-size {} exceeds the verifier vocabulary size {}; pass at most {}",
                           *options.draft_vocab_size, vocab_size, vocab_size);
  }
  if (!options.d2t_path.empty()) {
    DF_ASSIGN_OR_RAISE(auto mapping,
                       LoadCheckedVocabMapping(options, options.d2t_path, options.t2d_path, vocab_size,
                                               "pass a mapping built for this verifier and --draft-vocab-size"));
    return std::optional<data::VocabMapping>(std::move(mapping));
  }

  const std::string cached_d2t = fs::absolute(options.data_path + "/d2t.npy").lexically_normal().string();
  const std::string cached_t2d = fs::absolute(options.data_path + "/t2d.npy").lexically_normal().string();
  if (fs::exists(cached_d2t) || fs::exists(cached_t2d)) {
    const std::string advice = fmt::format(
        "delete {} and {} (a later run rebuilds them from token_freq.pt) or pass --d2t-path/--t2d-path",
        cached_d2t, cached_t2d);
    if (!fs::exists(cached_d2t) || !fs::exists(cached_t2d)) {
      return Status::NotFound("only one of {} and {} exists; {}", cached_d2t, cached_t2d, advice);
    }
    DF_ASSIGN_OR_RAISE(auto mapping, LoadCheckedVocabMapping(options, cached_d2t, cached_t2d, vocab_size, advice));
    return std::optional<data::VocabMapping>(std::move(mapping));
  }

  if (!options.draft_vocab_size) return std::optional<data::VocabMapping>();
  if (*options.draft_vocab_size == vocab_size) {
    spdlog::info("--draft-vocab-size {} equals the verifier vocabulary size: training without a vocabulary "
                 "mapping (no d2t/t2d)",
                 vocab_size);
    return std::optional<data::VocabMapping>();
  }
  std::string freq_path =
      options.token_freq_path.empty() ? options.data_path + "/token_freq.pt" : options.token_freq_path;
  if (!fs::exists(freq_path)) {
    return Status::NotFound("--draft-vocab-size {} needs a vocabulary mapping, but {} does not exist and no "
                            "d2t.npy/t2d.npy were found; run `draftforge vocab` or pass --token-freq-path",
                            *options.draft_vocab_size, freq_path);
  }
  DF_ASSIGN_OR_RAISE(auto token_freq, io::ReadTokenFreq(freq_path));
  DF_ASSIGN_OR_RAISE(data::VocabMapping mapping,
                     data::BuildVocabMapping(token_freq, *options.draft_vocab_size, vocab_size));
  DF_RETURN_NOT_OK(data::ValidateVocabMapping(mapping, vocab_size));
  Status saved = data::SaveVocabMapping(mapping, cached_d2t, cached_t2d);
  if (!saved.ok()) spdlog::warn("could not cache the vocabulary mapping in {}: {}", options.data_path, saved.message());
  return std::optional<data::VocabMapping>(std::move(mapping));
}

Result<torch::Dtype> ParseHiddenStatesDtype(const std::string& name) {
  if (name == "bfloat16") return torch::kBFloat16;
  if (name == "float16") return torch::kFloat16;
  if (name == "float32") return torch::kFloat32;
  return Status::Invalid("--hidden-states-dtype '{}' is not supported; use bfloat16, float16 or float32", name);
}

Result<torch::Device> ResolveDevice(const std::string& name) {
  if (name == "auto") return torch::cuda::is_available() ? torch::Device(torch::kCUDA) : torch::Device(torch::kCPU);
  try {
    torch::Device device(name);
    if (device.is_cuda() && !torch::cuda::is_available()) {
      return Status::Invalid("--device {} requested, but this libtorch build sees no CUDA device", name);
    }
    return device;
  } catch (const c10::Error&) {
    return Status::Invalid("--device '{}' is not a device name; use auto, cpu, cuda or cuda:N", name);
  }
}

// Checks the capture ids: four distinct ascending ids in 0..N, the last N.
Result<std::vector<int64_t>> ResolveLayerIds(const TrainOptions& options, int64_t num_verifier_layers) {
  std::vector<int64_t> ids =
      options.layer_ids.empty() ? engine::DefaultLayerIds(num_verifier_layers) : options.layer_ids;
  bool ascending = ids.size() == 4;
  for (size_t i = 1; ascending && i < ids.size(); ++i) ascending = ids[i] > ids[i - 1];
  if (!ascending || ids.front() < 0 || ids.back() != num_verifier_layers) {
    return Status::Invalid("--layer-ids {} must be four distinct ascending ids in 0..{} ending with {} (the "
                           "ids the hidden-states files were captured with); the default for this verifier "
                           "repeats ids when it has few layers",
                           ids, num_verifier_layers, num_verifier_layers);
  }
  return ids;
}

// Creates `path` (with parents) and checks that files can be created in it.
Status PrepareWritableDirectory(const std::string& flag, const std::string& path) {
  std::error_code code;
  if (fs::exists(path, code) && !fs::is_directory(path, code)) {
    return Status::Invalid("{} {} exists and is not a directory; pass a directory path", flag, path);
  }
  fs::create_directories(path, code);
  if (code) {
    return Status::IOError("{} {}: cannot create the directory: {}; pass a writable directory", flag, path,
                           code.message());
  }
  const std::string probe = path + "/.draftforge_write_test";
  {
    std::ofstream stream(probe);
    if (!stream) return Status::IOError("{} {}: cannot create files in the directory; pass a writable directory", flag, path);
  }
  fs::remove(probe, code);
  return Status::OK();
}

// Signal number of the first SIGINT or SIGTERM during training, 0 before.
volatile std::sig_atomic_t g_stop_signal = 0;

extern "C" void RecordStopSignal(int signal_number) {
  g_stop_signal = signal_number;
  // A second signal ends the process at once.
  std::signal(signal_number, SIG_DFL);
}

// Routes SIGINT and SIGTERM to RecordStopSignal while it lives.
class StopSignalScope {
 public:
  StopSignalScope() {
    g_stop_signal = 0;
    previous_interrupt_ = std::signal(SIGINT, RecordStopSignal);
    previous_terminate_ = std::signal(SIGTERM, RecordStopSignal);
  }
  ~StopSignalScope() {
    std::signal(SIGINT, previous_interrupt_);
    std::signal(SIGTERM, previous_terminate_);
  }
  StopSignalScope(const StopSignalScope&) = delete;
  StopSignalScope& operator=(const StopSignalScope&) = delete;

 private:
  void (*previous_interrupt_)(int) = SIG_DFL;
  void (*previous_terminate_)(int) = SIG_DFL;
};

const char* SignalName(int signal_number) { return signal_number == SIGTERM ? "SIGTERM" : "SIGINT"; }

// Appends one JSON object per line to <log_dir>/metrics.jsonl.
class MetricsLog {
 public:
  static Result<std::unique_ptr<MetricsLog>> Open(const std::string& log_dir) {
    DF_RETURN_NOT_OK(CreateDirectories(log_dir));
    auto log = std::unique_ptr<MetricsLog>(new MetricsLog());
    log->path_ = log_dir + "/metrics.jsonl";
    log->stream_.open(log->path_, std::ios::app);
    if (!log->stream_) return Status::IOError("{}: cannot open for appending", log->path_);
    return log;
  }
  Status Write(const nlohmann::json& record) {
    stream_ << record.dump() << '\n';
    stream_.flush();
    if (!stream_) return Status::IOError("{}: write failed", path_);
    return Status::OK();
  }

 private:
  MetricsLog() = default;
  std::string path_;
  std::ofstream stream_;
};

std::map<std::string, double> StepMetricMap(const TttOutput& output) {
  std::map<std::string, double> metrics;
  metrics["loss"] = output.loss.item<double>();
  for (size_t k = 0; k < output.steps.size(); ++k) {
    metrics[fmt::format("loss_{}", k)] = output.steps[k].loss;
    metrics[fmt::format("full_acc_{}", k)] = output.steps[k].full_acc;
    metrics[fmt::format("cond_acc_{}", k)] = output.steps[k].cond_acc;
  }
  return metrics;
}

// Names of the metrics StepMetricMap returns for `steps` TTT steps, in the
// map's order, so that every rank packs the same names in the same order.
std::vector<std::string> StepMetricNames(int64_t steps) {
  std::map<std::string, double> names = {{"loss", 0}};
  for (int64_t k = 0; k < steps; ++k) {
    names[fmt::format("loss_{}", k)] = 0;
    names[fmt::format("full_acc_{}", k)] = 0;
    names[fmt::format("cond_acc_{}", k)] = 0;
  }
  std::vector<std::string> ordered;
  for (const auto& [name, unused] : names) ordered.push_back(name);
  return ordered;
}

// Sums `values` over the ranks of `parallel` (a copy when it is one process).
Result<std::vector<double>> SumOverRanks(DataParallel& parallel, std::vector<double> values, const std::string& what) {
  if (!parallel.distributed()) return values;
  torch::Tensor buffer = torch::tensor(values, torch::kFloat64);
  DF_RETURN_NOT_OK(parallel.AllReduceSum(buffer, what));
  auto* data = buffer.data_ptr<double>();
  return std::vector<double>(data, data + buffer.numel());
}

std::string ProgressSuffix(const std::map<std::string, double>& metrics, int64_t steps) {
  std::string accuracies;
  for (int64_t k = 0; k < steps; ++k) {
    auto it = metrics.find(fmt::format("full_acc_{}", k));
    if (it != metrics.end()) accuracies += fmt::format("{}{:.3f}", k == 0 ? "" : "/", it->second);
  }
  return fmt::format("loss {:.4f} full_acc {}", metrics.at("loss"), accuracies);
}

class Trainer {
 public:
  explicit Trainer(const TrainOptions& options) : options_(options) {}
  Status Run();

 private:
  // Reason a call of TrainEpoch returned.
  enum class EpochEnd { kComplete, kMaxSteps, kSignal };

  Status Setup();
  Status PrepareOutputDirectories();
  Status BuildModel();
  Status OpenData();
  Status Resume();
  // Distributed: copies rank 0's weights to every rank and checks that all
  // ranks resumed the same training state.
  Status SynchronizeRanks();
  Status RunJob();
  // Trains batches first_batch.. of `epoch`. Sets stop_ when --max-steps is
  // reached at the end of the epoch, and batches_done_ to the batches done.
  Result<EpochEnd> TrainEpoch(int64_t epoch, int64_t first_batch);
  Result<std::optional<double>> ValidateEpoch(int64_t epoch);
  // `resumed_partial`: the epoch finished a partial checkpoint, which must
  // not stay behind as if it were the last state.
  Status Checkpoint(int64_t epoch, std::optional<double> val_loss, bool resumed_partial);
  // Saves `epoch` as partial after batches_done_ batches.
  Status SavePartialCheckpoint(int64_t epoch);
  void SetLearningRate(double lr);
  // Writes `record` to metrics.jsonl and its numbers to TensorBoard on rank
  // 0; other ranks write nothing.
  Status LogMetrics(const nlohmann::json& record);
  // Logs and records what on-demand generation did in `epoch`.
  Status LogGeneration(int64_t epoch);
  // `stored`: the settings of the files already in the directory, if any.
  Status MakeGenerator(const std::string& hidden_states_dir,
                       const std::optional<hidden_states::CaptureSettings>& stored);
  // Fails when draftforge_generate.json in the hidden-states directory
  // records other layer ids than the run's; warns for another model.
  // Returns the settings read, nullopt when the directory has no such file.
  Result<std::optional<hidden_states::CaptureSettings>> CheckCaptureSettings(const std::string& hidden_states_dir);

  TrainOptions options_;
  engine::ModelConfig verifier_;
  std::vector<int64_t> layer_ids_;
  std::optional<data::VocabMapping> mapping_;
  DraftConfig draft_config_;
  torch::Device device_{torch::kCPU};
  std::shared_ptr<Eagle3DraftModel> model_;
  std::unique_ptr<torch::optim::AdamW> optimizer_;
  data::TokenDataset dataset_;
  std::vector<int64_t> train_lengths_;
  std::vector<int64_t> val_lengths_;
  int64_t train_rows_ = 0;
  SampleSource train_source_;
  SampleSource val_source_;
  LrSchedule schedule_;
  nlohmann::json config_json_;
  std::unique_ptr<MetricsLog> metrics_log_;
  std::unique_ptr<TensorBoardWriter> tensorboard_;
  std::unique_ptr<LazyGenerator> generator_;  // set under --on-missing generate
  TrainingState state_;
  int64_t steps_this_run_ = 0;
  int64_t generation_failures_ = 0;  // samples whose generation failed, over the whole run
  int64_t batches_done_ = 0;
  bool stop_ = false;
  std::unique_ptr<DataParallel> parallel_;
};

Status Trainer::Setup() {
  DF_RETURN_NOT_OK(ValidateTrainOptions(options_));
  torch::manual_seed(options_.seed);
  DF_ASSIGN_OR_RAISE(verifier_, engine::ModelConfig::Load(options_.verifier_path));
  DF_ASSIGN_OR_RAISE(layer_ids_, ResolveLayerIds(options_, verifier_.num_hidden_layers));
  DF_ASSIGN_OR_RAISE(device_, ResolveDevice(options_.device));
  DF_ASSIGN_OR_RAISE(std::optional<DistributedEnv> env, ReadDistributedEnv());
  auto timeout = std::chrono::milliseconds(static_cast<int64_t>(options_.distributed_timeout_seconds * 1000));
  DF_ASSIGN_OR_RAISE(parallel_, DataParallel::Connect(env, timeout, device_));
  // Rank 0 resolves the mapping first, because it may cache d2t.npy and
  // t2d.npy in the data directory, and a rank reading them mid-write would
  // find only one of the two.
  if (parallel_->is_main()) {
    DF_ASSIGN_OR_RAISE(mapping_, ResolveVocabMapping(options_, verifier_.vocab_size));
  }
  DF_RETURN_NOT_OK(parallel_->Barrier("vocabulary mapping"));
  if (!parallel_->is_main()) {
    DF_ASSIGN_OR_RAISE(mapping_, ResolveVocabMapping(options_, verifier_.vocab_size));
  }
  DraftOptions draft_options;
  draft_options.arch = options_.draft_arch;
  draft_options.num_layers = options_.num_layers;
  draft_options.draft_vocab_size = mapping_ ? mapping_->draft_vocab_size() : 0;
  draft_options.norm_before_residual = options_.norm_before_residual;
  draft_options.norm_before_fc = options_.norm_before_fc;
  DF_ASSIGN_OR_RAISE(draft_config_, MakeDraftConfig(verifier_, draft_options));
  state_.world_size = parallel_->world_size();
  state_.gradient_accumulation_steps = options_.gradient_accumulation_steps;

  SpeculatorInfo info;
  info.verifier_name_or_path = options_.verifier_path;
  info.verifier_architectures = verifier_.architectures;
  info.speculative_tokens = options_.ttt_steps;
  info.aux_layer_ids = {layer_ids_[0], layer_ids_[1], layer_ids_[2]};
  info.embed_requires_grad = options_.embed_requires_grad;
  config_json_ = SpeculatorConfigJson(draft_config_, info);
  return Status::OK();
}

Status Trainer::PrepareOutputDirectories() {
  if (!parallel_->is_main()) return Status::OK();  // only rank 0 writes files
  DF_RETURN_NOT_OK(PrepareWritableDirectory("--save-path", options_.save_path));
  DF_RETURN_NOT_OK(PrepareWritableDirectory("--log-dir", options_.log_dir));
  DF_ASSIGN_OR_RAISE(metrics_log_, MetricsLog::Open(options_.log_dir));
  if (options_.tensorboard) {
    DF_ASSIGN_OR_RAISE(tensorboard_, TensorBoardWriter::Open(options_.log_dir));
    spdlog::info("TensorBoard events go to {} (view with: tensorboard --logdir {})", tensorboard_->path(),
                 options_.log_dir);
  }
  return Status::OK();
}

Status Trainer::BuildModel() {
  // NOTE: training computes in float32 on every device (float32 master
  // weights, activations and loss); bf16 autocast on CUDA is not implemented.
  auto tensor_options = torch::TensorOptions().dtype(torch::kFloat32).device(device_);
  model_ = std::make_shared<Eagle3DraftModel>(draft_config_, tensor_options);
  if (mapping_) DF_RETURN_NOT_OK(SetVocabMapping(*model_, mapping_->d2t, mapping_->t2d));
  if (options_.freeze_lm_head) model_->lm_head->weight.set_requires_grad(false);
  DF_ASSIGN_OR_RAISE(VerifierWeights weights, LoadVerifierWeights(options_.verifier_path));
  DF_RETURN_NOT_OK(InstallVerifierWeights(*model_, weights, /*keep_lm_head=*/false));

  std::vector<torch::Tensor> parameters;
  for (const auto& [name, tensor] : model_->TrainableTensors()) parameters.push_back(tensor);
  optimizer_ = std::make_unique<torch::optim::AdamW>(
      parameters, torch::optim::AdamWOptions(options_.lr).betas({0.9, 0.999}).eps(1e-8).weight_decay(0.01));
  return Status::OK();
}

Status Trainer::OpenData() {
  DF_ASSIGN_OR_RAISE(dataset_, data::TokenDataset::Open(options_.data_path));
  const int64_t rows = dataset_.num_rows();
  train_rows_ = static_cast<int64_t>(static_cast<double>(rows) * 0.9);
  for (int64_t row = 0; row < rows; ++row) {
    (row < train_rows_ ? train_lengths_ : val_lengths_).push_back(dataset_.seq_len(row));
  }
  if (train_lengths_.empty()) {
    return Status::Invalid("{}: {} rows leave no training rows after the 90/10 split", options_.data_path, rows);
  }
  DF_ASSIGN_OR_RAISE(MissingFilePolicy on_missing, ParseMissingFilePolicy(options_.on_missing));
  DF_ASSIGN_OR_RAISE(torch::Dtype rounding, ParseHiddenStatesDtype(options_.hidden_states_dtype));
  train_source_.dataset = &dataset_;
  train_source_.hidden_states_dir =
      options_.hidden_states_path.empty() ? options_.data_path + "/hidden_states" : options_.hidden_states_path;
  train_source_.hidden_size = draft_config_.hidden_size;
  train_source_.dtype = torch::kFloat32;
  train_source_.rounding_dtype = rounding;
  train_source_.noise_std = options_.noise_std;
  train_source_.on_missing = on_missing;
  DF_ASSIGN_OR_RAISE(std::optional<hidden_states::CaptureSettings> stored,
                     CheckCaptureSettings(train_source_.hidden_states_dir));
  if (on_missing == MissingFilePolicy::kGenerate) {
    DF_RETURN_NOT_OK(MakeGenerator(train_source_.hidden_states_dir, stored));
    train_source_.generator = generator_.get();
  }
  val_source_ = train_source_;
  val_source_.noise_std = 0.0;

  DF_ASSIGN_OR_RAISE(ScheduleType type, ParseScheduleType(options_.scheduler_type));
  int64_t batches = static_cast<int64_t>(ReplicaEpochBatches(train_lengths_, options_.total_seq_len,
                                                             parallel_->world_size(), parallel_->rank(),
                                                             options_.gradient_accumulation_steps, 0, 0)
                                             .size());
  schedule_ = ResolveSchedule(type, options_.scheduler_warmup_steps, options_.scheduler_total_steps,
                              options_.scheduler_num_cosine_cycles, options_.epochs, batches);
  spdlog::info("dataset {}: {} training rows, {} validation rows, {} training batches per epoch", options_.data_path,
               train_rows_, rows - train_rows_, batches);
  return Status::OK();
}

Result<std::optional<hidden_states::CaptureSettings>> Trainer::CheckCaptureSettings(
    const std::string& hidden_states_dir) {
  DF_ASSIGN_OR_RAISE(std::optional<hidden_states::CaptureSettings> stored,
                     hidden_states::ReadCaptureSettings(hidden_states_dir));
  if (!stored) return stored;
  if (stored->layer_ids != layer_ids_) {
    return Status::Invalid("{} contains hidden states captured at layer ids {} (see its {}), but this run trains with "
                           "layer ids {}; the draft would learn from other layers. Pass --layer-ids {} to train on "
                           "these files, or point --hidden-states-path at files captured with the run's ids",
                           hidden_states_dir, stored->layer_ids, hidden_states::kGenerateSettingsFileName,
                           layer_ids_, fmt::join(stored->layer_ids, " "));
  }
  std::error_code error;
  const std::string verifier = fs::weakly_canonical(options_.verifier_path, error).string();
  if (!error && stored->model_dir != verifier) {
    spdlog::warn("{} contains hidden states of the model {}, but the verifier is {}; train only on hidden states of "
                 "the verifier itself",
                 hidden_states_dir, stored->model_dir, verifier);
  }
  return stored;
}

Status Trainer::MakeGenerator(const std::string& hidden_states_dir,
                              const std::optional<hidden_states::CaptureSettings>& stored) {
  DF_ASSIGN_OR_RAISE(GeneratedFilePolicy policy, ParseGeneratedFilePolicy(options_.on_generate));
  LazyGenerator::Factory factory;
  if (options_.vllm_endpoints.empty()) {
    EngineGeneratorOptions engine;
    engine.model_dir = options_.verifier_path;
    engine.layer_ids = layer_ids_;
    DF_ASSIGN_OR_RAISE(engine.checkpoint_dtype,
                       hidden_states::ChooseHiddenStatesDtype("", verifier_.torch_dtype, options_.verifier_path));
    // Cached files take the dtype of the files already in the directory, so
    // hybrid runs can fill the gaps of a directory of another dtype.
    engine.stored_dtype = engine.checkpoint_dtype;
    if (stored) {
      DF_ASSIGN_OR_RAISE(engine.stored_dtype, hidden_states::ChooseHiddenStatesDtype(
                                                  stored->dtype, verifier_.torch_dtype, options_.verifier_path));
    }
    engine.policy = policy;
    engine.hidden_states_dir = hidden_states_dir;
    factory = [engine] { return MakeEngineGenerator(engine); };
  } else {
    hidden_states::ClientOptions client;
    client.endpoints = options_.vllm_endpoints;
    client.expected_model = options_.verifier_path;
    client.timeout = std::chrono::milliseconds(static_cast<int64_t>(options_.request_timeout_seconds * 1000));
    client.num_layers = 4;
    client.layer_ids = layer_ids_;
    client.hidden_size = verifier_.hidden_size;
    factory = [client, policy] { return MakeServerGenerator(client, policy); };
  }
  generator_ = std::make_unique<LazyGenerator>(std::move(factory), policy);
  return Status::OK();
}

Status Trainer::LogMetrics(const nlohmann::json& record) {
  if (!metrics_log_) return Status::OK();
  DF_RETURN_NOT_OK(metrics_log_->Write(record));
  if (!tensorboard_) return Status::OK();
  std::vector<std::pair<std::string, double>> scalars;
  for (const auto& [name, value] : record.items()) {
    if (name != "step" && name != "epoch" && value.is_number()) scalars.emplace_back(name, value.get<double>());
  }
  if (scalars.empty()) return Status::OK();
  return tensorboard_->AddScalars(record.value("step", int64_t{0}), scalars);
}

Status Trainer::LogGeneration(int64_t epoch) {
  if (!generator_) return Status::OK();
  GenerationCounts& counts = generator_->counts();
  const int64_t generated = counts.generated;
  spdlog::info("epoch {} generated {} hidden-states samples ({} tokens; {} kept as files by --on-generate {}), "
               "replaced {} damaged files, {} failed",
               epoch, generated, counts.tokens.load(), counts.cached.load(), options_.on_generate,
               counts.replaced.load(), counts.failed.load());
  nlohmann::json record = {{"step", state_.global_step},       {"epoch", epoch},
                           {"data/generated", generated},        {"data/generated_cached", counts.cached.load()},
                           {"data/replaced_damaged", counts.replaced.load()}, {"data/generate_failed", counts.failed.load()}};
  DF_RETURN_NOT_OK(LogMetrics(record));
  generation_failures_ += counts.failed;
  counts.Reset();
  return Status::OK();
}

Status Trainer::Resume() {
  if (!options_.resume_from_checkpoint) {
    // Older epoch folders would otherwise make a later resume continue the
    // old run.
    if (parallel_->is_main()) DF_RETURN_NOT_OK(RemoveAllEpochs(options_.save_path));
    return parallel_->Barrier("removal of old checkpoints");
  }
  std::optional<int64_t> last = FindLastEpoch(options_.save_path);
  if (!last) return Status::OK();
  DF_ASSIGN_OR_RAISE(TrainingState loaded, LoadCheckpoint(options_.save_path, *last, *model_, *optimizer_));
  const bool same_layout = loaded.world_size == parallel_->world_size() &&
                           loaded.gradient_accumulation_steps == options_.gradient_accumulation_steps;
  if (!same_layout && !loaded.epoch_complete) {
    return Status::Invalid("{}/{} is a partial epoch of a run with {} ranks and --gradient-accumulation-steps {}, "
                           "but this run has {} ranks and --gradient-accumulation-steps {}; the batches of an "
                           "epoch depend on both, so finish the epoch with the same values, or resume from the "
                           "epoch before it (delete {}/{}), or pass another --save-path "
                           "(--no-resume-from-checkpoint deletes every epoch folder)",
                           options_.save_path, *last, loaded.world_size, loaded.gradient_accumulation_steps,
                           parallel_->world_size(), options_.gradient_accumulation_steps, options_.save_path, *last);
  }
  if (!same_layout) {
    spdlog::warn("{}/{} was written with {} ranks x {} accumulation steps, this run uses {} x {}: the rows per "
                 "optimizer step change from here on, and the learning-rate schedule keeps its step count",
                 options_.save_path, *last, loaded.world_size, loaded.gradient_accumulation_steps,
                 parallel_->world_size(), options_.gradient_accumulation_steps);
  }
  state_ = loaded;
  if (state_.epoch_complete) {
    spdlog::info("resuming from {}/{}: epoch {} done, {} optimizer steps", options_.save_path, *last, state_.epoch,
                 state_.global_step);
  } else {
    spdlog::info("resuming from {}/{}: epoch {} stopped after {} batches, {} optimizer steps; training the rest "
                 "of epoch {}",
                 options_.save_path, *last, state_.epoch, state_.batches_done, state_.global_step, state_.epoch);
  }
  // Steps after the checkpoint ran before in the interrupted run and appear
  // again below this record; readers keep the later copy.
  return LogMetrics({{"event", "resume"},
                     {"step", state_.global_step},
                     {"epoch", state_.epoch},
                     {"checkpoint", fmt::format("{}/{}", options_.save_path, *last)}});
}

Status Trainer::SynchronizeRanks() {
  if (!parallel_->distributed()) return Status::OK();
  const std::vector<int64_t> fields = {state_.epoch, state_.epoch_complete ? 1 : 0, state_.batches_done,
                                       state_.global_step};
  // One MAX all-reduce of (x, -x) yields the maximum and minimum of each field.
  std::vector<int64_t> both(fields);
  for (int64_t field : fields) both.push_back(-field);
  torch::Tensor extremes = torch::tensor(both, torch::kInt64);
  DF_RETURN_NOT_OK(parallel_->AllReduceMax(extremes, "resume state check"));
  for (size_t i = 0; i < fields.size(); ++i) {
    if (extremes[i].item<int64_t>() != -extremes[i + fields.size()].item<int64_t>()) {
      return Status::Invalid("the ranks resumed different training states from --save-path {} (rank {} has epoch "
                             "{}, {} batches done, global step {}); every rank reads the checkpoint itself, so "
                             "--save-path must be a directory that all ranks see, such as a shared filesystem",
                             options_.save_path, parallel_->rank(), state_.epoch, state_.batches_done,
                             state_.global_step);
    }
  }
  std::vector<torch::Tensor> weights;
  for (const auto& [name, tensor] : model_->TrainableTensors()) weights.push_back(tensor);
  // NOTE: the AdamW state is not broadcast; after a resume each rank keeps
  // the moments it read from the checkpoint, which the check above ties to
  // the same file.
  return parallel_->BroadcastFromMain(weights, "broadcast of the initial weights");
}

void Trainer::SetLearningRate(double lr) {
  for (auto& group : optimizer_->param_groups()) {
    static_cast<torch::optim::AdamWOptions&>(group.options()).lr(lr);
  }
}

Result<Trainer::EpochEnd> Trainer::TrainEpoch(int64_t epoch, int64_t first_batch) {
  // Each optimizer step packs one row per replica (world size x gradient
  // accumulation steps), and this rank loads its own rows of every step.
  const int64_t accumulation = options_.gradient_accumulation_steps;
  const int64_t replicas = parallel_->world_size() * accumulation;
  auto steps = ReplicaEpochBatches(train_lengths_, options_.total_seq_len, parallel_->world_size(),
                                   parallel_->rank(), accumulation, 0, epoch);
  const int64_t epoch_batches = static_cast<int64_t>(steps.size());
  first_batch = std::min(first_batch, epoch_batches);
  std::vector<std::vector<int64_t>> batches;
  // Each row draws its noise from its own generator, so the noise does not
  // depend on --num-workers, on where a resumed epoch starts, or on how the
  // replicas split into ranks and accumulation steps. With one replica the
  // seed index is the batch index.
  std::vector<uint64_t> noise_seeds;
  for (int64_t b = first_batch; b < epoch_batches; ++b) {
    for (int64_t a = 0; a < accumulation; ++a) {
      batches.push_back(steps[b][a]);
      noise_seeds.push_back(BatchNoiseSeed(options_.seed, epoch, b * replicas + parallel_->rank() * accumulation + a));
    }
  }
  int64_t rows = 0;
  for (const auto& batch : batches) rows += static_cast<int64_t>(batch.size());
  BatchLoader loader(train_source_, batches, options_.total_seq_len, options_.num_workers, options_.prefetch_factor,
                     noise_seeds);
  TttOptions ttt;
  ttt.steps = options_.ttt_steps;
  ttt.loss_decay = options_.ttt_step_loss_decay;
  ttt.teacher_forcing = options_.use_off_policy_tokens;
  std::vector<torch::Tensor> parameters = optimizer_->param_groups()[0].params();
  const std::vector<std::string> metric_names = StepMetricNames(options_.ttt_steps);

  const int64_t num_steps = epoch_batches - first_batch;
  ProgressBar progress(fmt::format("train epoch {}", epoch), num_steps, "batches");
  const double communication_before = parallel_->communication_seconds();
  int64_t tokens = 0;
  int64_t samples = 0;
  EpochEnd end = EpochEnd::kComplete;
  batches_done_ = first_batch;
  // Time the step spends waiting for the loader: with files present it
  // should be a few percent; online generation shows up here.
  double wait_seconds = 0;
  for (int64_t b = 0; b < num_steps; ++b) {
    // lr_t = lr * lambda(t), t = optimizer steps completed, also right on the
    // first step after a resume.
    double lr = options_.lr * schedule_.Factor(state_.schedule_step);
    optimizer_->zero_grad();
    std::map<std::string, double> row_sums;
    int64_t step_tokens = 0;
    double step_wait_seconds = 0;
    for (int64_t a = 0; a < accumulation; ++a) {
      const auto wait_start = std::chrono::steady_clock::now();
      DF_ASSIGN_OR_RAISE(PackedBatch batch, loader.Next());
      step_wait_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - wait_start).count();
      batch = batch.To(device_);
      TttOutput output = RunTtt(*model_, batch, ttt);
      double loss = output.loss.item<double>();
      if (!std::isfinite(loss)) {
        return Status::Invalid("training loss is {} at epoch {}, batch {} of {} (global step {}, learning rate "
                               "{:g}): training diverged, so it stopped without saving this epoch; rerun with a "
                               "lower --lr (now {:g})",
                               loss, epoch, first_batch + b, epoch_batches, state_.global_step, lr, options_.lr);
      }
      // The step's gradient is the mean over its rows of each row's loss
      // gradient: a row's loss is already normalised by its own masked token
      // count (see ttt.h), and every row weighs the same, as in speculators.
      // AverageGradients then takes the mean over ranks.
      (output.loss / static_cast<double>(accumulation)).backward();
      for (const auto& [name, value] : StepMetricMap(output)) row_sums[name] += value;
      step_tokens += batch.num_tokens();
      samples += batch.num_samples;
    }
    wait_seconds += step_wait_seconds;
    DF_RETURN_NOT_OK(parallel_->AverageGradients(parameters));
    torch::nn::utils::clip_grad_norm_(parameters, 1.0);
    SetLearningRate(lr);
    optimizer_->step();
    state_.schedule_step += 1;

    // One reduction per step: the row sums of every metric, the tokens, and
    // a stop flag, so that all ranks stop at the same step after a signal.
    std::vector<double> packed;
    for (const std::string& name : metric_names) packed.push_back(row_sums[name]);
    packed.push_back(static_cast<double>(step_tokens));
    packed.push_back(g_stop_signal != 0 ? 1.0 : 0.0);
    DF_ASSIGN_OR_RAISE(packed, SumOverRanks(*parallel_, packed, "training metric all-reduce"));
    std::map<std::string, double> metrics;
    for (size_t i = 0; i < metric_names.size(); ++i) metrics[metric_names[i]] = packed[i] / replicas;
    const int64_t global_tokens = static_cast<int64_t>(packed[metric_names.size()]);
    const bool stop_requested = packed[metric_names.size() + 1] > 0;

    nlohmann::json record = {{"step", state_.global_step}, {"epoch", epoch}, {"lr", lr}, {"tokens", global_tokens},
                             {"data_wait_s", step_wait_seconds}};
    for (const auto& [name, value] : metrics) record["train/" + name] = value;
    DF_RETURN_NOT_OK(LogMetrics(record));
    state_.global_step += 1;
    steps_this_run_ += 1;
    batches_done_ += 1;
    tokens += step_tokens;
    const double elapsed = progress.ElapsedSeconds();
    progress.SetSuffix(fmt::format("{} wait {:.0f}%", ProgressSuffix(metrics, options_.ttt_steps),
                                   elapsed > 0 ? 100.0 * wait_seconds / elapsed : 0.0));
    progress.Advance(1, step_tokens);
    const bool last_batch = b + 1 == num_steps;
    if (stop_requested && !last_batch) {
      end = EpochEnd::kSignal;
      break;
    }
    if (options_.max_steps && steps_this_run_ >= *options_.max_steps) {
      if (last_batch) {
        stop_ = true;
      } else {
        end = EpochEnd::kMaxSteps;
      }
      break;
    }
  }
  progress.Finish();
  double seconds = progress.ElapsedSeconds();
  const double wait_share = seconds > 0 ? wait_seconds / seconds : 0.0;
  spdlog::info("epoch {} training: {} tokens in {:.1f} s, {:.0f} tokens/s, {:.1f}% of the time waiting for data", epoch,
               tokens, seconds, seconds > 0 ? static_cast<double>(tokens) / seconds : 0.0, 100.0 * wait_share);
  DF_RETURN_NOT_OK(LogMetrics({{"step", state_.global_step},
                               {"epoch", epoch},
                               {"train/tokens_per_second_epoch", seconds > 0 ? tokens / seconds : 0.0},
                               {"train/data_wait_share_epoch", wait_share}}));
  if (parallel_->distributed()) {
    double communication = parallel_->communication_seconds() - communication_before;
    spdlog::info("epoch {} communication: {:.2f} s in collectives, {:.1f}% of the training time", epoch,
                 communication, seconds > 0 ? 100.0 * communication / seconds : 0.0);
  }
  if (end == EpochEnd::kComplete && rows > 0 && samples < rows) {
    const std::string reason = fmt::format(
        "their hidden-states files in {} are missing or were rejected (the warnings above name each row unless "
        "--on-missing is skip)",
        train_source_.hidden_states_dir);
    if (samples == 0) {
      return Status::NotFound("epoch {} had no usable training sample: all {} training rows were skipped because "
                              "{}; run `draftforge generate` first or point --hidden-states-path at the files",
                              epoch, rows, reason);
    }
    spdlog::warn("epoch {} skipped {} of {} training rows because {}", epoch, rows - samples, rows, reason);
  }
  return end;
}

Result<std::optional<double>> Trainer::ValidateEpoch(int64_t epoch) {
  if (val_lengths_.empty()) return std::optional<double>();
  auto batches = EpochBatches(val_lengths_, options_.total_seq_len, parallel_->world_size(), parallel_->rank(), 0,
                              epoch);
  for (auto& batch : batches) {
    for (int64_t& index : batch) index += train_rows_;  // files keep the global row index
  }
  if (batches.empty()) return std::optional<double>();
  BatchLoader loader(val_source_, batches, options_.total_seq_len, options_.num_workers, options_.prefetch_factor);
  TttOptions ttt;
  ttt.steps = options_.ttt_steps;
  ttt.loss_decay = options_.ttt_step_loss_decay;
  torch::NoGradGuard no_grad;
  // Each epoch metric is the mean over the (rank, batch) pairs whose row had
  // a usable sample, with one reduction per epoch.
  const std::vector<std::string> metric_names = StepMetricNames(options_.ttt_steps);
  std::map<std::string, double> sums;
  // Per step: correct chains, counted slots and chains alive before the step,
  // summed over rows, for the token-weighted accuracies of speculators' later
  // versions (the plain means above are the original ones).
  std::vector<double> counts(3 * options_.ttt_steps, 0.0);
  int64_t counted_rows = 0;
  ProgressBar progress(fmt::format("validate epoch {}", epoch), loader.size(), "batches");
  for (int64_t b = 0; b < loader.size(); ++b) {
    DF_ASSIGN_OR_RAISE(PackedBatch batch, loader.Next());
    if (batch.num_samples > 0) {
      TttOutput output = RunTtt(*model_, batch.To(device_), ttt);
      for (const auto& [name, value] : StepMetricMap(output)) sums[name] += value;
      for (size_t k = 0; k < output.steps.size(); ++k) {
        counts[3 * k] += output.steps[k].correct;
        counts[3 * k + 1] += output.steps[k].counted;
        counts[3 * k + 2] += output.steps[k].alive_before;
      }
      counted_rows += 1;
    }
    progress.Advance(1, batch.num_tokens());
  }
  progress.Finish();
  std::vector<double> packed;
  for (const std::string& name : metric_names) packed.push_back(sums[name]);
  packed.insert(packed.end(), counts.begin(), counts.end());
  packed.push_back(static_cast<double>(counted_rows));
  DF_ASSIGN_OR_RAISE(packed, SumOverRanks(*parallel_, packed, "validation metric all-reduce"));
  counted_rows = static_cast<int64_t>(packed.back());
  if (counted_rows == 0) {
    spdlog::warn("epoch {} validation had no usable sample: all {} validation rows were skipped because their "
                 "hidden-states files in {} are missing or were rejected; no validation loss is recorded and this "
                 "epoch cannot become checkpoint_best",
                 epoch, val_lengths_.size(), val_source_.hidden_states_dir);
    return std::optional<double>();
  }
  std::map<std::string, double> epoch_metrics;
  for (size_t i = 0; i < metric_names.size(); ++i) epoch_metrics[metric_names[i]] = packed[i] / counted_rows;
  nlohmann::json record = {{"step", state_.global_step}, {"epoch", epoch}};
  for (const auto& [name, value] : epoch_metrics) record["val/" + name + "_epoch"] = value;
  for (int64_t k = 0; k < options_.ttt_steps; ++k) {
    const size_t base = metric_names.size() + 3 * k;
    record[fmt::format("val/full_acc_{}_token_weighted_epoch", k)] = packed[base] / (packed[base + 1] + 1e-5);
    record[fmt::format("val/cond_acc_{}_token_weighted_epoch", k)] = packed[base] / (packed[base + 2] + 1e-5);
  }
  DF_RETURN_NOT_OK(LogMetrics(record));
  spdlog::info("epoch {} validation: {}", epoch, ProgressSuffix(epoch_metrics, options_.ttt_steps));
  if (!std::isfinite(epoch_metrics.at("loss"))) {
    spdlog::warn("epoch {} validation loss is {}; this epoch cannot become checkpoint_best", epoch,
                 epoch_metrics.at("loss"));
  }
  return std::optional<double>(epoch_metrics.at("loss"));
}

Status Trainer::Checkpoint(int64_t epoch, std::optional<double> val_loss, bool resumed_partial) {
  CheckpointDecision decision =
      DecideCheckpoint(epoch, options_.checkpoint_freq, options_.save_best, val_loss, state_.best_val_loss);
  state_.epoch = epoch;
  state_.epoch_complete = true;
  state_.batches_done = 0;
  if (decision.update_best) {
    state_.best_val_loss = val_loss;
    state_.best_epoch = epoch;
  }
  if (!decision.save && resumed_partial) {
    spdlog::info("saving epoch {} although the checkpoint rule skips it, to replace its partial checkpoint", epoch);
    decision.save = true;
  }
  if (!decision.save) {
    if (epoch == options_.epochs - 1 && !(options_.save_best && val_loss)) {
      std::optional<int64_t> last = FindLastEpoch(options_.save_path);
      spdlog::warn("the final epoch {} was not saved: --checkpoint-freq {} saves epoch 0 and each epoch e with "
                   "(e + 1) % {} == 0; the last saved checkpoint is {}",
                   epoch, options_.checkpoint_freq, options_.checkpoint_freq,
                   last ? fmt::format("{}/{}", options_.save_path, *last) : std::string("none"));
    }
    return Status::OK();
  }
  // Every rank has the same weights and state; rank 0 writes them, and the
  // others wait so that no rank runs ahead of an unfinished checkpoint.
  if (parallel_->is_main()) {
    DF_RETURN_NOT_OK(SaveCheckpoint(options_.save_path, *model_, config_json_, *optimizer_,
                                    schedule_.type != ScheduleType::kNone, state_));
    if (decision.update_best) DF_RETURN_NOT_OK(UpdateBestLink(options_.save_path, epoch));
    if (decision.remove_others) DF_RETURN_NOT_OK(RemoveOtherEpochs(options_.save_path, epoch));
    spdlog::info("saved checkpoint {}/{}", options_.save_path, epoch);
  }
  return parallel_->Barrier("checkpoint save");
}

Status Trainer::SavePartialCheckpoint(int64_t epoch) {
  state_.epoch = epoch;
  state_.epoch_complete = false;
  state_.batches_done = batches_done_;
  if (!parallel_->is_main()) return parallel_->Barrier("partial checkpoint save");
  DF_RETURN_NOT_OK(SaveCheckpoint(options_.save_path, *model_, config_json_, *optimizer_,
                                  schedule_.type != ScheduleType::kNone, state_));
  DF_RETURN_NOT_OK(parallel_->Barrier("partial checkpoint save"));
  spdlog::info("saved partial checkpoint {}/{} after {} batches of epoch {}; the next run with the same "
               "--save-path trains the rest of the epoch",
               options_.save_path, epoch, batches_done_, epoch);
  return Status::OK();
}

Status Trainer::Run() {
  Status status = RunJob();
  if (parallel_ && parallel_->distributed()) {
    // A rank that stops early records why, so the others can name it. After a
    // run that ended the same way on every rank, a last barrier keeps rank
    // 0's store alive until every rank is done with it.
    if (!status.ok() && status.code() != StatusCode::kCancelled) {
      parallel_->Abandon(status);
    } else {
      Status finished = parallel_->Barrier("end of training");
      if (!finished.ok() && status.ok()) status = finished;
    }
  }
  return status;
}

Status Trainer::RunJob() {
  DF_RETURN_NOT_OK(Setup());
  DF_RETURN_NOT_OK(PrepareOutputDirectories());
  DF_RETURN_NOT_OK(BuildModel());
  DF_RETURN_NOT_OK(OpenData());
  DF_RETURN_NOT_OK(Resume());
  DF_RETURN_NOT_OK(SynchronizeRanks());
  const int64_t first_epoch = state_.epoch_complete ? state_.epoch + 1 : state_.epoch;
  if (first_epoch >= options_.epochs) {
    spdlog::info("training is already complete: {} holds epoch {}, the last of --epochs {}; pass a larger "
                 "--epochs to train more",
                 options_.save_path, state_.epoch, options_.epochs);
    return Status::OK();
  }
  spdlog::info("training a {}-layer {} draft (hidden {}, draft vocabulary {}) on {} for epochs {}..{}",
               draft_config_.num_layers, draft_config_.arch, draft_config_.hidden_size, draft_config_.draft_vocab_size,
               device_.str(), first_epoch, options_.epochs - 1);
  for (int64_t epoch = first_epoch; epoch < options_.epochs && !stop_; ++epoch) {
    const bool resumed_partial = epoch == state_.epoch && !state_.epoch_complete;
    const int64_t first_batch = resumed_partial ? state_.batches_done : 0;
    DF_ASSIGN_OR_RAISE(EpochEnd end, TrainEpoch(epoch, first_batch));
    if (end == EpochEnd::kMaxSteps) {
      spdlog::info("stopped after --max-steps {} in the middle of epoch {} ({} batches done)", *options_.max_steps,
                   epoch, batches_done_);
      return SavePartialCheckpoint(epoch);
    }
    if (end == EpochEnd::kSignal) {
      spdlog::warn("training was interrupted by {} at epoch {}, global step {}", SignalName(g_stop_signal), epoch,
                   state_.global_step);
      DF_RETURN_NOT_OK(SavePartialCheckpoint(epoch));
      return Status::Cancelled("training was interrupted by {} at epoch {}, global step {}",
                               SignalName(g_stop_signal), epoch, state_.global_step);
    }
    DF_ASSIGN_OR_RAISE(std::optional<double> val_loss, ValidateEpoch(epoch));
    DF_RETURN_NOT_OK(LogGeneration(epoch));
    DF_RETURN_NOT_OK(Checkpoint(epoch, val_loss, resumed_partial));
    // All ranks must agree, or one would start the next epoch alone.
    DF_ASSIGN_OR_RAISE(std::vector<double> stop_flags,
                       SumOverRanks(*parallel_, {g_stop_signal != 0 ? 1.0 : 0.0}, "stop flag all-reduce"));
    if (stop_flags[0] > 0) {
      return Status::Cancelled("training was interrupted by {} after epoch {} (global step {}); its checkpoint "
                               "decision was applied, and the next run resumes with epoch {}",
                               SignalName(g_stop_signal), epoch, state_.global_step, epoch + 1);
    }
  }
  if (stop_) spdlog::info("stopped after --max-steps {} at the end of epoch {}", *options_.max_steps, state_.epoch);
  if (generation_failures_ > 0) {
    // The checkpoints are kept, but the exit code must not tell a pipeline
    // that every row trained.
    return Status::Network("{} hidden-states samples could not be generated and were left out of their epochs (the "
                           "warnings above name each row); the checkpoints are saved. To train on every row, fix "
                           "the cause (server reachability, --request-timeout) and fill the gaps with `draftforge "
                           "generate`, then train again with --no-resume-from-checkpoint",
                           generation_failures_);
  }
  return Status::OK();
}

// Keeps freed memory in the process. Each training step allocates and frees
// tens of megabytes of activations. With glibc's defaults those blocks are
// mmap'ed and unmapped every time, and the page faults cost more than the
// math. Measured on a 2-core machine with stories260k at 8192 tokens per row:
// about 2,000 tokens/s with the defaults, over 5,000 with this setting.
void KeepFreedMemory() {
#if defined(__GLIBC__)
  mallopt(M_MMAP_MAX, 0);
  mallopt(M_TRIM_THRESHOLD, std::numeric_limits<int>::max());
#endif
}

}  // namespace

Status ValidateTrainOptions(const TrainOptions& o) {
  auto positive_finite = [](double value) { return std::isfinite(value) && value > 0; };
  if (o.epochs < 1) return Status::Invalid("--epochs must be at least 1, got {}", o.epochs);
  if (!positive_finite(o.lr)) return Status::Invalid("--lr must be a finite number > 0, got {}", o.lr);
  if (o.total_seq_len < 2) return Status::Invalid("--total-seq-len must be at least 2, got {}", o.total_seq_len);
  if (o.ttt_steps < 1) return Status::Invalid("--ttt-steps must be at least 1, got {}", o.ttt_steps);
  if (!positive_finite(o.ttt_step_loss_decay)) {
    return Status::Invalid("--ttt-step-loss-decay must be a finite number > 0, got {}", o.ttt_step_loss_decay);
  }
  if (o.draft_vocab_size && *o.draft_vocab_size < 1) {
    return Status::Invalid("--draft-vocab-size must be at least 1, got {}", *o.draft_vocab_size);
  }
  if (o.num_layers < 1) return Status::Invalid("--num-layers must be at least 1, got {}", o.num_layers);
  if (!std::isfinite(o.noise_std) || o.noise_std < 0) {
    return Status::Invalid("--noise-std must be a finite number >= 0, got {}", o.noise_std);
  }
  if (o.checkpoint_freq < 1) return Status::Invalid("--checkpoint-freq must be at least 1, got {}", o.checkpoint_freq);
  if (o.scheduler_warmup_steps && *o.scheduler_warmup_steps < 0) {
    return Status::Invalid("--scheduler-warmup-steps must be at least 0, got {}", *o.scheduler_warmup_steps);
  }
  if (o.scheduler_total_steps && *o.scheduler_total_steps < 1) {
    return Status::Invalid("--scheduler-total-steps must be at least 1, got {}", *o.scheduler_total_steps);
  }
  if (!std::isfinite(o.scheduler_num_cosine_cycles) || o.scheduler_num_cosine_cycles < 0) {
    return Status::Invalid("--scheduler-num-cosine-cycles must be a finite number >= 0, got {}",
                           o.scheduler_num_cosine_cycles);
  }
  if (o.max_steps && *o.max_steps < 1) return Status::Invalid("--max-steps must be at least 1, got {}", *o.max_steps);
  if (o.num_workers < 0) return Status::Invalid("--num-workers must be at least 0, got {}", o.num_workers);
  if (o.prefetch_factor < 1) return Status::Invalid("--prefetch-factor must be at least 1, got {}", o.prefetch_factor);
  if (o.gradient_accumulation_steps < 1) {
    return Status::Invalid("--gradient-accumulation-steps must be at least 1, got {}", o.gradient_accumulation_steps);
  }
  if (!positive_finite(o.distributed_timeout_seconds)) {
    return Status::Invalid("--dist-timeout must be a finite number of seconds > 0, got {}",
                           o.distributed_timeout_seconds);
  }
  DF_RETURN_NOT_OK(ParseMissingFilePolicy(o.on_missing).status());
  DF_RETURN_NOT_OK(ParseGeneratedFilePolicy(o.on_generate).status());
  if (!o.vllm_endpoints.empty() && o.on_missing != "generate") {
    spdlog::warn("--vllm-endpoint is unused: --on-missing {} never generates hidden states", o.on_missing);
  }
  if (!positive_finite(o.request_timeout_seconds)) {
    return Status::Invalid("--request-timeout must be a finite number of seconds > 0, got {}",
                           o.request_timeout_seconds);
  }
  return Status::OK();
}

Status RunTraining(const TrainOptions& options) {
  KeepFreedMemory();
  StopSignalScope signals;
  try {
    Trainer trainer(options);
    return trainer.Run();
  } catch (const c10::Error& error) {
    return Status::Internal("training failed inside libtorch: {}", error.what_without_backtrace());
  } catch (const std::exception& error) {
    return Status::Internal("training failed: {}", error.what());
  }
}

}  // namespace draftforge::train
