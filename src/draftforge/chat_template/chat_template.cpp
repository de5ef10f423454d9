#include "draftforge/chat_template/chat_template.h"

#include <fmt/format.h>

#include "draftforge/chat_template/interpreter.h"
#include "draftforge/chat_template/parser.h"

namespace draftforge::chat_template {

namespace {

Status ToStatus(const TemplateException& e, const std::string& name) {
  std::string text = fmt::format("template '{}', line {}: {}: {}", name, e.line(), ErrorTypeName(e.type()),
                                 e.message());
  if (e.type() == ErrorType::kUnsupported) return Status(StatusCode::kUnimplemented, text);
  return Status(StatusCode::kInvalid, text);
}

// Position of "<Type>: " after "template '...', line N: ", or npos.
size_t ErrorTypeStart(const std::string& message) {
  size_t line = message.find("', line ");
  if (line == std::string::npos) return std::string::npos;
  size_t colon = message.find(": ", line);
  return colon == std::string::npos ? std::string::npos : colon + 2;
}

}  // namespace

Result<ChatTemplate> ChatTemplate::Compile(std::string_view source, std::string name) {
  ChatTemplate compiled;
  compiled.name_ = std::move(name);
  try {
    compiled.parsed_ = std::make_shared<const ParsedTemplate>(ParseTemplate(source));
  } catch (const TemplateException& e) {
    return ToStatus(e, compiled.name_);
  } catch (const std::exception& e) {
    return ToStatus(TemplateException(ErrorType::kTemplateError, e.what()), compiled.name_);
  }
  return compiled;
}

bool ChatTemplate::has_generation_markers() const { return parsed_ && parsed_->has_generation; }

Result<RenderResult> ChatTemplate::Render(const nlohmann::ordered_json& messages, const TokenizerConfig& config,
                                          const RenderOptions& options) const {
  if (!parsed_) return Status::Invalid("template '{}' was not compiled", name_);
  if (!messages.is_array()) {
    return Status::Invalid("template '{}': messages must be a JSON list, got {}", name_, messages.type_name());
  }
  if (messages.empty()) {
    // transformers reads conversation[0] before rendering.
    return ToStatus(TemplateException(ErrorType::kIndexError, "list index out of range: empty conversation"), name_);
  }

  std::vector<std::pair<std::string, Value>> variables;
  auto set = [&variables](const std::string& key, Value value) {
    for (auto& [k, v] : variables) {
      if (k == key) {
        v = std::move(value);
        return;
      }
    }
    variables.emplace_back(key, std::move(value));
  };
  set("messages", Value::FromJson(messages));
  set("tools", options.tools.is_null() ? Value::None() : Value::FromJson(options.tools));
  set("documents", Value::None());
  set("add_generation_prompt", Value::Bool(options.add_generation_prompt));
  for (auto it = config.special_tokens.begin(); it != config.special_tokens.end(); ++it) {
    set(it.key(), Value::FromJson(it.value()));
  }
  if (options.extra_kwargs.is_object()) {
    for (auto it = options.extra_kwargs.begin(); it != options.extra_kwargs.end(); ++it) {
      set(it.key(), Value::FromJson(it.value()));
    }
  }

  RenderClock clock;
  clock.utc = options.now.has_value();
  clock.now = options.now.value_or(std::chrono::system_clock::now());

  RenderResult result;
  try {
    Interpreter interpreter(std::move(variables), clock);
    result.text = interpreter.Render(parsed_->nodes, &result.generation_spans);
  } catch (const TemplateException& e) {
    return ToStatus(e, name_);
  } catch (const std::exception& e) {
    // A library failure such as std::bad_alloc or std::out_of_range: still a
    // failed render of this conversation, not a crash of the caller.
    return ToStatus(TemplateException(ErrorType::kTemplateError, e.what()), name_);
  }
  return result;
}

std::string TemplateErrorType(const Status& status) {
  if (status.ok()) return "";
  size_t start = ErrorTypeStart(status.message());
  if (start == std::string::npos) return "";
  size_t end = status.message().find(':', start);
  return status.message().substr(start, end == std::string::npos ? std::string::npos : end - start);
}

std::string TemplateErrorMessage(const Status& status) {
  if (status.ok()) return "";
  size_t start = ErrorTypeStart(status.message());
  if (start == std::string::npos) return status.message();
  size_t end = status.message().find(": ", start);
  return end == std::string::npos ? "" : status.message().substr(end + 2);
}

}  // namespace draftforge::chat_template
