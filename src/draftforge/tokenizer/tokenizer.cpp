#include "draftforge/tokenizer/tokenizer.h"

#include <simdjson.h>

#include <algorithm>
#include <filesystem>
#include <limits>
#include <unordered_map>

#include "draftforge/tokenizer/added_tokens.h"
#include "draftforge/tokenizer/bpe.h"
#include "draftforge/tokenizer/components.h"
#include "draftforge/tokenizer/json_util.h"
#include "draftforge/tokenizer/unicode.h"

namespace draftforge::tokenizer {

namespace internal {

struct TokenizerState {
  std::string path;
  std::vector<AddedToken> added_tokens;
  Vocab added_by_content;  // content -> id
  std::unordered_map<int32_t, size_t> added_by_id;  // id -> index in added_tokens
  AddedTokenMatcher raw_matcher;         // tokens with normalized=false, on the input text
  AddedTokenMatcher normalized_matcher;  // tokens with normalized=true, on normalized text
  std::unique_ptr<Normalizer> normalizer;
  std::unique_ptr<PreTokenizer> pre_tokenizer;
  bool byte_level = false;
  std::optional<BpeModel> model;
  std::unique_ptr<PostProcessor> post_processor;
  std::unique_ptr<Decoder> decoder;
  int64_t vocab_size = 0;
};

}  // namespace internal

namespace {

using internal::AddedToken;
using internal::AlignedText;
using internal::BpeModel;
using internal::BpeToken;
using internal::PreTokenized;
using internal::Span;
using internal::TextSegment;
using internal::TokenizerState;
using simdjson::dom::element;

Result<BpeModel> LoadBpe(element model_json, const std::string& path) {
  const std::string context = path + ": model";
  if (auto type = internal::OptionalString(model_json, "type"); type && *type != "BPE") {
    return Status::Unimplemented("{}: model type '{}' is not supported; only BPE is", context, *type);
  }
  double dropout = 0.0;
  if (model_json["dropout"].get(dropout) == simdjson::SUCCESS && dropout > 0.0) {
    return Status::Unimplemented("{}: BPE dropout {} is not supported (encoding would be random)", context, dropout);
  }

  simdjson::dom::object vocab_json;
  if (model_json["vocab"].get(vocab_json) != simdjson::SUCCESS) {
    return Status::Invalid("{}: field \"vocab\" is missing or not an object", context);
  }
  internal::Vocab vocab;
  vocab.reserve(vocab_json.size());
  for (auto [key, value] : vocab_json) {
    int64_t id;
    if (value.get(id) != simdjson::SUCCESS || id < 0 || id > std::numeric_limits<int32_t>::max()) {
      return Status::Invalid("{}: vocab entry '{}' has no valid integer id", context, key);
    }
    vocab.emplace(std::string(key), static_cast<int32_t>(id));
  }

  DF_ASSIGN_OR_RAISE(simdjson::dom::array merges_json, internal::RequiredArray(model_json, "merges", context));
  std::vector<std::pair<std::string, std::string>> merges;
  merges.reserve(merges_json.size());
  size_t index = 0;
  for (element merge : merges_json) {
    std::string_view line;
    simdjson::dom::array pair;
    if (merge.get(line) == simdjson::SUCCESS) {
      // Older format: "left right" with exactly one space.
      const size_t space = line.find(' ');
      if (space == std::string_view::npos || line.find(' ', space + 1) != std::string_view::npos) {
        return Status::Invalid("{}: merges[{}] = '{}' is not two tokens separated by one space", context, index, line);
      }
      merges.emplace_back(std::string(line.substr(0, space)), std::string(line.substr(space + 1)));
    } else if (merge.get(pair) == simdjson::SUCCESS && pair.size() == 2) {
      std::string_view left;
      std::string_view right;
      if (pair.at(0).get(left) != simdjson::SUCCESS || pair.at(1).get(right) != simdjson::SUCCESS) {
        return Status::Invalid("{}: merges[{}] is not a pair of strings", context, index);
      }
      merges.emplace_back(std::string(left), std::string(right));
    } else {
      return Status::Invalid("{}: merges[{}] is neither \"left right\" nor [left, right]", context, index);
    }
    ++index;
  }

  internal::BpeOptions options;
  if (auto unk = internal::OptionalString(model_json, "unk_token")) options.unk_token = std::string(*unk);
  if (auto prefix = internal::OptionalString(model_json, "continuing_subword_prefix")) {
    options.continuing_subword_prefix = std::string(*prefix);
  }
  if (auto suffix = internal::OptionalString(model_json, "end_of_word_suffix")) {
    options.end_of_word_suffix = std::string(*suffix);
  }
  options.fuse_unk = internal::BoolOr(model_json, "fuse_unk", false);
  options.byte_fallback = internal::BoolOr(model_json, "byte_fallback", false);
  options.ignore_merges = internal::BoolOr(model_json, "ignore_merges", false);
  return BpeModel::Build(std::move(vocab), merges, std::move(options), path);
}

Status LoadAddedTokens(element root, TokenizerState* state) {
  const std::string context = state->path + ": added_tokens";
  simdjson::dom::array tokens;
  if (root["added_tokens"].get(tokens) != simdjson::SUCCESS) return Status::OK();
  size_t index = 0;
  for (element token_json : tokens) {
    const std::string item_context = fmt::format("{}[{}]", context, index++);
    AddedToken token;
    DF_ASSIGN_OR_RAISE(token.content, internal::RequiredString(token_json, "content", item_context));
    int64_t id;
    if (token_json["id"].get(id) != simdjson::SUCCESS || id < 0 || id > std::numeric_limits<int32_t>::max()) {
      return Status::Invalid("{}: field \"id\" is missing or not a valid integer", item_context);
    }
    token.id = static_cast<int32_t>(id);
    token.single_word = internal::BoolOr(token_json, "single_word", false);
    token.lstrip = internal::BoolOr(token_json, "lstrip", false);
    token.rstrip = internal::BoolOr(token_json, "rstrip", false);
    token.normalized = internal::BoolOr(token_json, "normalized", true);
    token.special = internal::BoolOr(token_json, "special", false);
    state->added_by_content.emplace(token.content, token.id);
    state->added_by_id.emplace(token.id, state->added_tokens.size());
    state->added_tokens.push_back(std::move(token));
  }
  return Status::OK();
}

// Builds the two added-token matchers. A normalized token is matched in its
// normalized form, as the Rust engine does.
void BuildMatchers(TokenizerState* state) {
  for (size_t i = 0; i < state->added_tokens.size(); ++i) {
    const AddedToken& token = state->added_tokens[i];
    if (!token.normalized) {
      state->raw_matcher.Add(token.content, static_cast<int32_t>(i));
      continue;
    }
    AlignedText pattern;
    pattern.text = token.content;
    if (state->normalizer) state->normalizer->Normalize(&pattern);
    state->normalized_matcher.Add(pattern.text, static_cast<int32_t>(i));
  }
}

Result<std::shared_ptr<TokenizerState>> LoadState(const std::string& path) {
  std::error_code error;
  if (!std::filesystem::is_regular_file(path, error)) {
    return Status::NotFound("tokenizer file '{}' not found; pass the tokenizer.json of the model", path);
  }
  simdjson::dom::parser parser;
  element root;
  if (const auto code = parser.load(path).get(root); code != simdjson::SUCCESS) {
    return Status::Invalid("{}: not valid JSON ({}); re-download tokenizer.json", path, simdjson::error_message(code));
  }
  if (!root.is_object()) return Status::Invalid("{}: top level is not a JSON object", path);

  auto state = std::make_shared<TokenizerState>();
  state->path = path;
  DF_ASSIGN_OR_RAISE(element model_json, internal::RequiredField(root, "model", path));
  DF_ASSIGN_OR_RAISE(BpeModel model, LoadBpe(model_json, path));
  state->model.emplace(std::move(model));
  DF_RETURN_NOT_OK(LoadAddedTokens(root, state.get()));

  // Absent stages are passed on as a JSON null, parsed by a second parser so
  // that the document of the first stays valid.
  simdjson::dom::parser null_parser;
  element null_value;
  if (null_parser.parse("null", 4).get(null_value) != simdjson::SUCCESS) {
    return Status::Internal("simdjson failed to parse the literal null");
  }
  auto member = [&](const char* key) {
    element value;
    return root[key].get(value) == simdjson::SUCCESS ? value : null_value;
  };
  DF_ASSIGN_OR_RAISE(state->normalizer, internal::BuildNormalizer(member("normalizer"), path + ": normalizer"));
  DF_ASSIGN_OR_RAISE(state->pre_tokenizer,
                     internal::BuildPreTokenizer(member("pre_tokenizer"), path + ": pre_tokenizer", &state->byte_level));
  auto token_to_id = [&state](std::string_view token) -> std::optional<int32_t> {
    const auto it = state->added_by_content.find(token);
    if (it != state->added_by_content.end()) return it->second;
    return state->model->TokenToId(token);
  };
  DF_ASSIGN_OR_RAISE(state->post_processor, internal::BuildPostProcessor(member("post_processor"),
                                                                         path + ": post_processor", token_to_id));
  DF_ASSIGN_OR_RAISE(state->decoder, internal::BuildDecoder(member("decoder"), path + ": decoder"));
  // NOTE: "truncation" and "padding" are not applied; callers truncate.

  BuildMatchers(state.get());
  int64_t max_id = state->model->max_id();
  for (const AddedToken& token : state->added_tokens) max_id = std::max<int64_t>(max_id, token.id);
  state->vocab_size = max_id + 1;
  return state;
}

// Token sink: ids, plus offsets when kOffsets.
template <bool kOffsets>
struct Output {
  std::vector<int32_t>* ids;
  std::vector<std::pair<int64_t, int64_t>>* offsets;
  void Add(int32_t id, int64_t start, int64_t end) {
    ids->push_back(id);
    if constexpr (kOffsets) offsets->emplace_back(start, end);
  }
};

// Pre-tokenizes `words->buffer` and runs the model on every word.
template <bool kOffsets>
void TokenizePiece(const TokenizerState& state, PreTokenized* words, Output<kOffsets>* out) {
  words->words.clear();
  if (words->buffer.text.empty()) return;
  words->words.emplace_back(0, static_cast<uint32_t>(words->buffer.text.size()));
  if (state.pre_tokenizer) state.pre_tokenizer->Apply(words);
  thread_local std::vector<BpeToken> tokens;
  for (const auto& [start, end] : words->words) {
    tokens.clear();
    state.model->Tokenize(std::string_view(words->buffer.text).substr(start, end - start), state.byte_level, &tokens);
    uint32_t position = start;
    for (const BpeToken& token : tokens) {
      if constexpr (kOffsets) {
        const Span first = words->buffer.align[position];
        const Span last = words->buffer.align[position + token.length - 1];
        out->Add(token.id, first.start, last.end);
      } else {
        out->Add(token.id, 0, 0);
      }
      position += token.length;
    }
  }
}

// Original span of normalized bytes [start, end).
Span OriginalSpan(const AlignedText& text, size_t start, size_t end) {
  return Span{text.align[start].start, text.align[end - 1].end};
}

template <bool kOffsets>
Status EncodeInto(const TokenizerState& state, std::string_view text, bool add_special_tokens,
                  std::vector<int32_t>* ids, std::vector<std::pair<int64_t, int64_t>>* offsets) {
  if (text.size() > static_cast<size_t>(std::numeric_limits<int32_t>::max())) {
    return Status::Invalid("text of {} bytes is too long to encode; the maximum is 2 GiB - 1", text.size());
  }
  const int64_t invalid_at = internal::FindInvalidUtf8(text);
  if (invalid_at >= 0) {
    return Status::Invalid("text is not valid UTF-8: invalid byte 0x{:02X} at byte offset {}",
                           static_cast<unsigned char>(text[invalid_at]), invalid_at);
  }
  Output<kOffsets> out{ids, offsets};
  thread_local std::vector<TextSegment> raw_segments;
  thread_local std::vector<TextSegment> normalized_segments;
  thread_local PreTokenized words;
  if (state.raw_matcher.empty()) {
    raw_segments.assign(1, TextSegment{0, text.size(), -1});
  } else {
    state.raw_matcher.Split(text, state.added_tokens, &raw_segments);
  }

  for (const TextSegment& segment : raw_segments) {
    if (segment.end == segment.start) continue;
    if (segment.token >= 0) {
      out.Add(state.added_tokens[segment.token].id, static_cast<int64_t>(segment.start),
              static_cast<int64_t>(segment.end));
      continue;
    }
    AlignedText& normalized = words.buffer;
    normalized.tracked = kOffsets;
    normalized.text.assign(text.substr(segment.start, segment.end - segment.start));
    if constexpr (kOffsets) {
      // Every byte of a character maps to the whole character.
      normalized.align.clear();
      normalized.align.reserve(normalized.text.size());
      for (size_t pos = segment.start; pos < segment.end;) {
        const int length = internal::Utf8Length(static_cast<unsigned char>(text[pos]));
        const Span span{static_cast<int32_t>(pos), static_cast<int32_t>(pos + length)};
        normalized.align.insert(normalized.align.end(), length, span);
        pos += length;
      }
    } else {
      normalized.align.clear();
    }
    if (state.normalizer) state.normalizer->Normalize(&normalized);

    if (state.normalized_matcher.empty()) {
      words.original_start = static_cast<int64_t>(segment.start);
      TokenizePiece(state, &words, &out);
      continue;
    }
    const AlignedText whole = normalized;
    state.normalized_matcher.Split(whole.text, state.added_tokens, &normalized_segments);
    for (const TextSegment& piece : normalized_segments) {
      if (piece.end == piece.start) continue;
      if (piece.token >= 0) {
        if constexpr (kOffsets) {
          const Span span = OriginalSpan(whole, piece.start, piece.end);
          out.Add(state.added_tokens[piece.token].id, span.start, span.end);
        } else {
          out.Add(state.added_tokens[piece.token].id, 0, 0);
        }
        continue;
      }
      words.buffer.text.assign(whole.text, piece.start, piece.end - piece.start);
      words.buffer.tracked = kOffsets;
      if constexpr (kOffsets) {
        words.buffer.align.assign(whole.align.begin() + piece.start, whole.align.begin() + piece.end);
        words.original_start = whole.align[piece.start].start;
      } else {
        words.buffer.align.clear();
        words.original_start = static_cast<int64_t>(segment.start) + (piece.start == 0 ? 0 : 1);
      }
      TokenizePiece(state, &words, &out);
    }
  }

  if (state.post_processor) {
    const auto token_text = [&state](int32_t id) {
      const auto it = state.added_by_id.find(id);
      if (it != state.added_by_id.end()) return state.added_tokens[it->second].content;
      const std::string* token = state.model->IdToToken(id);
      return token ? *token : std::string();
    };
    state.post_processor->Process(internal::ProcessedEncoding{ids, kOffsets ? offsets : nullptr},
                                  add_special_tokens, token_text);
  }
  return Status::OK();
}

}  // namespace

Result<Tokenizer> Tokenizer::FromFile(const std::string& tokenizer_json_path) {
  DF_ASSIGN_OR_RAISE(std::shared_ptr<TokenizerState> state, LoadState(tokenizer_json_path));
  return Tokenizer(std::move(state));
}

Result<Encoding> Tokenizer::Encode(std::string_view text, bool add_special_tokens) const {
  Encoding encoding;
  DF_RETURN_NOT_OK(EncodeInto<true>(*state_, text, add_special_tokens, &encoding.ids, &encoding.offsets));
  return encoding;
}

Result<std::vector<int32_t>> Tokenizer::EncodeIds(std::string_view text, bool add_special_tokens) const {
  std::vector<int32_t> ids;
  DF_RETURN_NOT_OK(EncodeInto<false>(*state_, text, add_special_tokens, &ids, nullptr));
  return ids;
}

std::string Tokenizer::Decode(const std::vector<int32_t>& ids, bool skip_special_tokens) const {
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (int32_t id : ids) {
    const auto it = state_->added_by_id.find(id);
    if (it != state_->added_by_id.end()) {
      const AddedToken& token = state_->added_tokens[it->second];
      if (skip_special_tokens && token.special) continue;
      tokens.push_back(token.content);
      continue;
    }
    if (const std::string* token = state_->model->IdToToken(id)) tokens.push_back(*token);
  }
  if (!state_->decoder) {
    std::string joined;
    for (size_t i = 0; i < tokens.size(); ++i) {
      if (i > 0) joined.push_back(' ');
      joined += tokens[i];
    }
    return joined;
  }
  state_->decoder->DecodeChain(&tokens);
  std::string joined;
  for (const std::string& token : tokens) joined += token;
  return joined;
}

std::optional<int32_t> Tokenizer::TokenToId(std::string_view token) const {
  const auto it = state_->added_by_content.find(token);
  if (it != state_->added_by_content.end()) return it->second;
  return state_->model->TokenToId(token);
}

std::string Tokenizer::IdToToken(int32_t id) const {
  const auto it = state_->added_by_id.find(id);
  if (it != state_->added_by_id.end()) return state_->added_tokens[it->second].content;
  const std::string* token = state_->model->IdToToken(id);
  return token ? *token : std::string();
}

int64_t Tokenizer::vocab_size() const { return state_->vocab_size; }

bool IsValidUtf8(std::string_view text) { return internal::FindInvalidUtf8(text) < 0; }

std::vector<std::pair<int64_t, int64_t>> ByteToCodePointOffsets(
    std::string_view text, const std::vector<std::pair<int64_t, int64_t>>& byte_offsets) {
  // Code point index of every byte position, plus the end position.
  std::vector<int64_t> index(text.size() + 1);
  int64_t count = 0;
  for (size_t pos = 0; pos < text.size(); ++pos) {
    if ((static_cast<unsigned char>(text[pos]) & 0xC0) != 0x80 && pos > 0) ++count;
    index[pos] = count;
  }
  index[text.size()] = text.empty() ? 0 : count + 1;
  std::vector<std::pair<int64_t, int64_t>> result;
  result.reserve(byte_offsets.size());
  const auto size = static_cast<int64_t>(text.size());
  for (const auto& [start, end] : byte_offsets) {
    const int64_t s = std::clamp<int64_t>(start, 0, size);
    const int64_t e = std::clamp<int64_t>(end, 0, size);
    result.emplace_back(index[s], index[e]);
  }
  return result;
}

}  // namespace draftforge::tokenizer
