// Byte ranges of the records of a JSON array or JSONL file, found without
// parsing them, so that prepare can visit records in any order while the file
// stays memory-mapped instead of loaded onto the heap.
//
// A file whose first non-space byte (after an optional UTF-8 BOM) is '['
// is a JSON array: its top-level elements are the records. Anything else is
// JSONL: every line that is not blank is a record. The scan only tracks
// strings, escapes and bracket depth, so a record's own syntax is checked
// later, when it is parsed. An unterminated array or string fails the scan.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "draftforge/util/fs.h"
#include "draftforge/util/status.h"

namespace draftforge::data {

class RecordIndex {
 public:
  // Indexes the file; with max_records >= 0 the scan stops after that many
  // records (and does not check the rest of the file).
  static Result<RecordIndex> Build(const std::string& path, int64_t max_records = -1);

  int64_t size() const { return static_cast<int64_t>(begins_.size()); }
  std::string_view record(int64_t i) const {
    return {reinterpret_cast<const char*>(file_->data()) + begins_[i], static_cast<size_t>(ends_[i] - begins_[i])};
  }
  int64_t line(int64_t i) const { return lines_[i]; }  // 1-based line where the record starts
  const std::string& path() const { return file_->path(); }
  bool is_json_array() const { return json_array_; }

  // "path:line" for messages.
  std::string Where(int64_t i) const;

 private:
  Status ScanLines(int64_t max_records);
  Status ScanArray(size_t start, int64_t max_records);

  std::shared_ptr<MappedFile> file_;
  bool json_array_ = false;
  std::vector<int64_t> begins_;
  std::vector<int64_t> ends_;
  std::vector<int64_t> lines_;
};

}  // namespace draftforge::data
