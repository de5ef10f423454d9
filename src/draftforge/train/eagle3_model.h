// The EAGLE-3 draft model: fc (3H -> H) over three verifier layers, a first
// decoder layer that reads [embedding || hidden] (2H wide), optional further
// ordinary decoder layers, a final norm and an lm_head over the draft
// vocabulary.
//
// Trainable tensors are registered as module parameters under the names of the
// saved checkpoint (fc.weight, layers.0.self_attn.q_proj.weight, ...), so
// named_parameters() lists exactly what the optimizer updates and what
// model.safetensors stores besides embed_tokens, d2t and t2d. The frozen
// tensors (embed_tokens, verifier_lm_head, verifier_norm) and the vocabulary
// mapping are plain members and receive no gradient.
//
// First layer, with e the token embedding and g the running hidden state:
//   e' = input_layernorm(e); g' = hidden_norm(g)
//   u = (norm_before_residual ? g' : g) + Attention([e' || g'])
//   out = u + MLP(post_attention_layernorm(u))
// Later layers: u = x + Attention(input_layernorm(x)); out = u + MLP(...).
#pragma once

#include <torch/torch.h>

#include <string>
#include <utility>
#include <vector>

#include "draftforge/train/attention.h"
#include "draftforge/train/draft_config.h"
#include "draftforge/util/status.h"

namespace draftforge::train {

// RMSNorm: w * cast(x * rsqrt(mean(x^2) + eps)), statistics in float32 for
// half-precision x (in x's dtype otherwise), cast back to x's dtype before
// the product with w.
torch::Tensor RmsNorm(const torch::Tensor& x, const torch::Tensor& weight, double eps);

// cos and sin of the rotary angles, each [L, d] = [angles || angles].
struct RotaryTables {
  torch::Tensor cos;
  torch::Tensor sin;
};

// Rotates `x` [L, heads, d] with the half-split convention:
// x * cos + rotate_half(x) * sin, rotate_half([x1 || x2]) = [-x2 || x1].
torch::Tensor ApplyRotary(const torch::Tensor& x, const RotaryTables& rotary);

// A module that owns one tensor named "weight" (a bias-free linear layer or
// a norm).
class WeightImpl : public torch::nn::Module {
 public:
  WeightImpl(std::vector<int64_t> shape, const torch::TensorOptions& options);
  torch::Tensor weight;
};
TORCH_MODULE(Weight);

class AttentionBlockImpl : public torch::nn::Module {
 public:
  AttentionBlockImpl(const DraftConfig& config, int64_t input_width, const torch::TensorOptions& options);
  Weight q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, o_proj{nullptr};
  Weight q_norm{nullptr}, k_norm{nullptr};  // Qwen3 only
};
TORCH_MODULE(AttentionBlock);

class MlpImpl : public torch::nn::Module {
 public:
  MlpImpl(const DraftConfig& config, const torch::TensorOptions& options);
  Weight gate_proj{nullptr}, up_proj{nullptr}, down_proj{nullptr};
};
TORCH_MODULE(Mlp);

class DecoderLayerImpl : public torch::nn::Module {
 public:
  DecoderLayerImpl(const DraftConfig& config, int64_t index, const torch::TensorOptions& options);
  int64_t index;
  Weight hidden_norm{nullptr};  // layer 0 only
  Weight input_layernorm{nullptr};
  AttentionBlock self_attn{nullptr};
  Weight post_attention_layernorm{nullptr};
  Mlp mlp{nullptr};
};
TORCH_MODULE(DecoderLayer);

class Eagle3DraftModel : public torch::nn::Module {
 public:
  // Creates every tensor with `options` (dtype and device of the float
  // tensors): linear weights drawn from Normal(0, initializer_range^2) with the
  // global torch generator, norm weights 1, lm_head / embed_tokens /
  // verifier_lm_head NaN until the verifier weights are installed,
  // verifier_norm 1.
  Eagle3DraftModel(const DraftConfig& config, const torch::TensorOptions& options);

  const DraftConfig& config() const { return config_; }
  torch::TensorOptions options() const { return options_; }

  // h = fc(input_norm(A)) or fc(A): [L, 3H] -> [L, H].
  torch::Tensor ProjectFeatures(const torch::Tensor& aux_hidden);
  // Verifier logits over the draft vocabulary, verifier_lm_head(verifier_norm(Y)),
  // [L, H] -> [L, Vd], without gradient.
  torch::Tensor ComputeTargets(const torch::Tensor& verifier_hidden);
  // Token embeddings [L] -> [L, H], without gradient.
  torch::Tensor Embed(const torch::Tensor& input_ids);
  // cos/sin tables for integer positions [L], in the model dtype.
  RotaryTables Rotary(const torch::Tensor& position_ids) const;
  // Runs the decoder layers on x = [E || h] [L, 2H], appending this step's
  // keys/values to caches[layer]; returns the pre-norm state [L, H].
  torch::Tensor ForwardLayers(torch::Tensor x, const RotaryTables& rotary,
                              std::vector<std::vector<KvBlock>>& caches,
                              const AttentionLayout& layout);
  // Draft logits lm_head(norm(h)): [L, H] -> [L, Vd].
  torch::Tensor Logits(const torch::Tensor& hidden);
  // Verifier id of each draft index (i + d2t[i]) for draft indices [L].
  torch::Tensor DraftToVerifierIds(const torch::Tensor& draft_indices) const;

  // Trainable tensors in registration order, with their checkpoint names.
  std::vector<std::pair<std::string, torch::Tensor>> TrainableTensors() const;
  // Every tensor written to model.safetensors: named parameters (lm_head
  // included even when frozen), embed_tokens.weight, and d2t/t2d when Vd < V.
  std::vector<std::pair<std::string, torch::Tensor>> SavedTensors() const;

  torch::Tensor embed_tokens;      // [V, H], frozen
  torch::Tensor verifier_lm_head;  // [Vd, H], frozen
  torch::Tensor verifier_norm;     // [H], frozen
  torch::Tensor d2t;  // [Vd] int64 on the model device; undefined when Vd == V
  torch::Tensor t2d;  // [V] bool; undefined when Vd == V

  Weight fc{nullptr};
  Weight input_norm{nullptr};  // only with norm_before_fc
  std::vector<DecoderLayer> layers;
  Weight norm{nullptr};
  Weight lm_head{nullptr};

 private:
  torch::Tensor DecoderLayerForward(DecoderLayer& layer, const torch::Tensor& x, const RotaryTables& rotary,
                                    std::vector<KvBlock>& cache, const AttentionLayout& layout);
  torch::Tensor AttentionForward(AttentionBlock& attention, const torch::Tensor& input,
                                 const RotaryTables& rotary, std::vector<KvBlock>& cache,
                                 const AttentionLayout& layout);
  torch::Tensor MlpForward(Mlp& mlp, const torch::Tensor& x);

  DraftConfig config_;
  torch::TensorOptions options_;
  torch::Tensor inv_freq_;  // [d/2] in the model dtype
};

// Sets the vocabulary mapping tensors from d2t [Vd] and t2d [V]; Invalid when
// their sizes do not match the model config.
Status SetVocabMapping(Eagle3DraftModel& model, const std::vector<int64_t>& d2t,
                       const std::vector<uint8_t>& t2d);

}  // namespace draftforge::train
