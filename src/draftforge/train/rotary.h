// Rotary position embedding frequencies (default RoPE, linear and Llama-3
// scaling), following the transformers definitions.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <vector>

#include "draftforge/util/status.h"

namespace draftforge::train {

// Returns inv_freq[j] for j = 0 .. head_dim/2 - 1, computed in float64:
// 1 / theta^(2j/head_dim), then adjusted by `rope_scaling` (null or
// rope_type "default": unchanged; "linear": divided by factor; "llama3": the
// wavelength-dependent blend). Unimplemented for dynamic, yarn and longrope.
Result<std::vector<double>> RopeInverseFrequencies(int64_t head_dim, double theta,
                                                   const nlohmann::json& rope_scaling);

}  // namespace draftforge::train
