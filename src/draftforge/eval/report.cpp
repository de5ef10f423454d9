#include "draftforge/eval/report.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <numeric>

namespace draftforge::eval {
namespace {

struct Spread {
  double min = 0, median = 0, max = 0, stddev = 0;
};

Spread ComputeSpread(std::vector<double> values) {
  Spread spread;
  if (values.empty()) return spread;
  std::sort(values.begin(), values.end());
  spread.min = values.front();
  spread.max = values.back();
  const size_t n = values.size();
  spread.median = n % 2 == 1 ? values[n / 2] : 0.5 * (values[n / 2 - 1] + values[n / 2]);
  const double mean = std::accumulate(values.begin(), values.end(), 0.0) / n;
  double squares = 0;
  for (double value : values) squares += (value - mean) * (value - mean);
  spread.stddev = n > 1 ? std::sqrt(squares / (n - 1)) : 0.0;  // sample standard deviation
  return spread;
}

struct Totals {
  int64_t steps = 0, accepted = 0, speculative_tokens = 0, greedy_tokens = 0;
  double speculative_seconds = 0, greedy_seconds = 0;
  int64_t greedy_compared = 0, greedy_mismatches = 0, reference_compared = 0, reference_mismatches = 0;
};

Totals Sum(const std::vector<RequestRecord>& requests) {
  Totals totals;
  for (const auto& request : requests) {
    totals.steps += request.speculative.verification_steps;
    totals.accepted += request.speculative.accepted_tokens;
    totals.speculative_tokens += static_cast<int64_t>(request.speculative.output_ids.size());
    totals.speculative_seconds += request.speculative.seconds;
    if (request.has_greedy) {
      totals.greedy_tokens += static_cast<int64_t>(request.greedy.output_ids.size());
      totals.greedy_seconds += request.greedy.seconds;
      ++totals.greedy_compared;
      if (request.first_greedy_mismatch >= 0) ++totals.greedy_mismatches;
    }
    if (request.has_reference) {
      ++totals.reference_compared;
      if (request.first_reference_mismatch >= 0) ++totals.reference_mismatches;
    }
  }
  return totals;
}

double Rate(double count, double seconds) { return seconds > 0 ? count / seconds : 0.0; }

}  // namespace

int64_t FirstMismatch(const std::vector<int64_t>& a, const std::vector<int64_t>& b) {
  const size_t common = std::min(a.size(), b.size());
  for (size_t i = 0; i < common; ++i) {
    if (a[i] != b[i]) return static_cast<int64_t>(i);
  }
  return a.size() == b.size() ? -1 : static_cast<int64_t>(common);
}

double EvalReport::PooledAcceptanceLength() const {
  Totals totals = Sum(requests);
  return totals.steps > 0 ? 1.0 + static_cast<double>(totals.accepted) / totals.steps : 0.0;
}

std::vector<double> EvalReport::RequestAcceptanceLengths() const {
  std::vector<double> lengths;
  for (const auto& request : requests) {
    const DecodeResult& result = request.speculative;
    if (result.verification_steps == 0) continue;
    lengths.push_back(1.0 + static_cast<double>(result.accepted_tokens) / result.verification_steps);
  }
  return lengths;
}

double EvalReport::PerRequestMeanAcceptanceLength() const {
  std::vector<double> lengths = RequestAcceptanceLengths();
  if (lengths.empty()) return 0.0;
  return std::accumulate(lengths.begin(), lengths.end(), 0.0) / lengths.size();
}

std::vector<double> EvalReport::PositionAcceptanceRates() const {
  std::vector<double> rates(num_speculative_tokens, 0.0);
  Totals totals = Sum(requests);
  if (totals.steps == 0) return rates;
  for (const auto& request : requests) {
    const auto& counts = request.speculative.accepted_at_position;
    for (size_t j = 0; j < counts.size() && j < rates.size(); ++j) rates[j] += counts[j];
  }
  for (double& rate : rates) rate /= totals.steps;
  return rates;
}

std::vector<double> EvalReport::ConditionalAcceptanceRates() const {
  std::vector<double> rates = PositionAcceptanceRates();
  std::vector<double> conditional(rates.size(), 0.0);
  double previous = 1.0;  // every round reaches position 0
  for (size_t j = 0; j < rates.size(); ++j) {
    conditional[j] = previous > 0 ? rates[j] / previous : 0.0;
    previous = rates[j];
  }
  return conditional;
}

nlohmann::json EvalReport::ToJson() const {
  Totals totals = Sum(requests);
  Spread spread = ComputeSpread(RequestAcceptanceLengths());
  nlohmann::json json;
  json["num_speculative_tokens"] = num_speculative_tokens;
  json["max_new_tokens"] = max_new_tokens;
  json["num_requests"] = requests.size();
  json["acceptance_length"] = {
      {"pooled", PooledAcceptanceLength()},
      {"pooled_definition", "1 + accepted draft tokens / verification steps over the whole run (vLLM)"},
      {"per_request_mean", PerRequestMeanAcceptanceLength()},
      {"per_request_definition", "mean over requests of 1 + accepted / steps of that request"},
      {"per_request_min", spread.min},
      {"per_request_median", spread.median},
      {"per_request_max", spread.max},
      {"per_request_stddev", spread.stddev},
  };

  json["verification_steps"] = totals.steps;
  json["accepted_draft_tokens"] = totals.accepted;
  json["position_acceptance_rate"] = PositionAcceptanceRates();
  json["conditional_acceptance_rate"] = ConditionalAcceptanceRates();

  json["speculative"] = {{"tokens", totals.speculative_tokens},
                         {"seconds", totals.speculative_seconds},
                         {"tokens_per_second", Rate(totals.speculative_tokens, totals.speculative_seconds)}};

  if (totals.greedy_compared > 0) {
    json["greedy"] = {{"tokens", totals.greedy_tokens},
                      {"seconds", totals.greedy_seconds},
                      {"tokens_per_second", Rate(totals.greedy_tokens, totals.greedy_seconds)}};
    json["speedup"] = totals.speculative_seconds > 0 ? totals.greedy_seconds / totals.speculative_seconds : 0.0;
    json["lossless"] = {{"compared", totals.greedy_compared},
                        {"mismatches", totals.greedy_mismatches},
                        {"equal", totals.greedy_mismatches == 0}};
  }

  if (totals.reference_compared > 0) {
    json["reference"] = {{"compared", totals.reference_compared}, {"mismatches", totals.reference_mismatches}};
  }

  nlohmann::json rows = nlohmann::json::array();
  for (const auto& request : requests) {
    const DecodeResult& result = request.speculative;
    nlohmann::json row = {{"index", request.index},
                          {"prompt_length", request.prompt_length},
                          {"new_tokens", result.output_ids.size()},
                          {"verification_steps", result.verification_steps},
                          {"accepted_draft_tokens", result.accepted_tokens},
                          {"accepted_at_position", result.accepted_at_position},
                          {"seconds", result.seconds},
                          {"output_ids", result.output_ids}};
    if (result.verification_steps > 0) {
      row["acceptance_length"] = 1.0 + static_cast<double>(result.accepted_tokens) / result.verification_steps;
    }
    if (request.has_greedy) {
      row["greedy_seconds"] = request.greedy.seconds;
      row["first_greedy_mismatch"] = request.first_greedy_mismatch;
    }
    if (request.has_reference) row["first_reference_mismatch"] = request.first_reference_mismatch;
    rows.push_back(row);
  }

  json["requests"] = rows;
  return json;
}

std::string EvalReport::ConsoleTable() const {
  Totals totals = Sum(requests);
  Spread spread = ComputeSpread(RequestAcceptanceLengths());
  std::string text;
  text += fmt::format("requests {}, K = {}, max new tokens {}\n", requests.size(), num_speculative_tokens,
                      max_new_tokens);
  text += fmt::format("acceptance length, pooled (vLLM): {:.3f}  ({} accepted drafts / {} verification steps)\n",
                      PooledAcceptanceLength(), totals.accepted, totals.steps);
  text += fmt::format("acceptance length, per-request mean: {:.3f}  (min {:.3f}, median {:.3f}, max {:.3f}, "
                      "stddev {:.3f})\n",
                      PerRequestMeanAcceptanceLength(), spread.min, spread.median, spread.max, spread.stddev);

  text += "position  accepted  conditional\n";
  std::vector<double> rates = PositionAcceptanceRates();
  std::vector<double> conditional = ConditionalAcceptanceRates();
  for (size_t j = 0; j < rates.size(); ++j) {
    text += fmt::format("{:>8}  {:>8.3f}  {:>11.3f}\n", j + 1, rates[j], conditional[j]);
  }

  text += fmt::format("speculative: {} tokens in {:.3f} s, {:.1f} tokens/s\n", totals.speculative_tokens,
                      totals.speculative_seconds, Rate(totals.speculative_tokens, totals.speculative_seconds));

  if (totals.greedy_compared > 0) {
    text += fmt::format("greedy:      {} tokens in {:.3f} s, {:.1f} tokens/s (speedup {:.2f}x)\n",
                        totals.greedy_tokens, totals.greedy_seconds,
                        Rate(totals.greedy_tokens, totals.greedy_seconds),
                        totals.speculative_seconds > 0 ? totals.greedy_seconds / totals.speculative_seconds : 0.0);
    text += fmt::format("lossless: {} of {} outputs equal plain greedy decoding\n",
                        totals.greedy_compared - totals.greedy_mismatches, totals.greedy_compared);
  }

  if (totals.reference_compared > 0) {
    text += fmt::format("reference: {} of {} outputs equal the continuation stored with the prompt\n",
                        totals.reference_compared - totals.reference_mismatches, totals.reference_compared);
  }
  return text;
}

}  // namespace draftforge::eval
