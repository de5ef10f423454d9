// Chat-template rendering as Hugging Face transformers' apply_chat_template
// does it (Jinja2 3.1, ImmutableSandboxedEnvironment with trim_blocks and
// lstrip_blocks, loop controls, {% generation %}, transformers' tojson,
// raise_exception and strftime_now).
//
// Template variables, in increasing priority: messages, tools (None when
// unset), documents (None), add_generation_prompt, the tokenizer's special
// tokens (TokenizerConfig::special_tokens), then RenderOptions::extra_kwargs.
//
// Errors. Compile fails for a syntax error or an unsupported Jinja feature
// ({% extends %}, {% include %}, {% import %}, ...), Render for a template
// that raises. Both return a Status whose message reads
// "template '<name>', line <N>: <ErrorType>: <message>", where ErrorType is
// the Python exception class (TemplateError for raise_exception(),
// UndefinedError, TypeError, SecurityError, IndexError, ...). The line is 0
// when no template line applies, as for an empty conversation.
// TemplateErrorType() and TemplateErrorMessage() take the message apart again.
#pragma once

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "draftforge/chat_template/tokenizer_config.h"
#include "draftforge/util/status.h"

namespace draftforge::chat_template {

struct ParsedTemplate;

struct RenderOptions {
  bool add_generation_prompt = false;
  nlohmann::ordered_json tools;  // null = none
  nlohmann::ordered_json extra_kwargs = nlohmann::ordered_json::object();
  // Clock for strftime_now(), formatted in UTC. Unset: the current time in
  // the local time zone, as Python's datetime.now().
  std::optional<std::chrono::system_clock::time_point> now;
};

struct RenderResult {
  std::string text;
  // [begin, end) byte offsets into `text` of the output of each
  // {% generation %} block, in output order.
  std::vector<std::pair<int64_t, int64_t>> generation_spans;
};

class ChatTemplate {
 public:
  static Result<ChatTemplate> Compile(std::string_view source, std::string name = "chat_template");

  // Thread-safe: several workers may render with one ChatTemplate at once.
  // `messages` must be a JSON array; an empty one fails with IndexError as
  // transformers does.
  Result<RenderResult> Render(const nlohmann::ordered_json& messages, const TokenizerConfig& config,
                              const RenderOptions& options) const;

  bool has_generation_markers() const;
  const std::string& name() const { return name_; }

 private:
  std::shared_ptr<const ParsedTemplate> parsed_;
  std::string name_;
};

// The Python exception class named in an error from Compile or Render
// ("TemplateError", "UndefinedError", ...); empty for other statuses.
std::string TemplateErrorType(const Status& status);
// The message after the exception class, e.g. raise_exception's text.
std::string TemplateErrorMessage(const Status& status);

// Normalises one raw conversation the way speculators' data pipeline does:
// role from "from" else "role" (human/user -> user, gpt/assistant ->
// assistant, system and tool kept, any other role -> assistant and counted in
// *unknown_roles), content from "value" else "content" (missing, null or ""
// -> "", lists kept), tool_calls and tool_call_id kept, and "thinking" or
// "reasoning_content" copied to both keys. A plain string entry (UltraChat's
// "data" list) becomes a user turn at even positions and an assistant turn
// at odd ones. Invalid when the input is not a list or an entry is neither an
// object nor a string.
Result<nlohmann::ordered_json> NormalizeMessages(const nlohmann::ordered_json& raw_messages, int64_t* unknown_roles);

}  // namespace draftforge::chat_template
