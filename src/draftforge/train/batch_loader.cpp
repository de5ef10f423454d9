#include "draftforge/train/batch_loader.h"

#include <algorithm>

namespace draftforge::train {

Result<PackedBatch> LoadBatch(const SampleSource& source, const std::vector<int64_t>& rows, int64_t max_length) {
  std::vector<ShiftedSample> samples;
  for (int64_t row : rows) {
    DF_ASSIGN_OR_RAISE(std::optional<ShiftedSample> sample, LoadSample(source, row));
    if (sample) samples.push_back(std::move(*sample));
  }
  return Collate(samples, max_length, source.hidden_size, source.dtype);
}

BatchLoader::BatchLoader(SampleSource source, std::vector<std::vector<int64_t>> batches, int64_t max_length,
                         int64_t num_workers, int64_t prefetch_factor)
    : source_(std::move(source)),
      batches_(std::move(batches)),
      max_length_(max_length),
      window_(std::max<int64_t>(1, num_workers * std::max<int64_t>(1, prefetch_factor))) {
  for (int64_t i = 0; i < num_workers; ++i) workers_.emplace_back([this] { WorkerLoop(); });
}

BatchLoader::~BatchLoader() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  changed_.notify_all();
  for (auto& worker : workers_) worker.join();
}

void BatchLoader::WorkerLoop() {
  while (true) {
    int64_t index;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      changed_.wait(lock, [this] {
        return stopping_ || (next_to_load_ < size() && next_to_load_ < next_to_return_ + window_);
      });
      if (stopping_) return;
      index = next_to_load_++;
    }
    Result<PackedBatch> batch = LoadBatch(source_, batches_[index], max_length_);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      ready_[index].emplace(std::move(batch));
    }
    changed_.notify_all();
  }
}

Result<PackedBatch> BatchLoader::Next() {
  if (next_to_return_ >= size()) return Status::Internal("BatchLoader::Next called after the last batch");
  if (workers_.empty()) return LoadBatch(source_, batches_[next_to_return_++], max_length_);
  std::unique_lock<std::mutex> lock(mutex_);
  changed_.wait(lock, [this] {
    auto it = ready_.find(next_to_return_);
    return it != ready_.end() && it->second.has_value();
  });
  auto node = ready_.extract(next_to_return_);
  ++next_to_return_;
  lock.unlock();
  changed_.notify_all();
  return std::move(*node.mapped());
}

}  // namespace draftforge::train
