#include "draftforge/train/eagle3_model.h"

#include <cmath>
#include <limits>

#include "draftforge/train/rotary.h"

namespace draftforge::train {
namespace {

torch::Dtype StatisticsDtype(torch::Dtype dtype) {
  return dtype == torch::kBFloat16 || dtype == torch::kFloat16 ? torch::kFloat32 : dtype;
}

torch::Tensor RotateHalf(const torch::Tensor& x) {
  int64_t half = x.size(-1) / 2;
  return torch::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
}

}  // namespace

torch::Tensor RmsNorm(const torch::Tensor& x, const torch::Tensor& weight, double eps) {
  torch::Tensor wide = x.to(StatisticsDtype(x.scalar_type()));
  torch::Tensor normalized = wide * torch::rsqrt(wide.pow(2).mean(-1, /*keepdim=*/true) + eps);
  return weight * normalized.to(x.scalar_type());
}

torch::Tensor ApplyRotary(const torch::Tensor& x, const RotaryTables& rotary) {
  torch::Tensor cos = rotary.cos.unsqueeze(1);  // [L, 1, d]
  torch::Tensor sin = rotary.sin.unsqueeze(1);
  return x * cos + RotateHalf(x) * sin;
}

WeightImpl::WeightImpl(std::vector<int64_t> shape, const torch::TensorOptions& options) {
  weight = register_parameter("weight", torch::empty(shape, options));
}

AttentionBlockImpl::AttentionBlockImpl(const DraftConfig& config, int64_t input_width,
                                       const torch::TensorOptions& options) {
  int64_t query_width = config.num_attention_heads * config.head_dim;
  int64_t kv_width = config.num_key_value_heads * config.head_dim;
  q_proj = register_module("q_proj", Weight(std::vector<int64_t>{query_width, input_width}, options));
  k_proj = register_module("k_proj", Weight(std::vector<int64_t>{kv_width, input_width}, options));
  v_proj = register_module("v_proj", Weight(std::vector<int64_t>{kv_width, input_width}, options));
  o_proj = register_module("o_proj", Weight(std::vector<int64_t>{config.hidden_size, query_width}, options));
  if (config.arch == "qwen3") {
    q_norm = register_module("q_norm", Weight(std::vector<int64_t>{config.head_dim}, options));
    k_norm = register_module("k_norm", Weight(std::vector<int64_t>{config.head_dim}, options));
  }
}

MlpImpl::MlpImpl(const DraftConfig& config, const torch::TensorOptions& options) {
  int64_t hidden = config.hidden_size;
  int64_t inner = config.intermediate_size;
  gate_proj = register_module("gate_proj", Weight(std::vector<int64_t>{inner, hidden}, options));
  up_proj = register_module("up_proj", Weight(std::vector<int64_t>{inner, hidden}, options));
  down_proj = register_module("down_proj", Weight(std::vector<int64_t>{hidden, inner}, options));
}

DecoderLayerImpl::DecoderLayerImpl(const DraftConfig& config, int64_t layer_index,
                                   const torch::TensorOptions& options)
    : index(layer_index) {
  int64_t hidden = config.hidden_size;
  if (index == 0) {
    hidden_norm = register_module("hidden_norm", Weight(std::vector<int64_t>{hidden}, options));
  }
  input_layernorm = register_module("input_layernorm", Weight(std::vector<int64_t>{hidden}, options));
  int64_t input_width = index == 0 ? 2 * hidden : hidden;
  self_attn = register_module("self_attn", AttentionBlock(config, input_width, options));
  post_attention_layernorm =
      register_module("post_attention_layernorm", Weight(std::vector<int64_t>{hidden}, options));
  mlp = register_module("mlp", Mlp(config, options));
}

Eagle3DraftModel::Eagle3DraftModel(const DraftConfig& config, const torch::TensorOptions& options)
    : config_(config), options_(options) {
  const int64_t hidden = config.hidden_size;
  fc = register_module("fc", Weight(std::vector<int64_t>{hidden, 3 * hidden}, options));
  if (config.norm_before_fc) {
    input_norm = register_module("input_norm", Weight(std::vector<int64_t>{3 * hidden}, options));
  }
  auto layer_list = register_module("layers", torch::nn::ModuleList());
  for (int64_t i = 0; i < config.num_layers; ++i) {
    layers.push_back(DecoderLayer(config, i, options));
    layer_list->push_back(layers.back());
  }
  norm = register_module("norm", Weight(std::vector<int64_t>{hidden}, options));
  lm_head = register_module("lm_head", Weight(std::vector<int64_t>{config.draft_vocab_size, hidden}, options));

  // Initial values: linear weights ~ Normal(0, initializer_range^2), norms 1.
  torch::NoGradGuard no_grad;
  for (auto& item : named_parameters()) {
    torch::Tensor& tensor = item.value();
    if (tensor.dim() == 1) {
      tensor.fill_(1.0);
    } else {
      tensor.normal_(0.0, config.initializer_range);
    }
  }
  const double nan = std::numeric_limits<double>::quiet_NaN();
  lm_head->weight.fill_(nan);
  embed_tokens = torch::full({config.vocab_size, hidden}, nan, options);
  verifier_lm_head = torch::full({config.draft_vocab_size, hidden}, nan, options);
  verifier_norm = torch::ones({hidden}, options);

  // MakeDraftConfig validates the RoPE parameters; for a config built any
  // other way, ValueOrDie throws on unsupported ones.
  std::vector<double> frequencies =
      RopeInverseFrequencies(config.head_dim, config.rope_theta, config.rope_scaling).ValueOrDie();
  inv_freq_ = torch::tensor(frequencies, torch::TensorOptions().dtype(torch::kFloat64)).to(options);
}

torch::Tensor Eagle3DraftModel::ProjectFeatures(const torch::Tensor& aux_hidden) {
  torch::Tensor input = aux_hidden;
  if (config_.norm_before_fc) input = RmsNorm(aux_hidden, input_norm->weight, config_.rms_norm_eps);
  return torch::matmul(input, fc->weight.t());  // [L, H]
}

torch::Tensor Eagle3DraftModel::ComputeTargets(const torch::Tensor& verifier_hidden) {
  torch::NoGradGuard no_grad;
  torch::Tensor normed = RmsNorm(verifier_hidden, verifier_norm, config_.rms_norm_eps);
  return torch::matmul(normed, verifier_lm_head.t());  // [L, Vd]
}

torch::Tensor Eagle3DraftModel::Embed(const torch::Tensor& input_ids) {
  torch::NoGradGuard no_grad;
  return embed_tokens.index_select(0, input_ids);  // [L, H]
}

RotaryTables Eagle3DraftModel::Rotary(const torch::Tensor& position_ids) const {
  // Angles p * inv_freq in the model dtype (float32 in a float32 run, as in
  // transformers), then [angles || angles].
  torch::Tensor angles = position_ids.to(inv_freq_.options()).unsqueeze(1) * inv_freq_.unsqueeze(0);
  torch::Tensor doubled = torch::cat({angles, angles}, -1);  // [L, d]
  return {doubled.cos(), doubled.sin()};
}

torch::Tensor Eagle3DraftModel::AttentionForward(AttentionBlock& attention, const torch::Tensor& input,
                                                 const RotaryTables& rotary, std::vector<KvBlock>& cache,
                                                 const AttentionLayout& layout) {
  const int64_t length = input.size(0);
  const int64_t heads = config_.num_attention_heads;
  const int64_t kv_heads = config_.num_key_value_heads;
  const int64_t head_dim = config_.head_dim;
  // One matmul for q, k and v: [L, din] x [din, (nH + 2 nKV) d].
  torch::Tensor fused = torch::cat({attention->q_proj->weight, attention->k_proj->weight,
                                    attention->v_proj->weight});
  torch::Tensor qkv = torch::matmul(input, fused.t());
  torch::Tensor q = qkv.narrow(1, 0, heads * head_dim).view({length, heads, head_dim});
  torch::Tensor k = qkv.narrow(1, heads * head_dim, kv_heads * head_dim).reshape({length, kv_heads, head_dim});
  torch::Tensor v = qkv.narrow(1, (heads + kv_heads) * head_dim, kv_heads * head_dim)
                        .reshape({length, kv_heads, head_dim});
  if (config_.arch == "qwen3") {
    q = RmsNorm(q, attention->q_norm->weight, config_.rms_norm_eps);
    k = RmsNorm(k, attention->k_norm->weight, config_.rms_norm_eps);
  }
  q = ApplyRotary(q, rotary);
  k = ApplyRotary(k, rotary);
  cache.push_back({k, v});
  torch::Tensor mixed = CachedAttention(q.contiguous(), cache, layout, 1.0 / std::sqrt(static_cast<double>(head_dim)));
  return torch::matmul(mixed.reshape({length, heads * head_dim}), attention->o_proj->weight.t());  // [L, H]
}

torch::Tensor Eagle3DraftModel::MlpForward(Mlp& mlp, const torch::Tensor& x) {
  torch::Tensor gate = torch::matmul(x, mlp->gate_proj->weight.t());  // [L, I]
  torch::Tensor up = torch::matmul(x, mlp->up_proj->weight.t());
  return torch::matmul(torch::silu(gate) * up, mlp->down_proj->weight.t());  // [L, H]
}

torch::Tensor Eagle3DraftModel::DecoderLayerForward(DecoderLayer& layer, const torch::Tensor& x,
                                                    const RotaryTables& rotary, std::vector<KvBlock>& cache,
                                                    const AttentionLayout& layout) {
  const double eps = config_.rms_norm_eps;
  torch::Tensor residual;
  torch::Tensor attention_input;
  if (layer->index == 0) {
    const int64_t hidden = config_.hidden_size;
    torch::Tensor embeddings = RmsNorm(x.narrow(1, 0, hidden), layer->input_layernorm->weight, eps);
    torch::Tensor raw_hidden = x.narrow(1, hidden, hidden);
    torch::Tensor hidden_normed = RmsNorm(raw_hidden, layer->hidden_norm->weight, eps);
    residual = config_.norm_before_residual ? hidden_normed : raw_hidden;
    attention_input = torch::cat({embeddings, hidden_normed}, -1);  // [L, 2H]
  } else {
    residual = x;
    attention_input = RmsNorm(x, layer->input_layernorm->weight, eps);
  }
  torch::Tensor u = residual + AttentionForward(layer->self_attn, attention_input, rotary, cache, layout);
  return u + MlpForward(layer->mlp, RmsNorm(u, layer->post_attention_layernorm->weight, eps));
}

torch::Tensor Eagle3DraftModel::ForwardLayers(torch::Tensor x, const RotaryTables& rotary,
                                              std::vector<std::vector<KvBlock>>& caches,
                                              const AttentionLayout& layout) {
  caches.resize(layers.size());
  for (size_t i = 0; i < layers.size(); ++i) {
    x = DecoderLayerForward(layers[i], x, rotary, caches[i], layout);
  }
  return x;
}

torch::Tensor Eagle3DraftModel::Logits(const torch::Tensor& hidden) {
  return torch::matmul(RmsNorm(hidden, norm->weight, config_.rms_norm_eps), lm_head->weight.t());
}

torch::Tensor Eagle3DraftModel::DraftToVerifierIds(const torch::Tensor& draft_indices) const {
  if (!d2t.defined()) return draft_indices;
  return draft_indices + d2t.index_select(0, draft_indices);
}

std::vector<std::pair<std::string, torch::Tensor>> Eagle3DraftModel::TrainableTensors() const {
  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  for (const auto& item : named_parameters()) {
    if (item.value().requires_grad()) tensors.emplace_back(item.key(), item.value());
  }
  return tensors;
}

std::vector<std::pair<std::string, torch::Tensor>> Eagle3DraftModel::SavedTensors() const {
  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  for (const auto& item : named_parameters()) tensors.emplace_back(item.key(), item.value());
  tensors.emplace_back("embed_tokens.weight", embed_tokens);
  if (d2t.defined()) {
    tensors.emplace_back("d2t", d2t);
    tensors.emplace_back("t2d", t2d);
  }
  return tensors;
}

Status SetVocabMapping(Eagle3DraftModel& model, const std::vector<int64_t>& d2t,
                       const std::vector<uint8_t>& t2d) {
  const DraftConfig& config = model.config();
  if (static_cast<int64_t>(d2t.size()) != config.draft_vocab_size ||
      static_cast<int64_t>(t2d.size()) != config.vocab_size) {
    return Status::Invalid("vocabulary mapping has d2t of length {} and t2d of length {}, but the "
                           "draft expects {} and {}",
                           d2t.size(), t2d.size(), config.draft_vocab_size, config.vocab_size);
  }
  auto device = model.options().device();
  model.d2t = torch::tensor(d2t, torch::TensorOptions().dtype(torch::kInt64)).to(device);
  std::vector<int64_t> flags(t2d.begin(), t2d.end());
  model.t2d = torch::tensor(flags, torch::TensorOptions().dtype(torch::kInt64)).to(torch::kBool).to(device);
  return Status::OK();
}

}  // namespace draftforge::train
