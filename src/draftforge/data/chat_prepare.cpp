#include "draftforge/data/chat_prepare.h"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <thread>

#include "draftforge/chat_template/chat_template.h"
#include "draftforge/data/loss_mask.h"
#include "draftforge/data/record_index.h"
#include "draftforge/data/token_dataset.h"
#include "draftforge/engine/model_config.h"
#include "draftforge/io/token_freq.h"
#include "draftforge/tokenizer/tokenizer.h"
#include "draftforge/util/fs.h"
#include "draftforge/util/progress.h"

namespace draftforge::data {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::ordered_json;

// Records handled per parallel round; bounds the memory of results in flight.
constexpr int64_t kChunkRecords = 512;

bool IsKnownRole(const std::string& role) {
  return role == "human" || role == "user" || role == "gpt" || role == "assistant" || role == "system" ||
         role == "tool";
}

std::string RoleOf(const json& turn) {
  for (const char* key : {"from", "role"}) {
    auto it = turn.find(key);
    if (it != turn.end() && it->is_string()) return it->get<std::string>();
  }
  return "";
}

}  // namespace

Result<std::unique_ptr<ChatEncoder>> ChatEncoder::Create(const PrepareOptions& options) {
  auto encoder = std::make_unique<ChatEncoder>();
  encoder->options_ = options;
  if (options.model_dir.empty()) {
    return Status::Invalid("chat data needs --model DIR with tokenizer.json and tokenizer_config.json");
  }
  const std::string tokenizer_path = (fs::path(options.model_dir) / "tokenizer.json").string();
  if (!fs::exists(tokenizer_path)) {
    return Status::NotFound("{} not found; --model must be a model or tokenizer directory with tokenizer.json",
                            tokenizer_path);
  }
  DF_ASSIGN_OR_RAISE(tokenizer::Tokenizer tokenizer, tokenizer::Tokenizer::FromFile(tokenizer_path));
  encoder->tokenizer_ = std::make_unique<tokenizer::Tokenizer>(std::move(tokenizer));
  auto config = chat_template::LoadTokenizerConfig(options.model_dir);
  if (!config.ok()) return config.status().WithContext("--model " + options.model_dir);
  encoder->config_ = std::move(*config);

  std::string source = encoder->config_.chat_template;
  encoder->template_name_ = fs::path(options.model_dir).filename().string() + " chat template";
  if (!options.chat_template_path.empty()) {
    DF_ASSIGN_OR_RAISE(source, ReadFileToString(options.chat_template_path));
    encoder->template_name_ = options.chat_template_path;
  }
  if (source.empty()) {
    return Status::NotFound(
        "{} has no chat template (tokenizer_config.json 'chat_template', chat_template.jinja or "
        "chat_template.json); pass --chat-template FILE",
        options.model_dir);
  }
  DF_ASSIGN_OR_RAISE(chat_template::ChatTemplate compiled,
                     chat_template::ChatTemplate::Compile(source, encoder->template_name_));
  encoder->template_ = std::make_unique<chat_template::ChatTemplate>(std::move(compiled));
  if (options.chat_template_path.empty() && !encoder->config_.tool_use_template.empty()) {
    DF_ASSIGN_OR_RAISE(chat_template::ChatTemplate tool_use,
                       chat_template::ChatTemplate::Compile(encoder->config_.tool_use_template,
                                                            encoder->template_name_ + " (tool_use)"));
    encoder->tool_use_template_ = std::make_unique<chat_template::ChatTemplate>(std::move(tool_use));
  }

  if (!options.chat_template_kwargs.empty()) {
    json kwargs = json::parse(options.chat_template_kwargs, nullptr, false);
    if (kwargs.is_discarded() || !kwargs.is_object()) {
      return Status::Invalid("--chat-template-kwargs must be a JSON object such as '{{\"enable_thinking\": false}}', got {}",
                             options.chat_template_kwargs);
    }
    encoder->render_options_.extra_kwargs = std::move(kwargs);
  }

  if (!options.assistant_pattern.empty()) {
    encoder->method_ = MaskMethod::kUserPattern;
    DF_ASSIGN_OR_RAISE(AssistantPattern pattern, AssistantPattern::Compile(options.assistant_pattern));
    encoder->pattern_ = std::move(pattern);
  } else {
    auto detected = DetectAssistantPattern(*encoder->template_, encoder->config_, encoder->render_options_);
    if (detected.ok()) {
      DF_ASSIGN_OR_RAISE(AssistantPattern pattern, AssistantPattern::Compile(*detected));
      encoder->pattern_ = std::move(pattern);
    } else {
      encoder->pattern_error_ = detected.status().message();
    }
    if (encoder->template_->has_generation_markers()) {
      encoder->method_ = MaskMethod::kGenerationMarkers;
    } else if (encoder->pattern_) {
      encoder->method_ = MaskMethod::kDetectedPattern;
    } else {
      return Status::Invalid("{} has no {{% generation %}} markers and {}", encoder->template_name_,
                             encoder->pattern_error_);
    }
  }

  const std::string config_path = (fs::path(options.model_dir) / "config.json").string();
  if (fs::exists(config_path)) {
    DF_ASSIGN_OR_RAISE(engine::ModelConfig model_config, engine::ModelConfig::Load(options.model_dir));
    encoder->vocab_size_ = model_config.vocab_size;
  }
  return encoder;
}

bool ChatEncoder::ExtractMessages(const json& record, ChatRow* result, json* messages, json* tools) const {
  const json* turns = nullptr;
  for (const char* key : {"conversations", "messages", "data"}) {
    auto it = record.find(key);
    if (it != record.end()) {
      turns = &*it;
      break;
    }
  }
  if (turns == nullptr || !turns->is_array()) {
    result->skip = kSkipInvalidRecord;
    result->detail = "expected a 'conversations', 'messages' or 'data' list";
    return false;
  }

  // NormalizeMessages maps unknown roles to assistant, so turns to drop go first.
  json raw = json::array();
  for (const json& turn : *turns) {
    if (turn.is_object() && !IsKnownRole(RoleOf(turn))) {
      ++result->unknown_roles;
      if (!options_.unknown_roles_as_assistant) continue;
    }
    raw.push_back(turn);
  }
  int64_t unknown = 0;
  auto normalized = chat_template::NormalizeMessages(raw, &unknown);
  if (!normalized.ok()) {
    result->skip = kSkipInvalidRecord;
    result->detail = normalized.status().message();
    return false;
  }
  *messages = std::move(*normalized);

  auto tools_it = record.find("tools");
  if (tools_it != record.end() && !tools_it->is_null()) {
    if (tools_it->is_string()) {
      json parsed = json::parse(tools_it->get<std::string>(), nullptr, false);
      if (parsed.is_discarded()) {
        result->skip = kSkipInvalidRecord;
        result->detail = "field 'tools' is a string that is not valid JSON";
        return false;
      }
      *tools = std::move(parsed);
    } else {
      *tools = *tools_it;
    }
  }
  return true;
}

void ChatEncoder::ApplyTurnDropout(json* messages, uint64_t record_seed) const {
  std::vector<size_t> assistant_ends;
  for (size_t i = 0; i < messages->size(); ++i) {
    if ((*messages)[i].value("role", "") == "assistant") assistant_ends.push_back(i + 1);
  }
  if (assistant_ends.size() < 2) return;
  std::mt19937_64 engine(record_seed);
  const size_t keep = assistant_ends[engine() % assistant_ends.size()];
  messages->erase(messages->begin() + static_cast<std::ptrdiff_t>(keep), messages->end());
}

Status ChatEncoder::BuildMask(const chat_template::RenderResult& rendered, const tokenizer::Encoding& encoding,
                              const std::string& where, ChatRow* result) const {
  if (method_ == MaskMethod::kGenerationMarkers) {
    std::vector<ByteSpan> spans(rendered.generation_spans.begin(), rendered.generation_spans.end());
    result->mask = MaskFromSpans(encoding.offsets, spans);
    if (std::find(result->mask.begin(), result->mask.end(), 1) != result->mask.end()) return Status::OK();
    // The markers covered nothing although the conversation has an assistant
    // turn (for example a template that wraps only some replies).
    if (!pattern_) {
      return Status::Invalid(
          "{}: the {{% generation %}} markers of {} cover no token of a conversation with an assistant turn, "
          "and no fallback pattern exists ({}); pass --assistant-pattern REGEX",
          where, template_name_, pattern_error_);
    }
    result->fell_back = true;
  }
  DF_ASSIGN_OR_RAISE(std::vector<ByteSpan> spans, pattern_->FindSpans(rendered.text));
  result->mask = MaskFromSpans(encoding.offsets, spans);
  return Status::OK();
}

Result<ChatRow> ChatEncoder::EncodeRecord(std::string_view record, const std::string& where,
                                          uint64_t record_seed) const {
  ChatRow result;
  json parsed = json::parse(record.begin(), record.end(), nullptr, false);
  if (parsed.is_discarded()) {
    if (!tokenizer::IsValidUtf8(record)) {
      result.skip = kSkipInvalidUtf8;
      result.detail = "the record's bytes are not valid UTF-8";
      return result;
    }
    // nlohmann rejects \u escapes of unpaired UTF-16 surrogates, which no
    // tokenizer could encode either.
    if (record.find("\\ud") != std::string_view::npos || record.find("\\uD") != std::string_view::npos) {
      result.skip = kSkipInvalidUtf8;
      result.detail = "malformed JSON or a \\u escape of an unpaired UTF-16 surrogate";
      return result;
    }
    return Status::Invalid("{}: malformed JSON; expected one JSON object per record", where);
  }
  if (!parsed.is_object()) {
    result.skip = kSkipInvalidRecord;
    result.detail = fmt::format("the record is {}, not an object", parsed.type_name());
    return result;
  }
  if (parsed.contains("input_ids") && !parsed.contains("conversations") && !parsed.contains("messages")) {
    return Status::Invalid(
        "{}: a pre-tokenized record ('input_ids') among chat records; prepare pre-tokenized and chat files in "
        "separate runs",
        where);
  }

  json messages;
  json tools;
  if (!ExtractMessages(parsed, &result, &messages, &tools)) return result;
  if (messages.empty()) {
    result.skip = kSkipNoMessages;
    result.detail = "the conversation has no message";
    return result;
  }
  if (options_.turn_dropout) ApplyTurnDropout(&messages, record_seed);
  const bool has_assistant = std::any_of(messages.begin(), messages.end(),
                                         [](const json& m) { return m.value("role", "") == "assistant"; });
  if (!has_assistant) {
    result.skip = kSkipNoAssistant;
    result.detail = "no turn has the role assistant/gpt";
    return result;
  }
  // Templates still render markers (an empty think block, say) around an
  // empty reply, so such a conversation would train on template text only.
  const bool has_reply = std::any_of(messages.begin(), messages.end(), [](const json& m) {
    if (m.value("role", "") != "assistant") return false;
    auto content = m.find("content");
    if (content == m.end() || content->is_null()) return m.contains("tool_calls");
    if (!content->is_string()) return !content->empty();
    return content->get<std::string>().find_first_not_of(" \t\r\n") != std::string::npos || m.contains("tool_calls");
  });
  if (!has_reply) {
    result.skip = kSkipEmptyAssistant;
    result.detail = "every assistant turn has empty content";
    return result;
  }

  DF_ASSIGN_OR_RAISE(ChatRow row, EncodeMessages(messages, tools, where));
  row.unknown_roles = result.unknown_roles;
  return row;
}

Result<ChatRow> ChatEncoder::EncodeMessages(const json& messages, const json& tools, const std::string& where) const {
  ChatRow result;
  chat_template::RenderOptions render_options = render_options_;
  render_options.add_generation_prompt = false;
  if (!tools.is_null()) render_options.tools = tools;

  // As transformers does, a record with tools uses the "tool_use" template when the tokenizer has one.
  const bool use_tool_template = tool_use_template_ != nullptr && !tools.is_null();
  auto rendered = (use_tool_template ? *tool_use_template_ : *template_).Render(messages, config_, render_options);
  if (!rendered.ok()) {
    result.skip = kSkipTemplateError;
    result.detail = rendered.status().message();
    return result;
  }
  // transformers tokenizes the rendered text without adding special tokens,
  // because the template already wrote BOS and the turn markers.
  auto encoding = tokenizer_->Encode(rendered->text, /*add_special_tokens=*/false);
  if (!encoding.ok()) {
    result.skip = kSkipInvalidUtf8;
    result.detail = encoding.status().message();
    return result;
  }

  DF_RETURN_NOT_OK(BuildMask(*rendered, *encoding, where, &result));
  result.ids.assign(encoding->ids.begin(), encoding->ids.end());
  if (vocab_size_ > 0) {
    for (size_t i = 0; i < result.ids.size(); ++i) {
      if (result.ids[i] >= vocab_size_) {
        return Status::Invalid(
            "{}: token {} of the rendered conversation has id {}, outside the model's vocab_size {}; the "
            "tokenizer does not belong to --model",
            where, i, result.ids[i], vocab_size_);
      }
    }
  }

  if (static_cast<int64_t>(result.ids.size()) > options_.seq_length) {
    result.ids.resize(options_.seq_length);
    result.mask.resize(options_.seq_length);
    result.truncated = true;
  }
  if (std::find(result.mask.begin(), result.mask.end(), 1) == result.mask.end()) {
    result.skip = kSkipNoTrainable;
    result.detail = result.truncated ? fmt::format("every assistant token lies beyond --seq-length {}",
                                                   options_.seq_length)
                                     : "the assistant turns render no token";
    result.ids.clear();
    result.mask.clear();
  }
  result.text = std::move(rendered->text);
  return result;
}

namespace {

// Per-record seed for --turn-dropout: independent of scheduling and worker count.
uint64_t RecordSeed(uint64_t seed, size_t source, int64_t record) {
  uint64_t x = seed ^ (0x9E3779B97F4A7C15ULL * (source + 1)) ^ (0xBF58476D1CE4E5B9ULL * static_cast<uint64_t>(record + 1));
  x ^= x >> 31;
  return x * 0x94D049BB133111EBULL;
}

// Logs one row with its trained tokens marked: colours on a terminal,
// [[...]] around trained runs otherwise.
void LogSample(const tokenizer::Tokenizer& tokenizer, const std::vector<int64_t>& ids, const std::vector<uint8_t>& mask) {
  const bool colour = isatty(STDERR_FILENO) != 0;
  const char* on = colour ? "\033[38;5;153m" : "[[";
  const char* off = colour ? "\033[90m" : "]]";
  std::string text = colour ? off : "";
  bool training = false;
  const size_t limit = std::min<size_t>(ids.size(), 2048);
  // Each token's text is what it adds to the decoded prefix: decoding tokens
  // one by one would drop SentencePiece's leading spaces and split
  // multi-byte characters.
  std::vector<int32_t> prefix;
  std::string decoded;
  for (size_t i = 0; i < limit; ++i) {
    if ((mask[i] != 0) != training) {
      training = mask[i] != 0;
      text += training ? on : off;
    }
    prefix.push_back(static_cast<int32_t>(ids[i]));
    std::string next = tokenizer.Decode(prefix);
    if (next.starts_with(decoded)) text += next.substr(decoded.size());
    decoded = std::move(next);
  }
  if (training) text += off;
  if (colour) text += "\033[0m";
  if (limit < ids.size()) text += fmt::format(" ... ({} more tokens)", ids.size() - limit);
  spdlog::info("sample row 0, {} tokens ({}):\n{}", ids.size(),
               colour ? "blue = trained, grey = masked" : "trained tokens inside [[ ]]", text);
}

}  // namespace

const char* MaskMethodName(MaskMethod method) {
  switch (method) {
    case MaskMethod::kGenerationMarkers:
      return "the template's {% generation %} markers";
    case MaskMethod::kDetectedPattern:
      return "the assistant pattern detected from the template";
    case MaskMethod::kUserPattern:
      return "--assistant-pattern";
  }
  return "?";
}

bool LooksLikeChatRecord(std::string_view record_json) {
  json parsed = json::parse(record_json.begin(), record_json.end(), nullptr, false);
  if (parsed.is_discarded() || !parsed.is_object()) return false;
  for (const char* key : {"conversations", "messages", "data"}) {
    auto it = parsed.find(key);
    if (it != parsed.end() && it->is_array()) return true;
  }
  return false;
}

Result<PrepareSummary> RunChatPrepare(const PrepareOptions& options) {
  PrepareSummary summary;
  DF_ASSIGN_OR_RAISE(std::unique_ptr<ChatEncoder> encoder, ChatEncoder::Create(options));
  summary.mask_method = MaskMethodName(encoder->method());
  if (encoder->method() == MaskMethod::kGenerationMarkers) {
    spdlog::info("loss masks from {}{}", summary.mask_method,
                 encoder->pattern() ? fmt::format("; fallback pattern: {}", encoder->pattern()->pattern()) : "");
  } else {
    spdlog::info("loss masks from {}: {}", summary.mask_method, encoder->pattern()->pattern());
  }

  const int num_workers = options.num_workers > 0
                              ? options.num_workers
                              : std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  DF_ASSIGN_OR_RAISE(std::unique_ptr<TokenDatasetWriter> writer, TokenDatasetWriter::Open(options.output_dir));
  std::vector<uint8_t> truncated;  // per appended row
  std::map<std::string, std::string> first_detail;

  std::unique_ptr<ProgressBar> progress;
  if (options.show_progress) progress = std::make_unique<ProgressBar>("prepare", 0, "records", "rendered");
  for (size_t source = 0; source < options.data_files.size(); ++source) {
    DF_ASSIGN_OR_RAISE(RecordIndex index, RecordIndex::Build(options.data_files[source]));
    std::vector<int64_t> order = ShuffledIndices(index.size(), options.seed);
    if (options.max_samples && static_cast<int64_t>(order.size()) / 3 >= *options.max_samples) {
      order.resize(3 * *options.max_samples);
    }
    for (size_t chunk_begin = 0; chunk_begin < order.size(); chunk_begin += kChunkRecords) {
      const size_t chunk_end = std::min(order.size(), chunk_begin + kChunkRecords);
      std::vector<Result<ChatRow>> results(chunk_end - chunk_begin, Result<ChatRow>(ChatRow{}));
      std::atomic<size_t> next{chunk_begin};
      auto work = [&] {
        for (size_t k = next++; k < chunk_end; k = next++) {
          const int64_t record = order[k];
          const std::string where = index.Where(record);
          Result<ChatRow>& result = results[k - chunk_begin];
          result = encoder->EncodeRecord(index.record(record), where, RecordSeed(options.seed, source, record));
          if (result.ok() && result->skip != nullptr) result->detail = where + ": " + result->detail;
        }
      };
      std::vector<std::thread> threads;
      const int spawn = std::min<int>(num_workers, static_cast<int>(chunk_end - chunk_begin)) - 1;
      for (int t = 0; t < spawn; ++t) threads.emplace_back(work);
      work();
      for (auto& thread : threads) thread.join();

      for (Result<ChatRow>& outcome : results) {
        ++summary.records_read;
        DF_RETURN_NOT_OK(outcome.status());
        ChatRow& result = *outcome;
        summary.unknown_role_turns += result.unknown_roles;
        if (result.skip != nullptr) {
          if (++summary.skipped[result.skip] == 1) first_detail[result.skip] = result.detail;
          continue;
        }
        summary.mask_fallbacks += result.fell_back ? 1 : 0;
        DF_RETURN_NOT_OK(writer->Append(result.ids, result.mask));
        truncated.push_back(result.truncated ? 1 : 0);
      }
      if (progress) progress->Advance(static_cast<int64_t>(chunk_end - chunk_begin));
    }
  }
  if (progress) progress->Finish();
  for (const auto& [reason, detail] : first_detail) {
    spdlog::warn("skipped {} records ({}); first: {}", summary.skipped[reason], reason, detail);
  }
  if (summary.unknown_role_turns > 0) {
    spdlog::warn("{} turns had a role other than user/human, assistant/gpt, system or tool and were {}",
                 summary.unknown_role_turns,
                 options.unknown_roles_as_assistant ? "mapped to assistant" : "dropped (--unknown-roles assistant keeps them)");
  }
  if (summary.mask_fallbacks > 0) {
    spdlog::warn("{} conversations got no token from the {{% generation %}} markers and were masked with the "
                 "detected assistant pattern instead",
                 summary.mask_fallbacks);
  }
  if (writer->num_rows() == 0) {
    return Status::Invalid("no rows left to write from {} records ({}); check the input files",
                           summary.records_read, summary.ToString());
  }

  std::vector<int64_t> selected = ShuffledIndices(writer->num_rows(), options.seed);
  if (options.max_samples && static_cast<int64_t>(selected.size()) > *options.max_samples) {
    selected.resize(*options.max_samples);
  }
  if (options.max_samples && static_cast<int64_t>(selected.size()) < *options.max_samples) {
    spdlog::warn("--max-samples {} requested but only {} rows were kept: prepare reads at most 3 x max-samples "
                 "records per source (as prepare_data.py does) and skipped {} of {} read; raise --max-samples "
                 "or clean the input",
                 *options.max_samples, selected.size(), summary.records_read - writer->num_rows(),
                 summary.records_read);
  }
  for (int64_t row : selected) summary.truncated_rows += truncated[row];
  std::map<int64_t, int64_t> token_freq;
  std::vector<int64_t> sample_ids;
  std::vector<uint8_t> sample_mask;
  auto visit = [&](std::span<const int64_t> ids, std::span<const uint8_t> mask) {
    if (summary.rows_kept == 0) {
      sample_ids.assign(ids.begin(), ids.end());
      sample_mask.assign(mask.begin(), mask.end());
    }
    ++summary.rows_kept;
    summary.tokens += static_cast<int64_t>(ids.size());
    for (size_t i = 0; i < ids.size(); ++i) {
      if (mask[i] != 0) {
        ++token_freq[ids[i]];
        ++summary.trainable_tokens;
      }
    }
  };
  DF_RETURN_NOT_OK(writer->Finish(selected, visit));
  if (options.show_sample && !sample_ids.empty()) LogSample(encoder->tokenizer(), sample_ids, sample_mask);

  DF_RETURN_NOT_OK(WriteTokenFreqUnlessPresent(options, token_freq, &summary));
  return summary;
}

}  // namespace draftforge::data
