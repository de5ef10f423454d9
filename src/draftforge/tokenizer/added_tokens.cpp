#include "draftforge/tokenizer/added_tokens.h"

#include <algorithm>

#include "draftforge/tokenizer/unicode.h"

namespace draftforge::tokenizer::internal {

namespace {

bool IsWordCharacter(char32_t cp) { return cp == U'_' || IsAlphanumeric(cp); }

// Code point of the last character of valid UTF-8 `text` (non-empty).
char32_t LastCodePoint(std::string_view text, size_t* start) {
  size_t pos = text.size() - 1;
  while (pos > 0 && (static_cast<unsigned char>(text[pos]) & 0xC0) == 0x80) --pos;
  int length;
  *start = pos;
  return DecodeUtf8(text, pos, &length);
}

}  // namespace

int32_t AddedTokenMatcher::Child(int32_t node, uint8_t byte) const {
  for (const auto& [b, child] : nodes_[node].children) {
    if (b == byte) return child;
  }
  return -1;
}

void AddedTokenMatcher::Add(std::string_view pattern, int32_t token_index) {
  if (pattern.empty()) return;
  int32_t node = 0;
  for (unsigned char byte : pattern) {
    int32_t child = Child(node, byte);
    if (child < 0) {
      child = static_cast<int32_t>(nodes_.size());
      nodes_.emplace_back();
      nodes_[node].children.emplace_back(byte, child);
    }
    node = child;
  }
  if (nodes_[node].token < 0) nodes_[node].token = token_index;
  first_byte_[static_cast<unsigned char>(pattern[0])] = true;
}

std::pair<size_t, int32_t> AddedTokenMatcher::LongestAt(std::string_view text, size_t pos) const {
  int32_t node = 0;
  std::pair<size_t, int32_t> best{pos, -1};
  for (size_t i = pos; i < text.size(); ++i) {
    node = Child(node, static_cast<unsigned char>(text[i]));
    if (node < 0) break;
    if (nodes_[node].token >= 0) best = {i + 1, nodes_[node].token};
  }
  return best;
}

void AddedTokenMatcher::Split(std::string_view text, const std::vector<AddedToken>& tokens,
                              std::vector<TextSegment>* out) const {
  out->clear();
  if (text.empty()) return;
  size_t start_offset = 0;
  size_t search = 0;
  const size_t n = text.size();
  while (search < n && !empty()) {
    // Leftmost start, then longest pattern there.
    size_t match_start = n;
    std::pair<size_t, int32_t> match{0, -1};
    for (size_t pos = search; pos < n; ++pos) {
      if (!first_byte_[static_cast<unsigned char>(text[pos])]) continue;
      match = LongestAt(text, pos);
      if (match.second >= 0) {
        match_start = pos;
        break;
      }
    }
    if (match.second < 0) break;
    size_t start = match_start;
    size_t stop = match.first;
    search = stop;
    const AddedToken& token = tokens[match.second];

    if (token.single_word) {
      bool start_space = true;
      if (start > 0) {
        size_t unused;
        start_space = !IsWordCharacter(LastCodePoint(text.substr(0, start), &unused));
      }
      bool stop_space = true;
      if (stop < n) {
        int length;
        stop_space = !IsWordCharacter(DecodeUtf8(text, stop, &length));
      }
      if (!start_space || !stop_space) continue;
    }
    if (token.lstrip) {
      // Back over whitespace, but not into what an earlier match took.
      size_t new_start = start;
      while (new_start > 0) {
        size_t char_start;
        if (!IsWhitespace(LastCodePoint(text.substr(0, new_start), &char_start))) break;
        new_start = char_start;
      }
      start = std::max(new_start, start_offset);
    }
    if (token.rstrip) {
      while (stop < n) {
        int length;
        if (!IsWhitespace(DecodeUtf8(text, stop, &length))) break;
        stop += length;
      }
    }
    if (start_offset < start) out->push_back(TextSegment{start_offset, start, -1});
    out->push_back(TextSegment{start, stop, match.second});
    start_offset = stop;
  }
  if (start_offset < n) out->push_back(TextSegment{start_offset, n, -1});
}

}  // namespace draftforge::tokenizer::internal
