#include "draftforge/tokenizer/unicode.h"

#include <utf8proc.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>

namespace draftforge::tokenizer::internal {

int64_t FindInvalidUtf8(std::string_view text) {
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  size_t i = 0;
  while (i < n) {
    // Skip ASCII eight bytes at a time.
    while (i + 8 <= n) {
      uint64_t word;
      std::memcpy(&word, s + i, 8);
      if (word & 0x8080808080808080ULL) break;
      i += 8;
    }
    if (i >= n) break;
    const unsigned char c = s[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    int length;
    char32_t min_value;
    char32_t cp;
    if (c >= 0xC2 && c <= 0xDF) {
      length = 2;
      min_value = 0x80;
      cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
      length = 3;
      min_value = 0x800;
      cp = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      length = 4;
      min_value = 0x10000;
      cp = c & 0x07;
    } else {
      return static_cast<int64_t>(i);
    }
    if (i + length > n) return static_cast<int64_t>(i);
    for (int k = 1; k < length; ++k) {
      if ((s[i + k] & 0xC0) != 0x80) return static_cast<int64_t>(i);
      cp = (cp << 6) | (s[i + k] & 0x3F);
    }
    if (cp < min_value || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
      return static_cast<int64_t>(i);
    }
    i += length;
  }
  return -1;
}

void AppendUtf8(char32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

bool IsWhitespace(char32_t cp) {
  return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
         (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F ||
         cp == 0x205F || cp == 0x3000;
}

bool IsAlphanumeric(char32_t cp) {
  switch (utf8proc_category(static_cast<utf8proc_int32_t>(cp))) {
    case UTF8PROC_CATEGORY_LU:
    case UTF8PROC_CATEGORY_LL:
    case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_LO:
    case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_NL:
    case UTF8PROC_CATEGORY_NO:
      return true;
    default:
      return false;
  }
}

bool IsNumeric(char32_t cp) {
  switch (utf8proc_category(static_cast<utf8proc_int32_t>(cp))) {
    case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_NL:
    case UTF8PROC_CATEGORY_NO:
      return true;
    default:
      return false;
  }
}

bool IsPunctuation(char32_t cp) {
  switch (utf8proc_category(static_cast<utf8proc_int32_t>(cp))) {
    case UTF8PROC_CATEGORY_PC:
    case UTF8PROC_CATEGORY_PD:
    case UTF8PROC_CATEGORY_PS:
    case UTF8PROC_CATEGORY_PE:
    case UTF8PROC_CATEGORY_PI:
    case UTF8PROC_CATEGORY_PF:
    case UTF8PROC_CATEGORY_PO:
      return true;
    default:
      return false;
  }
}

namespace {

constexpr char32_t kCodePointCount = 0x110000;

// One bit per code point: set when the character is "inert" for a
// normalization form, meaning normalization leaves it unchanged and never
// combines or reorders it with a neighbour. Text between inert characters
// can be normalized on its own, which keeps alignment local and lets the
// common case (no change) skip utf8proc entirely.
struct InertTables {
  std::vector<uint64_t> canonical;     // NFD
  std::vector<uint64_t> compatible;    // NFKD
  std::vector<uint64_t> second_start;  // starters that compose with a preceding character

  static bool Test(const std::vector<uint64_t>& bits, char32_t cp) {
    return (bits[cp >> 6] >> (cp & 63)) & 1;
  }
  static void Set(std::vector<uint64_t>* bits, char32_t cp) { (*bits)[cp >> 6] |= 1ULL << (cp & 63); }
};

bool DecomposesTo(char32_t cp, int options, utf8proc_int32_t* buffer, int* length) {
  int boundclass = 0;
  const utf8proc_ssize_t n = utf8proc_decompose_char(static_cast<utf8proc_int32_t>(cp), buffer, 32,
                                                     static_cast<utf8proc_option_t>(options),
                                                     &boundclass);
  *length = static_cast<int>(n);
  return !(n == 1 && buffer[0] == static_cast<utf8proc_int32_t>(cp));
}

const InertTables& Tables() {
  static const InertTables* tables = [] {
    auto* t = new InertTables;
    const size_t words = kCodePointCount / 64;
    t->canonical.assign(words, 0);
    t->compatible.assign(words, 0);
    t->second_start.assign(words, 0);
    utf8proc_int32_t buffer[32];
    for (char32_t cp = 0; cp < kCodePointCount; ++cp) {
      if (cp >= 0xD800 && cp <= 0xDFFF) continue;
      const utf8proc_property_t* property = utf8proc_get_property(static_cast<utf8proc_int32_t>(cp));
      const bool starter = property->combining_class == 0;
      int length = 0;
      const bool canonical_change = DecomposesTo(cp, UTF8PROC_DECOMPOSE, buffer, &length);
      if (canonical_change && length >= 2 &&
          utf8proc_get_property(buffer[length - 1])->combining_class == 0) {
        InertTables::Set(&t->second_start, static_cast<char32_t>(buffer[length - 1]));
      }
      if (starter && !canonical_change) InertTables::Set(&t->canonical, cp);
      const bool compat_change =
          canonical_change || DecomposesTo(cp, UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT, buffer, &length);
      if (starter && !compat_change) InertTables::Set(&t->compatible, cp);
    }
    // Hangul vowel and trailing consonant jamo compose algorithmically.
    for (char32_t cp = 0x1161; cp <= 0x1175; ++cp) InertTables::Set(&t->second_start, cp);
    for (char32_t cp = 0x11A8; cp <= 0x11C2; ++cp) InertTables::Set(&t->second_start, cp);
    return t;
  }();
  return *tables;
}

bool IsInert(NormalizationForm form, char32_t cp) {
  if (cp < 0x80) return true;
  const InertTables& t = Tables();
  switch (form) {
    case NormalizationForm::kNFD:
      return InertTables::Test(t.canonical, cp);
    case NormalizationForm::kNFKD:
      return InertTables::Test(t.compatible, cp);
    case NormalizationForm::kNFC:
      return InertTables::Test(t.canonical, cp) && !InertTables::Test(t.second_start, cp);
    case NormalizationForm::kNFKC:
      return InertTables::Test(t.compatible, cp) && !InertTables::Test(t.second_start, cp);
  }
  return true;
}

int Utf8procOptions(NormalizationForm form) {
  switch (form) {
    case NormalizationForm::kNFC:
      return UTF8PROC_STABLE | UTF8PROC_COMPOSE;
    case NormalizationForm::kNFD:
      return UTF8PROC_STABLE | UTF8PROC_DECOMPOSE;
    case NormalizationForm::kNFKC:
      return UTF8PROC_STABLE | UTF8PROC_COMPOSE | UTF8PROC_COMPAT;
    case NormalizationForm::kNFKD:
      return UTF8PROC_STABLE | UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT;
  }
  return 0;
}

// Appends the normalization of text[begin, end) to `out`, with alignments.
void NormalizeSegment(NormalizationForm form, const AlignedText& in, size_t begin, size_t end,
                      AlignedText* out) {
  utf8proc_uint8_t* mapped = nullptr;
  const utf8proc_ssize_t mapped_length = utf8proc_map(
      reinterpret_cast<const utf8proc_uint8_t*>(in.text.data() + begin),
      static_cast<utf8proc_ssize_t>(end - begin), &mapped,
      static_cast<utf8proc_option_t>(Utf8procOptions(form)));
  std::unique_ptr<utf8proc_uint8_t, decltype(&std::free)> owner(mapped, &std::free);
  if (mapped_length < 0) {
    // Cannot happen for validated UTF-8; keep the text unchanged.
    out->text.append(in.text, begin, end - begin);
    if (in.tracked) out->align.insert(out->align.end(), in.align.begin() + begin, in.align.begin() + end);
    return;
  }
  const std::string_view result(reinterpret_cast<const char*>(mapped), static_cast<size_t>(mapped_length));
  if (!in.tracked) {
    out->text.append(result);
    return;
  }
  // Source character spans, in order.
  std::vector<Span> sources;
  for (size_t pos = begin; pos < end;) {
    sources.push_back(in.align[pos]);
    pos += Utf8Length(static_cast<unsigned char>(in.text[pos]));
  }
  // The i-th output character takes the span of the i-th source character;
  // extra output characters (decomposition) take the last source span and
  // missing ones (composition) drop the trailing sources, as the Rust engine's
  // change counts do for the usual one-character compositions.
  size_t index = 0;
  for (size_t pos = 0; pos < result.size();) {
    const int length = Utf8Length(static_cast<unsigned char>(result[pos]));
    const Span span = sources[std::min(index, sources.size() - 1)];
    out->text.append(result.substr(pos, length));
    out->align.insert(out->align.end(), length, span);
    pos += length;
    ++index;
  }
}

}  // namespace

void NormalizeUnicode(NormalizationForm form, AlignedText* text) {
  const std::string& s = text->text;
  // Find the first non-inert character; most text has none.
  size_t first = s.size();
  for (size_t pos = 0; pos < s.size();) {
    if (static_cast<unsigned char>(s[pos]) < 0x80) {
      ++pos;
      continue;
    }
    int length;
    const char32_t cp = DecodeUtf8(s, pos, &length);
    if (!IsInert(form, cp)) {
      first = pos;
      break;
    }
    pos += length;
  }
  if (first == s.size()) return;

  AlignedText out;
  out.tracked = text->tracked;
  out.text.reserve(s.size() + 16);
  if (out.tracked) out.align.reserve(s.size() + 16);
  size_t copied = 0;          // bytes of `s` already written to `out`
  size_t last_inert = 0;      // start of the last inert character seen
  bool have_last_inert = false;
  size_t pos = 0;
  while (pos < s.size()) {
    int length;
    const char32_t cp = DecodeUtf8(s, pos, &length);
    if (IsInert(form, cp)) {
      last_inert = pos;
      have_last_inert = true;
      pos += length;
      continue;
    }
    // A run of non-inert characters, joined with the inert character right
    // before it (its possible composition starter).
    size_t begin = pos;
    if (have_last_inert && last_inert + Utf8Length(static_cast<unsigned char>(s[last_inert])) == pos &&
        last_inert >= copied) {
      begin = last_inert;
    }
    size_t end = pos + length;
    while (end < s.size()) {
      int next_length;
      const char32_t next = DecodeUtf8(s, end, &next_length);
      if (IsInert(form, next)) break;
      end += next_length;
    }
    out.text.append(s, copied, begin - copied);
    if (out.tracked) out.align.insert(out.align.end(), text->align.begin() + copied, text->align.begin() + begin);
    NormalizeSegment(form, *text, begin, end, &out);
    copied = end;
    have_last_inert = false;
    pos = end;
  }
  out.text.append(s, copied, s.size() - copied);
  if (out.tracked) out.align.insert(out.align.end(), text->align.begin() + copied, text->align.end());
  *text = std::move(out);
}

void LowercaseText(AlignedText* text) {
  AlignedText out;
  out.tracked = text->tracked;
  out.text.reserve(text->text.size());
  const std::string& s = text->text;
  for (size_t pos = 0; pos < s.size();) {
    int length;
    const char32_t cp = DecodeUtf8(s, pos, &length);
    const auto lower = static_cast<char32_t>(utf8proc_tolower(static_cast<utf8proc_int32_t>(cp)));
    const size_t before = out.text.size();
    AppendUtf8(lower, &out.text);
    if (out.tracked) out.align.insert(out.align.end(), out.text.size() - before, text->align[pos]);
    pos += length;
  }
  *text = std::move(out);
}

}  // namespace draftforge::tokenizer::internal
