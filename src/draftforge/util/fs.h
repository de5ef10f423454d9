// File-system helpers: whole-file reads, read-only memory maps and atomic writes.
#pragma once

#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <string_view>

#include "draftforge/util/status.h"

namespace draftforge {

// Reads a whole file into a string.
Result<std::string> ReadFileToString(const std::string& path);

// A read-only memory map of a whole file. Empty files map to size 0 with a
// null data pointer. The mapping lives as long as the last shared_ptr to it.
class MappedFile {
 public:
  static Result<std::shared_ptr<MappedFile>> Open(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  MappedFile() = default;
  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

// Writes a file so that it appears under its final name only when complete:
// bytes go to a temporary file in the same directory, which Commit() flushes,
// fsyncs and renames over the final path. A writer destroyed without Commit()
// (error, exception, kill before rename) leaves only the temporary file, which
// is removed in the destructor when the process is still alive.
class AtomicFileWriter {
 public:
  static Result<std::unique_ptr<AtomicFileWriter>> Open(const std::string& final_path);
  ~AtomicFileWriter();

  Status Append(const void* data, size_t size);
  Status Append(std::string_view bytes) { return Append(bytes.data(), bytes.size()); }
  Status Commit();
  const std::string& temp_path() const { return temp_path_; }

 private:
  AtomicFileWriter() = default;
  std::string final_path_;
  std::string temp_path_;
  std::FILE* file_ = nullptr;
  bool committed_ = false;
};

// Writes `bytes` to `path` atomically (see AtomicFileWriter).
Status WriteFileAtomic(const std::string& path, std::string_view bytes);

// Creates a directory and its parents; OK when it exists already.
Status CreateDirectories(const std::string& path);

}  // namespace draftforge
