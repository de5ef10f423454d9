// `draftforge eval` as a library call: reads prompts, decodes each one
// speculatively and, optionally, greedily, and builds the report.
//
// Prompts file: JSONL, one object per line with either "input_ids" (token
// ids) or "messages" (a conversation, optionally with "tools"). Messages are
// rendered with the tokenizer directory's chat template and
// add_generation_prompt, then tokenized without special tokens, as
// transformers' apply_chat_template(tokenize=True) does. With "input_ids",
// an optional integer "prefix_len" marks the first prefix_len ids as the
// prompt and the rest as the expected greedy continuation, which the report
// then compares with the output.
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

// Reads up to `max_prompts` prompts (0 = all). `tokenizer_dir` (tokenizer.json
// and tokenizer_config.json) is read only when a "messages" record occurs.
// Invalid names the file, line and field of a malformed record.
Result<std::vector<Prompt>> ReadPrompts(const std::string& path, int64_t max_prompts = 0,
                                        const std::string& tokenizer_dir = "");

struct EvalOptions {
  DecodeOptions decode;
  bool compare_greedy = true;  // also decode greedily, for the lossless check and the speed baseline
};

// Loads the draft from `draft_dir`, decodes every prompt and returns the
// report. Each request runs the speculative decode first, then the greedy one.
Result<EvalReport> RunEval(const engine::LlamaModel& verifier, const std::string& draft_dir,
                           const std::vector<Prompt>& prompts, const EvalOptions& options);

// Stop tokens from the verifier's config.json eos_token_id (an integer or a
// list); empty when it has none.
std::vector<int64_t> ConfigEosTokenIds(const engine::LlamaModel& verifier);

}  // namespace draftforge::eval
