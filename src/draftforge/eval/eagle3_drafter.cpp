#include "draftforge/eval/eagle3_drafter.h"

#include <fmt/ranges.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <limits>
#include <map>

#include "draftforge/io/safetensors.h"
#include "draftforge/io/torch_tensors.h"
#include "draftforge/train/verifier_weights.h"
#include "draftforge/util/fs.h"

namespace draftforge::eval {
namespace {

std::string ShapeString(c10::IntArrayRef shape) { return fmt::format("[{}]", fmt::join(shape, ", ")); }

// Builds the draft config from transformer_layer_config and the top-level
// EAGLE-3 fields. Absent norm_before_residual reads as true, as vLLM's
// speculators reader does.
Result<train::DraftConfig> ParseDraftConfig(const nlohmann::json& json, const std::string& path) {
  if (!json.contains("transformer_layer_config") || !json["transformer_layer_config"].is_object()) {
    return Status::Invalid("{}: missing object 'transformer_layer_config'; this is not an EAGLE-3 speculator "
                           "config as draftforge train or speculators write it",
                           path);
  }
  DF_ASSIGN_OR_RAISE(engine::ModelConfig layer,
                     engine::ModelConfig::FromJson(json["transformer_layer_config"],
                                                   path + " (transformer_layer_config)"));

  train::DraftConfig config;
  config.arch = layer.model_type.empty() ? "llama" : layer.model_type;
  if (config.arch != "llama" && config.arch != "qwen3") {
    return Status::Unimplemented("{}: transformer_layer_config.model_type '{}' is not supported; the draft "
                                 "layers must be llama or qwen3",
                                 path, config.arch);
  }
  config.hidden_size = layer.hidden_size;
  config.intermediate_size = layer.intermediate_size;
  config.num_attention_heads = layer.num_attention_heads;
  config.num_key_value_heads = layer.num_key_value_heads;
  config.head_dim = layer.head_dim;
  config.vocab_size = layer.vocab_size;
  config.num_layers = layer.num_hidden_layers;
  config.max_position_embeddings = layer.max_position_embeddings;
  config.rms_norm_eps = layer.rms_norm_eps;
  config.initializer_range = layer.initializer_range;
  config.hidden_act = layer.hidden_act;
  config.rope_theta = layer.rope_theta;
  config.rope_scaling = layer.rope_scaling;

  config.draft_vocab_size = json.value("draft_vocab_size", config.vocab_size);
  config.norm_before_residual = json.value("norm_before_residual", true);
  config.norm_before_fc = json.value("norm_before_fc", false);

  if (config.hidden_act != "silu") {
    return Status::Unimplemented("{}: transformer_layer_config.hidden_act '{}' is not supported; draft inference "
                                 "implements silu only",
                                 path, config.hidden_act);
  }
  if (config.num_layers < 1) {
    return Status::Invalid("{}: transformer_layer_config.num_hidden_layers is {}; a draft needs at least 1",
                           path, config.num_layers);
  }
  if (config.draft_vocab_size < 1 || config.draft_vocab_size > config.vocab_size) {
    return Status::Invalid("{}: draft_vocab_size {} must lie in 1..{} (transformer_layer_config.vocab_size)",
                           path, config.draft_vocab_size, config.vocab_size);
  }
  return config;
}

// Reads `name` from the checkpoint as float32 and checks its shape.
Result<torch::Tensor> ReadWeight(const io::SafetensorsFile& file, const std::string& name,
                                 c10::IntArrayRef expected_shape) {
  DF_ASSIGN_OR_RAISE(torch::Tensor tensor, io::ReadTensor(file, name));
  if (tensor.sizes() != expected_shape) {
    return Status::Invalid("{}: tensor '{}' has shape {} but config.json implies {}", file.path(), name,
                           ShapeString(tensor.sizes()), ShapeString(expected_shape));
  }
  return tensor.to(torch::kFloat32);
}

// Reads d2t and t2d, deriving t2d from d2t when the file has only d2t, and
// checks that every mapped id i + d2t[i] is a verifier id.
Status InstallVocabMapping(const io::SafetensorsFile& file, const std::map<std::string, bool>& names,
                           train::Eagle3DraftModel& model) {
  const train::DraftConfig& config = model.config();
  if (config.draft_vocab_size == config.vocab_size) return Status::OK();
  if (names.count("d2t") == 0) {
    return Status::NotFound("{}: tensor 'd2t' not found, but draft_vocab_size {} is below vocab_size {}, so the "
                            "draft needs its draft-to-target mapping",
                            file.path(), config.draft_vocab_size, config.vocab_size);
  }
  DF_ASSIGN_OR_RAISE(torch::Tensor d2t_tensor, io::ReadTensor(file, "d2t"));
  if (d2t_tensor.sizes() != c10::IntArrayRef({config.draft_vocab_size})) {
    return Status::Invalid("{}: tensor 'd2t' has shape {} but draft_vocab_size is {}", file.path(),
                           ShapeString(d2t_tensor.sizes()), config.draft_vocab_size);
  }
  d2t_tensor = d2t_tensor.to(torch::kInt64).contiguous();
  std::vector<int64_t> d2t(d2t_tensor.data_ptr<int64_t>(), d2t_tensor.data_ptr<int64_t>() + d2t_tensor.numel());
  std::vector<uint8_t> t2d(config.vocab_size, 0);
  for (int64_t i = 0; i < config.draft_vocab_size; ++i) {
    int64_t target = i + d2t[i];
    if (target < 0 || target >= config.vocab_size) {
      return Status::Invalid("{}: d2t[{}] = {} maps draft index {} to token id {}, outside the verifier "
                             "vocabulary 0..{}",
                             file.path(), i, d2t[i], i, target, config.vocab_size - 1);
    }
    t2d[target] = 1;
  }
  return train::SetVocabMapping(model, d2t, t2d);
}

// Returns the model name of a verifier directory: "org/name" for a
// Hugging Face cache snapshot (.../models--org--name/snapshots/<hash>), else
// the last component of its canonical path (so "." and symlinks resolve).
std::string VerifierModelName(const std::string& verifier_dir) {
  std::error_code error;
  std::filesystem::path path = std::filesystem::weakly_canonical(verifier_dir, error);
  if (error) path = std::filesystem::path(verifier_dir).lexically_normal();
  for (const auto& component : path) {
    const std::string text = component.string();
    if (text.rfind("models--", 0) == 0) {
      std::string name = text.substr(8);
      const size_t separator = name.find("--");
      if (separator != std::string::npos) name.replace(separator, 2, "/");
      return name;
    }
  }
  std::string last = path.filename().string();
  if (last.empty()) last = path.parent_path().filename().string();
  return last;
}

// Warns when speculators_config.verifier.name_or_path names a model other than
// `verifier_dir`. A name that is an existing path must be the same directory.
// Other names (hub ids, or paths of another machine) are compared with the
// verifier's model name by their last component, because the same model is
// often stored under another parent directory. A draft with the right shapes
// for another verifier still loads, but it accepts less.
void WarnOnOtherVerifierName(const nlohmann::json& json, const std::string& path, const std::string& verifier_dir) {
  const nlohmann::json* name = &json;
  for (const char* key : {"speculators_config", "verifier", "name_or_path"}) {
    if (!name->is_object() || !name->contains(key)) return;
    name = &(*name)[key];
  }
  if (!name->is_string() || name->get<std::string>().empty()) return;
  const std::string trained_for = name->get<std::string>();

  std::error_code error;
  bool same;
  if (std::filesystem::exists(trained_for, error)) {
    same = std::filesystem::equivalent(trained_for, verifier_dir, error) && !error;
  } else {
    auto last_component = [](const std::string& text) {
      std::filesystem::path normal = std::filesystem::path(text).lexically_normal();
      std::string last = normal.filename().string();
      return last.empty() ? normal.parent_path().filename().string() : last;
    };
    same = last_component(trained_for) == last_component(VerifierModelName(verifier_dir));
  }
  if (!same) {
    spdlog::warn("{}: the draft was trained for verifier '{}' (speculators_config.verifier.name_or_path), but it "
                 "runs with {}; its acceptance here says little about that pairing",
                 path, trained_for, verifier_dir);
  }
}

}  // namespace

Result<DraftCheckpointConfig> LoadDraftCheckpointConfig(const std::string& checkpoint_dir,
                                                        const engine::LlamaModel& verifier) {
  const std::string path = checkpoint_dir + "/config.json";
  DF_ASSIGN_OR_RAISE(std::string text, ReadFileToString(path));
  nlohmann::json json = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded() || !json.is_object()) return Status::Invalid("{}: not a JSON object", path);

  DraftCheckpointConfig result;
  DF_ASSIGN_OR_RAISE(result.draft, ParseDraftConfig(json, path));
  result.norm_output = json.value("norm_output", false);

  // Every mismatch is collected, so that one run names all of them.
  const engine::ModelConfig& target = verifier.config();
  std::vector<std::string> mismatches;
  if (result.draft.hidden_size != target.hidden_size) {
    mismatches.push_back(fmt::format("hidden_size: draft {} (transformer_layer_config.hidden_size), verifier {}",
                                     result.draft.hidden_size, target.hidden_size));
  }
  if (result.draft.vocab_size != target.vocab_size) {
    mismatches.push_back(fmt::format("vocab_size: draft {} (transformer_layer_config.vocab_size), verifier {}",
                                     result.draft.vocab_size, target.vocab_size));
  }
  // vLLM sizes fc from target_hidden_size when it is set (3 * target_hidden_size
  // inputs), so a value other than the verifier's would not load there either.
  if (json.contains("target_hidden_size") && !json["target_hidden_size"].is_null()) {
    const auto& value = json["target_hidden_size"];
    if (!value.is_number_integer()) {
      return Status::Invalid("{}: target_hidden_size must be an integer or null, got {}", path, value.dump());
    }
    if (value.get<int64_t>() != target.hidden_size) {
      mismatches.push_back(fmt::format("target_hidden_size: draft {}, verifier hidden_size {}", value.get<int64_t>(),
                                       target.hidden_size));
    }
  }
  WarnOnOtherVerifierName(json, path, verifier.model_dir());
  if (json.contains("eagle_aux_hidden_state_layer_ids") && !json["eagle_aux_hidden_state_layer_ids"].is_null()) {
    const auto& ids = json["eagle_aux_hidden_state_layer_ids"];
    if (!ids.is_array() || !std::all_of(ids.begin(), ids.end(), [](const auto& id) { return id.is_number_integer(); })) {
      return Status::Invalid("{}: eagle_aux_hidden_state_layer_ids must be an array of integers, got {}", path,
                             ids.dump());
    }
    result.aux_layer_ids = ids.get<std::vector<int64_t>>();
  } else {
    std::vector<int64_t> defaults = engine::DefaultLayerIds(target.num_hidden_layers);
    result.aux_layer_ids.assign(defaults.begin(), defaults.begin() + 3);
    spdlog::warn("{} has no eagle_aux_hidden_state_layer_ids; using vLLM's default [{}]", path,
                 fmt::join(result.aux_layer_ids, ", "));
  }
  if (result.aux_layer_ids.size() != 3) {
    mismatches.push_back(fmt::format("eagle_aux_hidden_state_layer_ids: [{}] has {} ids, fc expects 3",
                                     fmt::join(result.aux_layer_ids, ", "), result.aux_layer_ids.size()));
  } else if (auto checked = verifier.CheckLayerIds(result.aux_layer_ids); !checked.ok()) {
    mismatches.push_back(fmt::format("eagle_aux_hidden_state_layer_ids: [{}] do not fit the verifier: {}",
                                     fmt::join(result.aux_layer_ids, ", "), checked.status().message()));
  }
  if (!mismatches.empty()) {
    return Status::Invalid("draft {} does not match verifier {}: {}; use the verifier the draft was trained "
                           "for",
                           checkpoint_dir, verifier.model_dir(), fmt::join(mismatches, "; "));
  }
  return result;
}

Result<std::unique_ptr<Eagle3Drafter>> Eagle3Drafter::Load(const std::string& checkpoint_dir,
                                                           const engine::LlamaModel& verifier,
                                                           int64_t cache_capacity) {
  std::unique_ptr<Eagle3Drafter> drafter(new Eagle3Drafter());
  DF_ASSIGN_OR_RAISE(drafter->config_, LoadDraftCheckpointConfig(checkpoint_dir, verifier));
  const train::DraftConfig& config = drafter->config_.draft;
  if (cache_capacity < 1) return Status::Invalid("draft KV cache capacity must be at least 1, got {}", cache_capacity);

  torch::NoGradGuard no_grad;
  try {
    drafter->model_ = std::make_unique<train::Eagle3DraftModel>(config, torch::TensorOptions().dtype(torch::kFloat32));
  } catch (const c10::Error& error) {
    return Status::Invalid("{}: cannot build the draft model: {}", checkpoint_dir, error.what_without_backtrace());
  }
  train::Eagle3DraftModel& model = *drafter->model_;

  const std::string weights_path = checkpoint_dir + "/model.safetensors";
  DF_ASSIGN_OR_RAISE(io::SafetensorsFile file, io::SafetensorsFile::Open(weights_path));
  std::map<std::string, bool> names;
  for (const auto& info : file.tensors()) names[info.name] = true;

  DF_RETURN_NOT_OK(InstallVocabMapping(file, names, model));
  DF_ASSIGN_OR_RAISE(train::VerifierWeights verifier_weights, train::LoadVerifierWeights(verifier.model_dir()));
  const bool has_lm_head = names.count("lm_head.weight") != 0;
  DF_RETURN_NOT_OK(train::InstallVerifierWeights(model, verifier_weights, /*keep_lm_head=*/has_lm_head));

  for (auto& item : model.named_parameters()) {
    if (item.key() == "lm_head.weight" && !has_lm_head) continue;
    if (names.count(item.key()) == 0) {
      return Status::NotFound("{}: tensor '{}' not found; the checkpoint does not match its config.json "
                              "(num_hidden_layers, model_type, norm_before_fc)",
                              weights_path, item.key());
    }
    DF_ASSIGN_OR_RAISE(torch::Tensor value, ReadWeight(file, item.key(), item.value().sizes()));
    item.value().copy_(value);
  }
  // vLLM uses the verifier's embedding table when the checkpoint has none or
  // an identical one, and the checkpoint's otherwise; both cases amount to
  // "the checkpoint's when present".
  if (names.count("embed_tokens.weight") != 0) {
    DF_ASSIGN_OR_RAISE(model.embed_tokens, ReadWeight(file, "embed_tokens.weight", model.embed_tokens.sizes()));
  }

  const double scale = 1.0 / std::sqrt(static_cast<double>(config.head_dim));
  for (const auto& layer : model.layers) {
    const auto& attention = layer->self_attn;
    // Scaling q before RoPE equals scaling the scores, because RoPE is linear.
    torch::Tensor qkv = torch::cat({attention->q_proj->weight * scale, attention->k_proj->weight,
                                    attention->v_proj->weight});
    // The weights of the norms that feed only a matmul fold into its input
    // columns: input_layernorm (the embedding half in layer 0) and
    // post_attention_layernorm.
    const int64_t hidden = config.hidden_size;
    torch::Tensor input_scale = layer->input_layernorm->weight;
    if (layer->index == 0) input_scale = torch::cat({input_scale, torch::ones({hidden}, torch::kFloat32)});
    drafter->qkv_t_.push_back((qkv * input_scale).t().contiguous());
    drafter->o_t_.push_back(attention->o_proj->weight.t().contiguous());
    torch::Tensor gate_up = torch::cat({layer->mlp->gate_proj->weight, layer->mlp->up_proj->weight});
    drafter->gate_up_t_.push_back((gate_up * layer->post_attention_layernorm->weight).t().contiguous());
    drafter->down_t_.push_back(layer->mlp->down_proj->weight.t().contiguous());
    std::vector<int64_t> shape = {config.num_key_value_heads, cache_capacity, config.head_dim};
    drafter->keys_.push_back(torch::empty(shape, torch::kFloat32));
    drafter->values_.push_back(torch::empty(shape, torch::kFloat32));
  }
  // argmax(norm(x) W^T) = argmax((x * w) W^T), because the RMS factor is
  // one positive number per row, so the final norm folds into lm_head.
  drafter->lm_head_t_ = (model.lm_head->weight * model.norm->weight).t().contiguous();
  if (model.d2t.defined()) {
    torch::Tensor d2t = model.d2t.to(torch::kCPU).contiguous();
    drafter->d2t_.assign(d2t.data_ptr<int64_t>(), d2t.data_ptr<int64_t>() + d2t.numel());
  }
  drafter->capacity_ = cache_capacity;
  train::RotaryTables rotary = model.Rotary(torch::arange(cache_capacity, torch::kInt64));  // [capacity, d] each
  const int64_t half = config.head_dim / 2;
  drafter->cos_ = rotary.cos;
  drafter->signed_sin_ = torch::cat({-rotary.sin.narrow(1, 0, half), rotary.sin.narrow(1, half, half)}, 1);
  drafter->swap_halves_ = torch::cat({torch::arange(half, 2 * half, torch::kInt64), torch::arange(0, half, torch::kInt64)});
  spdlog::info("loaded draft {}: {} layer(s), draft vocabulary {}, aux layer ids [{}]", checkpoint_dir,
               config.num_layers, config.draft_vocab_size, fmt::join(drafter->config_.aux_layer_ids, ", "));
  return drafter;
}

namespace {

// RMSNorm in float32: x / sqrt(mean(x^2) + eps), times `weight` unless that
// is undefined because the weight was folded into the next matmul.
torch::Tensor Norm(const torch::Tensor& x, const torch::Tensor& weight, double eps) {
  torch::Tensor normalized = x * torch::rsqrt(x.pow(2).mean(-1, /*keepdim=*/true) + eps);
  return weight.defined() ? normalized * weight : normalized;
}

// RoPE with the half-split convention: x cos + rotate_half(x) sin, where
// rotate_half(x) sin = [x2 || x1] [-sin || sin]. x [n, heads, d], cos and
// signed_sin [n, 1, d], `swap_halves` the index [d/2 .. d-1, 0 .. d/2-1].
torch::Tensor Rotate(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& signed_sin,
                     const torch::Tensor& swap_halves) {
  return torch::addcmul(x * cos, x.index_select(-1, swap_halves), signed_sin);
}

}  // namespace

torch::Tensor Eagle3Drafter::Attention(size_t layer_index, const torch::Tensor& input, const torch::Tensor& cos,
                                       const torch::Tensor& signed_sin) {
  const train::DraftConfig& config = config_.draft;
  const int64_t length = input.size(0);
  const int64_t offset = cache_length_;
  const int64_t heads = config.num_attention_heads;
  const int64_t kv_heads = config.num_key_value_heads;
  const int64_t head_dim = config.head_dim;
  const int64_t group = heads / kv_heads;

  torch::Tensor qkv = torch::matmul(input, qkv_t_[layer_index]);  // [n, (nH + 2 nKV) d]
  torch::Tensor v = qkv.narrow(1, (heads + kv_heads) * head_dim, kv_heads * head_dim)
                        .view({length, kv_heads, head_dim});
  torch::Tensor q;
  torch::Tensor k;
  if (config.arch == "qwen3") {
    auto& attention = model_->layers[layer_index]->self_attn;
    // q_norm would cancel the 1/sqrt(d) folded into the q weights, so it is
    // divided out before the norm and applied after it.
    // NOTE: no test runs a Qwen3 draft through this path yet.
    const double scale = 1.0 / std::sqrt(static_cast<double>(head_dim));
    q = qkv.narrow(1, 0, heads * head_dim).view({length, heads, head_dim}) / scale;
    k = qkv.narrow(1, heads * head_dim, kv_heads * head_dim).view({length, kv_heads, head_dim});
    q = Rotate(Norm(q, attention->q_norm->weight, config.rms_norm_eps) * scale, cos, signed_sin, swap_halves_);
    k = Rotate(Norm(k, attention->k_norm->weight, config.rms_norm_eps), cos, signed_sin, swap_halves_);
  } else {
    // q and k rotate together: [n, nH + nKV, d].
    torch::Tensor qk = Rotate(qkv.narrow(1, 0, (heads + kv_heads) * head_dim).view({length, heads + kv_heads, head_dim}),
                              cos, signed_sin, swap_halves_);
    q = qk.narrow(1, 0, heads);
    k = qk.narrow(1, heads, kv_heads);
  }
  keys_[layer_index].narrow(1, offset, length).copy_(k.transpose(0, 1));
  values_[layer_index].narrow(1, offset, length).copy_(v.transpose(0, 1));
  torch::Tensor all_keys = keys_[layer_index].narrow(1, 0, offset + length);      // [nKV, offset + n, d]
  torch::Tensor all_values = values_[layer_index].narrow(1, 0, offset + length);  // [nKV, offset + n, d]

  // Query head h reads kv head h / group; the group's queries are stacked.
  torch::Tensor grouped_q = q.transpose(0, 1).reshape({kv_heads, group * length, head_dim});  // [nKV, g n, d]
  torch::Tensor scores = torch::bmm(grouped_q, all_keys.transpose(1, 2));  // [nKV, g n, offset + n]
  if (length > 1) {
    torch::Tensor causal_mask =
        torch::full({length, offset + length}, -std::numeric_limits<float>::infinity(), torch::kFloat32)
            .triu(offset + 1)
            .repeat({group, 1});  // [g n, offset + n]: slot t attends to positions 0 .. offset + t
    scores.add_(causal_mask);
  }
  torch::Tensor context = torch::bmm(torch::softmax(scores, -1), all_values);  // [nKV, g n, d]
  context = context.view({heads, length, head_dim}).transpose(0, 1).reshape({length, heads * head_dim});
  return torch::matmul(context, o_t_[layer_index]);  // [n, H]
}

DraftStep Eagle3Drafter::RunLayers(const torch::Tensor& hidden, const torch::Tensor& token_embeddings) {
  const train::DraftConfig& config = config_.draft;
  const double eps = config.rms_norm_eps;
  const int64_t length = hidden.size(0);
  const int64_t intermediate = config.intermediate_size;
  torch::Tensor cos = cos_.narrow(0, cache_length_, length).unsqueeze(1);                // [n, 1, d]
  torch::Tensor signed_sin = signed_sin_.narrow(0, cache_length_, length).unsqueeze(1);  // [n, 1, d]

  torch::Tensor x;
  for (size_t i = 0; i < model_->layers.size(); ++i) {
    auto& layer = model_->layers[i];
    torch::Tensor residual;
    torch::Tensor attention_input;
    if (i == 0) {
      // The EAGLE-3 layer: attention reads [input_layernorm(e) || hidden_norm(g)].
      torch::Tensor embeddings = Norm(token_embeddings, {}, eps);
      torch::Tensor hidden_normed = Norm(hidden, layer->hidden_norm->weight, eps);
      residual = config.norm_before_residual ? hidden_normed : hidden;
      attention_input = torch::cat({embeddings, hidden_normed}, -1);  // [n, 2H]
    } else {
      residual = x;
      attention_input = Norm(x, {}, eps);
    }
    torch::Tensor u = residual + Attention(i, attention_input, cos, signed_sin);
    torch::Tensor gate_up = torch::matmul(Norm(u, {}, eps), gate_up_t_[i]);
    torch::Tensor activated = torch::silu(gate_up.narrow(1, 0, intermediate)) *
                              gate_up.narrow(1, intermediate, intermediate);  // [n, I]
    x = u + torch::matmul(activated, down_t_[i]);                              // [n, H]
  }
  cache_length_ += length;

  torch::Tensor last = x.narrow(0, length - 1, 1);  // [1, H], pre-norm
  const int64_t draft_index = torch::matmul(last, lm_head_t_).argmax(-1).item<int64_t>();  // of [1, Vd]
  DraftStep step;
  step.token_id = d2t_.empty() ? draft_index : draft_index + d2t_[draft_index];
  step.hidden = config_.norm_output ? Norm(last, model_->norm->weight, eps) : last;
  return step;
}

Result<DraftStep> Eagle3Drafter::Extend(const torch::Tensor& aux_hidden, const std::vector<int64_t>& next_token_ids) {
  const int64_t length = static_cast<int64_t>(next_token_ids.size());
  const int64_t width = 3 * config_.draft.hidden_size;
  if (length == 0 || aux_hidden.dim() != 2 || aux_hidden.size(0) != length || aux_hidden.size(1) != width) {
    return Status::Invalid("draft pass 1 expects features [n, {}] and n next tokens with n >= 1, got features {} "
                           "and {} tokens",
                           width, ShapeString(aux_hidden.sizes()), length);
  }
  if (cache_length_ + length > capacity_) {
    return Status::Invalid("draft KV cache overflow: {} cached plus {} new slots exceed its capacity {}",
                           cache_length_, length, capacity_);
  }
  try {
    torch::NoGradGuard no_grad;
    torch::Tensor ids = torch::tensor(next_token_ids, torch::kInt64);  // [n]
    return RunLayers(model_->ProjectFeatures(aux_hidden.to(torch::kFloat32)), model_->embed_tokens.index_select(0, ids));
  } catch (const c10::Error& error) {
    return Status::Internal("draft pass 1 failed in libtorch: {}", error.what_without_backtrace());
  }
}

Result<DraftStep> Eagle3Drafter::Continue(const DraftStep& previous) {
  if (cache_length_ + 1 > capacity_) {
    return Status::Invalid("draft KV cache overflow: {} cached slots fill its capacity {}", cache_length_,
                           capacity_);
  }
  try {
    torch::NoGradGuard no_grad;
    if (previous.token_id < 0 || previous.token_id >= config_.draft.vocab_size) {
      return Status::Invalid("draft token id {} is outside the vocabulary 0..{}", previous.token_id,
                             config_.draft.vocab_size - 1);
    }
    return RunLayers(previous.hidden, model_->embed_tokens.narrow(0, previous.token_id, 1));
  } catch (const c10::Error& error) {
    return Status::Internal("draft pass failed in libtorch: {}", error.what_without_backtrace());
  }
}

}  // namespace draftforge::eval
