#include "draftforge/util/fs.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace draftforge {

Result<std::string> ReadFileToString(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    if (!std::filesystem::exists(path)) return Status::NotFound("file not found: {}", path);
    return Status::IOError("cannot open {}: {}", path, std::strerror(errno));
  }
  std::ostringstream buffer;
  buffer << in.rdbuf();
  if (in.bad()) return Status::IOError("read failed on {}", path);
  return buffer.str();
}

Result<std::shared_ptr<MappedFile>> MappedFile::Open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return Status::NotFound("file not found: {}", path);
    return Status::IOError("cannot open {}: {}", path, std::strerror(errno));
  }
  struct stat info {};
  if (::fstat(fd, &info) != 0) {
    int error = errno;
    ::close(fd);
    return Status::IOError("cannot stat {}: {}", path, std::strerror(error));
  }
  std::shared_ptr<MappedFile> file(new MappedFile());
  file->path_ = path;
  file->size_ = static_cast<size_t>(info.st_size);
  if (file->size_ > 0) {
    void* address = ::mmap(nullptr, file->size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (address == MAP_FAILED) {
      int error = errno;
      ::close(fd);
      return Status::IOError("cannot mmap {} ({} bytes): {}", path, file->size_, std::strerror(error));
    }
    file->data_ = static_cast<const uint8_t*>(address);
  }
  ::close(fd);
  return file;
}

MappedFile::~MappedFile() {
  if (data_ != nullptr) ::munmap(const_cast<uint8_t*>(data_), size_);
}

Result<std::unique_ptr<AtomicFileWriter>> AtomicFileWriter::Open(const std::string& final_path) {
  static std::atomic<uint64_t> counter{0};
  std::unique_ptr<AtomicFileWriter> writer(new AtomicFileWriter());
  writer->final_path_ = final_path;
  // The ".tmp" suffix keeps partial files out of every "hs_<int>.safetensors" glob.
  writer->temp_path_ = fmt::format("{}.tmp-{}-{}", final_path, ::getpid(), counter.fetch_add(1));
  writer->file_ = std::fopen(writer->temp_path_.c_str(), "wb");
  if (writer->file_ == nullptr) {
    return Status::IOError("cannot create {}: {}", writer->temp_path_, std::strerror(errno));
  }
  return writer;
}

AtomicFileWriter::~AtomicFileWriter() {
  if (file_ != nullptr) std::fclose(file_);
  if (!committed_) std::remove(temp_path_.c_str());
}

Status AtomicFileWriter::Append(const void* data, size_t size) {
  if (file_ == nullptr) return Status::Internal("append to closed writer for {}", final_path_);
  if (size > 0 && std::fwrite(data, 1, size, file_) != size) {
    return Status::IOError("write failed on {}: {}", temp_path_, std::strerror(errno));
  }
  return Status::OK();
}

Status AtomicFileWriter::Commit() {
  if (file_ == nullptr) return Status::Internal("commit of closed writer for {}", final_path_);
  bool flushed = std::fflush(file_) == 0 && ::fsync(::fileno(file_)) == 0;
  int error = errno;
  bool closed = std::fclose(file_) == 0;
  file_ = nullptr;
  if (!flushed || !closed) {
    return Status::IOError("flush failed on {}: {}", temp_path_, std::strerror(error));
  }
  if (std::rename(temp_path_.c_str(), final_path_.c_str()) != 0) {
    return Status::IOError("rename {} -> {} failed: {}", temp_path_, final_path_, std::strerror(errno));
  }
  committed_ = true;
  return Status::OK();
}

Status WriteFileAtomic(const std::string& path, std::string_view bytes) {
  DF_ASSIGN_OR_RAISE(auto writer, AtomicFileWriter::Open(path));
  DF_RETURN_NOT_OK(writer->Append(bytes));
  return writer->Commit();
}

Status CreateDirectories(const std::string& path) {
  std::error_code error;
  std::filesystem::create_directories(path, error);
  if (error) return Status::IOError("cannot create directory {}: {}", path, error.message());
  return Status::OK();
}

}  // namespace draftforge
