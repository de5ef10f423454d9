// `prepare` for chat data: conversations rendered with the target model's chat
// template and tokenizer, as transformers' apply_chat_template(tokenize=True)
// does, with assistant-only loss masks.
//
// Input records (JSON array or JSONL): ShareGPT {"conversations": [{"from",
// "value"}]}, OpenAI/UltraChat {"messages": [{"role", "content"}]}, or the
// older UltraChat {"data": ["user text", "assistant text", ...]}; an optional
// "tools" list is passed to the template. Roles map human/user -> user,
// gpt/assistant -> assistant; system and tool are kept; other roles are
// dropped or mapped to assistant (--unknown-roles), with a count.
//
// Row selection follows speculators' prepare_data.py. Each source is
// shuffled with `seed`, and only its first 3 x max_samples records are
// processed. The kept rows of all sources are then shuffled again with `seed`,
// as later speculators versions do (the release of early 2026 discarded that
// second shuffle), and the first max_samples are written. Both shuffles are
// numpy.random.default_rng(seed)'s permutation, as datasets' Dataset.shuffle
// draws it.
//
// The run fails before writing anything on: a missing or invalid
// tokenizer.json or tokenizer_config.json, a template that does not compile
// (the error names the template line), malformed JSON (file:line), chat and
// pre-tokenized records mixed in one run. A record is skipped and counted per
// reason on: not an object or no conversation list, no message, no assistant
// turn, only empty or whitespace assistant turns, invalid UTF-8, a template that raises, no trainable token after
// truncation.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <memory>
#include <optional>

#include <nlohmann/json.hpp>

#include "draftforge/chat_template/chat_template.h"
#include "draftforge/data/loss_mask.h"
#include "draftforge/data/prepare.h"
#include "draftforge/tokenizer/tokenizer.h"
#include "draftforge/util/status.h"

namespace draftforge::data {

// Skip reasons of the chat path, as printed in the summary.
inline constexpr const char* kSkipInvalidRecord = "not a conversation record";
inline constexpr const char* kSkipNoMessages = "empty conversation";
inline constexpr const char* kSkipNoAssistant = "no assistant turn";
inline constexpr const char* kSkipEmptyAssistant = "every assistant turn is empty";
inline constexpr const char* kSkipInvalidUtf8 = "invalid UTF-8";
inline constexpr const char* kSkipTemplateError = "chat template raised an error";

// Source of the loss masks (see loss_mask.h).
enum class MaskMethod { kGenerationMarkers, kDetectedPattern, kUserPattern };
const char* MaskMethodName(MaskMethod method);

// One conversation turned into a row, or the reason it was skipped.
struct ChatRow {
  const char* skip = nullptr;  // one of the kSkip* reasons; null when the row is kept
  std::string detail;          // why it was skipped
  std::string text;            // the rendered conversation
  std::vector<int64_t> ids;
  std::vector<uint8_t> mask;
  bool truncated = false;  // cut to --seq-length
  bool fell_back = false;  // generation markers covered nothing; the detected pattern was used
  int64_t unknown_roles = 0;
};

// Renders, tokenizes and masks conversations. Built once per run from the
// options; Encode* are const and thread-safe.
class ChatEncoder {
 public:
  static Result<std::unique_ptr<ChatEncoder>> Create(const PrepareOptions& options);

  // One raw JSON record. An error fails the run (malformed JSON, mixed
  // pre-tokenized records, markers that cover nothing with no fallback).
  // `record_seed` drives --turn-dropout; `where` ("file:line") goes into errors.
  Result<ChatRow> EncodeRecord(std::string_view record, const std::string& where, uint64_t record_seed) const;

  // Normalised messages (role/content objects) and an optional tools list.
  Result<ChatRow> EncodeMessages(const nlohmann::ordered_json& messages, const nlohmann::ordered_json& tools,
                                 const std::string& where) const;

  MaskMethod method() const { return method_; }
  const std::optional<AssistantPattern>& pattern() const { return pattern_; }
  const tokenizer::Tokenizer& tokenizer() const { return *tokenizer_; }

 private:
  bool ExtractMessages(const nlohmann::ordered_json& record, ChatRow* row, nlohmann::ordered_json* messages,
                       nlohmann::ordered_json* tools) const;
  void ApplyTurnDropout(nlohmann::ordered_json* messages, uint64_t record_seed) const;
  Status BuildMask(const chat_template::RenderResult& rendered, const tokenizer::Encoding& encoding,
                   const std::string& where, ChatRow* row) const;

  PrepareOptions options_;
  std::unique_ptr<tokenizer::Tokenizer> tokenizer_;
  chat_template::TokenizerConfig config_;
  std::unique_ptr<chat_template::ChatTemplate> template_;
  std::unique_ptr<chat_template::ChatTemplate> tool_use_template_;  // for records with tools; may be null
  std::string template_name_;
  chat_template::RenderOptions render_options_;
  MaskMethod method_ = MaskMethod::kDetectedPattern;
  std::optional<AssistantPattern> pattern_;
  std::string pattern_error_;  // why no detected pattern exists, when pattern_ is empty
  int64_t vocab_size_ = 0;     // from config.json when present; 0 = unchecked
};

// True when the record text is a JSON object with a "conversations",
// "messages" or "data" list, i.e. chat data rather than pre-tokenized data.
bool LooksLikeChatRecord(std::string_view record_json);

Result<PrepareSummary> RunChatPrepare(const PrepareOptions& options);

}  // namespace draftforge::data
