#include "draftforge/engine/model_config.h"

#include <filesystem>
#include <set>

#include "draftforge/util/fs.h"

namespace draftforge::engine {
namespace {

Result<int64_t> RequireInt(const nlohmann::json& json, const char* key, const std::string& source) {
  auto it = json.find(key);
  if (it == json.end() || it->is_null()) {
    return Status::Invalid("{}: missing field '{}'", source, key);
  }
  if (!it->is_number_integer() || it->get<int64_t>() <= 0) {
    return Status::Invalid("{}: field '{}' must be a positive integer, got {}", source, key,
                           it->dump());
  }
  return it->get<int64_t>();
}

}  // namespace

Result<ModelConfig> ModelConfig::FromJson(const nlohmann::json& root, const std::string& source) {
  if (!root.is_object()) return Status::Invalid("{}: config is not a JSON object", source);
  const nlohmann::json& json =
      root.contains("text_config") && root["text_config"].is_object() ? root["text_config"] : root;
  ModelConfig config;
  config.raw = json;
  config.model_type = json.value("model_type", root.value("model_type", std::string()));
  if (root.contains("architectures") && root["architectures"].is_array()) {
    for (const auto& name : root["architectures"]) {
      if (name.is_string()) config.architectures.push_back(name.get<std::string>());
    }
  }
  DF_ASSIGN_OR_RAISE(config.hidden_size, RequireInt(json, "hidden_size", source));
  DF_ASSIGN_OR_RAISE(config.intermediate_size, RequireInt(json, "intermediate_size", source));
  DF_ASSIGN_OR_RAISE(config.num_hidden_layers, RequireInt(json, "num_hidden_layers", source));
  DF_ASSIGN_OR_RAISE(config.num_attention_heads, RequireInt(json, "num_attention_heads", source));
  DF_ASSIGN_OR_RAISE(config.vocab_size, RequireInt(json, "vocab_size", source));
  if (json.contains("num_key_value_heads") && !json["num_key_value_heads"].is_null()) {
    DF_ASSIGN_OR_RAISE(config.num_key_value_heads, RequireInt(json, "num_key_value_heads", source));
  } else {
    config.num_key_value_heads = config.num_attention_heads;
  }
  if (json.contains("head_dim") && !json["head_dim"].is_null()) {
    DF_ASSIGN_OR_RAISE(config.head_dim, RequireInt(json, "head_dim", source));
    config.head_dim_in_config = true;
  } else {
    if (config.hidden_size % config.num_attention_heads != 0) {
      return Status::Invalid("{}: hidden_size {} is not divisible by num_attention_heads {} and "
                             "no head_dim is given",
                             source, config.hidden_size, config.num_attention_heads);
    }
    config.head_dim = config.hidden_size / config.num_attention_heads;
  }
  if (config.num_attention_heads % config.num_key_value_heads != 0) {
    return Status::Invalid("{}: num_attention_heads {} is not a multiple of num_key_value_heads {}",
                           source, config.num_attention_heads, config.num_key_value_heads);
  }
  config.max_position_embeddings = json.value("max_position_embeddings", int64_t{2048});
  config.rms_norm_eps = json.value("rms_norm_eps", 1e-6);
  config.hidden_act = json.value("hidden_act", std::string("silu"));
  config.attention_bias = json.value("attention_bias", false);
  config.mlp_bias = json.value("mlp_bias", false);
  config.initializer_range = json.value("initializer_range", 0.02);
  config.tie_word_embeddings =
      json.value("tie_word_embeddings", root.value("tie_word_embeddings", false));
  // transformers 5 stores RoPE settings in "rope_parameters".
  if (json.contains("rope_parameters") && json["rope_parameters"].is_object()) {
    const auto& params = json["rope_parameters"];
    config.rope_theta = params.value("rope_theta", 10000.0);
    std::string rope_type = params.value("rope_type", std::string("default"));
    config.rope_scaling = rope_type == "default" ? nlohmann::json() : params;
  } else {
    config.rope_theta = json.value("rope_theta", 10000.0);
    if (json.contains("rope_scaling")) config.rope_scaling = json["rope_scaling"];
  }
  const char* dtype_key = root.contains("torch_dtype") ? "torch_dtype" : "dtype";
  if (root.contains(dtype_key) && root[dtype_key].is_string()) {
    config.torch_dtype = root[dtype_key].get<std::string>();
  }
  return config;
}

Result<ModelConfig> ModelConfig::Load(const std::string& model_dir) {
  std::string path = model_dir + "/config.json";
  DF_ASSIGN_OR_RAISE(std::string text, ReadFileToString(path));
  nlohmann::json json = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded()) {
    return Status::Invalid("{}: not valid JSON; check that the file is complete", path);
  }
  return FromJson(json, path);
}

std::vector<int64_t> DefaultLayerIds(int64_t num_hidden_layers) {
  int64_t n = num_hidden_layers;
  return {2, n / 2, n - 3, n};
}

Result<std::vector<std::string>> ListWeightFiles(const std::string& model_dir) {
  namespace fs = std::filesystem;
  std::string index_path = model_dir + "/model.safetensors.index.json";
  if (fs::exists(index_path)) {
    DF_ASSIGN_OR_RAISE(std::string text, ReadFileToString(index_path));
    nlohmann::json index = nlohmann::json::parse(text, nullptr, false);
    if (index.is_discarded() || !index.contains("weight_map") || !index["weight_map"].is_object()) {
      return Status::Invalid("{}: expected a JSON object with a 'weight_map' object", index_path);
    }
    std::set<std::string> names;
    for (const auto& file : index["weight_map"]) {
      if (!file.is_string()) return Status::Invalid("{}: weight_map value {} is not a file name", index_path, file.dump());
      names.insert(file.get<std::string>());
    }
    std::vector<std::string> files;
    for (const auto& name : names) {
      std::string path = model_dir + "/" + name;
      if (!fs::exists(path)) {
        return Status::NotFound("{} lists {} but {} does not exist; the download is incomplete",
                                index_path, name, path);
      }
      files.push_back(path);
    }
    return files;
  }
  std::string single = model_dir + "/model.safetensors";
  if (fs::exists(single)) return std::vector<std::string>{single};
  return Status::NotFound("{}: neither model.safetensors nor model.safetensors.index.json exists; "
                          "pass a Hugging Face model directory with safetensors weights",
                          model_dir);
}

}  // namespace draftforge::engine
