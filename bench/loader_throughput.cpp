// Throughput of the training data loader alone: hs files read, validated,
// noised, shifted and packed by BatchLoader, with no training step consuming
// the batches. Run it once to warm the page cache; it then reports the
// second, warm pass.
//
// Usage: loader_throughput DATA_DIR [HIDDEN_SIZE] [TOTAL_SEQ_LEN] [NUM_WORKERS] [PREFETCH]
//   DATA_DIR      `draftforge prepare` output with hidden_states/ from `draftforge generate`
//   HIDDEN_SIZE   verifier hidden size (64 for stories260k)
//   TOTAL_SEQ_LEN tokens per packed row (train default 8192)
//   NUM_WORKERS   loader threads (train default 12)
//   PREFETCH      batches per thread ahead (train default 4)
// Prints one JSON line: samples/s, tokens/s, batches/s and GB/s of hs-file
// bytes. The share of step time spent waiting for data in a real run is in
// `draftforge train`'s log ("% of the time waiting for data").
#include <fmt/format.h>
#include <torch/torch.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

#include "draftforge/data/token_dataset.h"
#include "draftforge/hidden_states/hs_file.h"
#include "draftforge/train/batch_loader.h"
#include "draftforge/train/sampler.h"

namespace {

using namespace draftforge;

struct PassResult {
  double seconds = 0;
  int64_t samples = 0;
  int64_t tokens = 0;
  int64_t batches = 0;
};

PassResult RunPass(const train::SampleSource& source, const std::vector<std::vector<int64_t>>& batches,
                   int64_t total_seq_len, int64_t workers, int64_t prefetch) {
  std::vector<uint64_t> seeds;
  for (size_t b = 0; b < batches.size(); ++b) seeds.push_back(train::BatchNoiseSeed(42, 0, static_cast<int64_t>(b)));
  const auto start = std::chrono::steady_clock::now();
  train::BatchLoader loader(source, batches, total_seq_len, workers, prefetch, seeds);
  PassResult result;
  for (int64_t b = 0; b < loader.size(); ++b) {
    auto batch = loader.Next();
    if (!batch.ok()) {
      std::cerr << batch.status().ToString() << "\n";
      std::exit(1);
    }
    result.samples += batch->num_samples;
    result.tokens += batch->num_tokens();
    result.batches += 1;
  }
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return result;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::cerr << "usage: loader_throughput DATA_DIR [HIDDEN_SIZE] [TOTAL_SEQ_LEN] [NUM_WORKERS] [PREFETCH]\n";
    return 2;
  }
  const std::string data_dir = argv[1];
  const int64_t hidden_size = argc > 2 ? std::atoll(argv[2]) : 64;
  const int64_t total_seq_len = argc > 3 ? std::atoll(argv[3]) : 8192;
  const int64_t workers = argc > 4 ? std::atoll(argv[4]) : 12;
  const int64_t prefetch = argc > 5 ? std::atoll(argv[5]) : 4;
  torch::set_num_threads(2);

  auto dataset = data::TokenDataset::Open(data_dir);
  if (!dataset.ok()) {
    std::cerr << dataset.status().ToString() << "\n";
    return 1;
  }
  // The training split, as `draftforge train` reads it.
  const int64_t train_rows = static_cast<int64_t>(static_cast<double>(dataset->num_rows()) * 0.9);
  std::vector<int64_t> lengths;
  int64_t file_bytes = 0;
  const std::string hs_dir = data_dir + "/hidden_states";
  for (int64_t row = 0; row < train_rows; ++row) {
    lengths.push_back(dataset->seq_len(row));
    std::error_code error;
    file_bytes += static_cast<int64_t>(
        std::filesystem::file_size(hs_dir + "/" + hidden_states::HiddenStatesFileName(row), error));
  }
  train::SampleSource source;
  source.dataset = &*dataset;
  source.hidden_states_dir = hs_dir;
  source.hidden_size = hidden_size;
  source.noise_std = 0.05;
  source.on_missing = train::MissingFilePolicy::kRaise;
  auto batches = train::EpochBatches(lengths, total_seq_len, 1, 0, 0, 0);

  RunPass(source, batches, total_seq_len, workers, prefetch);  // warms the page cache
  PassResult pass = RunPass(source, batches, total_seq_len, workers, prefetch);
  std::cout << fmt::format(
                   "{{\"rows\": {}, \"batches\": {}, \"total_seq_len\": {}, \"num_workers\": {}, "
                   "\"prefetch_factor\": {}, \"seconds\": {:.3f}, \"samples_per_second\": {:.0f}, "
                   "\"tokens_per_second\": {:.0f}, \"batches_per_second\": {:.1f}, \"gb_per_second\": {:.3f}}}",
                   pass.samples, pass.batches, total_seq_len, workers, prefetch, pass.seconds,
                   pass.samples / pass.seconds, pass.tokens / pass.seconds, pass.batches / pass.seconds,
                   static_cast<double>(file_bytes) / pass.seconds / 1e9)
            << "\n";
  return 0;
}
