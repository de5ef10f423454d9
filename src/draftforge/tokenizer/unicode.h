// UTF-8 and Unicode helpers for the tokenizer: validation, decoding,
// character classes with the Rust standard library's meaning, and Unicode
// normalization that keeps a per-byte alignment to the original text.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace draftforge::tokenizer::internal {

// [start, end) byte range of the original input.
struct Span {
  int32_t start = 0;
  int32_t end = 0;
};

// Text derived from the input, with the original span of every byte. `align`
// is empty when the caller does not need offsets; transformations then skip
// the alignment work.
struct AlignedText {
  std::string text;
  std::vector<Span> align;
  bool tracked = false;
};

// Returns the byte offset of the first invalid UTF-8 sequence (overlong forms,
// surrogates and code points above U+10FFFF count as invalid), or -1.
int64_t FindInvalidUtf8(std::string_view text);

// Decodes the code point at text[pos] of valid UTF-8 and stores its length.
inline char32_t DecodeUtf8(std::string_view text, size_t pos, int* length) {
  const auto* s = reinterpret_cast<const unsigned char*>(text.data()) + pos;
  if (s[0] < 0x80) {
    *length = 1;
    return s[0];
  }
  if (s[0] < 0xE0) {
    *length = 2;
    return ((s[0] & 0x1F) << 6) | (s[1] & 0x3F);
  }
  if (s[0] < 0xF0) {
    *length = 3;
    return ((s[0] & 0x0F) << 12) | ((s[1] & 0x3F) << 6) | (s[2] & 0x3F);
  }
  *length = 4;
  return ((s[0] & 0x07) << 18) | ((s[1] & 0x3F) << 12) | ((s[2] & 0x3F) << 6) | (s[3] & 0x3F);
}

inline int Utf8Length(unsigned char lead) {
  return lead < 0x80 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4;
}

void AppendUtf8(char32_t cp, std::string* out);

// Rust's char::is_whitespace (the Unicode White_Space property).
bool IsWhitespace(char32_t cp);
// Rust's char::is_alphanumeric, approximated by the general categories L* and N*.
bool IsAlphanumeric(char32_t cp);
// Rust's char::is_numeric: general categories Nd, Nl and No.
bool IsNumeric(char32_t cp);
// Unicode general category P* (what the Punctuation pre-tokenizer splits on).
bool IsPunctuation(char32_t cp);

enum class NormalizationForm { kNFC, kNFD, kNFKC, kNFKD };

// Normalizes `text` in place. Alignment follows the Rust engine: a composed
// character keeps the span of its first source character, and every
// character of a decomposition keeps the span of the character it came from.
void NormalizeUnicode(NormalizationForm form, AlignedText* text);

// Lowercases each character (simple case mapping).
void LowercaseText(AlignedText* text);

}  // namespace draftforge::tokenizer::internal
