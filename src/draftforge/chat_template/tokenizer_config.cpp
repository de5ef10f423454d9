#include "draftforge/chat_template/tokenizer_config.h"

#include <filesystem>
#include <fstream>
#include <sstream>

namespace draftforge::chat_template {

namespace {

namespace fs = std::filesystem;

Result<std::string> ReadWholeFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::IOError("cannot open '{}' for reading", path.string());
  std::ostringstream buffer;
  buffer << in.rdbuf();
  if (in.bad()) return Status::IOError("failed to read '{}'", path.string());
  return buffer.str();
}

Result<nlohmann::ordered_json> ReadJsonFile(const fs::path& path) {
  DF_ASSIGN_OR_RAISE(std::string text, ReadWholeFile(path));
  nlohmann::ordered_json json = nlohmann::ordered_json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded()) return Status::Invalid("'{}' is not valid JSON", path.string());
  return json;
}

// A special token is a string, null, or an AddedToken object with "content".
Result<std::string> TokenContent(const nlohmann::ordered_json& value, const std::string& origin,
                                 const std::string& field) {
  if (value.is_null()) return std::string();
  if (value.is_string()) return value.get<std::string>();
  if (value.is_object() && value.contains("content") && value["content"].is_string()) {
    return value["content"].get<std::string>();
  }
  return Status::Invalid("{}: field '{}' must be a string, null or an object with a string 'content', got {}",
                         origin, field, value.dump());
}

// The "chat_template" value: a string, or a list of {"name", "template"}
// from which the one named "default" is used.
Result<std::string> SelectTemplate(const nlohmann::ordered_json& value, const std::string& origin) {
  if (value.is_null()) return std::string();
  if (value.is_string()) return value.get<std::string>();
  if (value.is_array()) {
    std::string names;
    for (const auto& entry : value) {
      if (!entry.is_object() || !entry.contains("name") || !entry.contains("template") ||
          !entry["name"].is_string() || !entry["template"].is_string()) {
        return Status::Invalid("{}: 'chat_template' list entries must be objects with string 'name' and "
                               "'template', got {}", origin, entry.dump().substr(0, 200));
      }
      if (entry["name"] == "default") return entry["template"].get<std::string>();
      names += (names.empty() ? "" : ", ") + entry["name"].get<std::string>();
    }
    return Status::Invalid("{}: 'chat_template' lists named templates ({}) but none named 'default'; "
                           "pass the template to use explicitly", origin, names);
  }
  return Status::Invalid("{}: 'chat_template' must be a string or a list of named templates, got {}", origin,
                         value.dump().substr(0, 200));
}

}  // namespace

Result<TokenizerConfig> TokenizerConfigFromJson(const nlohmann::ordered_json& json, const std::string& origin) {
  if (!json.is_object()) return Status::Invalid("{}: expected a JSON object", origin);
  TokenizerConfig config;
  if (json.contains("chat_template")) {
    DF_ASSIGN_OR_RAISE(config.chat_template, SelectTemplate(json["chat_template"], origin));
    if (!config.chat_template.empty()) config.chat_template_source = origin;
    if (json["chat_template"].is_array()) {
      for (const auto& entry : json["chat_template"]) {
        if (entry["name"] == "tool_use") config.tool_use_template = entry["template"].get<std::string>();
      }
    }
  }
  for (const char* flag : {"add_bos_token", "add_eos_token"}) {
    if (!json.contains(flag) || json[flag].is_null()) continue;
    if (!json[flag].is_boolean()) {
      return Status::Invalid("{}: field '{}' must be true or false, got {}", origin, flag, json[flag].dump());
    }
    (std::string(flag) == "add_bos_token" ? config.add_bos_token : config.add_eos_token) = json[flag].get<bool>();
  }

  static const char* const kTokenNames[] = {"bos_token", "eos_token", "unk_token", "sep_token",
                                            "pad_token", "cls_token", "mask_token"};
  for (const char* name : kTokenNames) {
    if (!json.contains(name)) continue;
    DF_ASSIGN_OR_RAISE(std::string content, TokenContent(json[name], origin, name));
    if (json[name].is_null()) continue;
    config.special_tokens[name] = content;
    std::string key = name;
    if (key == "bos_token") config.bos_token = content;
    if (key == "eos_token") config.eos_token = content;
    if (key == "pad_token") config.pad_token = content;
    if (key == "unk_token") config.unk_token = content;
  }
  if (json.contains("additional_special_tokens") && !json["additional_special_tokens"].is_null()) {
    const auto& list = json["additional_special_tokens"];
    if (!list.is_array()) {
      return Status::Invalid("{}: field 'additional_special_tokens' must be a list, got {}", origin,
                             list.dump().substr(0, 200));
    }
    auto tokens = nlohmann::ordered_json::array();
    for (const auto& entry : list) {
      DF_ASSIGN_OR_RAISE(std::string content, TokenContent(entry, origin, "additional_special_tokens"));
      tokens.push_back(content);
    }
    if (!tokens.empty()) config.special_tokens["additional_special_tokens"] = tokens;
  }
  return config;
}

Result<TokenizerConfig> LoadTokenizerConfig(const std::string& model_dir) {
  fs::path dir(model_dir);
  fs::path config_path = dir / "tokenizer_config.json";
  if (!fs::exists(config_path)) {
    return Status::NotFound("'{}' not found; a Hugging Face model or tokenizer directory has one",
                            config_path.string());
  }
  DF_ASSIGN_OR_RAISE(auto json, ReadJsonFile(config_path));
  DF_ASSIGN_OR_RAISE(TokenizerConfig config, TokenizerConfigFromJson(json, config_path.string()));

  fs::path jinja_path = dir / "chat_template.jinja";
  fs::path json_path = dir / "chat_template.json";
  if (fs::exists(jinja_path)) {
    DF_ASSIGN_OR_RAISE(config.chat_template, ReadWholeFile(jinja_path));
    config.chat_template_source = jinja_path.string();
  } else if (fs::exists(json_path)) {
    DF_ASSIGN_OR_RAISE(auto template_json, ReadJsonFile(json_path));
    if (!template_json.is_object() || !template_json.contains("chat_template")) {
      return Status::Invalid("'{}' must be an object with a 'chat_template' field", json_path.string());
    }
    DF_ASSIGN_OR_RAISE(config.chat_template, SelectTemplate(template_json["chat_template"], json_path.string()));
    config.chat_template_source = json_path.string();
  }
  return config;
}

}  // namespace draftforge::chat_template
