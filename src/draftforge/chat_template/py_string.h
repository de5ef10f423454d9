// Python str semantics over UTF-8 std::string: code-point indexing, the
// whitespace set of str.isspace(), case mapping, strip/split/replace.
//
// Python strings index by code point, so `len`, slicing, `find` and the like
// decode UTF-8 here. Invalid UTF-8 bytes count as one code point each
// (U+FFFD-like) so that no input makes these functions fail.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace draftforge::chat_template {

std::vector<char32_t> DecodeUtf8(std::string_view s);
void AppendUtf8(std::string& out, char32_t cp);
std::string EncodeUtf8(const std::vector<char32_t>& cps, size_t begin, size_t end);

// Number of code points.
int64_t CodePointLength(std::string_view s);

// Python str.isspace() for one code point.
bool IsPythonSpace(char32_t cp);
// Python str.isprintable() for one code point.
bool IsPythonPrintable(char32_t cp);

std::string PyUpper(std::string_view s);
std::string PyLower(std::string_view s);
std::string PyCapitalize(std::string_view s);
// Python str.title().
std::string PyTitle(std::string_view s);

// strip/lstrip/rstrip: without `chars`, Python whitespace; with it, exactly
// the code points listed.
std::string PyStrip(std::string_view s, const std::optional<std::string>& chars, bool left, bool right);

// str.split / str.rsplit. Without a separator, runs of whitespace split and
// leading/trailing whitespace is dropped.
std::vector<std::string> PySplit(std::string_view s, const std::optional<std::string>& sep,
                                 int64_t maxsplit, bool from_right);
// str.splitlines() (without keepends).
std::vector<std::string> PySplitLines(std::string_view s);

std::string PyReplace(std::string_view s, std::string_view old_text, std::string_view new_text,
                      int64_t count);

// str.find / str.rfind in code points; -1 when absent.
int64_t PyFind(std::string_view s, std::string_view sub, bool from_right);
// str.count (non-overlapping).
int64_t PyCount(std::string_view s, std::string_view sub);

bool IsAscii(std::string_view s);

}  // namespace draftforge::chat_template
