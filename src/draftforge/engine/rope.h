// Rotary position embedding (RoPE) as Hugging Face transformers defines it for
// Llama-family models: half-split pairs (rotate_half), not interleaved pairs.
//
// Supported `rope_scaling` types: none/"default", "linear" and "llama3".
// Others (dynamic, yarn, longrope, ...) return Unimplemented, as does a
// partial_rotary_factor other than 1.
#pragma once

#include <torch/torch.h>

#include "draftforge/engine/model_config.h"
#include "draftforge/util/status.h"

namespace draftforge::engine {

// Computes the inverse frequencies inv_freq[j] = 1 / theta^(2j/d) for
// j = 0 .. d/2-1, d = head_dim, with the config's rope_scaling applied.
// Returns a float64 tensor [d/2].
Result<torch::Tensor> ComputeRopeInverseFrequencies(const ModelConfig& config);

// cos and sin of the rotation angles, each [T, d] in float32, laid out as
// [cos(a) ‖ cos(a)] to match rotate_half.
struct RotaryTables {
  torch::Tensor cos;  // [T, d]
  torch::Tensor sin;  // [T, d]
};

// Builds the tables for integer positions [T] from float64 inverse
// frequencies [d/2]. Angles are computed in float64 and rounded once, which
// keeps large positions accurate.
RotaryTables ComputeRotaryTables(const torch::Tensor& inverse_frequencies,
                                 const torch::Tensor& positions);

// Rotates x [..., T, d] (any leading head axes) by the tables:
// x * cos + rotate_half(x) * sin, with rotate_half([x1 ‖ x2]) = [-x2 ‖ x1].
torch::Tensor ApplyRotary(const torch::Tensor& x, const RotaryTables& tables);

}  // namespace draftforge::engine
