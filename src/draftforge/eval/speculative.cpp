#include "draftforge/eval/speculative.h"

#include <algorithm>
#include <chrono>

namespace draftforge::eval {
namespace {

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Argmax of every row of `logits` [T, V].
std::vector<int64_t> GreedyTokens(const torch::Tensor& logits) {
  torch::Tensor argmax = logits.argmax(-1).contiguous();  // [T]
  return std::vector<int64_t>(argmax.data_ptr<int64_t>(), argmax.data_ptr<int64_t>() + argmax.numel());
}


// Appends `tokens` to `output` until max_new_tokens or a stop token; returns
// how many were appended and whether generation is finished.
std::pair<int64_t, bool> Emit(const std::vector<int64_t>& tokens, const DecodeOptions& options,
                              std::vector<int64_t>& output) {
  int64_t appended = 0;
  for (int64_t token : tokens) {
    if (static_cast<int64_t>(output.size()) >= options.max_new_tokens) return {appended, true};
    output.push_back(token);
    ++appended;
    const auto& stops = options.stop_token_ids;
    if (std::find(stops.begin(), stops.end(), token) != stops.end()) return {appended, true};
  }
  return {appended, static_cast<int64_t>(output.size()) >= options.max_new_tokens};
}

}  // namespace

Status CheckDecodeLength(const engine::LlamaModel& verifier, int64_t prompt_length, int64_t lookahead,
                   const DecodeOptions& options) {
  if (prompt_length == 0) return Status::Invalid("cannot decode an empty prompt");
  if (options.max_new_tokens < 1) {
    return Status::Invalid("max_new_tokens must be at least 1, got {}", options.max_new_tokens);
  }
  const int64_t limit = verifier.config().max_position_embeddings;
  if (prompt_length + options.max_new_tokens + lookahead > limit) {
    return Status::Invalid("a prompt of {} tokens plus {} new tokens{} exceeds max_position_embeddings {} of {}; "
                           "lower --max-new-tokens or --num-speculative-tokens, or drop the prompt",
                           prompt_length, options.max_new_tokens,
                           lookahead > 0 ? fmt::format(" plus {} speculative tokens", lookahead) : "", limit,
                           verifier.model_dir());
  }
  return Status::OK();
}

int64_t DraftCacheCapacity(int64_t prompt_length, const DecodeOptions& options) {
  return prompt_length + options.max_new_tokens + options.num_speculative_tokens + 1;
}

Result<DecodeResult> SpeculativeDecode(const engine::LlamaModel& verifier, Eagle3Drafter& drafter,
                                       std::span<const int64_t> prompt, const DecodeOptions& options) {
  const int64_t k = options.num_speculative_tokens;
  if (k < 1) return Status::Invalid("num_speculative_tokens must be at least 1, got {}", k);
  const int64_t prompt_length = static_cast<int64_t>(prompt.size());
  DF_RETURN_NOT_OK(CheckDecodeLength(verifier, prompt_length, k, options));
  const std::vector<int64_t>& aux_ids = drafter.config().aux_layer_ids;
  const int64_t aux_width = 3 * verifier.config().hidden_size;

  // InferenceMode skips autograd bookkeeping, a large part of each libtorch
  // call's cost when the model is small.
  c10::InferenceMode inference_mode;
  const auto start = Clock::now();
  DecodeResult result;
  result.accepted_at_position.assign(k, 0);
  drafter.Truncate(0);
  DF_ASSIGN_OR_RAISE(engine::KvCache cache,
                     verifier.NewCache(std::min(prompt_length + options.max_new_tokens + k,
                                                verifier.config().max_position_embeddings)));

  // The prompt's forward yields the first token y and the features of every
  // prompt slot. Slot i pairs A[i] with x[i+1], and the last slot pairs with y.
  DF_ASSIGN_OR_RAISE(engine::ForwardResult prefill, verifier.ForwardIncremental(prompt, aux_ids, cache, true));
  int64_t next_token = GreedyTokens(prefill.logits.narrow(0, prompt_length - 1, 1))[0];
  auto [appended, finished] = Emit({next_token}, options, result.output_ids);
  torch::Tensor features = prefill.hidden_states.reshape({prompt_length, aux_width});  // [n, 3H]
  std::vector<int64_t> next_ids(prompt.begin() + 1, prompt.end());
  next_ids.push_back(next_token);

  while (!finished) {
    // Propose: pass 1 over the new slots, then K - 1 passes on the draft's
    // own output, whose cache entries are dropped after the round.
    DF_ASSIGN_OR_RAISE(DraftStep step, drafter.Extend(features, next_ids));
    const int64_t committed = drafter.cache_length();
    std::vector<int64_t> proposal = {step.token_id};
    for (int64_t j = 1; j < k; ++j) {
      DF_ASSIGN_OR_RAISE(step, drafter.Continue(step));
      proposal.push_back(step.token_id);
    }
    drafter.Truncate(committed);

    // Verify [y, d1 .. dK] in one forward. Row i contains the verifier's
    // greedy token after d_i (after y for i = 0).
    std::vector<int64_t> verify_ids = {next_token};
    verify_ids.insert(verify_ids.end(), proposal.begin(), proposal.end());
    const int64_t cached_before = cache.length();
    DF_ASSIGN_OR_RAISE(engine::ForwardResult verified,
                       verifier.ForwardIncremental(verify_ids, aux_ids, cache, true));
    const std::vector<int64_t> greedy = GreedyTokens(verified.logits);  // K + 1 tokens
    int64_t accepted = 0;
    while (accepted < k && proposal[accepted] == greedy[accepted]) ++accepted;

    // Keep y and the accepted drafts; their features feed the next pass 1.
    cache.Truncate(cached_before + 1 + accepted);
    std::vector<int64_t> emitted(proposal.begin(), proposal.begin() + accepted);
    emitted.push_back(greedy[accepted]);
    std::tie(appended, finished) = Emit(emitted, options, result.output_ids);

    const int64_t credited = std::min(accepted, appended);
    ++result.verification_steps;
    result.accepted_tokens += credited;
    for (int64_t j = 0; j < credited; ++j) ++result.accepted_at_position[j];

    features = verified.hidden_states.narrow(0, 0, accepted + 1).reshape({accepted + 1, aux_width});
    next_ids = emitted;
    next_token = greedy[accepted];
  }
  result.seconds = SecondsSince(start);
  return result;
}

Result<DecodeResult> GreedyDecode(const engine::LlamaModel& verifier, std::span<const int64_t> prompt,
                                  const DecodeOptions& options) {
  const int64_t prompt_length = static_cast<int64_t>(prompt.size());
  DF_RETURN_NOT_OK(CheckDecodeLength(verifier, prompt_length, 0, options));
  c10::InferenceMode inference_mode;
  const auto start = Clock::now();
  DecodeResult result;
  DF_ASSIGN_OR_RAISE(engine::KvCache cache, verifier.NewCache(prompt_length + options.max_new_tokens));
  DF_ASSIGN_OR_RAISE(engine::ForwardResult forward, verifier.ForwardIncremental(prompt, {}, cache, true));
  int64_t token = GreedyTokens(forward.logits.narrow(0, prompt_length - 1, 1))[0];
  bool finished = Emit({token}, options, result.output_ids).second;
  while (!finished) {
    const int64_t ids[1] = {token};
    DF_ASSIGN_OR_RAISE(forward, verifier.ForwardIncremental(ids, {}, cache, true));
    token = GreedyTokens(forward.logits)[0];
    finished = Emit({token}, options, result.output_ids).second;
  }
  result.seconds = SecondsSince(start);
  return result;
}

}  // namespace draftforge::eval
