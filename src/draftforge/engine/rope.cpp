#include "draftforge/engine/rope.h"

#include <cmath>
#include <numbers>
#include <string>

namespace draftforge::engine {
namespace {

Result<double> RequirePositiveNumber(const nlohmann::json& scaling, const char* key) {
  auto it = scaling.find(key);
  if (it == scaling.end() || !it->is_number() || it->get<double>() <= 0) {
    return Status::Invalid("config.json: rope_scaling.{} must be a positive number, got {}", key,
                           it == scaling.end() ? std::string("nothing") : it->dump());
  }
  return it->get<double>();
}

// Llama 3.1 frequency-dependent scaling: wavelengths shorter than
// original/high_freq_factor keep their frequency, wavelengths longer than
// original/low_freq_factor are divided by `factor`, and the band between is a
// linear blend of the two.
Status ApplyLlama3Scaling(const nlohmann::json& scaling, std::vector<double>& inverse_frequencies) {
  DF_ASSIGN_OR_RAISE(double factor, RequirePositiveNumber(scaling, "factor"));
  DF_ASSIGN_OR_RAISE(double low_freq_factor, RequirePositiveNumber(scaling, "low_freq_factor"));
  DF_ASSIGN_OR_RAISE(double high_freq_factor, RequirePositiveNumber(scaling, "high_freq_factor"));
  DF_ASSIGN_OR_RAISE(double original_max_positions,
                     RequirePositiveNumber(scaling, "original_max_position_embeddings"));
  if (high_freq_factor <= low_freq_factor) {
    return Status::Invalid(
        "config.json: rope_scaling.high_freq_factor ({}) must be greater than low_freq_factor ({})",
        high_freq_factor, low_freq_factor);
  }
  const double low_freq_wavelength = original_max_positions / low_freq_factor;
  const double high_freq_wavelength = original_max_positions / high_freq_factor;
  for (double& frequency : inverse_frequencies) {
    const double wavelength = 2 * std::numbers::pi / frequency;
    if (wavelength < high_freq_wavelength) continue;
    if (wavelength > low_freq_wavelength) {
      frequency /= factor;
      continue;
    }
    const double smooth = (original_max_positions / wavelength - low_freq_factor) /
                          (high_freq_factor - low_freq_factor);
    frequency = (1 - smooth) * frequency / factor + smooth * frequency;
  }
  return Status::OK();
}

}  // namespace

Result<torch::Tensor> ComputeRopeInverseFrequencies(const ModelConfig& config) {
  const int64_t dim = config.head_dim;
  if (dim % 2 != 0) {
    return Status::Invalid("config.json: head_dim {} must be even for rotary embeddings", dim);
  }
  if (config.raw.contains("partial_rotary_factor") &&
      config.raw["partial_rotary_factor"].is_number() &&
      config.raw["partial_rotary_factor"].get<double>() != 1.0) {
    return Status::Unimplemented("config.json: partial_rotary_factor {} is not supported; only "
                                 "full-width rotary embeddings (factor 1) are",
                                 config.raw["partial_rotary_factor"].dump());
  }

  std::vector<double> inverse_frequencies(dim / 2);
  for (int64_t j = 0; j < dim / 2; ++j) {
    inverse_frequencies[j] = 1.0 / std::pow(config.rope_theta, static_cast<double>(2 * j) / dim);
  }

  const nlohmann::json& scaling = config.rope_scaling;
  if (!scaling.is_null()) {
    if (!scaling.is_object()) {
      return Status::Invalid("config.json: rope_scaling must be an object or null, got {}",
                             scaling.dump());
    }
    // transformers writes "rope_type"; configs from before v4.45 use "type".
    std::string type = scaling.value("rope_type", scaling.value("type", std::string("default")));
    if (type == "linear") {
      DF_ASSIGN_OR_RAISE(double factor, RequirePositiveNumber(scaling, "factor"));
      for (double& frequency : inverse_frequencies) frequency /= factor;
    } else if (type == "llama3") {
      DF_RETURN_NOT_OK(ApplyLlama3Scaling(scaling, inverse_frequencies));
    } else if (type != "default") {
      return Status::Unimplemented(
          "config.json: rope_scaling type '{}' is not supported by the embedded engine; "
          "supported types are default, linear and llama3",
          type);
    }
  }
  return torch::tensor(inverse_frequencies, torch::kFloat64);
}

RotaryTables ComputeRotaryTables(const torch::Tensor& inverse_frequencies,
                                 const torch::Tensor& positions) {
  torch::Tensor angles = torch::outer(positions.to(torch::kFloat64), inverse_frequencies);  // [T, d/2]
  torch::Tensor doubled = torch::cat({angles, angles}, /*dim=*/-1);                       // [T, d]
  return {doubled.cos().to(torch::kFloat32), doubled.sin().to(torch::kFloat32)};
}

torch::Tensor ApplyRotary(const torch::Tensor& x, const RotaryTables& tables) {
  const int64_t half = x.size(-1) / 2;
  torch::Tensor first = x.narrow(-1, 0, half);
  torch::Tensor second = x.narrow(-1, half, half);
  torch::Tensor rotated = torch::cat({second.neg(), first}, /*dim=*/-1);  // rotate_half(x)
  return x * tables.cos + rotated * tables.sin;
}

}  // namespace draftforge::engine
