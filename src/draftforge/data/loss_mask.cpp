#define PCRE2_CODE_UNIT_WIDTH 8
#include "draftforge/data/loss_mask.h"

#include <pcre2.h>

#include <algorithm>
#include <regex>
#include <vector>

#include "draftforge/chat_template/chat_template.h"

namespace draftforge::data {
namespace {

// Probe texts; chosen so that no real template contains them.
constexpr std::string_view kUser1 = "USER_MSG_1";
constexpr std::string_view kAssistant1 = "ASSISTANT_MSG_1";
constexpr std::string_view kUser2 = "USER_MSG_2";
constexpr std::string_view kAssistant2 = "ASSISTANT_MSG_2";

// Removes "<think>...</think>" and the whitespace after it. Reasoning
// templates put an empty think block before the last assistant message. Left
// in the marker, it would stop the pattern from matching replies that carry
// reasoning, and that reasoning must stay inside the trained content.
std::string StripThinkBlocks(std::string marker) {
  static const std::regex kThink(R"(<think>[\s\S]*?</think>\s*)");
  return std::regex_replace(marker, kThink, "");
}

// The first tag-like token of the role marker: "<|im_start|", "<start_of_turn>",
// DeepSeek's full-width "<\uFF5CAssistant\uFF5C>", "[INST]" or "[/INST]".
std::string FirstTag(const std::string& marker) {
  static const std::regex kTag(
      "(<(?:\\||\xEF\xBD\x9C)?[A-Za-z0-9_]+(?:\\||\xEF\xBD\x9C)?>?)|(\\[/?[A-Za-z0-9_]+\\])");
  std::smatch match;
  if (std::regex_search(marker, match, kTag)) return match.str(0);
  return "";
}

std::string TrimTrailingSpace(std::string text) {
  while (!text.empty() && (text.back() == ' ' || text.back() == '\n' || text.back() == '\t' || text.back() == '\r')) {
    text.pop_back();
  }
  return text;
}

std::string PcreErrorText(int code) {
  PCRE2_UCHAR buffer[256];
  pcre2_get_error_message(code, buffer, sizeof(buffer));
  return reinterpret_cast<const char*>(buffer);
}

}  // namespace

std::string EscapeRegex(std::string_view text) {
  // The characters Python's re.escape escapes (3.7 and later), so detected
  // patterns read the same as those of the Python tools.
  static constexpr std::string_view kSpecial = "()[]{}?*+-|^$\\.&~# ";
  std::string escaped;
  escaped.reserve(text.size() * 2);
  for (char c : text) {
    if (c == '\n') {
      escaped += "\\n";
    } else if (c == '\r') {
      escaped += "\\r";
    } else if (c == '\t') {
      escaped += "\\t";
    } else if (c == '\v') {
      escaped += "\\v";
    } else if (c == '\f') {
      escaped += "\\f";
    } else {
      if (kSpecial.find(c) != std::string_view::npos) escaped += '\\';
      escaped += c;
    }
  }
  return escaped;
}

Result<std::string> DetectAssistantPattern(const chat_template::ChatTemplate& chat_template,
                                           const chat_template::TokenizerConfig& config,
                                           const chat_template::RenderOptions& options) {
  nlohmann::ordered_json probe = nlohmann::ordered_json::array();
  auto add = [&probe](const char* role, std::string_view content) {
    nlohmann::ordered_json message;
    message["role"] = role;
    message["content"] = std::string(content);
    probe.push_back(std::move(message));
  };
  add("user", kUser1);
  add("assistant", kAssistant1);
  add("user", kUser2);
  add("assistant", kAssistant2);
  chat_template::RenderOptions probe_options = options;
  probe_options.add_generation_prompt = false;
  auto rendered = chat_template.Render(probe, config, probe_options);
  if (!rendered.ok()) {
    return Status::Invalid(
        "cannot detect the assistant pattern: rendering a user/assistant/user/assistant probe "
        "conversation failed ({}); pass --assistant-pattern REGEX",
        rendered.status().message());
  }
  const std::string& text = rendered->text;
  const size_t first_start = text.find(kAssistant1);
  const size_t second_start = text.find(kAssistant2);
  const size_t user2_start = text.find(kUser2);
  if (first_start == std::string::npos || second_start == std::string::npos || user2_start == std::string::npos ||
      user2_start > second_start) {
    return Status::Invalid(
        "cannot detect the assistant pattern: the chat template does not render the probe "
        "messages in order (rendered: {:?}); pass --assistant-pattern REGEX",
        text.substr(0, 400));
  }
  const size_t first_end = first_start + kAssistant1.size();
  const size_t second_end = second_start + kAssistant2.size();
  const size_t user2_end = user2_start + kUser2.size();

  // Role marker: the text between the second user message and the second
  // assistant message, from the tag that opens the assistant header.
  const std::string prefix = text.substr(user2_end, second_start - user2_end);
  std::string marker = prefix;
  const size_t word = prefix.rfind("assistant");
  if (word != std::string::npos) {
    const size_t angle = prefix.rfind('<', word);
    const size_t square = prefix.rfind('[', word);
    size_t tag_start = std::string::npos;
    if (angle != std::string::npos) tag_start = angle;
    if (square != std::string::npos && (tag_start == std::string::npos || square > tag_start)) tag_start = square;
    marker = prefix.substr(tag_start != std::string::npos ? tag_start : word);
  }
  marker = StripThinkBlocks(marker);

  // End of turn: the longest common prefix of what follows each assistant message.
  const std::string tail1 = text.substr(first_end, user2_start - first_end);
  const std::string tail2 = text.substr(second_end);
  size_t common = 0;
  while (common < tail1.size() && common < tail2.size() && tail1[common] == tail2[common]) ++common;
  std::string suffix = tail1.substr(0, common);
  if (suffix.empty()) suffix = tail1.empty() ? "\n" : tail1;

  // The content must not run into a later turn. Two texts open one: the tag
  // that starts the assistant header (in most formats every role's header
  // starts with it) and the text that opens the next user turn, which the
  // probe shows after the first reply's end of turn. Formats whose headers
  // differ per role (DeepSeek's <\uFF5CUser\uFF5C>, Llama 2's [INST]) need the second.
  std::vector<std::string> stops;
  const std::string tag = FirstTag(marker);
  if (!tag.empty()) stops.push_back(tag);
  const std::string user_opener = TrimTrailingSpace(tail1.substr(common));
  if (!user_opener.empty() && (tag.empty() || !user_opener.starts_with(tag))) stops.push_back(user_opener);
  std::string lookahead;
  if (!stops.empty()) {
    lookahead = "(?!";
    for (size_t i = 0; i < stops.size(); ++i) lookahead += (i > 0 ? "|" : "") + EscapeRegex(stops[i]);
    lookahead += ")";
  }
  // The end of turn counts only where a tag, the next turn or the end of the
  // text follows it. A reply that quotes the end-of-turn text ("... <|eot_id|>,
  // ...") then still trains to its real end, and a turn the probe did not
  // show (DeepSeek's tool outputs open with a tag) still ends the reply.
  std::string follow = "(?=\\z|<|\\[";
  for (const std::string& stop : stops) {
    if (!stop.starts_with('<') && !stop.starts_with('[')) follow += "|" + EscapeRegex(stop);
  }
  follow += ")";
  return EscapeRegex(marker) + "((?:" + lookahead + ".)*?)" + EscapeRegex(suffix) + follow;
}

struct AssistantPattern::Compiled {
  std::string pattern;
  pcre2_code* code = nullptr;
  bool jit = false;
  ~Compiled() {
    if (code != nullptr) pcre2_code_free(code);
  }
};

Result<AssistantPattern> AssistantPattern::Compile(const std::string& pattern) {
  auto compiled = std::make_shared<Compiled>();
  compiled->pattern = pattern;
  int error = 0;
  PCRE2_SIZE offset = 0;
  compiled->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                 PCRE2_UTF | PCRE2_DOTALL | PCRE2_UCP, &error, &offset, nullptr);
  if (compiled->code == nullptr) {
    return Status::Invalid("invalid assistant pattern {:?} at offset {}: {}", pattern, offset, PcreErrorText(error));
  }
  uint32_t groups = 0;
  pcre2_pattern_info(compiled->code, PCRE2_INFO_CAPTURECOUNT, &groups);
  if (groups < 1) {
    return Status::Invalid(
        "assistant pattern {:?} has no capture group; group 1 must capture the assistant content, "
        "for example '<\\|im_start\\|>assistant\\n(.*?)<\\|im_end\\|>'",
        pattern);
  }
  compiled->jit = pcre2_jit_compile(compiled->code, PCRE2_JIT_COMPLETE) == 0;
  AssistantPattern result;
  result.compiled_ = std::move(compiled);
  return result;
}

const std::string& AssistantPattern::pattern() const { return compiled_->pattern; }

Result<std::vector<ByteSpan>> AssistantPattern::FindSpans(std::string_view text) const {
  // The lazy, per-character lookahead of detected patterns backtracks once per
  // content character, so long replies need far more than PCRE2's default
  // 32 KiB JIT stack. Each thread keeps its own stack.
  struct ThreadState {
    pcre2_jit_stack* stack = pcre2_jit_stack_create(32 * 1024, 64 * 1024 * 1024, nullptr);
    pcre2_match_context* context = pcre2_match_context_create(nullptr);
    ThreadState() { pcre2_jit_stack_assign(context, nullptr, stack); }
    ~ThreadState() {
      pcre2_match_context_free(context);
      pcre2_jit_stack_free(stack);
    }
  };
  thread_local ThreadState state;
  std::unique_ptr<pcre2_match_data, decltype(&pcre2_match_data_free)> match(
      pcre2_match_data_create_from_pattern(compiled_->code, nullptr), &pcre2_match_data_free);
  std::vector<ByteSpan> spans;
  PCRE2_SIZE start = 0;
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  // The text was validated as UTF-8 by the tokenizer, so PCRE2's check is skipped after the first match.
  uint32_t options = 0;
  while (start <= text.size()) {
    const int rc = pcre2_match(compiled_->code, subject, text.size(), start, options, match.get(), state.context);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      return Status::Invalid("assistant pattern {:?} failed on a text of {} bytes: {}", compiled_->pattern,
                             text.size(), PcreErrorText(rc));
    }
    const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(match.get());
    if (rc >= 2 && ovector[2] != PCRE2_UNSET && ovector[3] > ovector[2]) {
      spans.emplace_back(static_cast<int64_t>(ovector[2]), static_cast<int64_t>(ovector[3]));
    }
    PCRE2_SIZE next = ovector[1];
    if (next == ovector[0]) {
      // Empty match: step over one UTF-8 character.
      if (next >= text.size()) break;
      ++next;
      while (next < text.size() && (static_cast<unsigned char>(text[next]) & 0xC0) == 0x80) ++next;
    }
    start = next;
    options = PCRE2_NO_UTF_CHECK;
  }
  return spans;
}

std::vector<uint8_t> MaskFromSpans(const std::vector<std::pair<int64_t, int64_t>>& token_offsets,
                                   const std::vector<ByteSpan>& spans) {
  std::vector<uint8_t> mask(token_offsets.size(), 0);
  for (size_t t = 0; t < token_offsets.size(); ++t) {
    const auto [begin, end] = token_offsets[t];
    // Spans are sorted and disjoint, so their ends are sorted too: the first
    // span ending after `begin` is the only candidate.
    auto span = std::upper_bound(spans.begin(), spans.end(), begin,
                                 [](int64_t value, const ByteSpan& s) { return value < s.second; });
    if (span == spans.end()) continue;
    const bool overlaps = begin < end ? span->first < end : span->first < begin;
    mask[t] = overlaps ? 1 : 0;
  }
  return mask;
}

}  // namespace draftforge::data
