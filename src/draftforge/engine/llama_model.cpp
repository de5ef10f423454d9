#include "draftforge/engine/llama_model.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <set>

#include <fmt/ranges.h>
#include <spdlog/spdlog.h>

#include "draftforge/engine/rope.h"
#include "draftforge/io/safetensors.h"
#include "draftforge/io/torch_tensors.h"

namespace draftforge::engine {
namespace {

std::string ShapeString(c10::IntArrayRef shape) {
  return fmt::format("[{}]", fmt::join(shape, ", "));
}

// Finds tensors by name across the checkpoint's safetensors files and returns
// them as float32.
class WeightIndex {
 public:
  static Result<WeightIndex> Open(const std::string& model_dir) {
    DF_ASSIGN_OR_RAISE(std::vector<std::string> paths, ListWeightFiles(model_dir));
    WeightIndex index;
    index.model_dir_ = model_dir;
    for (const auto& path : paths) {
      DF_ASSIGN_OR_RAISE(io::SafetensorsFile file, io::SafetensorsFile::Open(path));
      index.files_.push_back(std::move(file));
    }
    for (size_t i = 0; i < index.files_.size(); ++i) {
      for (const auto& info : index.files_[i].tensors()) index.file_of_[info.name] = i;
    }
    return index;
  }

  bool Has(const std::string& name) const { return file_of_.count(name) != 0; }

  // Reads `name`, checks its shape and upcasts it to float32.
  Result<torch::Tensor> Get(const std::string& name, std::vector<int64_t> expected_shape) const {
    auto it = file_of_.find(name);
    if (it == file_of_.end()) {
      std::vector<std::string> paths;
      for (const auto& file : files_) paths.push_back(file.path());
      return Status::NotFound(
          "tensor '{}' not found in {}; the checkpoint is incomplete or is not a Llama-family "
          "model in Hugging Face layout",
          name, fmt::join(paths, ", "));
    }
    const io::SafetensorsFile& file = files_[it->second];
    DF_ASSIGN_OR_RAISE(torch::Tensor tensor, io::ReadTensor(file, name));
    if (tensor.sizes() != c10::IntArrayRef(expected_shape)) {
      return Status::Invalid("{}: tensor '{}' has shape {} but config.json implies {}",
                             file.path(), name, ShapeString(tensor.sizes()),
                             ShapeString(expected_shape));
    }
    if (!tensor.is_floating_point()) {
      return Status::Invalid("{}: tensor '{}' has integer dtype {}; quantized checkpoints are not "
                             "supported, use a float32, bfloat16 or float16 checkpoint",
                             file.path(), name, std::string(c10::toString(tensor.scalar_type())));
    }
    return tensor.to(torch::kFloat32);
  }

  // Reads `name` when present; returns an undefined tensor otherwise.
  Result<torch::Tensor> GetOptional(const std::string& name,
                                    std::vector<int64_t> expected_shape) const {
    if (!Has(name)) return torch::Tensor();
    return Get(name, std::move(expected_shape));
  }

 private:
  std::string model_dir_;
  std::vector<io::SafetensorsFile> files_;
  std::map<std::string, size_t> file_of_;
};

// Loads projections named `<prefix><part>.weight` (and optional `.bias`)
// and concatenates them along the output axis, so that one matmul computes
// all of them. A bias missing for some parts but present for others is zero.
Result<LinearWeights> LoadFusedLinear(const WeightIndex& index, const std::string& prefix,
                                      const std::vector<std::pair<std::string, int64_t>>& parts,
                                      int64_t in_features) {
  std::vector<torch::Tensor> weights;
  std::vector<torch::Tensor> biases;
  bool any_bias = false;
  for (const auto& [part, out_features] : parts) {
    DF_ASSIGN_OR_RAISE(torch::Tensor weight,
                       index.Get(prefix + part + ".weight", {out_features, in_features}));
    DF_ASSIGN_OR_RAISE(torch::Tensor bias,
                       index.GetOptional(prefix + part + ".bias", {out_features}));
    any_bias = any_bias || bias.defined();
    if (!bias.defined()) bias = torch::zeros({out_features}, torch::kFloat32);
    weights.push_back(weight);
    biases.push_back(bias);
  }
  LinearWeights linear;
  linear.weight = parts.size() == 1 ? weights[0] : torch::cat(weights, /*dim=*/0);
  if (any_bias) linear.bias = parts.size() == 1 ? biases[0] : torch::cat(biases, /*dim=*/0);
  return linear;
}

Status CheckSupported(const ModelConfig& config, const std::string& model_dir) {
  if (config.hidden_act != "silu") {
    return Status::Unimplemented("{}/config.json: hidden_act '{}' is not supported by the embedded "
                                 "engine; only silu (Llama, Mistral, Qwen2, Qwen3) is",
                                 model_dir, config.hidden_act);
  }
  if (config.num_attention_heads % config.num_key_value_heads != 0) {
    return Status::Invalid("{}/config.json: num_attention_heads {} is not a multiple of "
                           "num_key_value_heads {}",
                           model_dir, config.num_attention_heads, config.num_key_value_heads);
  }
  return Status::OK();
}

}  // namespace

Result<std::unique_ptr<LlamaModel>> LlamaModel::Load(const std::string& model_dir) {
  torch::NoGradGuard no_grad;
  std::unique_ptr<LlamaModel> model(new LlamaModel());
  model->model_dir_ = model_dir;
  DF_ASSIGN_OR_RAISE(model->config_, ModelConfig::Load(model_dir));
  const ModelConfig& config = model->config_;
  DF_RETURN_NOT_OK(CheckSupported(config, model_dir));
  DF_ASSIGN_OR_RAISE(model->inverse_frequencies_, ComputeRopeInverseFrequencies(config));
  DF_ASSIGN_OR_RAISE(WeightIndex index, WeightIndex::Open(model_dir));

  const int64_t hidden = config.hidden_size;
  const int64_t head_dim = config.head_dim;
  const int64_t q_width = config.num_attention_heads * head_dim;
  const int64_t kv_width = config.num_key_value_heads * head_dim;
  const int64_t intermediate = config.intermediate_size;

  DF_ASSIGN_OR_RAISE(model->embed_tokens_,
                     index.Get("model.embed_tokens.weight", {config.vocab_size, hidden}));
  for (int64_t i = 0; i < config.num_hidden_layers; ++i) {
    const std::string prefix = fmt::format("model.layers.{}.", i);
    DecoderLayerWeights layer;
    DF_ASSIGN_OR_RAISE(layer.input_norm, index.Get(prefix + "input_layernorm.weight", {hidden}));
    DF_ASSIGN_OR_RAISE(layer.qkv_proj,
                       LoadFusedLinear(index, prefix + "self_attn.",
                                       {{"q_proj", q_width}, {"k_proj", kv_width}, {"v_proj", kv_width}},
                                       hidden));
    DF_ASSIGN_OR_RAISE(layer.q_norm, index.GetOptional(prefix + "self_attn.q_norm.weight", {head_dim}));
    DF_ASSIGN_OR_RAISE(layer.k_norm, index.GetOptional(prefix + "self_attn.k_norm.weight", {head_dim}));
    if (layer.q_norm.defined() != layer.k_norm.defined()) {
      return Status::NotFound("{}: layer {} has only one of self_attn.q_norm.weight and "
                              "self_attn.k_norm.weight; Qwen3-style checkpoints need both",
                              model_dir, i);
    }
    DF_ASSIGN_OR_RAISE(layer.o_proj,
                       LoadFusedLinear(index, prefix + "self_attn.", {{"o_proj", hidden}}, q_width));
    DF_ASSIGN_OR_RAISE(layer.post_attention_norm,
                       index.Get(prefix + "post_attention_layernorm.weight", {hidden}));
    DF_ASSIGN_OR_RAISE(layer.gate_up_proj,
                       LoadFusedLinear(index, prefix + "mlp.",
                                       {{"gate_proj", intermediate}, {"up_proj", intermediate}},
                                       hidden));
    DF_ASSIGN_OR_RAISE(layer.down_proj,
                       LoadFusedLinear(index, prefix + "mlp.", {{"down_proj", hidden}}, intermediate));
    model->layers_.push_back(std::move(layer));
  }
  DF_ASSIGN_OR_RAISE(model->final_norm_, index.Get("model.norm.weight", {hidden}));

  // Tied checkpoints usually omit lm_head.weight; a stored one wins either way.
  if (index.Has("lm_head.weight") || !config.tie_word_embeddings) {
    DF_ASSIGN_OR_RAISE(model->lm_head_, index.Get("lm_head.weight", {config.vocab_size, hidden}));
  } else {
    model->lm_head_ = model->embed_tokens_;
  }
  return model;
}

Result<std::vector<int64_t>> LlamaModel::CheckLayerIds(std::span<const int64_t> layer_ids) const {
  std::vector<int64_t> sorted(layer_ids.begin(), layer_ids.end());
  std::sort(sorted.begin(), sorted.end());
  for (size_t i = 0; i < sorted.size(); ++i) {
    if (sorted[i] < 0 || sorted[i] > num_layers()) {
      return Status::Invalid("layer id {} is out of range: {} has {} decoder layers, so ids must "
                             "lie in 0..{} (0 = embeddings, {} = last layer before the final norm)",
                             sorted[i], model_dir_, num_layers(), num_layers(), num_layers());
    }
    if (i > 0 && sorted[i] == sorted[i - 1]) {
      return Status::Invalid("layer id {} is given twice in [{}]; every layer id must be distinct "
                             "because vLLM stores one slot per id",
                             sorted[i], fmt::join(layer_ids, ", "));
    }
  }
  return sorted;
}

torch::Tensor LlamaModel::RmsNorm(const torch::Tensor& x, const torch::Tensor& weight) const {
  // Statistics over the last axis; everything is float32 already.
  torch::Tensor inverse_rms = torch::rsqrt(x.pow(2).mean(-1, /*keepdim=*/true) + config_.rms_norm_eps);
  return x * inverse_rms * weight;
}

std::array<torch::Tensor, 3> LlamaModel::ProjectQkv(const DecoderLayerWeights& layer,
                                                    const torch::Tensor& normed,
                                                    const RotaryTables& tables) const {
  const int64_t tokens = normed.size(0);
  const int64_t head_dim = config_.head_dim;
  const int64_t num_heads = config_.num_attention_heads;
  const int64_t num_kv_heads = config_.num_key_value_heads;

  torch::Tensor qkv = torch::linear(normed, layer.qkv_proj.weight, layer.qkv_proj.bias);  // [T, (nH + 2 nKV) d]
  torch::Tensor q = qkv.narrow(1, 0, num_heads * head_dim).view({tokens, num_heads, head_dim});
  torch::Tensor k = qkv.narrow(1, num_heads * head_dim, num_kv_heads * head_dim)
                        .view({tokens, num_kv_heads, head_dim});
  torch::Tensor v = qkv.narrow(1, (num_heads + num_kv_heads) * head_dim, num_kv_heads * head_dim)
                        .view({tokens, num_kv_heads, head_dim});
  // NOTE: the Qwen2 bias and Qwen3 q_norm/k_norm paths are not yet tested
  // against a reference implementation; only Llama checkpoints are.
  if (layer.q_norm.defined()) {
    q = RmsNorm(q, layer.q_norm);
    k = RmsNorm(k, layer.k_norm);
  }

  q = ApplyRotary(q.transpose(0, 1), tables);  // [nH, T, d]
  k = ApplyRotary(k.transpose(0, 1), tables);  // [nKV, T, d]
  v = v.transpose(0, 1);                       // [nKV, T, d]
  return {q, k, v};
}

torch::Tensor LlamaModel::CausalMask(int64_t tokens, int64_t offset) const {
  const int64_t group = config_.num_attention_heads / config_.num_key_value_heads;
  return torch::full({tokens, offset + tokens}, -std::numeric_limits<float>::infinity(), torch::kFloat32)
      .triu(offset + 1)
      .repeat({group, 1});  // [g T, offset + T]: -inf where key position > offset + query row
}

torch::Tensor LlamaModel::Attend(const DecoderLayerWeights& layer, const torch::Tensor& q,
                                 const torch::Tensor& k, const torch::Tensor& v, int64_t offset,
                                 torch::Tensor causal_mask) const {
  const int64_t tokens = q.size(1);
  const int64_t head_dim = config_.head_dim;
  const int64_t num_heads = config_.num_attention_heads;
  const int64_t num_kv_heads = config_.num_key_value_heads;
  const int64_t group = num_heads / num_kv_heads;
  const double scale = 1.0 / std::sqrt(double(head_dim));

  // Grouped-query attention without repeating k and v: query head h uses kv
  // head h / group, so the group's queries are stacked along the row axis.
  torch::Tensor grouped_q = q.reshape({num_kv_heads, group * tokens, head_dim});  // [nKV, g T, d]
  torch::Tensor scores;
  if (tokens == 1 && offset > 0) {
    // A single query attends to every key, so it needs no mask. Forward() (offset
    // 0) keeps the masked path, so its results stay bit for bit as before.
    scores = torch::bmm(grouped_q, k.transpose(1, 2)).mul_(scale);  // [nKV, g, keys]
  } else {
    if (!causal_mask.defined()) causal_mask = CausalMask(tokens, offset);  // [g T, keys]
    scores = torch::baddbmm(causal_mask, grouped_q, k.transpose(1, 2),
                            /*beta=*/1.0, /*alpha=*/scale);  // [nKV, g T, keys]
  }
  torch::Tensor probabilities = torch::softmax(scores, -1);
  torch::Tensor context = torch::bmm(probabilities, v);  // [nKV, g T, d]
  context = context.view({num_heads, tokens, head_dim}).transpose(0, 1).reshape({tokens, num_heads * head_dim});
  return torch::linear(context, layer.o_proj.weight, layer.o_proj.bias);  // [T, H]
}

torch::Tensor LlamaModel::Attention(const DecoderLayerWeights& layer, const torch::Tensor& normed,
                                    const torch::Tensor& positions) const {
  RotaryTables tables = ComputeRotaryTables(inverse_frequencies_, positions);
  auto [q, k, v] = ProjectQkv(layer, normed, tables);
  return Attend(layer, q, k, v, /*offset=*/0);
}

torch::Tensor LlamaModel::Mlp(const DecoderLayerWeights& layer, const torch::Tensor& normed) const {
  torch::Tensor gate_up = torch::linear(normed, layer.gate_up_proj.weight, layer.gate_up_proj.bias);  // [T, 2 I]
  const int64_t intermediate = config_.intermediate_size;
  torch::Tensor activated =
      torch::silu(gate_up.narrow(1, 0, intermediate)) * gate_up.narrow(1, intermediate, intermediate);
  return torch::linear(activated, layer.down_proj.weight, layer.down_proj.bias);  // [T, H]
}

Status LlamaModel::CheckTokenIds(std::span<const int64_t> token_ids) const {
  for (size_t t = 0; t < token_ids.size(); ++t) {
    if (token_ids[t] < 0 || token_ids[t] >= config_.vocab_size) {
      return Status::Invalid("token id {} at position {} is outside the vocabulary 0..{} of {}",
                             token_ids[t], t, config_.vocab_size - 1, model_dir_);
    }
  }
  return Status::OK();
}

Result<ForwardResult> LlamaModel::Forward(std::span<const int64_t> token_ids,
                                          std::span<const int64_t> layer_ids,
                                          bool compute_logits) const {
  const int64_t tokens = static_cast<int64_t>(token_ids.size());
  if (tokens == 0) return Status::Invalid("cannot run the model on an empty token sequence");
  if (tokens > config_.max_position_embeddings) {
    return Status::Invalid("sequence of {} tokens exceeds max_position_embeddings {} of {}; vLLM "
                           "would reject it too, so drop or truncate such rows",
                           tokens, config_.max_position_embeddings, model_dir_);
  }
  DF_RETURN_NOT_OK(CheckTokenIds(token_ids));
  ForwardResult result;
  DF_ASSIGN_OR_RAISE(result.layer_ids, CheckLayerIds(layer_ids));

  try {
    torch::NoGradGuard no_grad;
    torch::Tensor ids = torch::from_blob(const_cast<int64_t*>(token_ids.data()), {tokens},
                                         torch::kInt64);  // [T], read-only use
    torch::Tensor positions = torch::arange(tokens, torch::kInt64);  // [T]
    torch::Tensor residual = embed_tokens_.index_select(0, ids);    // [T, H]

    std::vector<torch::Tensor> captured;
    size_t next_slot = 0;
    auto capture_if_requested = [&](int64_t layer_id) {
      if (next_slot < result.layer_ids.size() && result.layer_ids[next_slot] == layer_id) {
        captured.push_back(residual);
        ++next_slot;
      }
    };

    capture_if_requested(0);
    for (int64_t i = 0; i < num_layers(); ++i) {
      const DecoderLayerWeights& layer = layers_[i];
      residual = residual + Attention(layer, RmsNorm(residual, layer.input_norm), positions);
      residual = residual + Mlp(layer, RmsNorm(residual, layer.post_attention_norm));
      capture_if_requested(i + 1);
    }

    AssembleOutputs(captured, residual, compute_logits, result);
  } catch (const c10::Error& error) {
    return Status::Internal("forward pass of {} failed in libtorch: {}", model_dir_,
                            error.what_without_backtrace());
  }
  return result;
}

void LlamaModel::AssembleOutputs(const std::vector<torch::Tensor>& captured, const torch::Tensor& residual,
                                 bool compute_logits, ForwardResult& result) const {
  const int64_t tokens = residual.size(0);
  if (captured.empty()) {
    result.hidden_states = torch::empty({tokens, 0, config_.hidden_size}, torch::kFloat32);
  } else {
    result.hidden_states = torch::stack(captured, /*dim=*/1);  // [T, L, H]
  }
  if (compute_logits) {
    result.logits = torch::linear(RmsNorm(residual, final_norm_), lm_head_);  // [T, V]
  }
}

Result<KvCache> LlamaModel::NewCache(int64_t capacity) const {
  if (capacity < 1 || capacity > config_.max_position_embeddings) {
    return Status::Invalid("KV cache capacity {} is invalid for {}: it must lie in 1..{} "
                           "(max_position_embeddings)",
                           capacity, model_dir_, config_.max_position_embeddings);
  }
  KvCache cache;
  cache.capacity_ = capacity;
  for (int64_t i = 0; i < num_layers(); ++i) {
    auto shape = std::vector<int64_t>{config_.num_key_value_heads, capacity, config_.head_dim};
    cache.keys_.push_back(torch::empty(shape, torch::kFloat32));
    cache.values_.push_back(torch::empty(shape, torch::kFloat32));
  }
  return cache;
}

Result<ForwardResult> LlamaModel::ForwardIncremental(std::span<const int64_t> token_ids,
                                                     std::span<const int64_t> layer_ids,
                                                     KvCache& cache, bool compute_logits) const {
  const int64_t tokens = static_cast<int64_t>(token_ids.size());
  const int64_t offset = cache.length();
  if (tokens == 0) return Status::Invalid("cannot run the model on an empty token sequence");
  if (static_cast<int64_t>(cache.keys_.size()) != num_layers()) {
    return Status::Invalid("KV cache has {} layers but {} has {}; create it with NewCache()",
                           cache.keys_.size(), model_dir_, num_layers());
  }
  if (offset + tokens > cache.capacity()) {
    return Status::Invalid("{} cached plus {} new tokens exceed the KV cache capacity {} of {}; "
                           "create a larger cache or shorten the sequence",
                           offset, tokens, cache.capacity(), model_dir_);
  }
  DF_RETURN_NOT_OK(CheckTokenIds(token_ids));
  ForwardResult result;
  DF_ASSIGN_OR_RAISE(result.layer_ids, CheckLayerIds(layer_ids));

  try {
    torch::NoGradGuard no_grad;
    torch::Tensor ids = torch::from_blob(const_cast<int64_t*>(token_ids.data()), {tokens},
                                         torch::kInt64);  // [T], read-only use
    torch::Tensor positions = torch::arange(offset, offset + tokens, torch::kInt64);  // [T]
    RotaryTables tables = ComputeRotaryTables(inverse_frequencies_, positions);
    torch::Tensor residual = embed_tokens_.index_select(0, ids);  // [T, H]

    std::vector<torch::Tensor> captured;
    size_t next_slot = 0;
    auto capture_if_requested = [&](int64_t layer_id) {
      if (next_slot < result.layer_ids.size() && result.layer_ids[next_slot] == layer_id) {
        captured.push_back(residual);
        ++next_slot;
      }
    };

    // Every layer shares the mask; a single new token needs none.
    torch::Tensor causal_mask;
    if (tokens > 1 || offset == 0) causal_mask = CausalMask(tokens, offset);

    capture_if_requested(0);
    for (int64_t i = 0; i < num_layers(); ++i) {
      const DecoderLayerWeights& layer = layers_[i];
      auto [q, k, v] = ProjectQkv(layer, RmsNorm(residual, layer.input_norm), tables);
      cache.keys_[i].narrow(1, offset, tokens).copy_(k);
      cache.values_[i].narrow(1, offset, tokens).copy_(v);
      torch::Tensor all_keys = cache.keys_[i].narrow(1, 0, offset + tokens);      // [nKV, offset + T, d]
      torch::Tensor all_values = cache.values_[i].narrow(1, 0, offset + tokens);  // [nKV, offset + T, d]
      residual = residual + Attend(layer, q, all_keys, all_values, offset, causal_mask);
      residual = residual + Mlp(layer, RmsNorm(residual, layer.post_attention_norm));
      capture_if_requested(i + 1);
    }

    AssembleOutputs(captured, residual, compute_logits, result);
  } catch (const c10::Error& error) {
    return Status::Internal("incremental forward pass of {} failed in libtorch: {}", model_dir_,
                            error.what_without_backtrace());
  }
  cache.length_ = offset + tokens;
  return result;
}

}  // namespace draftforge::engine
