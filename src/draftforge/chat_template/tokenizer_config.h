// Loading of the chat-template settings of a Hugging Face tokenizer
// directory: tokenizer_config.json plus an optional chat_template.jinja or
// chat_template.json next to it, which override the config's template the way
// transformers loads them (chat_template.jinja first, then
// chat_template.json, then the config's "chat_template" field).
#pragma once

#include <nlohmann/json.hpp>

#include <string>

#include "draftforge/util/status.h"

namespace draftforge::chat_template {

struct TokenizerConfig {
  std::string chat_template;          // empty when the tokenizer has none
  std::string chat_template_source;   // file the template was read from
  // The list form's template named "tool_use", which transformers renders
  // instead of "default" when tools are given; empty when absent.
  std::string tool_use_template;
  // Template variables for the special tokens that are set, in transformers'
  // special_tokens_map order: bos_token, eos_token, unk_token, sep_token,
  // pad_token, cls_token, mask_token (strings) and additional_special_tokens
  // (a list, only when non-empty). An AddedToken object {"content": ...}
  // contributes its content.
  nlohmann::ordered_json special_tokens = nlohmann::ordered_json::object();
  bool add_bos_token = false;
  bool add_eos_token = false;
  std::string bos_token, eos_token, pad_token, unk_token;  // empty when unset
};

// Reads MODEL_DIR/tokenizer_config.json (required) and the template override
// files. NotFound when tokenizer_config.json is missing, Invalid for malformed
// JSON or a field of the wrong type (the message names file and field).
Result<TokenizerConfig> LoadTokenizerConfig(const std::string& model_dir);

// Builds the config from an already parsed tokenizer_config.json object;
// `origin` names it in error messages.
Result<TokenizerConfig> TokenizerConfigFromJson(const nlohmann::ordered_json& json, const std::string& origin);

}  // namespace draftforge::chat_template
