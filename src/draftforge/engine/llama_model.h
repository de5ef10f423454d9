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

#include <memory>
#include <span>
#include <string>
#include <vector>

#include "draftforge/engine/model_config.h"
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

 private:
  LlamaModel() = default;

  torch::Tensor RmsNorm(const torch::Tensor& x, const torch::Tensor& weight) const;
  torch::Tensor Attention(const DecoderLayerWeights& layer, const torch::Tensor& normed,
                          const torch::Tensor& positions) const;
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
