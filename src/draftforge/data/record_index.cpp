#include "draftforge/data/record_index.h"

#include <cstring>

namespace draftforge::data {
namespace {

constexpr std::string_view kUtf8Bom = "\xEF\xBB\xBF";

bool IsJsonSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

}  // namespace

std::string RecordIndex::Where(int64_t i) const {
  if (json_array_) return fmt::format("{}:{} (record {})", path(), line(i), i);
  return fmt::format("{}:{}", path(), line(i));
}

Result<RecordIndex> RecordIndex::Build(const std::string& path, int64_t max_records) {
  RecordIndex index;
  auto file = MappedFile::Open(path);
  if (!file.ok()) {
    return Status::NotFound("--data file not found or unreadable: {} ({})", path, file.status().message());
  }
  index.file_ = std::move(*file);
  const char* data = reinterpret_cast<const char*>(index.file_->data());
  const size_t size = index.file_->size();
  size_t start = 0;
  if (size >= kUtf8Bom.size() && std::string_view(data, kUtf8Bom.size()) == kUtf8Bom) start = kUtf8Bom.size();
  size_t first = start;
  while (first < size && IsJsonSpace(data[first])) ++first;
  if (first < size && data[first] == '[') {
    index.json_array_ = true;
    DF_RETURN_NOT_OK(index.ScanArray(first, max_records));
  } else {
    DF_RETURN_NOT_OK(index.ScanLines(max_records));
  }
  return index;
}

Status RecordIndex::ScanLines(int64_t max_records) {
  const char* data = reinterpret_cast<const char*>(file_->data());
  const size_t size = file_->size();
  size_t position = 0;
  int64_t line_number = 0;
  while (position < size && (max_records < 0 || this->size() < max_records)) {
    ++line_number;
    const void* newline = std::memchr(data + position, '\n', size - position);
    const size_t end = newline ? static_cast<const char*>(newline) - data : size;
    size_t begin = position;
    if (line_number == 1 && end - begin >= kUtf8Bom.size() &&
        std::string_view(data + begin, kUtf8Bom.size()) == kUtf8Bom) {
      begin += kUtf8Bom.size();
    }
    size_t trimmed_end = end;
    while (trimmed_end > begin && IsJsonSpace(data[trimmed_end - 1])) --trimmed_end;
    size_t trimmed_begin = begin;
    while (trimmed_begin < trimmed_end && IsJsonSpace(data[trimmed_begin])) ++trimmed_begin;
    if (trimmed_begin < trimmed_end) {
      begins_.push_back(static_cast<int64_t>(trimmed_begin));
      ends_.push_back(static_cast<int64_t>(trimmed_end));
      lines_.push_back(line_number);
    }
    position = end + 1;
  }
  return Status::OK();
}

// Walks the array once, tracking depth and string state, and records each
// top-level element's [begin, end).
Status RecordIndex::ScanArray(size_t start, int64_t max_records) {
  const char* data = reinterpret_cast<const char*>(file_->data());
  const size_t size = file_->size();
  int64_t line_number = 1;
  for (size_t i = 0; i < start; ++i) line_number += data[i] == '\n';
  int depth = 0;
  bool in_string = false;
  int64_t element_begin = -1;
  int64_t element_line = 0;
  size_t last_significant = start;  // end of the last non-space byte inside the current element
  for (size_t i = start; i < size; ++i) {
    const char c = data[i];
    if (c == '\n') ++line_number;
    if (in_string) {
      if (c == '\\') {
        ++i;  // the escaped byte cannot end the string; a '\n' inside strings is invalid JSON anyway
      } else if (c == '"') {
        in_string = false;
        last_significant = i + 1;
      }
      continue;
    }
    if (IsJsonSpace(c)) continue;
    if (depth == 1 && element_begin < 0 && c != ',' && c != ']') {
      element_begin = static_cast<int64_t>(i);
      element_line = line_number;
    }
    if (c == '"') {
      in_string = true;
      continue;
    }
    if (c == '[' || c == '{') {
      ++depth;
    } else if (c == ']' || c == '}') {
      --depth;
      if (depth == 0) {
        if (element_begin >= 0) {
          begins_.push_back(element_begin);
          ends_.push_back(static_cast<int64_t>(last_significant));
          lines_.push_back(element_line);
        }
        for (size_t j = i + 1; j < size; ++j) {
          if (!IsJsonSpace(data[j])) {
            return Status::Invalid("{}:{}: malformed JSON after the top-level array", path(), line_number);
          }
        }
        return Status::OK();
      }
      if (depth < 0) return Status::Invalid("{}:{}: malformed JSON (unbalanced '{}')", path(), line_number, c);
    } else if (c == ',' && depth == 1) {
      if (element_begin < 0) {
        return Status::Invalid("{}:{}: malformed JSON (empty array element)", path(), line_number);
      }
      begins_.push_back(element_begin);
      ends_.push_back(static_cast<int64_t>(last_significant));
      lines_.push_back(element_line);
      if (this->size() == max_records) return Status::OK();
      element_begin = -1;
      continue;
    }
    last_significant = i + 1;
  }
  return Status::Invalid("{}:{}: malformed JSON: the top-level array is not closed (truncated file?)", path(),
                         line_number);
}

}  // namespace draftforge::data
