// Configuration of an EAGLE-3 draft model, derived from the verifier's config.
//
// Copied from the verifier: vocab_size, hidden_size, intermediate_size, attention
// and key/value head counts, head_dim, hidden_act, max_position_embeddings,
// initializer_range, rms_norm_eps, and the RoPE parameters (rope_theta and
// rope_scaling). Upstream speculators at 2a1443c8 left RoPE at the Llama
// defaults (theta 10000, no scaling); later versions copy the verifier's, as
// done here. Whatever is used in training is written to the saved config,
// because vLLM rebuilds the draft's RoPE from it.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>

#include "draftforge/engine/model_config.h"
#include "draftforge/util/status.h"

namespace draftforge::train {

struct DraftConfig {
  std::string arch = "llama";  // draft decoder class: "llama" or "qwen3"
  int64_t hidden_size = 0;        // H
  int64_t intermediate_size = 0;  // I
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;
  int64_t head_dim = 0;
  int64_t vocab_size = 0;        // V, the verifier vocabulary
  int64_t draft_vocab_size = 0;  // Vd <= V
  int64_t num_layers = 1;
  int64_t max_position_embeddings = 2048;
  double rms_norm_eps = 1e-6;
  double initializer_range = 0.02;
  std::string hidden_act = "silu";
  double rope_theta = 10000.0;
  nlohmann::json rope_scaling;  // null for default RoPE
  bool norm_before_residual = true;
  bool norm_before_fc = false;
};

// Options of `draftforge train` that shape the draft.
struct DraftOptions {
  std::string arch = "llama";
  int64_t num_layers = 1;
  int64_t draft_vocab_size = 0;  // 0: same as the verifier vocabulary
  bool norm_before_residual = true;
  bool norm_before_fc = false;
};

// Builds the draft config; Invalid when the options do not fit the verifier
// (unknown arch, num_layers < 1, Vd > V, unsupported activation).
Result<DraftConfig> MakeDraftConfig(const engine::ModelConfig& verifier, const DraftOptions& options);

// Returns the `transformer_layer_config` object of the saved speculator
// config: the Hugging Face decoder config (LlamaConfig or Qwen3Config) of the
// draft layers, with the keys vLLM reads.
nlohmann::json TransformerLayerConfigJson(const DraftConfig& config);

}  // namespace draftforge::train
