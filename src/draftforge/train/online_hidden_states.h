// Hidden states generated while training (FORMATS.md 4.8): a sample whose
// hs_{row}.safetensors is missing, or damaged, is produced on demand by the
// embedded engine or by hidden-states servers (vLLM, `draftforge serve`).
//
// --on-generate decides what stays on disk:
// - cache: the file is kept under its final name, written atomically, so
//   later epochs read it (hybrid online/offline training);
// - delete: nothing stays. The embedded engine hands its output over in
//   memory without writing a file; a server's file is read and then removed.
//
// The generator is built on first use, so a run whose files are all present
// never loads the verifier weights or contacts a server. Every method is
// thread-safe: the data loader's worker threads call Generate() at once.
#pragma once

#include <torch/torch.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "draftforge/hidden_states/hs_file.h"
#include "draftforge/hidden_states/vllm_client.h"
#include "draftforge/util/status.h"

namespace draftforge::train {

enum class GeneratedFilePolicy { kCache, kDelete };

// Parses "cache" or "delete" (--on-generate).
Result<GeneratedFilePolicy> ParseGeneratedFilePolicy(const std::string& name);

// Counters of on-demand generation since the last Reset(). The trainer logs
// them per epoch.
struct GenerationCounts {
  std::atomic<int64_t> generated{0};    // samples produced on demand
  std::atomic<int64_t> cached{0};       // of those, files left under their final name
  std::atomic<int64_t> replaced{0};     // damaged files that were generated again
  std::atomic<int64_t> failed{0};       // requests that failed; their samples were skipped
  std::atomic<int64_t> tokens{0};       // tokens of the generated samples

  void Reset();
};

class HiddenStatesGenerator {
 public:
  virtual ~HiddenStatesGenerator() = default;
  // Produces the hidden states of dataset row `row` holding `ids`; `path` is
  // the row's hs file, written (cache) or never left behind (delete).
  virtual Result<hidden_states::HiddenStatesFile> Generate(int64_t row, std::span<const int64_t> ids,
                                                           const std::string& path) = 0;
  // "the embedded engine on DIR" or "the servers URL, ...", for logs.
  virtual std::string Describe() const = 0;
};

struct EngineGeneratorOptions {
  std::string model_dir;
  std::vector<int64_t> layer_ids;            // the four capture ids
  torch::Dtype stored_dtype = torch::kFloat32;  // what `draftforge generate` would store
  torch::Dtype checkpoint_dtype = torch::kFloat32;  // the weights' dtype on disk (config torch_dtype)
  GeneratedFilePolicy policy = GeneratedFilePolicy::kDelete;
  std::string hidden_states_dir;             // checked against draftforge_generate.json when caching
};

// Rejects a verifier too large for this machine before loading it. The
// engine keeps every weight in float32, so 16-bit checkpoints double in size.
// The limit is 90 % of MemAvailable, an estimate of what a run can load
// before the kernel's OOM killer ends it. OK when /proc/meminfo is missing.
Status CheckEngineFitsInMemory(const std::string& model_dir, torch::Dtype checkpoint_dtype);

// The embedded engine. Loading happens here, after a check that the weights
// fit in the available memory as float32. The forward passes run one at a
// time, because each one already uses every intra-op thread.
Result<std::unique_ptr<HiddenStatesGenerator>> MakeEngineGenerator(const EngineGeneratorOptions& options);

// Servers through HiddenStatesClient; `client_options.expected_model` should
// be --verifier-name-or-path, which the servers must serve under that name.
Result<std::unique_ptr<HiddenStatesGenerator>> MakeServerGenerator(const hidden_states::ClientOptions& client_options,
                                                                   GeneratedFilePolicy policy);

// Builds the generator with `factory` on the first Generate() call. A failed
// build fails that call and every later one with the same error, because a
// server that cannot be reached or a model that cannot load will not recover
// during the run.
class LazyGenerator {
 public:
  using Factory = std::function<Result<std::unique_ptr<HiddenStatesGenerator>>()>;
  LazyGenerator(Factory factory, GeneratedFilePolicy policy) : factory_(std::move(factory)), policy_(policy) {}

  // Builds the generator unless done before; the error of a failed build.
  // Callers treat it as fatal, unlike a failed Generate() of one sample.
  Status EnsureBuilt();
  // Generates one sample (see HiddenStatesGenerator) and counts it.
  Result<hidden_states::HiddenStatesFile> Generate(int64_t row, std::span<const int64_t> ids,
                                                   const std::string& path);
  GenerationCounts& counts() { return counts_; }
  GeneratedFilePolicy policy() const { return policy_; }

 private:

  Factory factory_;
  GeneratedFilePolicy policy_;
  std::mutex mutex_;
  bool built_ = false;
  Status build_status_;
  std::unique_ptr<HiddenStatesGenerator> generator_;
  GenerationCounts counts_;
};

}  // namespace draftforge::train
