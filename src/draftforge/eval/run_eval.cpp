#include "draftforge/eval/run_eval.h"

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <filesystem>
#include <fstream>
#include <memory>

#include "draftforge/chat_template/chat_template.h"
#include "draftforge/chat_template/tokenizer_config.h"
#include "draftforge/tokenizer/tokenizer.h"

namespace draftforge::eval {
namespace {

bool IsIntegerArray(const nlohmann::json& value) {
  if (!value.is_array()) return false;
  for (const auto& item : value) {
    if (!item.is_number_integer()) return false;
  }
  return true;
}

// Renders conversations into prompt ids with a tokenizer directory's chat
// template, the generation prompt appended.
class ChatPromptRenderer {
 public:
  static Result<std::unique_ptr<ChatPromptRenderer>> Create(const std::string& tokenizer_dir) {
    if (tokenizer_dir.empty()) {
      return Status::Invalid("'messages' prompts need a tokenizer directory with tokenizer.json and "
                             "tokenizer_config.json; pass --tokenizer DIR");
    }
    auto renderer = std::unique_ptr<ChatPromptRenderer>(new ChatPromptRenderer());
    const std::string tokenizer_path = tokenizer_dir + "/tokenizer.json";
    if (!std::filesystem::exists(tokenizer_path)) {
      return Status::NotFound("'messages' prompts need {}, which is missing; point --tokenizer at a Hugging Face "
                              "tokenizer directory that has it (without --tokenizer, the --verifier directory is used)",
                              tokenizer_path);
    }
    auto config = chat_template::LoadTokenizerConfig(tokenizer_dir);
    if (!config.ok()) {
      return Status(config.status().code(),
                    fmt::format("'messages' prompts cannot be rendered: {}; point --tokenizer at a Hugging Face "
                                "tokenizer directory (without --tokenizer, the --verifier directory is used)",
                                config.status().message()));
    }
    renderer->config_ = std::move(*config);
    if (renderer->config_.chat_template.empty()) {
      return Status::NotFound("{} has no chat template (tokenizer_config.json 'chat_template', "
                              "chat_template.jinja or chat_template.json), so 'messages' prompts cannot be rendered",
                              tokenizer_dir);
    }
    DF_ASSIGN_OR_RAISE(chat_template::ChatTemplate compiled,
                       chat_template::ChatTemplate::Compile(renderer->config_.chat_template,
                                                            tokenizer_dir + " chat template"));
    renderer->template_ = std::make_unique<chat_template::ChatTemplate>(std::move(compiled));
    DF_ASSIGN_OR_RAISE(tokenizer::Tokenizer tokenizer, tokenizer::Tokenizer::FromFile(tokenizer_path));
    renderer->tokenizer_ = std::make_unique<tokenizer::Tokenizer>(std::move(tokenizer));
    return renderer;
  }

  Result<std::vector<int64_t>> Render(const nlohmann::json& record, const std::string& where) const {
    nlohmann::ordered_json raw = nlohmann::ordered_json::parse(record.dump());
    int64_t unknown_roles = 0;
    auto messages = chat_template::NormalizeMessages(raw["messages"], &unknown_roles);
    if (!messages.ok()) return Status::Invalid("{}: field 'messages': {}", where, messages.status().message());
    chat_template::RenderOptions options;
    options.add_generation_prompt = true;
    if (raw.contains("tools") && !raw["tools"].is_null()) options.tools = raw["tools"];
    auto rendered = template_->Render(*messages, config_, options);
    if (!rendered.ok()) return Status::Invalid("{}: rendering failed: {}", where, rendered.status().message());
    // The template writes BOS and the turn markers itself.
    auto ids = tokenizer_->EncodeIds(rendered->text, /*add_special_tokens=*/false);
    if (!ids.ok()) return Status::Invalid("{}: {}", where, ids.status().message());
    return std::vector<int64_t>(ids->begin(), ids->end());
  }

 private:
  ChatPromptRenderer() = default;

  chat_template::TokenizerConfig config_;
  std::unique_ptr<chat_template::ChatTemplate> template_;
  std::unique_ptr<tokenizer::Tokenizer> tokenizer_;
};

}  // namespace

Result<std::vector<Prompt>> ReadPrompts(const std::string& path, int64_t max_prompts,
                                        const std::string& tokenizer_dir) {
  std::ifstream stream(path);
  if (!stream) return Status::IOError("{}: failed to open the prompts file", path);
  std::vector<Prompt> prompts;
  std::unique_ptr<ChatPromptRenderer> renderer;  // created at the first "messages" record
  int64_t line_number = 0;
  for (std::string line; std::getline(stream, line); ++line_number) {
    if (max_prompts > 0 && static_cast<int64_t>(prompts.size()) >= max_prompts) break;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    nlohmann::json record = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    const int64_t shown_line = line_number + 1;
    if (record.is_discarded() || !record.is_object()) {
      return Status::Invalid("{}:{}: not a JSON object", path, shown_line);
    }
    // A null or empty "messages" (as exporters write for absent fields)
    // counts as absent.
    const bool has_messages = record.contains("messages") && !record["messages"].is_null() &&
                              !(record["messages"].is_array() && record["messages"].empty());
    if (record.contains("input_ids") && has_messages) {
      return Status::Invalid("{}:{}: record has both 'input_ids' and 'messages'; keep one of them, so that the "
                             "prompt is not ambiguous",
                             path, shown_line);
    }
    if (has_messages) {
      if (!renderer) {
        DF_ASSIGN_OR_RAISE(renderer, ChatPromptRenderer::Create(tokenizer_dir));
      }
      Prompt prompt;
      prompt.line = line_number;
      DF_ASSIGN_OR_RAISE(prompt.input_ids, renderer->Render(record, fmt::format("{}:{}", path, shown_line)));
      prompts.push_back(std::move(prompt));
      continue;
    }
    if (!record.contains("input_ids")) {
      return Status::Invalid("{}:{}: missing field 'input_ids' (a list of token ids) or 'messages'", path,
                             shown_line);
    }
    if (!IsIntegerArray(record["input_ids"]) || record["input_ids"].empty()) {
      return Status::Invalid("{}:{}: field 'input_ids' must be a non-empty list of integers", path, shown_line);
    }
    Prompt prompt;
    prompt.line = line_number;
    prompt.input_ids = record["input_ids"].get<std::vector<int64_t>>();
    if (record.contains("prefix_len") && !record["prefix_len"].is_null()) {
      const auto& prefix = record["prefix_len"];
      const int64_t total = static_cast<int64_t>(prompt.input_ids.size());
      if (!prefix.is_number_integer() || prefix.get<int64_t>() < 1 || prefix.get<int64_t>() > total) {
        return Status::Invalid("{}:{}: field 'prefix_len' must be an integer in 1..{} (the length of input_ids), "
                               "got {}",
                               path, shown_line, total, prefix.dump());
      }
      const int64_t length = prefix.get<int64_t>();
      prompt.reference = std::vector<int64_t>(prompt.input_ids.begin() + length, prompt.input_ids.end());
      prompt.input_ids.resize(length);
    }
    prompts.push_back(std::move(prompt));
  }
  if (prompts.empty()) return Status::Invalid("{}: contains no prompts", path);
  return prompts;
}

std::vector<int64_t> ConfigEosTokenIds(const engine::LlamaModel& verifier) {
  const nlohmann::json& raw = verifier.config().raw;
  std::vector<int64_t> ids;
  if (!raw.contains("eos_token_id")) return ids;
  const auto& eos = raw["eos_token_id"];
  if (eos.is_number_integer()) ids.push_back(eos.get<int64_t>());
  if (IsIntegerArray(eos)) ids = eos.get<std::vector<int64_t>>();
  return ids;
}

Result<EvalReport> RunEval(const engine::LlamaModel& verifier, const std::string& draft_dir,
                           const std::vector<Prompt>& prompts, const EvalOptions& options) {
  int64_t longest = 0;
  const int64_t vocab_size = verifier.config().vocab_size;
  for (const auto& prompt : prompts) {
    longest = std::max<int64_t>(longest, prompt.input_ids.size());
    for (size_t i = 0; i < prompt.input_ids.size(); ++i) {
      const int64_t id = prompt.input_ids[i];
      if (id < 0 || id >= vocab_size) {
        return Status::Invalid("prompt on line {}: token id {} at position {} is outside the verifier's vocabulary "
                               "0..{}; were the prompts tokenized for another model? ('messages' prompts use "
                               "--tokenizer, by default the --verifier directory)",
                               prompt.line + 1, id, i, vocab_size - 1);
      }
    }
  }
  // Checked before the draft's KV cache is sized by it, because a huge K
  // would otherwise allocate that cache before any decode rejects it.
  DF_RETURN_NOT_OK(CheckDecodeLength(verifier, longest, options.decode.num_speculative_tokens, options.decode));
  DF_ASSIGN_OR_RAISE(std::unique_ptr<Eagle3Drafter> drafter,
                     Eagle3Drafter::Load(draft_dir, verifier, DraftCacheCapacity(longest, options.decode)));

  EvalReport report;
  report.num_speculative_tokens = options.decode.num_speculative_tokens;
  report.max_new_tokens = options.decode.max_new_tokens;
  for (const auto& prompt : prompts) {
    RequestRecord record;
    record.index = prompt.line;
    record.prompt_length = static_cast<int64_t>(prompt.input_ids.size());
    auto speculative = SpeculativeDecode(verifier, *drafter, prompt.input_ids, options.decode);
    if (!speculative.ok()) {
      return Status(speculative.status().code(),
                    fmt::format("prompt on line {}: {}", prompt.line + 1, speculative.status().message()));
    }
    record.speculative = std::move(*speculative);
    if (options.compare_greedy) {
      DF_ASSIGN_OR_RAISE(record.greedy, GreedyDecode(verifier, prompt.input_ids, options.decode));
      record.has_greedy = true;
      record.first_greedy_mismatch = FirstMismatch(record.speculative.output_ids, record.greedy.output_ids);
      if (record.first_greedy_mismatch >= 0) {
        spdlog::warn("prompt on line {}: speculative output differs from greedy decoding at new token {}",
                     prompt.line + 1, record.first_greedy_mismatch);
      }
    }
    if (prompt.reference) {
      // Compare over the tokens both sides have: the stored continuation may
      // be longer or shorter than max_new_tokens.
      const auto& output = record.speculative.output_ids;
      const size_t common = std::min(output.size(), prompt.reference->size());
      record.has_reference = true;
      record.first_reference_mismatch =
          FirstMismatch(std::vector<int64_t>(output.begin(), output.begin() + common),
                        std::vector<int64_t>(prompt.reference->begin(), prompt.reference->begin() + common));
    }
    spdlog::debug("prompt on line {}: {} new tokens in {} verification steps", prompt.line + 1,
                  record.speculative.output_ids.size(), record.speculative.verification_steps);
    report.requests.push_back(std::move(record));
  }
  return report;
}

}  // namespace draftforge::eval
