// `draftforge eval` as a library call: reads prompts, decodes each one
// speculatively and, optionally, greedily, and builds the report.
//
// Prompts file: JSONL, one object per line with "input_ids" (token ids). An
// optional integer "prefix_len" marks the first prefix_len ids as the prompt
// and the rest as the expected greedy continuation, which the report then
// compares with the output (the layout of the greedy reference files that
// this project's tests use).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "draftforge/engine/llama_model.h"
#include "draftforge/eval/report.h"
#include "draftforge/eval/speculative.h"
#include "draftforge/util/status.h"

namespace draftforge::eval {

struct Prompt {
  int64_t line = 0;  // 0-based line in the file
  std::vector<int64_t> input_ids;
  std::optional<std::vector<int64_t>> reference;  // expected continuation, when prefix_len is given
};

// Reads up to `max_prompts` prompts (0 = all). Invalid names the file, line
// and field of a malformed record; Unimplemented for "messages" records.
Result<std::vector<Prompt>> ReadPrompts(const std::string& path, int64_t max_prompts = 0);

struct EvalOptions {
  DecodeOptions decode;
  bool compare_greedy = true;  // also decode greedily, for the lossless check and the speed baseline
};

// Decodes every prompt with `drafter` and returns the report. Each request
// runs the speculative decode first, then the greedy one.
Result<EvalReport> RunEval(const engine::LlamaModel& verifier, const std::string& draft_dir,
                           const std::vector<Prompt>& prompts, const EvalOptions& options);

// Stop tokens from the verifier's config.json eos_token_id (an integer or a
// list); empty when it has none.
std::vector<int64_t> ConfigEosTokenIds(const engine::LlamaModel& verifier);

}  // namespace draftforge::eval
