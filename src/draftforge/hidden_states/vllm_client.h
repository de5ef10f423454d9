// Client for hidden-states servers: vLLM started by `draftforge launch-vllm`
// (extract_hidden_states with the file connector) or `draftforge serve`.
//
// Generate() sends one sample's token ids to POST {endpoint}/completions
// (max_tokens 1, return_token_ids), checks that the response's
// prompt_token_ids equal the ids sent, waits on the `.lock` file of the
// returned hidden_states_path (hs_lock.h), validates the file (token_ids
// equal the ids, one hidden-state row per token, the configured number of
// layers and hidden size, dtype, no NaN or Inf) and only then moves it to
// the destination path, atomically. A file that fails these checks is
// deleted; a response rejected before the file is read leaves the file
// alone. Server and client must share the file system.
//
// Timeouts, connection errors, HTTP 5xx, lock timeouts and missing or
// damaged files are retried after backoff * 2^(k-1) for retry k, on the
// least busy other endpoint when there are several. HTTP 4xx and responses that contradict the
// request (other ids, fewer rows, other shapes) are not retried.
//
// Thread-safe: any number of threads may call Generate() at once; each call
// uses its own keep-alive connection from a per-endpoint pool.
#pragma once

#include <torch/torch.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "draftforge/util/status.h"

namespace draftforge::hidden_states {

struct ClientOptions {
  // Base URLs including /v1, e.g. http://127.0.0.1:8000/v1.
  std::vector<std::string> endpoints;
  // Connect() fails unless every endpoint serves this model id; empty: the
  // first endpoint's id is used and the others must match it.
  std::string expected_model;
  std::chrono::milliseconds timeout{120000};       // connect, send and receive, per attempt
  int max_retries = 3;                             // attempts = 1 + max_retries
  std::chrono::milliseconds backoff{1000};         // wait before retry k is backoff * 2^(k-1)
  std::chrono::milliseconds lock_timeout{60000};   // wait for the server's writer
  // Checks of every file; unset fields are not checked.
  std::optional<int64_t> num_layers;   // L, the number of configured layer ids
  std::optional<int64_t> hidden_size;  // H
  std::optional<torch::Dtype> dtype;   // stored dtype of hidden_states
  // Capture layer ids, ascending. Connect() fails for a server that reports
  // other ones (`draftforge serve` does; vLLM does not, so nothing is checked).
  std::optional<std::vector<int64_t>> layer_ids;
};

// What one successful Generate() produced.
struct SampleOutput {
  std::string path;     // the destination path
  int64_t tokens = 0;   // T
  int64_t bytes = 0;    // size of the moved file
  int attempts = 1;
};

class HiddenStatesClient {
 public:
  // Checks every endpoint with GET {endpoint}/models (with retries) and the
  // served model id against options.expected_model.
  static Result<std::unique_ptr<HiddenStatesClient>> Connect(const ClientOptions& options);
  ~HiddenStatesClient();

  // The served model id, sent as "model" in every request.
  const std::string& model() const;

  // Produces `dest_path` holding the hidden states of `ids`; `index`
  // (the dataset row) only names the sample in logs and errors. Invalid for
  // a response or file that does not match the request, Network after the
  // retries are used up; in every failure `dest_path` is left untouched.
  Result<SampleOutput> Generate(int64_t index, std::span<const int64_t> ids,
                                const std::string& dest_path);

  struct Impl;

 private:
  explicit HiddenStatesClient(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace draftforge::hidden_states
