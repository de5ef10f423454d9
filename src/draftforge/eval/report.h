// Summary of an `eval` run: acceptance figures, speed and the lossless check,
// as a JSON object and a console table.
//
// Two acceptance lengths are reported, because tools differ:
// - pooled (vLLM's "mean acceptance length"): 1 + all accepted draft tokens /
//   all verification steps of the run, so long requests weigh more;
// - per-request mean: the mean over requests of 1 + accepted / steps.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "draftforge/eval/speculative.h"

namespace draftforge::eval {

// One prompt's speculative run and, when requested, its greedy baseline.
struct RequestRecord {
  int64_t index = 0;             // line number in the prompts file, from 0
  int64_t prompt_length = 0;
  DecodeResult speculative;
  bool has_greedy = false;
  DecodeResult greedy;
  // Index of the first token where the two outputs differ (or where the
  // shorter one ends), -1 when they are equal; only with has_greedy.
  int64_t first_greedy_mismatch = -1;
  bool has_reference = false;    // the prompt record carried its expected continuation
  int64_t first_reference_mismatch = -1;
};

struct EvalReport {
  int64_t num_speculative_tokens = 0;
  int64_t max_new_tokens = 0;
  std::vector<RequestRecord> requests;

  double PooledAcceptanceLength() const;
  double PerRequestMeanAcceptanceLength() const;
  // Per request acceptance lengths in request order (requests without a
  // verification step are left out).
  std::vector<double> RequestAcceptanceLengths() const;
  // accepted_at_position summed over requests / all verification steps, [K].
  std::vector<double> PositionAcceptanceRates() const;
  // Rate of position j given that positions < j were accepted, [K]; the
  // counterpart of the training metric cond_acc_j.
  std::vector<double> ConditionalAcceptanceRates() const;

  nlohmann::json ToJson() const;
  std::string ConsoleTable() const;
};

// Index of the first position where `a` and `b` differ, counting a length
// difference as a mismatch at the shorter length; -1 when equal.
int64_t FirstMismatch(const std::vector<int64_t>& a, const std::vector<int64_t>& b);

}  // namespace draftforge::eval
