#include "draftforge/train/batch_loader.h"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>

namespace draftforge::train {
namespace {

// SplitMix64 finalizer (Steele, Lea and Flood 2014).
uint64_t MixBits(uint64_t x) {
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

}  // namespace

uint64_t BatchNoiseSeed(uint64_t seed, int64_t epoch, int64_t batch_index) {
  uint64_t mixed = MixBits(seed + 0x9e3779b97f4a7c15ULL);
  mixed = MixBits(mixed ^ static_cast<uint64_t>(epoch));
  return MixBits(mixed ^ static_cast<uint64_t>(batch_index));
}

Result<PackedBatch> LoadBatch(const SampleSource& source, const std::vector<int64_t>& rows, int64_t max_length,
                              uint64_t noise_seed) {
  at::Generator generator = at::detail::createCPUGenerator(noise_seed);
  std::vector<ShiftedSample> samples;
  for (int64_t row : rows) {
    DF_ASSIGN_OR_RAISE(std::optional<ShiftedSample> sample, LoadSample(source, row, generator));
    if (sample) samples.push_back(std::move(*sample));
  }
  return Collate(samples, max_length, source.hidden_size, source.dtype);
}

BatchLoader::BatchLoader(SampleSource source, std::vector<std::vector<int64_t>> batches, int64_t max_length,
                         int64_t num_workers, int64_t prefetch_factor, std::vector<uint64_t> noise_seeds)
    : source_(std::move(source)),
      batches_(std::move(batches)),
      noise_seeds_(std::move(noise_seeds)),
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

Result<PackedBatch> BatchLoader::Load(int64_t index) const {
  uint64_t noise_seed = index < static_cast<int64_t>(noise_seeds_.size()) ? noise_seeds_[index] : 0;
  return LoadBatch(source_, batches_[index], max_length_, noise_seed);
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
    Result<PackedBatch> batch = Load(index);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      ready_[index].emplace(std::move(batch));
    }
    changed_.notify_all();
  }
}

Result<PackedBatch> BatchLoader::Next() {
  if (next_to_return_ >= size()) return Status::Internal("BatchLoader::Next called after the last batch");
  if (workers_.empty()) return Load(next_to_return_++);
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
