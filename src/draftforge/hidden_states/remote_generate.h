// Offline hidden-states generation through servers (vLLM or `draftforge
// serve`): the counterpart of GenerateHiddenStates (generate.h) with the
// same output layout, settings file, row selection and resume rules.
//
// Keeps `concurrency` requests in flight per endpoint. A sample that fails
// (after the client's retries) is recorded with its reason and the run goes
// on; it leaves no file, so a rerun retries it.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "draftforge/data/token_dataset.h"
#include "draftforge/hidden_states/generate.h"
#include "draftforge/hidden_states/vllm_client.h"
#include "draftforge/util/status.h"

namespace draftforge::hidden_states {

struct RemoteGenerateOptions {
  std::string output_dir;
  std::optional<int64_t> max_samples;  // as in GenerateOptions
  int64_t start_index = 0;
  bool validate_outputs = false;  // also check the files present before the run
  int concurrency = 32;           // requests in flight per endpoint
  int num_endpoints = 1;
  // Recorded in the settings file; the layer count and hidden size checks
  // are the client's (ClientOptions).
  CaptureSettings settings;
  std::optional<int64_t> hidden_size;  // checks existing files with validate_outputs
  bool show_progress = true;
};

struct SampleFailure {
  int64_t row = 0;
  std::string reason;
};

struct RemoteGenerateSummary {
  int64_t existing = 0;
  int64_t invalid_existing = 0;
  int64_t generated = 0;
  int64_t tokens = 0;
  int64_t bytes = 0;
  int64_t retried = 0;  // samples that needed more than one attempt
  double seconds = 0;
  std::vector<SampleFailure> failures;  // ascending by row
};

// Fails before any request for a settings-file conflict or a bad
// start_index; per-sample failures are in the summary instead.
Result<RemoteGenerateSummary> GenerateHiddenStatesFromServers(const data::TokenDataset& dataset,
                                                              HiddenStatesClient& client,
                                                              const RemoteGenerateOptions& options);

}  // namespace draftforge::hidden_states
