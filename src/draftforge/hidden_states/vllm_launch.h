// The `vllm serve` command that starts vLLM as a hidden-states extraction
// server: the `extract_hidden_states` speculative method (which requires
// num_speculative_tokens = 1) captures the configured layers, and the
// ExampleHiddenStatesConnector writes one safetensors file per request into
// the shared storage path. Layer ids use vLLM's numbering: id k is the
// residual stream after k decoder layers, id N the last layer's output before
// the final norm.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "draftforge/engine/model_config.h"
#include "draftforge/util/status.h"

namespace draftforge::hidden_states {

struct VllmLaunchOptions {
  std::string model;                         // model directory or hub id passed to vLLM
  std::string hidden_states_path = "/tmp/hidden_states";
  std::optional<std::vector<int64_t>> layer_ids;  // unset: [2, N/2, N-3, N]
  bool include_last_layer = true;            // append N when the given ids lack it
  std::string vllm_executable = "vllm";
  std::vector<std::string> extra_args;       // passed through after the configs
};

// Resolves the capture layer ids: the given ids (plus N when
// include_last_layer is set and N is missing) or the default. Invalid when an
// id repeats or lies outside 0..N, because vLLM then captures fewer states
// than configured and its engine fails.
Result<std::vector<int64_t>> ResolveCaptureLayerIds(const engine::ModelConfig& config,
                                                    const VllmLaunchOptions& options);

// Builds the argument vector, e.g. {"vllm", "serve", MODEL,
// "--speculative_config", JSON, "--kv_transfer_config", JSON, extra...}.
// The JSON strings use Python's json.dumps separators (", " and ": "), as
// speculators' launch_vllm.py writes them.
Result<std::vector<std::string>> BuildVllmServeCommand(const engine::ModelConfig& config,
                                                       const VllmLaunchOptions& options);

// Serialises JSON the way Python's json.dumps does with default separators.
std::string DumpJsonPythonStyle(const nlohmann::ordered_json& value);

// Quotes `args` for a POSIX shell so the printed command can be pasted.
std::string ShellQuoteCommand(const std::vector<std::string>& args);

}  // namespace draftforge::hidden_states
