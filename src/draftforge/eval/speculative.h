// Greedy speculative decoding with the embedded verifier and an EAGLE-3
// draft, and plain greedy decoding for comparison.
//
// One round, with verified tokens x[0..p] and y the verifier's next token:
//   1. the draft runs pass 1 over the slots whose verifier features are new,
//      then passes 2 .. K, proposing d1 .. dK;
//   2. one verifier forward over [y, d1 .. dK] gives its greedy tokens g0 .. gK;
//   3. the longest prefix with d(i+1) == g(i) is accepted (a tokens), and the
//      round emits d1 .. da and the verifier's own g(a);
//   4. both KV caches drop what lies past the accepted tokens.
// With greedy verification the output equals plain greedy decoding of the
// verifier, up to float32 ties between the top two logits.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "draftforge/engine/llama_model.h"
#include "draftforge/eval/eagle3_drafter.h"
#include "draftforge/util/status.h"

namespace draftforge::eval {

struct DecodeOptions {
  int64_t num_speculative_tokens = 3;  // K
  int64_t max_new_tokens = 128;
  std::vector<int64_t> stop_token_ids;  // generation stops after emitting one of these
};

// Outcome of decoding one prompt.
struct DecodeResult {
  std::vector<int64_t> output_ids;  // generated tokens, the first one from the prompt's forward
  // Verifier forwards that checked a proposal; 0 for plain greedy decoding.
  int64_t verification_steps = 0;
  // Draft tokens accepted over all rounds. Tokens cut off by max_new_tokens or
  // a stop token are not counted.
  int64_t accepted_tokens = 0;
  // accepted_at_position[j]: rounds whose draft token j+1 was accepted, [K].
  std::vector<int64_t> accepted_at_position;
  double seconds = 0;  // wall time, prompt forward included
};

// Decodes `prompt` speculatively. Invalid when the prompt is empty or when
// prompt + max_new_tokens + K exceeds max_position_embeddings.
Result<DecodeResult> SpeculativeDecode(const engine::LlamaModel& verifier, Eagle3Drafter& drafter,
                                       std::span<const int64_t> prompt, const DecodeOptions& options);

// Decodes `prompt` greedily, one verifier forward per token, with a KV cache.
// num_speculative_tokens is ignored.
Result<DecodeResult> GreedyDecode(const engine::LlamaModel& verifier, std::span<const int64_t> prompt,
                                  const DecodeOptions& options);

// Checks that a prompt of `prompt_length` tokens, max_new_tokens and
// `lookahead` speculative tokens fit in the verifier's context. The error
// names the numbers and what to lower.
Status CheckDecodeLength(const engine::LlamaModel& verifier, int64_t prompt_length, int64_t lookahead,
                         const DecodeOptions& options);

// Returns the maximum length a drafter's KV cache needs for a prompt of
// `prompt_length` tokens.
int64_t DraftCacheCapacity(int64_t prompt_length, const DecodeOptions& options);

}  // namespace draftforge::eval
