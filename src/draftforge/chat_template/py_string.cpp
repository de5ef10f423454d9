#include "draftforge/chat_template/py_string.h"

#include <utf8proc.h>

#include <algorithm>

namespace draftforge::chat_template {

namespace {

// Decodes one code point at `pos`; an invalid byte decodes as itself (Latin-1
// value) and advances one byte.
char32_t DecodeAt(std::string_view s, size_t& pos) {
  utf8proc_int32_t cp = 0;
  auto n = utf8proc_iterate(reinterpret_cast<const utf8proc_uint8_t*>(s.data() + pos),
                            static_cast<utf8proc_ssize_t>(s.size() - pos), &cp);
  if (n <= 0) {
    cp = static_cast<unsigned char>(s[pos]);
    n = 1;
  }
  pos += static_cast<size_t>(n);
  return static_cast<char32_t>(cp);
}

bool InSet(char32_t cp, const std::vector<char32_t>& set) {
  return std::find(set.begin(), set.end(), cp) != set.end();
}

template <typename MapFn>
std::string MapCodePoints(std::string_view s, MapFn map) {
  std::string out;
  out.reserve(s.size());
  size_t pos = 0;
  while (pos < s.size()) AppendUtf8(out, map(DecodeAt(s, pos)));
  return out;
}

char32_t ToUpper(char32_t cp) {
  if (cp < 0x80) return (cp >= 'a' && cp <= 'z') ? cp - 32 : cp;
  return static_cast<char32_t>(utf8proc_toupper(static_cast<utf8proc_int32_t>(cp)));
}
char32_t ToLower(char32_t cp) {
  if (cp < 0x80) return (cp >= 'A' && cp <= 'Z') ? cp + 32 : cp;
  return static_cast<char32_t>(utf8proc_tolower(static_cast<utf8proc_int32_t>(cp)));
}
char32_t ToTitle(char32_t cp) {
  if (cp < 0x80) return ToUpper(cp);
  return static_cast<char32_t>(utf8proc_totitle(static_cast<utf8proc_int32_t>(cp)));
}

// Python's "cased" characters: categories Lu, Ll, Lt.
bool IsCased(char32_t cp) {
  if (cp < 0x80) return (cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z');
  auto cat = utf8proc_category(static_cast<utf8proc_int32_t>(cp));
  return cat == UTF8PROC_CATEGORY_LU || cat == UTF8PROC_CATEGORY_LL || cat == UTF8PROC_CATEGORY_LT;
}

}  // namespace

std::vector<char32_t> DecodeUtf8(std::string_view s) {
  std::vector<char32_t> out;
  out.reserve(s.size());
  size_t pos = 0;
  while (pos < s.size()) out.push_back(DecodeAt(s, pos));
  return out;
}

void AppendUtf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

std::string EncodeUtf8(const std::vector<char32_t>& cps, size_t begin, size_t end) {
  std::string out;
  for (size_t i = begin; i < end && i < cps.size(); ++i) AppendUtf8(out, cps[i]);
  return out;
}

bool IsAscii(std::string_view s) {
  for (char c : s) {
    if (static_cast<unsigned char>(c) >= 0x80) return false;
  }
  return true;
}

int64_t CodePointLength(std::string_view s) {
  if (IsAscii(s)) return static_cast<int64_t>(s.size());
  int64_t n = 0;
  size_t pos = 0;
  while (pos < s.size()) {
    DecodeAt(s, pos);
    ++n;
  }
  return n;
}

bool IsPythonSpace(char32_t cp) {
  switch (cp) {
    case 0x09: case 0x0A: case 0x0B: case 0x0C: case 0x0D:
    case 0x1C: case 0x1D: case 0x1E: case 0x1F: case 0x20:
    case 0x85: case 0xA0: case 0x1680:
    case 0x2028: case 0x2029: case 0x202F: case 0x205F: case 0x3000:
      return true;
    default:
      return cp >= 0x2000 && cp <= 0x200A;
  }
}

bool IsPythonPrintable(char32_t cp) {
  if (cp == ' ') return true;
  if (cp < 0x80) return cp > 0x20 && cp < 0x7F;
  switch (utf8proc_category(static_cast<utf8proc_int32_t>(cp))) {
    case UTF8PROC_CATEGORY_CN: case UTF8PROC_CATEGORY_CC: case UTF8PROC_CATEGORY_CF:
    case UTF8PROC_CATEGORY_CS: case UTF8PROC_CATEGORY_CO: case UTF8PROC_CATEGORY_ZL:
    case UTF8PROC_CATEGORY_ZP: case UTF8PROC_CATEGORY_ZS:
      return false;
    default:
      return true;
  }
}

// Python applies the multi-character mappings of Unicode's SpecialCasing.txt;
// utf8proc has only the one-to-one mappings, so the common ones are listed.
// NOTE: conditional and language-specific mappings (final sigma) and rarer
// one-to-many mappings such as U+0149 are not reproduced.
const char* SpecialUpper(char32_t cp) {
  switch (cp) {
    case 0xDF: return "SS";
    case 0xFB00: return "FF";
    case 0xFB01: return "FI";
    case 0xFB02: return "FL";
    case 0xFB03: return "FFI";
    case 0xFB04: return "FFL";
    case 0xFB05: case 0xFB06: return "ST";
    default: return nullptr;
  }
}

std::string PyUpper(std::string_view s) {
  if (IsAscii(s)) return MapCodePoints(s, ToUpper);
  std::string out;
  size_t pos = 0;
  while (pos < s.size()) {
    char32_t cp = DecodeAt(s, pos);
    const char* special = SpecialUpper(cp);
    if (special != nullptr) {
      out += special;
    } else {
      AppendUtf8(out, ToUpper(cp));
    }
  }
  return out;
}

std::string PyLower(std::string_view s) {
  if (IsAscii(s)) return MapCodePoints(s, ToLower);
  std::string out;
  size_t pos = 0;
  while (pos < s.size()) {
    char32_t cp = DecodeAt(s, pos);
    if (cp == 0x130) {
      out += "i\xCC\x87";  // U+0130 lowers to 'i' + U+0307 COMBINING DOT ABOVE
    } else {
      AppendUtf8(out, ToLower(cp));
    }
  }
  return out;
}

std::string PyCapitalize(std::string_view s) {
  std::string out;
  size_t pos = 0;
  bool first = true;
  while (pos < s.size()) {
    char32_t cp = DecodeAt(s, pos);
    AppendUtf8(out, first ? ToTitle(cp) : ToLower(cp));
    first = false;
  }
  return out;
}

std::string PyTitle(std::string_view s) {
  std::string out;
  size_t pos = 0;
  bool previous_cased = false;
  while (pos < s.size()) {
    char32_t cp = DecodeAt(s, pos);
    bool cased = IsCased(cp);
    if (!cased) {
      AppendUtf8(out, cp);
    } else if (previous_cased) {
      AppendUtf8(out, ToLower(cp));
    } else {
      AppendUtf8(out, ToTitle(cp));
    }
    previous_cased = cased;
  }
  return out;
}

std::string PyStrip(std::string_view s, const std::optional<std::string>& chars, bool left,
                    bool right) {
  std::vector<char32_t> cps = DecodeUtf8(s);
  std::vector<char32_t> set;
  if (chars) set = DecodeUtf8(*chars);
  auto strip_this = [&](char32_t cp) { return chars ? InSet(cp, set) : IsPythonSpace(cp); };
  size_t begin = 0;
  size_t end = cps.size();
  if (left) {
    while (begin < end && strip_this(cps[begin])) ++begin;
  }
  if (right) {
    while (end > begin && strip_this(cps[end - 1])) --end;
  }
  if (IsAscii(s)) return std::string(s.substr(begin, end - begin));
  return EncodeUtf8(cps, begin, end);
}

std::vector<std::string> PySplit(std::string_view s, const std::optional<std::string>& sep,
                                 int64_t maxsplit, bool from_right) {
  std::vector<std::string> parts;
  if (sep) {
    if (maxsplit < 0) maxsplit = INT64_MAX;
    if (!from_right) {
      size_t start = 0;
      while (maxsplit-- > 0) {
        size_t found = s.find(*sep, start);
        if (found == std::string_view::npos) break;
        parts.emplace_back(s.substr(start, found - start));
        start = found + sep->size();
      }
      parts.emplace_back(s.substr(start));
    } else {
      size_t end = s.size();
      while (maxsplit-- > 0 && end >= sep->size()) {
        size_t found = s.rfind(*sep, end - sep->size());
        if (found == std::string_view::npos) break;
        parts.emplace_back(s.substr(found + sep->size(), end - found - sep->size()));
        end = found;
      }
      parts.emplace_back(s.substr(0, end));
      std::reverse(parts.begin(), parts.end());
    }
    return parts;
  }

  // Whitespace split over code points.
  std::vector<char32_t> cps = DecodeUtf8(s);
  if (maxsplit < 0) maxsplit = INT64_MAX;
  if (!from_right) {
    size_t i = 0;
    while (i < cps.size()) {
      while (i < cps.size() && IsPythonSpace(cps[i])) ++i;
      if (i == cps.size()) break;
      if (maxsplit-- <= 0) {
        size_t end = cps.size();
        while (end > i && IsPythonSpace(cps[end - 1])) --end;
        parts.push_back(EncodeUtf8(cps, i, end));
        break;
      }
      size_t j = i;
      while (j < cps.size() && !IsPythonSpace(cps[j])) ++j;
      parts.push_back(EncodeUtf8(cps, i, j));
      i = j;
    }
  } else {
    size_t i = cps.size();
    while (i > 0) {
      while (i > 0 && IsPythonSpace(cps[i - 1])) --i;
      if (i == 0) break;
      if (maxsplit-- <= 0) {
        size_t begin = 0;
        while (begin < i && IsPythonSpace(cps[begin])) ++begin;
        parts.push_back(EncodeUtf8(cps, begin, i));
        break;
      }
      size_t j = i;
      while (j > 0 && !IsPythonSpace(cps[j - 1])) --j;
      parts.push_back(EncodeUtf8(cps, j, i));
      i = j;
    }
    std::reverse(parts.begin(), parts.end());
  }
  return parts;
}

std::vector<std::string> PySplitLines(std::string_view s) {
  std::vector<std::string> lines;
  std::vector<char32_t> cps = DecodeUtf8(s);
  size_t start = 0;
  size_t i = 0;
  while (i < cps.size()) {
    char32_t cp = cps[i];
    bool is_break = cp == '\n' || cp == '\r' || cp == 0x0B || cp == 0x0C || cp == 0x1C ||
                    cp == 0x1D || cp == 0x1E || cp == 0x85 || cp == 0x2028 || cp == 0x2029;
    if (!is_break) {
      ++i;
      continue;
    }
    lines.push_back(EncodeUtf8(cps, start, i));
    if (cp == '\r' && i + 1 < cps.size() && cps[i + 1] == '\n') ++i;
    ++i;
    start = i;
  }
  if (start < cps.size()) lines.push_back(EncodeUtf8(cps, start, cps.size()));
  return lines;
}

std::string PyReplace(std::string_view s, std::string_view old_text, std::string_view new_text,
                      int64_t count) {
  if (count < 0) count = INT64_MAX;
  std::string out;
  if (old_text.empty()) {
    // Python inserts `new_text` before every code point and at the end.
    std::vector<char32_t> cps = DecodeUtf8(s);
    for (char32_t cp : cps) {
      if (count > 0) {
        out += new_text;
        --count;
      }
      AppendUtf8(out, cp);
    }
    if (count > 0) out += new_text;
    return out;
  }
  size_t start = 0;
  while (count > 0) {
    size_t found = s.find(old_text, start);
    if (found == std::string_view::npos) break;
    out.append(s.substr(start, found - start));
    out.append(new_text);
    start = found + old_text.size();
    --count;
  }
  out.append(s.substr(start));
  return out;
}

int64_t PyFind(std::string_view s, std::string_view sub, bool from_right) {
  size_t found = from_right ? s.rfind(sub) : s.find(sub);
  if (found == std::string_view::npos) return -1;
  return CodePointLength(s.substr(0, found));
}

int64_t PyCount(std::string_view s, std::string_view sub) {
  if (sub.empty()) return CodePointLength(s) + 1;
  int64_t n = 0;
  size_t start = 0;
  while (true) {
    size_t found = s.find(sub, start);
    if (found == std::string_view::npos) break;
    ++n;
    start = found + sub.size();
  }
  return n;
}

}  // namespace draftforge::chat_template
