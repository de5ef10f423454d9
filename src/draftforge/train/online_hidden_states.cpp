#include "draftforge/train/online_hidden_states.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <spdlog/spdlog.h>

#include <filesystem>
#include <fstream>
#include <limits>
#include <optional>

#include "draftforge/engine/llama_model.h"
#include "draftforge/hidden_states/generate.h"
#include "draftforge/util/fs.h"

namespace draftforge::train {
namespace fs = std::filesystem;
namespace {

hidden_states::HiddenStatesFile InMemoryFile(std::span<const int64_t> ids, torch::Tensor hidden) {
  hidden_states::HiddenStatesFile file;
  file.token_ids = torch::tensor(std::vector<int64_t>(ids.begin(), ids.end()), torch::kInt64);  // [T]
  file.hidden_states = std::move(hidden);                                                       // [T, 4, H]
  return file;
}

class EngineGenerator : public HiddenStatesGenerator {
 public:
  EngineGenerator(std::unique_ptr<engine::LlamaModel> model, EngineGeneratorOptions options)
      : model_(std::move(model)), options_(std::move(options)) {}

  Result<hidden_states::HiddenStatesFile> Generate(int64_t row, std::span<const int64_t> ids,
                                                   const std::string& path) override {
    Result<engine::ForwardResult> forward = Status::OK();
    {
      std::lock_guard<std::mutex> lock(forward_mutex_);
      forward = model_->Forward(ids, options_.layer_ids);
    }
    if (!forward.ok()) return forward.status().WithContext(fmt::format("generating dataset row {}", row));
    torch::Tensor hidden = forward->hidden_states.to(options_.stored_dtype);  // [T, 4, H]
    if (!torch::isfinite(hidden).all().item<bool>()) {
      return Status::Invalid("the embedded engine produced NaN or Inf hidden states for dataset row {} in {}; "
                             "the verifier weights in {} may be damaged, or float16 overflowed (pass "
                             "--hidden-states-dtype bfloat16)",
                             row, hidden_states::DtypeName(options_.stored_dtype), options_.model_dir);
    }
    if (options_.policy == GeneratedFilePolicy::kCache) {
      DF_RETURN_NOT_OK(hidden_states::WriteHiddenStatesFile(path, ids, hidden));
    }
    return InMemoryFile(ids, std::move(hidden));
  }

  std::string Describe() const override { return fmt::format("the embedded engine on {}", options_.model_dir); }

 private:
  std::unique_ptr<engine::LlamaModel> model_;
  EngineGeneratorOptions options_;
  std::mutex forward_mutex_;
};

class ServerGenerator : public HiddenStatesGenerator {
 public:
  ServerGenerator(std::unique_ptr<hidden_states::HiddenStatesClient> client, std::vector<std::string> endpoints,
                  GeneratedFilePolicy policy)
      : client_(std::move(client)), endpoints_(std::move(endpoints)), policy_(policy) {}

  Result<hidden_states::HiddenStatesFile> Generate(int64_t row, std::span<const int64_t> ids,
                                                   const std::string& path) override {
    // In delete mode the server's file lands under a name that no reader
    // takes for a finished hs file, and goes away once read.
    const bool cache = policy_ == GeneratedFilePolicy::kCache;
    const std::string destination =
        cache ? path : fmt::format("{}.online-{}.tmp", path, next_temp_.fetch_add(1));
    DF_RETURN_NOT_OK(CreateDirectories(fs::path(path).parent_path().string()));
    DF_RETURN_NOT_OK(client_->Generate(row, ids, destination).status());
    hidden_states::HiddenStatesExpectation expected;
    expected.token_ids = ids;
    auto file = hidden_states::ReadHiddenStatesFile(destination, expected);
    if (!cache) {
      std::error_code error;
      fs::remove(destination, error);
      if (error) spdlog::warn("could not remove the generated file {}: {}", destination, error.message());
    }
    return file;
  }

  std::string Describe() const override { return fmt::format("the servers {}", fmt::join(endpoints_, ", ")); }

 private:
  std::unique_ptr<hidden_states::HiddenStatesClient> client_;
  std::vector<std::string> endpoints_;
  GeneratedFilePolicy policy_;
  std::atomic<int64_t> next_temp_{0};
};

// Bytes of memory the system can still hand out (MemAvailable of
// /proc/meminfo); nullopt where that file does not exist.
std::optional<int64_t> AvailableMemoryBytes() {
  std::ifstream meminfo("/proc/meminfo");
  for (std::string key; meminfo >> key;) {
    int64_t kib = 0;
    if (key == "MemAvailable:" && meminfo >> kib) return kib * 1024;
    meminfo.ignore(std::numeric_limits<std::streamsize>::max(), '\n');
  }
  return std::nullopt;
}

}  // namespace

Status CheckEngineFitsInMemory(const std::string& model_dir, torch::Dtype checkpoint_dtype) {
  std::error_code error;
  int64_t file_bytes = 0;
  for (const auto& entry : fs::directory_iterator(model_dir, error)) {
    if (entry.path().extension() == ".safetensors") file_bytes += static_cast<int64_t>(entry.file_size(error));
  }
  const int64_t needed = checkpoint_dtype == torch::kFloat32 ? file_bytes : 2 * file_bytes;
  const std::optional<int64_t> available = AvailableMemoryBytes();
  if (!available || needed <= *available * 9 / 10) return Status::OK();
  return Status::Invalid("generating missing hidden states with the embedded engine needs about {:.1f} GiB to hold "
                         "{} in float32, but only {:.1f} GiB of memory are available; generate them on GPU servers "
                         "(--vllm-endpoint, see `draftforge launch-vllm`), or up front with `draftforge generate "
                         "--endpoint`, or pass --on-missing skip",
                         needed / 1073741824.0, model_dir, *available / 1073741824.0);
}


Result<GeneratedFilePolicy> ParseGeneratedFilePolicy(const std::string& name) {
  if (name == "cache") return GeneratedFilePolicy::kCache;
  if (name == "delete") return GeneratedFilePolicy::kDelete;
  return Status::Invalid("--on-generate '{}' is not supported; use cache (keep generated files) or delete", name);
}

void GenerationCounts::Reset() {
  generated = 0;
  cached = 0;
  replaced = 0;
  failed = 0;
  tokens = 0;
}

Result<std::unique_ptr<HiddenStatesGenerator>> MakeEngineGenerator(const EngineGeneratorOptions& options) {
  DF_RETURN_NOT_OK(CheckEngineFitsInMemory(options.model_dir, options.checkpoint_dtype));
  spdlog::info("loading {} into the embedded engine to generate missing hidden states", options.model_dir);
  DF_ASSIGN_OR_RAISE(std::unique_ptr<engine::LlamaModel> model, engine::LlamaModel::Load(options.model_dir));
  DF_ASSIGN_OR_RAISE(std::vector<int64_t> layer_ids, model->CheckLayerIds(options.layer_ids));
  EngineGeneratorOptions resolved = options;
  resolved.layer_ids = layer_ids;
  if (options.policy == GeneratedFilePolicy::kCache) {
    // Cached files join those of `draftforge generate`, so the same settings
    // check keeps files of other capture settings from mixing.
    DF_RETURN_NOT_OK(CreateDirectories(options.hidden_states_dir));
    DF_ASSIGN_OR_RAISE(std::vector<int64_t> existing, hidden_states::ListHiddenStatesFiles(options.hidden_states_dir));
    hidden_states::CaptureSettings settings;
    std::error_code error;
    settings.model_dir = fs::weakly_canonical(options.model_dir, error).string();
    if (error) settings.model_dir = fs::absolute(options.model_dir).string();
    settings.layer_ids = layer_ids;
    settings.dtype = hidden_states::DtypeName(options.stored_dtype);
    DF_RETURN_NOT_OK(hidden_states::CheckOrWriteSettings(options.hidden_states_dir, settings, !existing.empty()));
  }
  return std::unique_ptr<HiddenStatesGenerator>(new EngineGenerator(std::move(model), std::move(resolved)));
}

Result<std::unique_ptr<HiddenStatesGenerator>> MakeServerGenerator(const hidden_states::ClientOptions& client_options,
                                                                   GeneratedFilePolicy policy) {
  spdlog::info("connecting to the hidden-states servers {} to generate missing hidden states",
               fmt::join(client_options.endpoints, ", "));
  DF_ASSIGN_OR_RAISE(auto client, hidden_states::HiddenStatesClient::Connect(client_options));
  return std::unique_ptr<HiddenStatesGenerator>(
      new ServerGenerator(std::move(client), client_options.endpoints, policy));
}

Status LazyGenerator::EnsureBuilt() {
  std::lock_guard<std::mutex> lock(mutex_);
  if (!built_) {
    built_ = true;
    auto made = factory_();
    if (made.ok()) {
      generator_ = std::move(*made);
      spdlog::info("missing hidden states are generated by {}; --on-generate {}", generator_->Describe(),
                   policy_ == GeneratedFilePolicy::kCache ? "cache keeps the files" : "delete keeps none");
    } else {
      build_status_ = made.status().WithContext("cannot generate missing hidden states (--on-missing generate)");
    }
  }
  return generator_ ? Status::OK() : build_status_;
}

Result<hidden_states::HiddenStatesFile> LazyGenerator::Generate(int64_t row, std::span<const int64_t> ids,
                                                                const std::string& path) {
  DF_RETURN_NOT_OK(EnsureBuilt());
  HiddenStatesGenerator* generator = generator_.get();
  auto file = generator->Generate(row, ids, path);
  if (!file.ok()) {
    counts_.failed += 1;
    return file;
  }
  counts_.generated += 1;
  counts_.tokens += static_cast<int64_t>(ids.size());
  if (policy_ == GeneratedFilePolicy::kCache) counts_.cached += 1;
  return file;
}

}  // namespace draftforge::train
