// The `.lock` companion file that vLLM's hidden-states connector keeps next
// to each output file while it writes it (kv_connector_extra_config
// use_synchronization_lock, on by default in current vLLM).
//
// Writer: creates `<file>.lock` (mode 0644, empty) and holds an exclusive
// flock on it from the moment the request is scheduled until the file write
// ends, successfully or not. The writer never deletes the lock file.
// Reader: once it has the path, waits until it can take the flock itself,
// then deletes the lock file and validates the data file (a failed write
// leaves it missing or truncated even after the lock is released).
#pragma once

#include <chrono>
#include <string>

#include "draftforge/util/status.h"

namespace draftforge::hidden_states {

// Returns `data_path` + ".lock".
std::string LockPathFor(const std::string& data_path);

// An exclusive flock on a lock file, held until Release() or destruction.
class HeldFileLock {
 public:
  HeldFileLock() = default;
  HeldFileLock(HeldFileLock&& other) noexcept;
  HeldFileLock& operator=(HeldFileLock&& other) noexcept;
  HeldFileLock(const HeldFileLock&) = delete;
  HeldFileLock& operator=(const HeldFileLock&) = delete;
  ~HeldFileLock();

  // Creates (or truncates) `lock_path` and takes an exclusive flock on it;
  // blocks while another process holds it.
  static Result<HeldFileLock> Acquire(const std::string& lock_path);

  // Closes the file descriptor, which releases the lock; the file stays.
  void Release();
  bool held() const { return fd_ >= 0; }

 private:
  int fd_ = -1;
};

// Reader side: when `<data_path>.lock` exists, opens it read-write (a
// read-only open breaks flock on NFS), polls for an exclusive lock until
// `timeout`, then deletes the lock file. OK at once when there is no lock
// file (older vLLM without locks, or a lock already consumed). Network
// status (retryable) on timeout, IOError when the file cannot be opened.
Status WaitForWriterAndRemoveLock(const std::string& data_path,
                                  std::chrono::milliseconds timeout);

}  // namespace draftforge::hidden_states
