#include "draftforge/hidden_states/vllm_launch.h"

#include <algorithm>
#include <cctype>
#include <set>

namespace draftforge::hidden_states {

Result<std::vector<int64_t>> ResolveCaptureLayerIds(const engine::ModelConfig& config,
                                                    const VllmLaunchOptions& options) {
  const int64_t last = config.num_hidden_layers;
  std::vector<int64_t> ids = options.layer_ids.value_or(engine::DefaultLayerIds(last));
  if (options.layer_ids && options.include_last_layer &&
      std::find(ids.begin(), ids.end(), last) == ids.end()) {
    ids.push_back(last);
  }
  std::set<int64_t> seen;
  for (int64_t id : ids) {
    if (id < 0 || id > last) {
      return Status::Invalid("layer id {} is outside 0..{} (the model has {} decoder layers)", id,
                             last, last);
    }
    if (!seen.insert(id).second) {
      return Status::Invalid(
          "layer ids {} repeat {}: vLLM would capture fewer states than configured and fail; "
          "pass distinct ids with --layers (for example --layers 1 2 3 {})",
          nlohmann::json(ids).dump(), id, last);
    }
  }
  return ids;
}

Result<std::vector<std::string>> BuildVllmServeCommand(const engine::ModelConfig& config,
                                                       const VllmLaunchOptions& options) {
  DF_ASSIGN_OR_RAISE(std::vector<int64_t> layer_ids, ResolveCaptureLayerIds(config, options));

  nlohmann::ordered_json hf_config;
  hf_config["eagle_aux_hidden_state_layer_ids"] = layer_ids;
  nlohmann::ordered_json speculative;
  speculative["method"] = "extract_hidden_states";
  speculative["num_speculative_tokens"] = 1;
  speculative["draft_model_config"]["hf_config"] = hf_config;

  nlohmann::ordered_json kv_transfer;
  kv_transfer["kv_connector"] = "ExampleHiddenStatesConnector";
  kv_transfer["kv_role"] = "kv_producer";
  kv_transfer["kv_connector_extra_config"]["shared_storage_path"] = options.hidden_states_path;

  std::vector<std::string> args = {options.vllm_executable, "serve", options.model,
                                   "--speculative_config", DumpJsonPythonStyle(speculative),
                                   "--kv_transfer_config", DumpJsonPythonStyle(kv_transfer)};
  args.insert(args.end(), options.extra_args.begin(), options.extra_args.end());
  return args;
}

std::string DumpJsonPythonStyle(const nlohmann::ordered_json& value) {
  if (value.is_object()) {
    std::string out = "{";
    bool first = true;
    for (auto it = value.begin(); it != value.end(); ++it) {
      if (!first) out += ", ";
      first = false;
      out += nlohmann::ordered_json(it.key()).dump(-1, ' ', /*ensure_ascii=*/true) + ": " +
             DumpJsonPythonStyle(it.value());
    }
    return out + "}";
  }
  if (value.is_array()) {
    std::string out = "[";
    for (size_t i = 0; i < value.size(); ++i) {
      if (i > 0) out += ", ";
      out += DumpJsonPythonStyle(value[i]);
    }
    return out + "]";
  }
  // ensure_ascii matches json.dumps, which escapes every non-ASCII character.
  return value.dump(-1, ' ', /*ensure_ascii=*/true);
}

std::string ShellQuoteCommand(const std::vector<std::string>& args) {
  std::string out;
  for (const auto& arg : args) {
    if (!out.empty()) out += ' ';
    bool plain = !arg.empty() && std::all_of(arg.begin(), arg.end(), [](char c) {
      return std::isalnum(static_cast<unsigned char>(c)) || std::string_view("-_./:=,@").find(c) !=
                                                                std::string_view::npos;
    });
    if (plain) {
      out += arg;
      continue;
    }
    out += '\'';
    for (char c : arg) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
    out += '\'';
  }
  return out;
}

}  // namespace draftforge::hidden_states
