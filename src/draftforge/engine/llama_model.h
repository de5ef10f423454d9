// The embedded CPU engine: a Llama-family decoder (Llama, Mistral-style GQA,
// Qwen2 attention biases, Qwen3 per-head q_norm/k_norm) loaded from a Hugging
// Face checkpoint directory and run with libtorch in float32.
//
// Forward() returns the hidden states that vLLM's extract_hidden_states path
// captures: layer id k is the residual stream after k decoder layers (k = 0
// is the embedding output, k = N the last layer's output before the final
// RMSNorm). Weights stored as bf16/f16 are upcast to float32 at load time.
// Errors name the checkpoint file and tensor; no method throws.
#pragma once

#include <torch/torch.h>

#include <algorithm>
#include <array>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "draftforge/engine/model_config.h"
#include "draftforge/engine/rope.h"
#include "draftforge/util/status.h"

namespace draftforge::engine {

// A projection y = x W^T (+ b).
struct LinearWeights {
  torch::Tensor weight;  // [out, in]
  torch::Tensor bias;    // [out], undefined when the checkpoint has no bias
};

struct DecoderLayerWeights {
  torch::Tensor input_norm;           // [H]
  LinearWeights qkv_proj;             // q, k and v fused: [(nH + 2 nKV) d, H]
  torch::Tensor q_norm;               // [d], Qwen3 only, else undefined
  torch::Tensor k_norm;               // [d], Qwen3 only, else undefined
  LinearWeights o_proj;               // [H, nH d]
  torch::Tensor post_attention_norm;  // [H]
  LinearWeights gate_up_proj;         // gate and up fused: [2 I, H]
  LinearWeights down_proj;            // [H, I]
};

// Output of one forward pass over a single sequence of T tokens.
struct ForwardResult {
  std::vector<int64_t> layer_ids;  // ascending; slot j of hidden_states is layer_ids[j]
  torch::Tensor hidden_states;     // [T, L, H] float32
  torch::Tensor logits;            // [T, V] float32; undefined unless requested
};

// Keys and values of every decoder layer for one sequence, after RoPE, in
// buffers preallocated to a fixed capacity so that appending copies no older
// entries. Entries at positions >= length() are stale and never read.
class KvCache {
 public:
  int64_t length() const { return length_; }
  int64_t capacity() const { return capacity_; }

  // Drops the entries at positions >= `length`, for example the rejected part
  // of a speculative proposal. A `length` above the current one is clamped.
  void Truncate(int64_t length) { length_ = std::clamp<int64_t>(length, 0, length_); }

 private:
  friend class LlamaModel;
  std::vector<torch::Tensor> keys_;    // per layer [nKV, capacity, d]
  std::vector<torch::Tensor> values_;  // per layer [nKV, capacity, d]
  int64_t length_ = 0;
  int64_t capacity_ = 0;
};

class LlamaModel {
 public:
  // Loads DIR/config.json and the safetensors weights (model.safetensors, or
  // the shards listed in model.safetensors.index.json). Checks every tensor's
  // shape against the config.
  static Result<std::unique_ptr<LlamaModel>> Load(const std::string& model_dir);

  const ModelConfig& config() const { return config_; }
  const std::string& model_dir() const { return model_dir_; }
  int64_t num_layers() const { return config_.num_hidden_layers; }

  // Returns `layer_ids` sorted ascending, or Invalid when an id repeats or
  // lies outside 0 .. num_layers(). vLLM rejects such ids as well, because
  // it sizes its capture buffer by the number of configured ids.
  Result<std::vector<int64_t>> CheckLayerIds(std::span<const int64_t> layer_ids) const;

  // Runs the model over `token_ids` at positions 0 .. T-1 with a causal mask
  // and returns the residual stream at `layer_ids` (any order; slots follow
  // ascending id order like vLLM's capture). Invalid when the sequence is
  // empty, longer than max_position_embeddings or contains an id outside the
  // vocabulary.
  Result<ForwardResult> Forward(std::span<const int64_t> token_ids,
                                std::span<const int64_t> layer_ids,
                                bool compute_logits = false) const;

  // Returns an empty cache for up to `capacity` positions; Invalid when
  // `capacity` is below 1 or above max_position_embeddings.
  Result<KvCache> NewCache(int64_t capacity) const;

  // Runs the model over `token_ids` at positions cache.length() ..
  // cache.length() + T - 1, attending to the cached entries and to each other
  // causally, and appends their keys and values to `cache`. The result is the
  // same as rows cache.length() .. of Forward() over the whole sequence, up
  // to float32 rounding because the matmuls see other shapes. Invalid, with
  // the cache unchanged, when the sequence is empty, would overflow the
  // cache, or contains an id outside the vocabulary.
  Result<ForwardResult> ForwardIncremental(std::span<const int64_t> token_ids,
                                           std::span<const int64_t> layer_ids, KvCache& cache,
                                           bool compute_logits = false) const;

 private:
  LlamaModel() = default;

  torch::Tensor RmsNorm(const torch::Tensor& x, const torch::Tensor& weight) const;
  // Stacks the captured residual streams [T, H] into result.hidden_states
  // [T, L, H], and adds the logits of `residual` [T, H] when requested.
  void AssembleOutputs(const std::vector<torch::Tensor>& captured, const torch::Tensor& residual,
                       bool compute_logits, ForwardResult& result) const;
  torch::Tensor Attention(const DecoderLayerWeights& layer, const torch::Tensor& normed,
                          const torch::Tensor& positions) const;
  // Projects `normed` [T, H] to q [nH, T, d] and k, v [nKV, T, d], with RoPE
  // applied to q and k.
  std::array<torch::Tensor, 3> ProjectQkv(const DecoderLayerWeights& layer, const torch::Tensor& normed,
                                          const RotaryTables& tables) const;
  // Runs causal grouped-query attention of q [nH, T, d] over keys and values
  // [nKV, offset + T, d], where query t is at key position offset + t. Applies
  // o_proj and returns [T, H]. Builds `causal_mask` [g T, offset + T] when it
  // is undefined.
  torch::Tensor Attend(const DecoderLayerWeights& layer, const torch::Tensor& q, const torch::Tensor& k,
                       const torch::Tensor& v, int64_t offset, torch::Tensor causal_mask = {}) const;
  torch::Tensor CausalMask(int64_t tokens, int64_t offset) const;
  Status CheckTokenIds(std::span<const int64_t> token_ids) const;
  torch::Tensor Mlp(const DecoderLayerWeights& layer, const torch::Tensor& normed) const;

  std::string model_dir_;
  ModelConfig config_;
  torch::Tensor embed_tokens_;          // [V, H]
  std::vector<DecoderLayerWeights> layers_;
  torch::Tensor final_norm_;            // [H]
  torch::Tensor lm_head_;               // [V, H]; shares storage with embed_tokens_ when tied
  torch::Tensor inverse_frequencies_;   // [d/2] float64, RoPE scaling applied
};

}  // namespace draftforge::engine
