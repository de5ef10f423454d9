// Offline hidden-states generation with the embedded CPU engine: the
// counterpart of speculators' data_generation_offline script, which sends
// requests to a vLLM server instead.
//
// For every dataset row i without a file, runs the target model and writes
// OUTPUT/hs_{i}.safetensors (see hs_file.h). The run is resumable: files
// already present are skipped, and each file appears under its final name
// only once complete.
//
// The run also keeps OUTPUT/draftforge_generate.json with the model directory,
// layer ids and dtype it captured, because the hs files have no room for them
// (vLLM writes no metadata). A later run with other settings fails instead of
// mixing files from both.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "draftforge/data/token_dataset.h"
#include "draftforge/engine/llama_model.h"
#include "draftforge/hidden_states/hs_file.h"
#include "draftforge/util/status.h"

namespace draftforge::hidden_states {

// Name of the settings file in the output directory.
inline constexpr const char* kGenerateSettingsFileName = "draftforge_generate.json";

struct GenerateOptions {
  std::string output_dir;
  std::vector<int64_t> layer_ids;  // distinct, in 0..N; any order (slots are ascending)
  // Stop once the output directory contains this many hs files in total
  // (existing ones included), like the Python script's --max-samples.
  std::optional<int64_t> max_samples;
  int64_t start_index = 0;          // rows before this index are not generated
  bool validate_outputs = false;    // re-read every written file, and check existing ones
  torch::Dtype dtype = torch::kFloat32;  // stored dtype of hidden_states
  bool show_progress = true;
};

struct GenerateSummary {
  int64_t existing = 0;     // valid hs files found before the run
  int64_t invalid_existing = 0;  // existing files that failed validation and were regenerated
  int64_t generated = 0;    // files written by this run
  int64_t tokens = 0;       // tokens in the written files
  int64_t bytes = 0;        // bytes written
  double seconds = 0;
};

// Capture settings of the hs files in an output directory, as stored in the
// settings file.
struct CaptureSettings {
  std::string model_dir;  // absolute directory, or the served model id for servers without one
  std::vector<int64_t> layer_ids;
  std::string dtype;  // "float32", "bfloat16" or "float16"

  bool operator==(const CaptureSettings&) const = default;
  std::string ToString() const;
};

// Chooses the stored dtype of hidden states: `flag_value` ("float32",
// "bfloat16" or "float16") when not empty, else the model's config.json
// torch_dtype, because vLLM stores the model dtype. Float32, with a warning,
// when both are empty.
Result<c10::ScalarType> ChooseHiddenStatesDtype(const std::string& flag_value,
                                                const std::string& config_torch_dtype,
                                                const std::string& model_dir);

// Returns "float32", "bfloat16", "float16", or libtorch's name of other types.
std::string DtypeName(torch::Dtype dtype);

// Reads DIR/draftforge_generate.json; nullopt when the file does not exist.
Result<std::optional<CaptureSettings>> ReadCaptureSettings(const std::string& dir);

// Fails when OUTPUT/draftforge_generate.json records other settings than
// `current`. Writes the file when it is absent and the directory has no hs
// files yet. When hs files exist without it (output of vLLM or of an older
// draftforge), their settings are unknown, so nothing is checked or written.
Status CheckOrWriteSettings(const std::string& output_dir, const CaptureSettings& current,
                            bool has_existing_files);

// Validates the existing files of dataset rows and returns those that pass;
// a failing file is logged and left in place, to be overwritten atomically.
// Files of rows past the end of the dataset are kept unchecked.
std::vector<int64_t> KeepValidExisting(const data::TokenDataset& dataset,
                                       const std::vector<int64_t>& existing,
                                       const HiddenStatesExpectation& shape_expectation,
                                       const std::string& output_dir, int64_t& invalid_count);

// Returns the row indices to generate, ascending: rows in [start_index, rows)
// whose index is not in `existing`, cut to max_samples - |existing| when
// max_samples is set (nothing when the directory already contains enough).
std::vector<int64_t> SelectRowsToGenerate(int64_t num_rows, const std::vector<int64_t>& existing,
                                          std::optional<int64_t> max_samples, int64_t start_index);

// Lists the row indices of the files named hs_<int>.safetensors in `dir`,
// ascending; other names are ignored. An absent directory yields none.
Result<std::vector<int64_t>> ListHiddenStatesFiles(const std::string& dir);

// Generates the missing files for `dataset` with `model`. Stops at the first
// failed row (the files written so far stay, so a rerun resumes). Invalid,
// before any file is written, when the settings file disagrees with the
// model directory, layer ids or dtype of this run, and when start_index is
// past the last row. A row whose hidden states contain NaN or Inf fails the
// run without writing its file.
Result<GenerateSummary> GenerateHiddenStates(const data::TokenDataset& dataset,
                                             const engine::LlamaModel& model,
                                             const GenerateOptions& options);

}  // namespace draftforge::hidden_states
