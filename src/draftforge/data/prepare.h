// `prepare` for pre-tokenized data (and the entry point for chat data): JSON or JSONL records with `input_ids`
// and an optional `loss_mask` become a prepared dataset directory
// (save_to_disk shards, state.json, dataset_info.json) plus token_freq.pt.
//
// Row selection follows speculators' prepare_data.py. The records of each
// source file are shuffled with `seed` (skipped records included) and cut to
// the first 3 x `max_samples`. The kept rows of the sources are concatenated in
// the given order, and the first `max_samples` rows are kept. The shuffle is
// datasets' Dataset.shuffle(seed=seed), numpy.random.default_rng(seed)'s
// permutation, bit for bit, so a file gives the rows in the order Python's
// prepare gives them. Token frequencies count the loss-masked tokens of the
// final rows.
//
// Input checks. These fail the run before anything is written: unreadable
// or malformed JSON (reported as file:line), a record that is not an object
// or has no integer-array `input_ids`, and chat records with `conversations`
// or `messages` after pre-tokenized ones. When the first record of the first
// file is a chat record, RunPrepare hands the run to RunChatPrepare
// (chat_prepare.h) instead. A token id outside [0, vocab_size), or a
// negative one when no model is given, also fails the run. So do loss_mask
// values other than 0, 1, true and false, and an input with no row left.
// These skip the record and count it: empty input_ids, a loss_mask whose
// length differs from input_ids, and no trainable token after truncation
// (upstream's current prepare_data.py drops such rows too).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "draftforge/util/status.h"

namespace draftforge::data {

struct PrepareOptions {
  std::string model_dir;  // optional; its config.json vocab_size bounds the ids
  std::vector<std::string> data_files;
  std::string output_dir;
  int64_t seq_length = 8192;
  std::optional<int64_t> max_samples;
  uint64_t seed = 0;
  std::string token_freq_path;  // empty: <output_dir>/token_freq.pt
  bool overwrite = false;
  bool show_progress = true;

  // Chat data only (see chat_prepare.h).
  std::string assistant_pattern;        // empty: generation markers, else a detected pattern
  std::string chat_template_path;       // empty: the model directory's template
  std::string chat_template_kwargs;     // JSON object of extra template variables
  bool unknown_roles_as_assistant = false;  // false: drop turns with other roles
  bool turn_dropout = false;
  int num_workers = 0;                  // 0: one per hardware thread
  bool show_sample = true;              // log one row with its trained tokens marked
};

// Skip reasons, as printed in the summary.
inline constexpr const char* kSkipEmpty = "empty input_ids";
inline constexpr const char* kSkipMaskLength = "loss_mask length differs from input_ids";
inline constexpr const char* kSkipNoTrainable = "no trainable token";

struct PrepareSummary {
  bool output_existed = false;  // OUT already held *.arrow and overwrite was off
  int64_t records_read = 0;
  int64_t rows_kept = 0;
  int64_t tokens = 0;
  int64_t trainable_tokens = 0;
  int64_t truncated_rows = 0;  // kept rows that were cut to seq_length
  std::map<std::string, int64_t> skipped;  // reason -> count
  std::string token_freq_path;
  bool token_freq_written = false;  // false when the file existed already

  // Chat data only.
  std::string mask_method;              // how the loss masks were derived
  int64_t unknown_role_turns = 0;       // turns whose role was not user/assistant/system/tool
  int64_t mask_fallbacks = 0;           // conversations whose generation markers covered nothing

  // Multi-line report for the log.
  std::string ToString() const;
};

Result<PrepareSummary> RunPrepare(const PrepareOptions& options);

// Writes `token_freq` to options.token_freq_path (default
// OUTPUT/token_freq.pt) unless that file exists, and records the path and
// whether it was written in `summary`. With options.overwrite, the files in
// OUTPUT that derive from the replaced rows go first: OUTPUT/token_freq.pt
// (when no --token-freq-path is given), and the cached vocabulary mapping
// OUTPUT/d2t.npy and OUTPUT/t2d.npy, which train would otherwise reuse.
Status WriteTokenFreqUnlessPresent(const PrepareOptions& options, const std::map<int64_t, int64_t>& token_freq,
                                   PrepareSummary* summary);

// Shuffles [0, n) as datasets' Dataset.shuffle(seed=seed) does:
// numpy.random.default_rng(seed).permutation(n).
std::vector<int64_t> ShuffledIndices(int64_t n, uint64_t seed);

}  // namespace draftforge::data
