#include "draftforge/hidden_states/hs_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <thread>
#include <utility>

namespace draftforge::hidden_states {

std::string LockPathFor(const std::string& data_path) { return data_path + ".lock"; }

HeldFileLock::HeldFileLock(HeldFileLock&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}

HeldFileLock& HeldFileLock::operator=(HeldFileLock&& other) noexcept {
  if (this != &other) {
    Release();
    fd_ = std::exchange(other.fd_, -1);
  }
  return *this;
}

HeldFileLock::~HeldFileLock() { Release(); }

Result<HeldFileLock> HeldFileLock::Acquire(const std::string& lock_path) {
  const int fd = ::open(lock_path.c_str(), O_CREAT | O_WRONLY | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    return Status::IOError("cannot create lock file {}: {}", lock_path, std::strerror(errno));
  }
  while (::flock(fd, LOCK_EX) != 0) {
    if (errno == EINTR) continue;
    const int error = errno;
    ::close(fd);
    return Status::IOError("cannot lock {}: {}", lock_path, std::strerror(error));
  }
  HeldFileLock lock;
  lock.fd_ = fd;
  return lock;
}

void HeldFileLock::Release() {
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
  }
}

Status WaitForWriterAndRemoveLock(const std::string& data_path,
                                  std::chrono::milliseconds timeout) {
  const std::string lock_path = LockPathFor(data_path);
  const int fd = ::open(lock_path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return Status::OK();
    return Status::IOError("cannot open lock file {}: {}", lock_path, std::strerror(errno));
  }
  // Poll instead of a blocking flock so the wait has a deadline. Start with
  // short sleeps: a small file is usually written within a millisecond.
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  auto sleep = std::chrono::microseconds(200);
  while (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    if (errno != EWOULDBLOCK && errno != EINTR) {
      const int error = errno;
      ::close(fd);
      return Status::IOError("cannot lock {}: {}", lock_path, std::strerror(error));
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      ::close(fd);
      return Status::Network("the server still held {} after {} ms; its write of {} did not "
                             "finish (pass a longer --lock-timeout for large files or slow disks)",
                             lock_path, timeout.count(), data_path);
    }
    std::this_thread::sleep_for(sleep);
    sleep = std::min<std::chrono::microseconds>(sleep * 2, std::chrono::milliseconds(100));
  }
  ::close(fd);
  if (::unlink(lock_path.c_str()) != 0 && errno != ENOENT) {
    return Status::IOError("cannot delete lock file {}: {}", lock_path, std::strerror(errno));
  }
  return Status::OK();
}

}  // namespace draftforge::hidden_states
