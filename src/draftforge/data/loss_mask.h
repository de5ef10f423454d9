// Loss masks for chat data: which tokens of a rendered conversation train.
//
// A token trains when its byte span overlaps assistant content. The content
// spans come from one of three sources, in this order of preference:
//   1. the template's own {% generation %} blocks (what transformers returns
//      as the assistant mask);
//   2. an assistant-content regex detected from the template by rendering a
//      probe conversation (DetectAssistantPattern);
//   3. a regex the user gives (--assistant-pattern).
// A pattern's first capture group is the content; matching runs with PCRE2 in
// UTF mode with DOTALL, so '.' also matches newlines, as Python's re.DOTALL.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "draftforge/util/status.h"

namespace draftforge::chat_template {
class ChatTemplate;
struct TokenizerConfig;
struct RenderOptions;
}  // namespace draftforge::chat_template

namespace draftforge::data {

using ByteSpan = std::pair<int64_t, int64_t>;  // [begin, end) in bytes

// Builds the assistant-content regex of a template: renders the probe
// conversation user/assistant/user/assistant, takes the role marker that
// precedes the second assistant message (from its last '<' or '[' before the
// word "assistant", with empty <think>...</think> blocks removed) and the end
// of turn shared by both assistant messages, and returns
//   escape(marker) ((?:(?!stop).)*?) escape(end) (?=\z|<|\[|stop)
// where `stop` is the first tag of the marker or the text that opens the
// next user turn, so one match never runs into the next turn, and the end of
// turn counts only where a tag, a turn or the end of the text follows it.
// NOTE: a reply that the template writes without the assistant header (DeepSeek-V3's
// reply after tool outputs) is not matched and does not train. Fails, naming the template, when the probe messages do
// not appear in the rendering.
Result<std::string> DetectAssistantPattern(const chat_template::ChatTemplate& chat_template,
                                           const chat_template::TokenizerConfig& config,
                                           const chat_template::RenderOptions& options);

// Escapes regex metacharacters (the set Python's re.escape escapes) and
// writes control characters as \n, \r, \t, \v, \f, so that PCRE2 matches
// `text` literally.
std::string EscapeRegex(std::string_view text);

// A compiled assistant-content pattern. FindSpans is thread-safe.
class AssistantPattern {
 public:
  static Result<AssistantPattern> Compile(const std::string& pattern);

  // Returns the byte spans of capture group 1 of every non-overlapping match.
  Result<std::vector<ByteSpan>> FindSpans(std::string_view text) const;
  const std::string& pattern() const;

 private:
  struct Compiled;
  std::shared_ptr<const Compiled> compiled_;
};

// Returns one flag per token: 1 when the token's byte span [begin, end)
// overlaps a span in `spans` (a token with an empty span trains when it sits
// strictly inside one). `spans` must be sorted by begin and not overlap.
std::vector<uint8_t> MaskFromSpans(const std::vector<std::pair<int64_t, int64_t>>& token_offsets,
                                   const std::vector<ByteSpan>& spans);

}  // namespace draftforge::data
