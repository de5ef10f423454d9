#include "draftforge/hidden_states/remote_generate.h"

#include <fmt/ranges.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <mutex>
#include <thread>

#include "draftforge/hidden_states/hs_file.h"
#include "draftforge/util/fs.h"
#include "draftforge/util/progress.h"

namespace draftforge::hidden_states {

Result<RemoteGenerateSummary> GenerateHiddenStatesFromServers(const data::TokenDataset& dataset,
                                                              HiddenStatesClient& client,
                                                              const RemoteGenerateOptions& options) {
  if (options.start_index < 0) {
    return Status::Invalid("start index {} is negative; pass a row index >= 0", options.start_index);
  }
  if (options.start_index > 0 && options.start_index >= dataset.num_rows()) {
    return Status::Invalid("--start-idx {} is past the last dataset row {} (the dataset has {} "
                           "rows); pass a smaller --start-idx",
                           options.start_index, dataset.num_rows() - 1, dataset.num_rows());
  }
  if (options.concurrency < 1) {
    return Status::Invalid("concurrency {} must be at least 1", options.concurrency);
  }
  DF_RETURN_NOT_OK(CreateDirectories(options.output_dir));

  RemoteGenerateSummary summary;
  DF_ASSIGN_OR_RAISE(std::vector<int64_t> existing, ListHiddenStatesFiles(options.output_dir));
  DF_RETURN_NOT_OK(CheckOrWriteSettings(options.output_dir, options.settings, !existing.empty()));
  if (options.validate_outputs) {
    HiddenStatesExpectation shape_expectation;
    shape_expectation.num_layers = static_cast<int64_t>(options.settings.layer_ids.size());
    shape_expectation.hidden_size = options.hidden_size;
    existing = KeepValidExisting(dataset, existing, shape_expectation, options.output_dir,
                                 summary.invalid_existing);
  }
  summary.existing = static_cast<int64_t>(existing.size());
  const std::vector<int64_t> rows =
      SelectRowsToGenerate(dataset.num_rows(), existing, options.max_samples, options.start_index);
  const int workers = static_cast<int>(std::min<int64_t>(
      static_cast<int64_t>(options.concurrency) * std::max(1, options.num_endpoints),
      static_cast<int64_t>(rows.size())));
  spdlog::info("generate: {} rows in the dataset, {} hidden-states files present in {}, {} to "
               "request from '{}' with {} requests in flight",
               dataset.num_rows(), summary.existing, options.output_dir, rows.size(),
               client.model(), workers);

  std::optional<ProgressBar> progress;
  if (options.show_progress && !rows.empty()) {
    progress.emplace("generate", static_cast<int64_t>(rows.size()), "samples", "moved");
  }
  const auto start = std::chrono::steady_clock::now();
  std::atomic<size_t> next{0};
  std::mutex mutex;  // guards summary
  auto work = [&] {
    for (size_t position = next.fetch_add(1); position < rows.size(); position = next.fetch_add(1)) {
      const int64_t row = rows[position];
      const std::string path =
          (std::filesystem::path(options.output_dir) / HiddenStatesFileName(row)).string();
      auto output = client.Generate(row, dataset.input_ids(row), path);
      std::lock_guard<std::mutex> lock(mutex);
      if (!output.ok()) {
        spdlog::error("generate: {}", output.status().message());
        summary.failures.push_back({row, output.status().message()});
        continue;
      }
      ++summary.generated;
      summary.tokens += output->tokens;
      summary.bytes += output->bytes;
      if (output->attempts > 1) ++summary.retried;
      if (progress) progress->Advance(1, output->tokens, output->bytes);
    }
  };
  std::vector<std::thread> threads;
  for (int i = 0; i < workers; ++i) threads.emplace_back(work);
  for (auto& thread : threads) thread.join();
  if (progress) progress->Finish();
  summary.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::sort(summary.failures.begin(), summary.failures.end(),
            [](const SampleFailure& a, const SampleFailure& b) { return a.row < b.row; });
  return summary;
}

}  // namespace draftforge::hidden_states
