// EAGLE-3 draft inference as vLLM's proposer runs it, for a checkpoint saved
// by `draftforge train` or speculators (config.json + model.safetensors).
//
// The weights live in a train::Eagle3DraftModel, upcast to float32. The draft
// keeps its own KV cache: Extend() appends the slots whose verifier features
// are known (pass 1 of each round), Continue() appends one speculative slot
// (passes 2 .. K). Truncate() drops the speculative slots before the next
// round, so the cache holds only slots whose features come from the verifier.
//
// Slot i pairs the verifier's auxiliary features A[i] (layer ids ascending,
// [3H]) with the next token x[i+1] and sits at RoPE position i.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "draftforge/engine/llama_model.h"
#include "draftforge/train/draft_config.h"
#include "draftforge/train/eagle3_model.h"
#include "draftforge/util/status.h"

namespace draftforge::eval {

// The fields of a speculator config.json that inference needs.
struct DraftCheckpointConfig {
  train::DraftConfig draft;
  // The three verifier layer ids whose residual streams feed fc, in vLLM's
  // numbering. vLLM's default (2, N/2, N-3) when config.json has none.
  std::vector<int64_t> aux_layer_ids;
  // Feed the normed draft output back instead of the pre-norm one (newer
  // speculators configs only).
  bool norm_output = false;
};

// Parses CHECKPOINT/config.json and checks it against the verifier: hidden
// size, vocabulary size and aux layer ids must fit. Invalid names the
// mismatching fields with both values.
Result<DraftCheckpointConfig> LoadDraftCheckpointConfig(const std::string& checkpoint_dir,
                                                        const engine::LlamaModel& verifier);

// Output of one draft pass for its last slot.
struct DraftStep {
  int64_t token_id = 0;  // proposed verifier token id (draft argmax mapped through d2t)
  torch::Tensor hidden;  // [1, H]: the state fed back into the next pass
};

class Eagle3Drafter {
 public:
  // Loads the checkpoint and fills the tensors it lacks from the verifier.
  // `cache_capacity` bounds the draft positions (prompt + generated + K).
  static Result<std::unique_ptr<Eagle3Drafter>> Load(const std::string& checkpoint_dir,
                                                     const engine::LlamaModel& verifier,
                                                     int64_t cache_capacity);

  const DraftCheckpointConfig& config() const { return config_; }
  int64_t cache_length() const { return cache_length_; }
  // Drops cached slots at positions >= `length`.
  void Truncate(int64_t length) { cache_length_ = std::min(cache_length_, length); }

  // Pass 1: appends slots cache_length() .. cache_length() + n - 1 with
  // features `aux_hidden` [n, 3H] and next tokens `next_token_ids` [n], and
  // returns the proposal of the last slot.
  Result<DraftStep> Extend(const torch::Tensor& aux_hidden, const std::vector<int64_t>& next_token_ids);

  // Pass j >= 2: appends one slot at position cache_length() with the
  // previous pass's `previous.hidden` and token `previous.token_id`.
  Result<DraftStep> Continue(const DraftStep& previous);

 private:
  Eagle3Drafter() = default;

  // Runs the layers on hidden input `hidden` [n, H] and the next tokens'
  // embeddings [n, H] at positions cache_length() .. and appends their keys
  // and values.
  DraftStep RunLayers(const torch::Tensor& hidden, const torch::Tensor& token_embeddings);
  // cos and signed_sin: [n, 1, d].
  torch::Tensor Attention(size_t layer_index, const torch::Tensor& input, const torch::Tensor& cos,
                          const torch::Tensor& signed_sin);

  // Per-call libtorch overhead dominates at small sizes, so the weights are
  // fused and transposed once here and each pass runs as few ops as it can.
  DraftCheckpointConfig config_;
  std::unique_ptr<train::Eagle3DraftModel> model_;
  // qkv_t_, gate_up_t_ and lm_head_t_ include the weight of the norm before them.
  std::vector<torch::Tensor> qkv_t_;      // per layer [din, (nH + 2 nKV) d]; q columns scaled by 1/sqrt(d)
  std::vector<torch::Tensor> o_t_;        // per layer [nH d, H]
  std::vector<torch::Tensor> gate_up_t_;  // per layer [H, 2 I]
  std::vector<torch::Tensor> down_t_;     // per layer [I, H]
  torch::Tensor lm_head_t_;               // [H, Vd]
  std::vector<int64_t> d2t_;              // [Vd] offsets; empty when Vd == V
  std::vector<torch::Tensor> keys_;       // per layer [nKV, capacity, d]
  std::vector<torch::Tensor> values_;     // per layer [nKV, capacity, d]
  torch::Tensor cos_;                     // [capacity, d]
  torch::Tensor signed_sin_;              // [capacity, d]: [-sin || sin], so rotate_half(x) sin = [x2 || x1] signed_sin
  torch::Tensor swap_halves_;             // [d] int64: d/2 .. d-1, 0 .. d/2-1
  int64_t capacity_ = 0;
  int64_t cache_length_ = 0;
};

}  // namespace draftforge::eval
