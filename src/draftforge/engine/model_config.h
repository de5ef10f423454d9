// Configuration of a Hugging Face Llama-family checkpoint (config.json), and
// the location of its weights.
//
// For multimodal configs with a "text_config" object, the text model's values
// are used, as vLLM and speculators do.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "draftforge/util/status.h"

namespace draftforge::engine {

struct ModelConfig {
  std::string model_type;                 // "llama", "qwen3", ...
  std::vector<std::string> architectures;  // e.g. ["LlamaForCausalLM"]
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;
  int64_t head_dim = 0;  // config's head_dim, else hidden_size / num_attention_heads
  bool head_dim_in_config = false;
  int64_t vocab_size = 0;
  int64_t max_position_embeddings = 0;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  nlohmann::json rope_scaling;  // null when absent
  std::string hidden_act = "silu";
  bool attention_bias = false;
  bool mlp_bias = false;
  bool tie_word_embeddings = false;
  double initializer_range = 0.02;
  std::string torch_dtype;  // "bfloat16", "float32", ... ("" when absent)
  nlohmann::json raw;        // the text config object as read

  // Parses a config.json object; Invalid names the missing or bad field.
  static Result<ModelConfig> FromJson(const nlohmann::json& json, const std::string& source);
  // Reads DIR/config.json.
  static Result<ModelConfig> Load(const std::string& model_dir);
};

// Default capture layer ids of vLLM's extract_hidden_states launcher:
// [2, N/2, N-3, N] for N decoder layers.
std::vector<int64_t> DefaultLayerIds(int64_t num_hidden_layers);

// Lists the safetensors files of a checkpoint directory: the shards named in
// model.safetensors.index.json, else model.safetensors. The NotFound error
// names the files that were looked for.
Result<std::vector<std::string>> ListWeightFiles(const std::string& model_dir);

}  // namespace draftforge::engine
