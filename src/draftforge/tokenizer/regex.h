// PCRE2 regular expressions with the semantics the Rust tokenizers engine gets
// from Oniguruma (Ruby syntax, UTF-8): Unicode properties, `\s` as the
// White_Space set, `^` and `$` at line boundaries. Patterns are JIT-compiled.
// Matching is thread-safe: each thread keeps its own match data and JIT stack.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "draftforge/util/status.h"

namespace draftforge::tokenizer::internal {

class Regex {
 public:
  // `context` names the pattern's place in tokenizer.json for error messages.
  static Result<Regex> Compile(std::string_view pattern, const std::string& context);

  // Appends the [start, end) byte ranges of successive non-overlapping matches
  // in `text` (valid UTF-8). After an empty match the search resumes one
  // character later.
  void FindAll(std::string_view text, std::vector<std::pair<size_t, size_t>>* matches) const;

 private:
  struct Code;
  std::shared_ptr<const Code> code_;
};

// Rewrites Oniguruma-only escapes into PCRE2 syntax: `\s` and `\S` become
// explicit classes of the White_Space characters, because PCRE2 10.42's `\s`
// with Unicode properties also matches U+180E, unlike Oniguruma.
std::string TranslateOnigurumaPattern(std::string_view pattern);

}  // namespace draftforge::tokenizer::internal
