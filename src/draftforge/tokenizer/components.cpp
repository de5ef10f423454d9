#include "draftforge/tokenizer/components.h"

#include <algorithm>
#include <optional>

#include "draftforge/tokenizer/bpe.h"
#include "draftforge/tokenizer/json_util.h"

namespace draftforge::tokenizer::internal {

namespace {

using simdjson::dom::element;

// ---- Patterns and splitting ----

// Marks each match (true) and the gaps between matches (false), in order, as
// the Rust engine's Pattern::find_matches does.
void MatchesWithGaps(const std::vector<std::pair<size_t, size_t>>& matches, size_t length,
                     std::vector<std::tuple<size_t, size_t, bool>>* out) {
  out->clear();
  size_t previous = 0;
  for (const auto& [start, end] : matches) {
    if (previous != start) out->emplace_back(previous, start, false);
    out->emplace_back(start, end, true);
    previous = end;
  }
  if (previous != length) out->emplace_back(previous, length, false);
}

// Applies a split behaviour to the marked pieces of one word and appends the
// kept ranges, shifted by `base`, to `words`.
void ApplyBehavior(const std::vector<std::tuple<size_t, size_t, bool>>& pieces, SplitBehavior behavior,
                   uint32_t base, std::vector<std::pair<uint32_t, uint32_t>>* words) {
  std::vector<std::pair<size_t, size_t>> kept;
  switch (behavior) {
    case SplitBehavior::kIsolated:
      for (const auto& [start, end, is_match] : pieces) kept.emplace_back(start, end);
      break;
    case SplitBehavior::kRemoved:
      for (const auto& [start, end, is_match] : pieces) {
        if (!is_match) kept.emplace_back(start, end);
      }
      break;
    case SplitBehavior::kContiguous: {
      bool previous_match = false;
      for (const auto& [start, end, is_match] : pieces) {
        if (is_match == previous_match && !kept.empty()) {
          kept.back().second = end;
        } else {
          kept.emplace_back(start, end);
        }
        previous_match = is_match;
      }
      break;
    }
    case SplitBehavior::kMergedWithPrevious: {
      bool previous_match = false;
      for (const auto& [start, end, is_match] : pieces) {
        if (is_match && !previous_match && !kept.empty()) {
          kept.back().second = end;
        } else {
          kept.emplace_back(start, end);
        }
        previous_match = is_match;
      }
      break;
    }
    case SplitBehavior::kMergedWithNext: {
      bool previous_match = false;
      for (auto it = pieces.rbegin(); it != pieces.rend(); ++it) {
        const auto& [start, end, is_match] = *it;
        if (is_match && !previous_match && !kept.empty()) {
          kept.back().first = start;
        } else {
          kept.emplace_back(start, end);
        }
        previous_match = is_match;
      }
      std::reverse(kept.begin(), kept.end());
      break;
    }
  }
  for (const auto& [start, end] : kept) {
    if (end > start) words->emplace_back(base + static_cast<uint32_t>(start), base + static_cast<uint32_t>(end));
  }
}

// Splits every word with `find` (which lists the matches inside one word).
template <typename FindFn>
void SplitWords(PreTokenized* p, SplitBehavior behavior, bool invert, FindFn find) {
  std::vector<std::pair<uint32_t, uint32_t>> result;
  result.reserve(p->words.size() * 2);
  std::vector<std::pair<size_t, size_t>> matches;
  std::vector<std::tuple<size_t, size_t, bool>> pieces;
  for (const auto& [start, end] : p->words) {
    const std::string_view word(p->buffer.text.data() + start, end - start);
    matches.clear();
    find(word, &matches);
    MatchesWithGaps(matches, word.size(), &pieces);
    if (invert) {
      for (auto& piece : pieces) std::get<2>(piece) = !std::get<2>(piece);
    }
    ApplyBehavior(pieces, behavior, start, &result);
  }
  p->words = std::move(result);
}

// Matches every single character that satisfies `predicate`.
template <typename Predicate>
auto CharMatcher(Predicate predicate) {
  return [predicate](std::string_view text, std::vector<std::pair<size_t, size_t>>* matches) {
    for (size_t pos = 0; pos < text.size();) {
      int length;
      const char32_t cp = DecodeUtf8(text, pos, &length);
      if (predicate(cp)) matches->emplace_back(pos, pos + length);
      pos += length;
    }
  };
}

// Rebuilds the buffer word by word with `rewrite(word_text, word_align, out)`,
// which appends the new text of one word to `out`.
template <typename RewriteFn>
void RewriteWords(PreTokenized* p, RewriteFn rewrite) {
  AlignedText out;
  out.tracked = p->buffer.tracked;
  out.text.reserve(p->buffer.text.size() + p->words.size() * 3);
  std::vector<std::pair<uint32_t, uint32_t>> words;
  words.reserve(p->words.size());
  for (const auto& [start, end] : p->words) {
    const auto new_start = static_cast<uint32_t>(out.text.size());
    rewrite(p->buffer, start, end, &out);
    words.emplace_back(new_start, static_cast<uint32_t>(out.text.size()));
  }
  p->buffer = std::move(out);
  p->words = std::move(words);
}

void AppendRange(const AlignedText& in, size_t start, size_t end, AlignedText* out) {
  out->text.append(in.text, start, end - start);
  if (out->tracked) out->align.insert(out->align.end(), in.align.begin() + start, in.align.begin() + end);
}

void AppendWithSpan(std::string_view s, Span span, AlignedText* out) {
  out->text.append(s);
  if (out->tracked) out->align.insert(out->align.end(), s.size(), span);
}

Result<SplitBehavior> ParseBehavior(std::string_view name, const std::string& context) {
  if (name == "Removed") return SplitBehavior::kRemoved;
  if (name == "Isolated") return SplitBehavior::kIsolated;
  if (name == "MergedWithPrevious") return SplitBehavior::kMergedWithPrevious;
  if (name == "MergedWithNext") return SplitBehavior::kMergedWithNext;
  if (name == "Contiguous") return SplitBehavior::kContiguous;
  return Status::Invalid("{}: unknown split behavior '{}'; expected Removed, Isolated, MergedWithPrevious, "
                         "MergedWithNext or Contiguous",
                         context, name);
}

// ---- Normalizers ----

class SequenceNormalizer : public Normalizer {
 public:
  std::vector<std::unique_ptr<Normalizer>> steps;
  void Normalize(AlignedText* text) const override {
    for (const auto& step : steps) step->Normalize(text);
  }
};

class UnicodeNormalizer : public Normalizer {
 public:
  explicit UnicodeNormalizer(NormalizationForm form) : form_(form) {}
  void Normalize(AlignedText* text) const override { NormalizeUnicode(form_, text); }

 private:
  NormalizationForm form_;
};

class LowercaseNormalizer : public Normalizer {
 public:
  void Normalize(AlignedText* text) const override { LowercaseText(text); }
};

// Replaces every match of a pattern; each new character takes the span of the
// last character it replaces.
class ReplaceNormalizer : public Normalizer {
 public:
  ReplaceNormalizer(Pattern pattern, std::string content) : pattern_(std::move(pattern)), content_(std::move(content)) {}
  void Normalize(AlignedText* text) const override {
    std::vector<std::pair<size_t, size_t>> matches;
    pattern_.FindAll(text->text, &matches);
    if (matches.empty()) return;
    AlignedText out;
    out.tracked = text->tracked;
    out.text.reserve(text->text.size() + matches.size() * content_.size());
    size_t copied = 0;
    for (const auto& [start, end] : matches) {
      AppendRange(*text, copied, start, &out);
      Span span{0, 0};
      if (text->tracked) {
        if (end > 0) {
          span = text->align[end - 1];
        }
      }
      AppendWithSpan(content_, span, &out);
      copied = end;
    }
    AppendRange(*text, copied, text->text.size(), &out);
    *text = std::move(out);
  }

 private:
  Pattern pattern_;
  std::string content_;
};

// Prepends a string to non-empty text, aligned with the first character.
class PrependNormalizer : public Normalizer {
 public:
  explicit PrependNormalizer(std::string prepend) : prepend_(std::move(prepend)) {}
  void Normalize(AlignedText* text) const override {
    if (text->text.empty()) return;
    text->text.insert(0, prepend_);
    if (text->tracked) text->align.insert(text->align.begin(), prepend_.size(), text->align.front());
  }

 private:
  std::string prepend_;
};

class StripNormalizer : public Normalizer {
 public:
  StripNormalizer(bool left, bool right) : left_(left), right_(right) {}
  void Normalize(AlignedText* text) const override {
    const std::string& s = text->text;
    size_t begin = 0;
    size_t end = s.size();
    if (left_) {
      while (begin < end) {
        int length;
        if (!IsWhitespace(DecodeUtf8(s, begin, &length))) break;
        begin += length;
      }
    }
    if (right_) {
      while (end > begin) {
        size_t start = end - 1;
        while (start > begin && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
        int length;
        if (!IsWhitespace(DecodeUtf8(s, start, &length))) break;
        end = start;
      }
    }
    if (begin == 0 && end == s.size()) return;
    text->text = s.substr(begin, end - begin);
    if (text->tracked) {
      text->align = std::vector<Span>(text->align.begin() + begin, text->align.begin() + end);
    }
  }

 private:
  bool left_;
  bool right_;
};

// ---- Pre-tokenizers ----

class SequencePreTokenizer : public PreTokenizer {
 public:
  std::vector<std::unique_ptr<PreTokenizer>> steps;
  void Apply(PreTokenized* words) const override {
    for (const auto& step : steps) step->Apply(words);
  }
};

class SplitPreTokenizer : public PreTokenizer {
 public:
  SplitPreTokenizer(Pattern pattern, SplitBehavior behavior, bool invert)
      : pattern_(std::move(pattern)), behavior_(behavior), invert_(invert) {}
  void Apply(PreTokenized* words) const override {
    SplitWords(words, behavior_, invert_, [this](std::string_view text, auto* matches) {
      pattern_.FindAll(text, matches);
    });
  }

 private:
  Pattern pattern_;
  SplitBehavior behavior_;
  bool invert_;
};

// GPT-2's word split used by ByteLevel with use_regex.
constexpr std::string_view kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// The byte-to-character mapping itself happens in the BPE model (see
// BuildPreTokenizer's byte_level flag); this stage adds the prefix space and
// the GPT-2 split.
class ByteLevelPreTokenizer : public PreTokenizer {
 public:
  ByteLevelPreTokenizer(bool add_prefix_space, std::shared_ptr<Regex> regex)
      : add_prefix_space_(add_prefix_space), regex_(std::move(regex)) {}
  void Apply(PreTokenized* words) const override {
    if (add_prefix_space_) {
      RewriteWords(words, [](const AlignedText& in, size_t start, size_t end, AlignedText* out) {
        if (in.text[start] != ' ') AppendWithSpan(" ", in.tracked ? in.align[start] : Span{}, out);
        AppendRange(in, start, end, out);
      });
    }
    if (regex_) {
      SplitWords(words, SplitBehavior::kIsolated, false,
                 [this](std::string_view text, auto* matches) { regex_->FindAll(text, matches); });
    }
  }

 private:
  bool add_prefix_space_;
  std::shared_ptr<Regex> regex_;
};

enum class PrependScheme { kAlways, kFirst, kNever };

class MetaspacePreTokenizer : public PreTokenizer {
 public:
  MetaspacePreTokenizer(std::string replacement, PrependScheme scheme, bool split)
      : replacement_(std::move(replacement)), scheme_(scheme), split_(split) {}
  void Apply(PreTokenized* words) const override {
    const int64_t original_start = words->original_start;
    RewriteWords(words, [&](const AlignedText& in, size_t start, size_t end, AlignedText* out) {
      const size_t word_start = out->text.size();
      // Spaces become the replacement character, aligned with the space.
      for (size_t pos = start; pos < end; ++pos) {
        if (in.text[pos] == ' ') {
          AppendWithSpan(replacement_, in.tracked ? in.align[pos] : Span{}, out);
        } else {
          AppendRange(in, pos, pos + 1, out);
        }
      }
      const std::string_view produced(out->text.data() + word_start, out->text.size() - word_start);
      const bool starts_with_replacement = produced.substr(0, replacement_.size()) == replacement_;
      // The first scheme prepends only to the split at the start of the input.
      const bool first_split = start == 0 && original_start == 0;
      const bool prepend = !produced.empty() && !starts_with_replacement &&
                           (scheme_ == PrependScheme::kAlways || (scheme_ == PrependScheme::kFirst && first_split));
      if (prepend) {
        out->text.insert(word_start, replacement_);
        if (out->tracked) out->align.insert(out->align.begin() + word_start, replacement_.size(), out->align[word_start]);
      }
    });
    if (split_) {
      const std::string replacement = replacement_;
      SplitWords(words, SplitBehavior::kMergedWithNext, false,
                 [&replacement](std::string_view text, std::vector<std::pair<size_t, size_t>>* matches) {
                   for (size_t pos = text.find(replacement); pos != std::string_view::npos;
                        pos = text.find(replacement, pos + replacement.size())) {
                     matches->emplace_back(pos, pos + replacement.size());
                   }
                 });
    }
  }

 private:
  std::string replacement_;
  PrependScheme scheme_;
  bool split_;
};

class CharSplitPreTokenizer : public PreTokenizer {
 public:
  CharSplitPreTokenizer(bool (*predicate)(char32_t), SplitBehavior behavior)
      : predicate_(predicate), behavior_(behavior) {}
  void Apply(PreTokenized* words) const override {
    SplitWords(words, behavior_, false, CharMatcher(predicate_));
  }

 private:
  bool (*predicate_)(char32_t);
  SplitBehavior behavior_;
};

// Whitespace: words of \w+ or [^\w\s]+, whitespace removed.
class WhitespacePreTokenizer : public PreTokenizer {
 public:
  explicit WhitespacePreTokenizer(std::shared_ptr<Regex> regex) : regex_(std::move(regex)) {}
  void Apply(PreTokenized* words) const override {
    SplitWords(words, SplitBehavior::kRemoved, true,
               [this](std::string_view text, auto* matches) { regex_->FindAll(text, matches); });
  }

 private:
  std::shared_ptr<Regex> regex_;
};

// ---- Post-processors ----

class SequencePostProcessor : public PostProcessor {
 public:
  std::vector<std::unique_ptr<PostProcessor>> steps;
  void Process(ProcessedEncoding encoding, bool add_special_tokens,
               const std::function<std::string(int32_t)>& token_text) const override {
    for (const auto& step : steps) step->Process(encoding, add_special_tokens, token_text);
  }
};

// ByteLevel: with trim_offsets, offsets leave out leading and trailing
// spaces of each token.
class ByteLevelPostProcessor : public PostProcessor {
 public:
  ByteLevelPostProcessor(bool add_prefix_space, bool trim_offsets)
      : add_prefix_space_(add_prefix_space), trim_offsets_(trim_offsets) {}
  void Process(ProcessedEncoding encoding, bool, const std::function<std::string(int32_t)>& token_text) const override {
    if (!trim_offsets_ || encoding.offsets == nullptr) return;
    for (size_t i = 0; i < encoding.ids->size(); ++i) {
      const std::string token = token_text((*encoding.ids)[i]);
      std::vector<char32_t> chars;
      for (size_t pos = 0; pos < token.size();) {
        int length;
        chars.push_back(DecodeUtf8(token, pos, &length));
        pos += length;
      }
      auto is_space = [](char32_t c) { return c == U'\u0120' || IsWhitespace(c); };
      int64_t leading = 0;
      while (leading < static_cast<int64_t>(chars.size()) && is_space(chars[leading])) ++leading;
      int64_t trailing = 0;
      while (trailing < static_cast<int64_t>(chars.size()) && is_space(chars[chars.size() - 1 - trailing])) ++trailing;
      auto& offsets = (*encoding.offsets)[i];
      if (leading > 0) {
        const bool is_first = i == 0 || offsets.first == 0;
        if (is_first && add_prefix_space_ && leading == 1) leading = 0;
        offsets.first = std::min(offsets.first + leading, offsets.second);
      }
      if (trailing > 0 && offsets.second >= trailing) {
        offsets.second = std::max(offsets.second - trailing, offsets.first);
      }
    }
  }

 private:
  bool add_prefix_space_;
  bool trim_offsets_;
};

// Adds special token ids around the single sequence: TemplateProcessing's
// "single" template, or the fixed [CLS] A [SEP] / <s> A </s> of
// BertProcessing and RobertaProcessing.
class TemplatePostProcessor : public PostProcessor {
 public:
  // Each item: the ids of a special token, or empty for the sequence itself.
  std::vector<std::vector<int32_t>> items;
  void Process(ProcessedEncoding encoding, bool add_special_tokens,
               const std::function<std::string(int32_t)>&) const override {
    if (!add_special_tokens) return;
    std::vector<int32_t> ids;
    std::vector<std::pair<int64_t, int64_t>> offsets;
    for (const auto& item : items) {
      if (item.empty()) {
        ids.insert(ids.end(), encoding.ids->begin(), encoding.ids->end());
        if (encoding.offsets) offsets.insert(offsets.end(), encoding.offsets->begin(), encoding.offsets->end());
      } else {
        ids.insert(ids.end(), item.begin(), item.end());
        if (encoding.offsets) offsets.insert(offsets.end(), item.size(), {0, 0});
      }
    }
    *encoding.ids = std::move(ids);
    if (encoding.offsets) *encoding.offsets = std::move(offsets);
  }
};

// ---- Decoders ----

class SequenceDecoder : public Decoder {
 public:
  std::vector<std::unique_ptr<Decoder>> steps;
  void DecodeChain(std::vector<std::string>* tokens) const override {
    for (const auto& step : steps) step->DecodeChain(tokens);
  }
};

// Maps byte-level characters back to bytes; a token with any other character
// keeps its own text. Invalid UTF-8 in the result becomes U+FFFD.
class ByteLevelDecoder : public Decoder {
 public:
  void DecodeChain(std::vector<std::string>* tokens) const override {
    std::string bytes;
    for (const std::string& token : *tokens) {
      std::string mapped;
      bool all_mapped = true;
      for (size_t pos = 0; pos < token.size();) {
        int length;
        const int byte = ByteLevelByte(DecodeUtf8(token, pos, &length));
        if (byte < 0) {
          all_mapped = false;
          break;
        }
        mapped.push_back(static_cast<char>(byte));
        pos += length;
      }
      bytes += all_mapped ? mapped : token;
    }
    *tokens = {ToValidUtf8(bytes)};
  }

  static std::string ToValidUtf8(const std::string& bytes) {
    std::string out;
    size_t pos = 0;
    while (pos < bytes.size()) {
      const int64_t bad = FindInvalidUtf8(std::string_view(bytes).substr(pos));
      if (bad < 0) {
        out.append(bytes, pos, std::string::npos);
        break;
      }
      out.append(bytes, pos, static_cast<size_t>(bad));
      out.append("\xEF\xBF\xBD");
      // Skip the maximal invalid prefix: the lead byte and its continuation bytes.
      pos += static_cast<size_t>(bad) + 1;
      while (pos < bytes.size() && (static_cast<unsigned char>(bytes[pos]) & 0xC0) == 0x80 &&
             FindInvalidUtf8(std::string_view(bytes).substr(pos, 1)) >= 0) {
        ++pos;
      }
    }
    return out;
  }
};

class ReplaceDecoder : public Decoder {
 public:
  ReplaceDecoder(Pattern pattern, std::string content) : pattern_(std::move(pattern)), content_(std::move(content)) {}
  void DecodeChain(std::vector<std::string>* tokens) const override {
    for (std::string& token : *tokens) {
      std::vector<std::pair<size_t, size_t>> matches;
      pattern_.FindAll(token, &matches);
      if (matches.empty()) continue;
      std::string out;
      size_t copied = 0;
      for (const auto& [start, end] : matches) {
        out.append(token, copied, start - copied);
        out.append(content_);
        copied = end;
      }
      out.append(token, copied, std::string::npos);
      token = std::move(out);
    }
  }

 private:
  Pattern pattern_;
  std::string content_;
};

// Runs of <0xHH> tokens become their bytes when those form valid UTF-8, else
// one U+FFFD per byte.
class ByteFallbackDecoder : public Decoder {
 public:
  void DecodeChain(std::vector<std::string>* tokens) const override {
    std::vector<std::string> out;
    std::string pending;
    auto flush = [&] {
      if (pending.empty()) return;
      if (FindInvalidUtf8(pending) < 0) {
        out.push_back(pending);
      } else {
        for (size_t i = 0; i < pending.size(); ++i) out.emplace_back("\xEF\xBF\xBD");
      }
      pending.clear();
    };
    for (std::string& token : *tokens) {
      int value = -1;
      if (token.size() == 6 && token.compare(0, 3, "<0x") == 0 && token[5] == '>') {
        value = HexByte(token[3], token[4]);
      }
      if (value >= 0) {
        pending.push_back(static_cast<char>(value));
      } else {
        flush();
        out.push_back(std::move(token));
      }
    }
    flush();
    *tokens = std::move(out);
  }

 private:
  static int HexDigit(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  }
  static int HexByte(char high, char low) {
    const int h = HexDigit(high);
    const int l = HexDigit(low);
    return h < 0 || l < 0 ? -1 : h * 16 + l;
  }
};

class FuseDecoder : public Decoder {
 public:
  void DecodeChain(std::vector<std::string>* tokens) const override {
    std::string joined;
    for (const std::string& token : *tokens) joined += token;
    *tokens = {joined};
  }
};

// Removes up to `start` leading and `stop` trailing copies of one character
// from every token.
class StripDecoder : public Decoder {
 public:
  StripDecoder(char32_t content, int64_t start, int64_t stop) : content_(content), start_(start), stop_(stop) {}
  void DecodeChain(std::vector<std::string>* tokens) const override {
    for (std::string& token : *tokens) {
      std::vector<std::pair<size_t, char32_t>> chars;  // (byte position, code point)
      for (size_t pos = 0; pos < token.size();) {
        int length;
        chars.emplace_back(pos, DecodeUtf8(token, pos, &length));
        pos += length;
      }
      size_t start_cut = 0;
      for (size_t i = 0; i < chars.size() && static_cast<int64_t>(i) < start_; ++i) {
        if (chars[i].second != content_) break;
        start_cut = i + 1;
      }
      size_t stop_cut = chars.size();
      for (int64_t i = 0; i < stop_ && i < static_cast<int64_t>(chars.size()); ++i) {
        const size_t index = chars.size() - 1 - static_cast<size_t>(i);
        if (chars[index].second != content_) break;
        stop_cut = index;
      }
      if (stop_cut <= start_cut) {
        token.clear();
        continue;
      }
      const size_t begin_byte = start_cut < chars.size() ? chars[start_cut].first : token.size();
      const size_t end_byte = stop_cut < chars.size() ? chars[stop_cut].first : token.size();
      token = token.substr(begin_byte, end_byte - begin_byte);
    }
  }

 private:
  char32_t content_;
  int64_t start_;
  int64_t stop_;
};

// Metaspace decoding: the replacement character becomes a space, and the
// first token loses one leading space unless the prepend scheme is "never".
class MetaspaceDecoder : public Decoder {
 public:
  MetaspaceDecoder(std::string replacement, PrependScheme scheme) : replacement_(std::move(replacement)), scheme_(scheme) {}
  void DecodeChain(std::vector<std::string>* tokens) const override {
    for (size_t i = 0; i < tokens->size(); ++i) {
      std::string& token = (*tokens)[i];
      std::string out;
      for (size_t pos = 0; pos < token.size();) {
        if (token.compare(pos, replacement_.size(), replacement_) == 0) {
          out.push_back(' ');
          pos += replacement_.size();
        } else {
          out.push_back(token[pos]);
          ++pos;
        }
      }
      if (i == 0 && scheme_ != PrependScheme::kNever && !out.empty() && out[0] == ' ') out.erase(0, 1);
      token = std::move(out);
    }
  }

 private:
  std::string replacement_;
  PrependScheme scheme_;
};

Result<PrependScheme> ParsePrependScheme(element json, const std::string& context) {
  // Older files carry add_prefix_space instead of prepend_scheme.
  if (auto scheme = OptionalString(json, "prepend_scheme")) {
    if (*scheme == "always") return PrependScheme::kAlways;
    if (*scheme == "first") return PrependScheme::kFirst;
    if (*scheme == "never") return PrependScheme::kNever;
    return Status::Invalid("{}: unknown prepend_scheme '{}'; expected always, first or never", context, *scheme);
  }
  return BoolOr(json, "add_prefix_space", true) ? PrependScheme::kAlways : PrependScheme::kNever;
}

}  // namespace

Result<Pattern> Pattern::FromJson(element json, const std::string& context) {
  Pattern pattern;
  if (auto literal = OptionalString(json, "String")) {
    pattern.literal_ = std::string(*literal);
    if (pattern.literal_.empty()) return Status::Invalid("{}: empty String pattern", context);
    return pattern;
  }
  if (auto regex = OptionalString(json, "Regex")) {
    DF_ASSIGN_OR_RAISE(Regex compiled, Regex::Compile(*regex, context));
    pattern.regex_ = std::make_shared<Regex>(std::move(compiled));
    return pattern;
  }
  return Status::Invalid("{}: pattern must be an object with a \"String\" or \"Regex\" member", context);
}

void Pattern::FindAll(std::string_view text, std::vector<std::pair<size_t, size_t>>* matches) const {
  if (regex_) {
    regex_->FindAll(text, matches);
    return;
  }
  for (size_t pos = text.find(literal_); pos != std::string_view::npos; pos = text.find(literal_, pos + literal_.size())) {
    matches->emplace_back(pos, pos + literal_.size());
  }
}

Result<std::unique_ptr<Normalizer>> BuildNormalizer(element json, const std::string& context) {
  if (json.is_null()) return std::unique_ptr<Normalizer>();
  DF_ASSIGN_OR_RAISE(std::string type, RequiredString(json, "type", context));
  if (type == "Sequence") {
    auto sequence = std::make_unique<SequenceNormalizer>();
    DF_ASSIGN_OR_RAISE(simdjson::dom::array steps, RequiredArray(json, "normalizers", context));
    size_t index = 0;
    for (element step : steps) {
      DF_ASSIGN_OR_RAISE(auto built, BuildNormalizer(step, fmt::format("{}.normalizers[{}]", context, index++)));
      if (built) sequence->steps.push_back(std::move(built));
    }
    return std::unique_ptr<Normalizer>(std::move(sequence));
  }
  if (type == "NFC") return std::unique_ptr<Normalizer>(new UnicodeNormalizer(NormalizationForm::kNFC));
  if (type == "NFD") return std::unique_ptr<Normalizer>(new UnicodeNormalizer(NormalizationForm::kNFD));
  if (type == "NFKC") return std::unique_ptr<Normalizer>(new UnicodeNormalizer(NormalizationForm::kNFKC));
  if (type == "NFKD") return std::unique_ptr<Normalizer>(new UnicodeNormalizer(NormalizationForm::kNFKD));
  if (type == "Lowercase") return std::unique_ptr<Normalizer>(new LowercaseNormalizer());
  if (type == "Strip") {
    return std::unique_ptr<Normalizer>(
        new StripNormalizer(BoolOr(json, "strip_left", true), BoolOr(json, "strip_right", true)));
  }
  if (type == "Prepend") {
    DF_ASSIGN_OR_RAISE(std::string prepend, RequiredString(json, "prepend", context));
    return std::unique_ptr<Normalizer>(new PrependNormalizer(std::move(prepend)));
  }
  if (type == "Replace") {
    DF_ASSIGN_OR_RAISE(element pattern_json, RequiredField(json, "pattern", context));
    DF_ASSIGN_OR_RAISE(Pattern pattern, Pattern::FromJson(pattern_json, context + ".pattern"));
    DF_ASSIGN_OR_RAISE(std::string content, RequiredString(json, "content", context));
    return std::unique_ptr<Normalizer>(new ReplaceNormalizer(std::move(pattern), std::move(content)));
  }
  return Status::Unimplemented("{}: normalizer type '{}' is not supported", context, type);
}

Result<std::unique_ptr<PreTokenizer>> BuildPreTokenizer(element json, const std::string& context, bool* byte_level) {
  *byte_level = false;
  if (json.is_null()) return std::unique_ptr<PreTokenizer>();
  DF_ASSIGN_OR_RAISE(std::string type, RequiredString(json, "type", context));
  if (type == "Sequence") {
    auto sequence = std::make_unique<SequencePreTokenizer>();
    DF_ASSIGN_OR_RAISE(simdjson::dom::array steps, RequiredArray(json, "pretokenizers", context));
    const size_t count = steps.size();
    size_t index = 0;
    for (element step : steps) {
      const std::string step_context = fmt::format("{}.pretokenizers[{}]", context, index);
      bool step_byte_level = false;
      DF_ASSIGN_OR_RAISE(auto built, BuildPreTokenizer(step, step_context, &step_byte_level));
      if (step_byte_level && index + 1 != count) {
        // The byte mapping is applied by the model, so no stage may follow it.
        return Status::Unimplemented("{}: ByteLevel is supported only as the last pre-tokenizer", step_context);
      }
      *byte_level = *byte_level || step_byte_level;
      if (built) sequence->steps.push_back(std::move(built));
      ++index;
    }
    return std::unique_ptr<PreTokenizer>(std::move(sequence));
  }
  if (type == "Split") {
    DF_ASSIGN_OR_RAISE(element pattern_json, RequiredField(json, "pattern", context));
    DF_ASSIGN_OR_RAISE(Pattern pattern, Pattern::FromJson(pattern_json, context + ".pattern"));
    DF_ASSIGN_OR_RAISE(std::string behavior_name, RequiredString(json, "behavior", context));
    DF_ASSIGN_OR_RAISE(SplitBehavior behavior, ParseBehavior(behavior_name, context + ".behavior"));
    return std::unique_ptr<PreTokenizer>(
        new SplitPreTokenizer(std::move(pattern), behavior, BoolOr(json, "invert", false)));
  }
  if (type == "ByteLevel") {
    *byte_level = true;
    std::shared_ptr<Regex> regex;
    if (BoolOr(json, "use_regex", true)) {
      DF_ASSIGN_OR_RAISE(Regex compiled, Regex::Compile(kGpt2Pattern, context));
      regex = std::make_shared<Regex>(std::move(compiled));
    }
    return std::unique_ptr<PreTokenizer>(new ByteLevelPreTokenizer(BoolOr(json, "add_prefix_space", true), regex));
  }
  if (type == "Metaspace") {
    DF_ASSIGN_OR_RAISE(std::string replacement, RequiredString(json, "replacement", context));
    DF_ASSIGN_OR_RAISE(PrependScheme scheme, ParsePrependScheme(json, context));
    return std::unique_ptr<PreTokenizer>(
        new MetaspacePreTokenizer(std::move(replacement), scheme, BoolOr(json, "split", true)));
  }
  if (type == "Digits") {
    const bool individual = BoolOr(json, "individual_digits", false);
    return std::unique_ptr<PreTokenizer>(new CharSplitPreTokenizer(
        &IsNumeric, individual ? SplitBehavior::kIsolated : SplitBehavior::kContiguous));
  }
  if (type == "Punctuation") {
    SplitBehavior behavior = SplitBehavior::kIsolated;
    if (auto name = OptionalString(json, "behavior")) {
      DF_ASSIGN_OR_RAISE(behavior, ParseBehavior(*name, context + ".behavior"));
    }
    return std::unique_ptr<PreTokenizer>(new CharSplitPreTokenizer(&IsPunctuation, behavior));
  }
  if (type == "WhitespaceSplit") {
    return std::unique_ptr<PreTokenizer>(new CharSplitPreTokenizer(&IsWhitespace, SplitBehavior::kRemoved));
  }
  if (type == "Whitespace") {
    DF_ASSIGN_OR_RAISE(Regex compiled, Regex::Compile(R"(\w+|[^\w\s]+)", context));
    return std::unique_ptr<PreTokenizer>(new WhitespacePreTokenizer(std::make_shared<Regex>(std::move(compiled))));
  }
  return Status::Unimplemented("{}: pre-tokenizer type '{}' is not supported", context, type);
}

Result<std::unique_ptr<PostProcessor>> BuildPostProcessor(
    element json, const std::string& context,
    const std::function<std::optional<int32_t>(std::string_view)>& token_to_id) {
  if (json.is_null()) return std::unique_ptr<PostProcessor>();
  DF_ASSIGN_OR_RAISE(std::string type, RequiredString(json, "type", context));
  if (type == "Sequence") {
    auto sequence = std::make_unique<SequencePostProcessor>();
    DF_ASSIGN_OR_RAISE(simdjson::dom::array steps, RequiredArray(json, "processors", context));
    size_t index = 0;
    for (element step : steps) {
      DF_ASSIGN_OR_RAISE(auto built,
                         BuildPostProcessor(step, fmt::format("{}.processors[{}]", context, index++), token_to_id));
      if (built) sequence->steps.push_back(std::move(built));
    }
    return std::unique_ptr<PostProcessor>(std::move(sequence));
  }
  if (type == "ByteLevel") {
    return std::unique_ptr<PostProcessor>(
        new ByteLevelPostProcessor(BoolOr(json, "add_prefix_space", true), BoolOr(json, "trim_offsets", true)));
  }
  if (type == "TemplateProcessing") {
    auto processor = std::make_unique<TemplatePostProcessor>();
    DF_ASSIGN_OR_RAISE(simdjson::dom::array single, RequiredArray(json, "single", context));
    DF_ASSIGN_OR_RAISE(element special_tokens, RequiredField(json, "special_tokens", context));
    for (element item : single) {
      element special;
      if (item["SpecialToken"].get(special) == simdjson::SUCCESS) {
        DF_ASSIGN_OR_RAISE(std::string name, RequiredString(special, "id", context + ".single"));
        element entry;
        if (special_tokens[name].get(entry) != simdjson::SUCCESS) {
          return Status::Invalid("{}: special token '{}' of the single template is missing from special_tokens",
                                 context, name);
        }
        DF_ASSIGN_OR_RAISE(simdjson::dom::array ids_json,
                           RequiredArray(entry, "ids", fmt::format("{}.special_tokens[\"{}\"]", context, name)));
        std::vector<int32_t> ids;
        for (element id : ids_json) {
          int64_t value;
          if (id.get(value) != simdjson::SUCCESS) {
            return Status::Invalid("{}: special_tokens[\"{}\"].ids holds a non-integer", context, name);
          }
          ids.push_back(static_cast<int32_t>(value));
        }
        if (ids.empty()) continue;
        processor->items.push_back(std::move(ids));
      } else if (item["Sequence"].error() == simdjson::SUCCESS) {
        processor->items.emplace_back();
      } else {
        return Status::Invalid("{}: single template item is neither SpecialToken nor Sequence", context);
      }
    }
    return std::unique_ptr<PostProcessor>(std::move(processor));
  }
  if (type == "BertProcessing" || type == "RobertaProcessing") {
    // "cls" and "sep" are [token, id] pairs.
    auto processor = std::make_unique<TemplatePostProcessor>();
    for (const char* key : {"cls", "sep"}) {
      DF_ASSIGN_OR_RAISE(simdjson::dom::array pair, RequiredArray(json, key, context));
      int64_t id;
      if (pair.size() != 2 || pair.at(1).get(id) != simdjson::SUCCESS) {
        return Status::Invalid("{}.{}: expected [token, id]", context, key);
      }
      processor->items.push_back({static_cast<int32_t>(id)});
      if (std::string_view(key) == "cls") processor->items.emplace_back();
    }
    // NOTE: RobertaProcessing's trim_offsets is not applied.
    return std::unique_ptr<PostProcessor>(std::move(processor));
  }
  (void)token_to_id;
  return Status::Unimplemented("{}: post-processor type '{}' is not supported", context, type);
}

Result<std::unique_ptr<Decoder>> BuildDecoder(element json, const std::string& context) {
  if (json.is_null()) return std::unique_ptr<Decoder>();
  DF_ASSIGN_OR_RAISE(std::string type, RequiredString(json, "type", context));
  if (type == "Sequence") {
    auto sequence = std::make_unique<SequenceDecoder>();
    DF_ASSIGN_OR_RAISE(simdjson::dom::array steps, RequiredArray(json, "decoders", context));
    size_t index = 0;
    for (element step : steps) {
      DF_ASSIGN_OR_RAISE(auto built, BuildDecoder(step, fmt::format("{}.decoders[{}]", context, index++)));
      if (built) sequence->steps.push_back(std::move(built));
    }
    return std::unique_ptr<Decoder>(std::move(sequence));
  }
  if (type == "ByteLevel") return std::unique_ptr<Decoder>(new ByteLevelDecoder());
  if (type == "ByteFallback") return std::unique_ptr<Decoder>(new ByteFallbackDecoder());
  if (type == "Fuse") return std::unique_ptr<Decoder>(new FuseDecoder());
  if (type == "Replace") {
    DF_ASSIGN_OR_RAISE(element pattern_json, RequiredField(json, "pattern", context));
    DF_ASSIGN_OR_RAISE(Pattern pattern, Pattern::FromJson(pattern_json, context + ".pattern"));
    DF_ASSIGN_OR_RAISE(std::string content, RequiredString(json, "content", context));
    return std::unique_ptr<Decoder>(new ReplaceDecoder(std::move(pattern), std::move(content)));
  }
  if (type == "Strip") {
    DF_ASSIGN_OR_RAISE(std::string content, RequiredString(json, "content", context));
    int length = 0;
    const char32_t cp = content.empty() ? U' ' : DecodeUtf8(content, 0, &length);
    int64_t start = 0;
    int64_t stop = 0;
    if (json["start"].get(start) != simdjson::SUCCESS) start = 0;
    if (json["stop"].get(stop) != simdjson::SUCCESS) stop = 0;
    return std::unique_ptr<Decoder>(new StripDecoder(cp, start, stop));
  }
  if (type == "Metaspace") {
    DF_ASSIGN_OR_RAISE(std::string replacement, RequiredString(json, "replacement", context));
    DF_ASSIGN_OR_RAISE(PrependScheme scheme, ParsePrependScheme(json, context));
    return std::unique_ptr<Decoder>(new MetaspaceDecoder(std::move(replacement), scheme));
  }
  return Status::Unimplemented("{}: decoder type '{}' is not supported", context, type);
}

}  // namespace draftforge::tokenizer::internal
