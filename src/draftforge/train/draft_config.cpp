#include "draftforge/train/draft_config.h"

#include "draftforge/train/rotary.h"

namespace draftforge::train {

Result<DraftConfig> MakeDraftConfig(const engine::ModelConfig& verifier, const DraftOptions& options) {
  if (options.arch != "llama" && options.arch != "qwen3") {
    return Status::Invalid("--draft-arch '{}' is not supported; use llama or qwen3", options.arch);
  }
  if (options.arch == "qwen3" && !verifier.head_dim_in_config) {
    return Status::Invalid("a qwen3 draft needs head_dim in the verifier config, which has none; "
                           "use --draft-arch llama");
  }
  if (options.num_layers < 1) {
    return Status::Invalid("--num-layers must be at least 1, got {}", options.num_layers);
  }
  if (verifier.hidden_act != "silu") {
    return Status::Invalid("verifier hidden_act '{}' is not supported by the draft trainer; only "
                           "silu is implemented",
                           verifier.hidden_act);
  }
  int64_t draft_vocab = options.draft_vocab_size > 0 ? options.draft_vocab_size : verifier.vocab_size;
  if (draft_vocab > verifier.vocab_size) {
    return Status::Invalid("draft vocabulary size {} exceeds the verifier vocabulary size {}",
                           draft_vocab, verifier.vocab_size);
  }

  auto frequencies = RopeInverseFrequencies(verifier.head_dim, verifier.rope_theta, verifier.rope_scaling);
  if (!frequencies.ok()) return frequencies.status().WithContext("verifier RoPE parameters");

  DraftConfig config;
  config.arch = options.arch;
  config.hidden_size = verifier.hidden_size;
  config.intermediate_size = verifier.intermediate_size;
  config.num_attention_heads = verifier.num_attention_heads;
  config.num_key_value_heads = verifier.num_key_value_heads;
  config.head_dim = verifier.head_dim;
  config.vocab_size = verifier.vocab_size;
  config.draft_vocab_size = draft_vocab;
  config.num_layers = options.num_layers;
  config.max_position_embeddings = verifier.max_position_embeddings;
  config.rms_norm_eps = verifier.rms_norm_eps;
  config.initializer_range = verifier.initializer_range;
  config.hidden_act = verifier.hidden_act;
  config.rope_theta = verifier.rope_theta;
  config.rope_scaling = verifier.rope_scaling;
  config.norm_before_residual = options.norm_before_residual;
  config.norm_before_fc = options.norm_before_fc;
  return config;
}

nlohmann::json TransformerLayerConfigJson(const DraftConfig& config) {
  nlohmann::json json;
  json["attention_bias"] = false;
  json["attention_dropout"] = 0.0;
  json["head_dim"] = config.head_dim;
  json["hidden_act"] = config.hidden_act;
  json["hidden_size"] = config.hidden_size;
  json["initializer_range"] = config.initializer_range;
  json["intermediate_size"] = config.intermediate_size;
  json["max_position_embeddings"] = config.max_position_embeddings;
  json["model_type"] = config.arch;
  json["num_attention_heads"] = config.num_attention_heads;
  json["num_hidden_layers"] = config.num_layers;
  json["num_key_value_heads"] = config.num_key_value_heads;
  json["rms_norm_eps"] = config.rms_norm_eps;
  json["rope_scaling"] = config.rope_scaling;
  json["rope_theta"] = config.rope_theta;
  json["use_cache"] = true;
  json["vocab_size"] = config.vocab_size;
  if (config.arch == "llama") {
    json["mlp_bias"] = false;
    json["pretraining_tp"] = 1;
  } else {
    json["use_sliding_window"] = false;
    json["sliding_window"] = nullptr;
  }
  return json;
}

}  // namespace draftforge::train
