#include "draftforge/tokenizer/regex.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "draftforge/tokenizer/unicode.h"

namespace draftforge::tokenizer::internal {

namespace {

// The White_Space characters, for use inside a character class.
constexpr std::string_view kWhitespaceRanges =
    "\\t-\\r \\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}";

// Per-thread match state. PCRE2's default JIT stack (32 KiB) can overflow on
// long runs of whitespace, so each thread gets a larger one.
struct ThreadMatchState {
  pcre2_match_data* match_data = nullptr;
  pcre2_match_context* context = nullptr;
  pcre2_jit_stack* jit_stack = nullptr;

  ThreadMatchState() {
    match_data = pcre2_match_data_create(1, nullptr);
    context = pcre2_match_context_create(nullptr);
    jit_stack = pcre2_jit_stack_create(64 * 1024, 8 * 1024 * 1024, nullptr);
    pcre2_jit_stack_assign(context, nullptr, jit_stack);
  }
  ~ThreadMatchState() {
    pcre2_match_data_free(match_data);
    pcre2_match_context_free(context);
    pcre2_jit_stack_free(jit_stack);
  }
};

ThreadMatchState& MatchState() {
  thread_local ThreadMatchState state;
  return state;
}

}  // namespace

struct Regex::Code {
  pcre2_code* code = nullptr;
  bool jit = false;
  ~Code() { pcre2_code_free(code); }
};

std::string TranslateOnigurumaPattern(std::string_view pattern) {
  std::string out;
  out.reserve(pattern.size() + 64);
  bool in_class = false;
  for (size_t i = 0; i < pattern.size(); ++i) {
    const char c = pattern[i];
    if (c == '\\' && i + 1 < pattern.size()) {
      const char next = pattern[i + 1];
      if (next == 's') {
        if (in_class) {
          out.append(kWhitespaceRanges);
        } else {
          out.append("[").append(kWhitespaceRanges).append("]");
        }
        ++i;
        continue;
      }
      if (next == 'S' && !in_class) {
        out.append("[^").append(kWhitespaceRanges).append("]");
        ++i;
        continue;
      }
      // NOTE: `\S` inside a class keeps PCRE2's meaning (differs only for U+180E).
      out.push_back(c);
      out.push_back(next);
      ++i;
      continue;
    }
    if (!in_class && c == '[') {
      in_class = true;
      out.push_back(c);
      // A leading ']' or '^]' is a literal member, not the end of the class.
      if (i + 1 < pattern.size() && pattern[i + 1] == '^') {
        out.push_back('^');
        ++i;
      }
      if (i + 1 < pattern.size() && pattern[i + 1] == ']') {
        out.push_back(']');
        ++i;
      }
      continue;
    }
    if (in_class && c == '[' && i + 1 < pattern.size() && pattern[i + 1] == ':') {
      // POSIX class such as [:alpha:]: copy through the closing ":]".
      const size_t close = pattern.find(":]", i + 2);
      if (close != std::string_view::npos) {
        out.append(pattern.substr(i, close + 2 - i));
        i = close + 1;
        continue;
      }
    }
    if (in_class && c == ']') in_class = false;
    out.push_back(c);
  }
  return out;
}

Result<Regex> Regex::Compile(std::string_view pattern, const std::string& context) {
  const std::string translated = TranslateOnigurumaPattern(pattern);
  int error_code = 0;
  PCRE2_SIZE error_offset = 0;
  // Oniguruma's Ruby syntax treats ^ and $ as line anchors, hence MULTILINE.
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(translated.data()), translated.size(),
                                   PCRE2_UTF | PCRE2_UCP | PCRE2_MULTILINE, &error_code,
                                   &error_offset, nullptr);
  if (code == nullptr) {
    PCRE2_UCHAR buffer[256];
    pcre2_get_error_message(error_code, buffer, sizeof(buffer));
    return Status::Invalid("{}: invalid regex '{}' (as PCRE2: '{}'): {} at offset {}", context,
                           pattern, translated, reinterpret_cast<const char*>(buffer), error_offset);
  }
  auto holder = std::make_shared<Code>();
  holder->code = code;
  holder->jit = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0;
  Regex regex;
  regex.code_ = std::move(holder);
  return regex;
}

void Regex::FindAll(std::string_view text, std::vector<std::pair<size_t, size_t>>* matches) const {
  ThreadMatchState& state = MatchState();
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t start = 0;
  while (start <= text.size()) {
    const int rc = code_->jit ? pcre2_jit_match(code_->code, subject, text.size(), start, 0,
                                                state.match_data, state.context)
                              : pcre2_match(code_->code, subject, text.size(), start,
                                            PCRE2_NO_UTF_CHECK, state.match_data, state.context);
    // NOTE: a PCRE2 resource-limit error ends the scan like "no match", so the
    // rest of the text stays one piece; no tested input reaches the limits.
    if (rc < 0) break;
    const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(state.match_data);
    const size_t match_start = ovector[0];
    const size_t match_end = ovector[1];
    matches->emplace_back(match_start, match_end);
    if (match_end > match_start) {
      start = match_end;
    } else {
      if (match_end >= text.size()) break;
      start = match_end + Utf8Length(static_cast<unsigned char>(text[match_end]));
    }
  }
}

}  // namespace draftforge::tokenizer::internal
