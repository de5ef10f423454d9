// Added tokens ("added_tokens" of tokenizer.json) and the matcher that finds
// them in text before the model runs: leftmost-longest matching, as the Rust
// engine's Aho-Corasick automaton does, then lstrip / rstrip / single_word.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace draftforge::tokenizer::internal {

struct AddedToken {
  std::string content;
  int32_t id = 0;
  bool single_word = false;
  bool lstrip = false;
  bool rstrip = false;
  bool normalized = false;
  bool special = false;
};

// A piece of text: an added token (token >= 0, an index into the token list)
// or the text between tokens (token == -1). [start, end) in bytes.
struct TextSegment {
  size_t start;
  size_t end;
  int32_t token;
};

class AddedTokenMatcher {
 public:
  // Adds `pattern` (the token's content, normalized when the token is) for
  // the token at `token_index`. The first of several equal patterns wins.
  void Add(std::string_view pattern, int32_t token_index);
  bool empty() const { return nodes_.size() == 1; }

  // Splits `text` into segments, in order; empty text gives no segment.
  void Split(std::string_view text, const std::vector<AddedToken>& tokens, std::vector<TextSegment>* out) const;

 private:
  struct Node {
    std::vector<std::pair<uint8_t, int32_t>> children;  // (byte, node index)
    int32_t token = -1;
  };
  int32_t Child(int32_t node, uint8_t byte) const;
  // Longest pattern starting at text[pos]: (end, token index), or token -1.
  std::pair<size_t, int32_t> LongestAt(std::string_view text, size_t pos) const;

  std::vector<Node> nodes_{1};
  bool first_byte_[256] = {};
};

}  // namespace draftforge::tokenizer::internal
