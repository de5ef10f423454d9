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

// Seed of the noise of one training batch, a hash of (seed, epoch, batch
// index), so the noise does not depend on which thread loads the batch.
uint64_t BatchNoiseSeed(uint64_t seed, int64_t epoch, int64_t batch_index);

// Loads the samples of `rows` (global dataset rows) and packs them into one
// row of `max_length` slots; skipped samples are left out. The noise comes
// from a CPU generator seeded with `noise_seed`.
Result<PackedBatch> LoadBatch(const SampleSource& source, const std::vector<int64_t>& rows, int64_t max_length,
                              uint64_t noise_seed);

class BatchLoader {
 public:
  // `batches` lists global dataset rows per batch, and `noise_seeds` the
  // noise seed of each batch (empty when the source adds no noise). With
  // num_workers == 0 the batches are loaded on the calling thread inside Next().
  BatchLoader(SampleSource source, std::vector<std::vector<int64_t>> batches, int64_t max_length,
              int64_t num_workers, int64_t prefetch_factor, std::vector<uint64_t> noise_seeds = {});
  ~BatchLoader();
  BatchLoader(const BatchLoader&) = delete;
  BatchLoader& operator=(const BatchLoader&) = delete;

  int64_t size() const { return static_cast<int64_t>(batches_.size()); }
  // Returns the next batch in order, waiting for a worker if needed.
  Result<PackedBatch> Next();

 private:
  void WorkerLoop();
  Result<PackedBatch> Load(int64_t index) const;

  SampleSource source_;
  std::vector<std::vector<int64_t>> batches_;
  std::vector<uint64_t> noise_seeds_;
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
