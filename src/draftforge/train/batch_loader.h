// Background loading of packed rows: worker threads read and collate the
// batches ahead of the training step, at most num_workers * prefetch_factor
// batches ahead, and Next() hands them out in order.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "draftforge/train/batch.h"
#include "draftforge/train/sample_loader.h"
#include "draftforge/util/status.h"

namespace draftforge::train {

// Loads the samples of `rows` (global dataset rows) and packs them into one
// row of `max_length` slots; skipped samples are left out.
Result<PackedBatch> LoadBatch(const SampleSource& source, const std::vector<int64_t>& rows, int64_t max_length);

class BatchLoader {
 public:
  // `batches` lists global dataset rows per batch. With num_workers == 0 the
  // batches are loaded on the calling thread inside Next().
  BatchLoader(SampleSource source, std::vector<std::vector<int64_t>> batches, int64_t max_length,
              int64_t num_workers, int64_t prefetch_factor);
  ~BatchLoader();
  BatchLoader(const BatchLoader&) = delete;
  BatchLoader& operator=(const BatchLoader&) = delete;

  int64_t size() const { return static_cast<int64_t>(batches_.size()); }
  // Returns the next batch in order, waiting for a worker if needed.
  Result<PackedBatch> Next();

 private:
  void WorkerLoop();

  SampleSource source_;
  std::vector<std::vector<int64_t>> batches_;
  int64_t max_length_;
  int64_t window_;
  std::mutex mutex_;
  std::condition_variable changed_;
  int64_t next_to_load_ = 0;
  int64_t next_to_return_ = 0;
  bool stopping_ = false;
  std::map<int64_t, std::optional<Result<PackedBatch>>> ready_;
  std::vector<std::thread> workers_;
};

}  // namespace draftforge::train
