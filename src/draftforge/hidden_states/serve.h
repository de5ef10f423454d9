// `draftforge serve`: the embedded engine behind the subset of vLLM's
// OpenAI-compatible HTTP API that hidden-states clients use, so generation
// through servers runs and is tested without vLLM.
//
// GET /v1/models returns {"object":"list","data":[{"id": NAME, ...}]}.
// POST /v1/completions takes token-id prompts (one list of ids, or a list of
// such lists) with max_tokens 1, and for each prompt writes
// DIR/<request id>.safetensors in the layout of vLLM's
// ExampleHiddenStatesConnector (see hs_file.h), guarded by the `.lock`
// protocol of hs_lock.h: the lock is taken before the engine runs, the
// response is sent once the hidden states are computed, and a writer thread
// writes the file in place and then releases the lock. The response carries
// choices[i].prompt_token_ids (with "return_token_ids": true) and
// kv_transfer_params.hidden_states_path.
//
// HTTP requests are handled concurrently; engine work runs on one thread in
// arrival order. Errors use vLLM's body shape
// {"error": {"message", "type", "param", "code"}} with a 4xx status for bad
// requests (invalid JSON, out-of-vocabulary ids, too long prompts, oversized
// bodies, rejected save paths) and 500 for engine failures.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "draftforge/util/status.h"

namespace draftforge::hidden_states {

// Deliberate faults, for testing clients only. Counters are per server
// process and count POST /v1/completions requests (1-based); 0 disables.
struct ServeFaults {
  int64_t fail_every = 0;             // every Nth request gets HTTP 500
  int64_t drop_connection_every = 0;  // every Nth request: the connection closes without a body
  int64_t wrong_prompt_ids_every = 0;  // every Nth response has altered prompt_token_ids
  int64_t omit_path_every = 0;        // every Nth response has no kv_transfer_params
  // Files drop their first K hidden-state rows (when T > K), as vLLM does
  // for a cached prefix with prefix caching on.
  int64_t prefix_cache_rows = 0;
  int64_t delay_ms = 0;  // every request waits this long before it is handled

  bool any() const {
    return delay_ms > 0 || fail_every > 0 || drop_connection_every > 0 || wrong_prompt_ids_every > 0 ||
           omit_path_every > 0 || prefix_cache_rows > 0;
  }
};

struct ServeOptions {
  std::string model_dir;
  std::string host = "127.0.0.1";
  int port = 8000;  // 0 picks a free port (see HiddenStatesServer::port())
  std::vector<int64_t> layer_ids;  // distinct, in 0..N; empty: [2, N/2, N-3, N]
  std::string hidden_states_path = "/tmp/hidden_states";
  std::string served_model_name;  // empty: model_dir as given, like vLLM
  torch::Dtype dtype = torch::kFloat32;  // stored dtype of hidden_states
  size_t max_body_bytes = 32u << 20;
  // Honour kv_transfer_params.hidden_states_path from requests. Such a path
  // must be absolute, end in ".safetensors" and have no ".." component.
  bool allow_custom_save_path = false;
  // Skip the model: write zero hidden states of the right shape, answer
  // token 0. Only config.json is read. For measuring client overhead.
  bool zero_work = false;
  // Concurrent HTTP connections: each open keep-alive connection occupies a
  // thread, so this must exceed the clients' total concurrency.
  int http_threads = 256;
  int writer_threads = 4;  // file writers, like vLLM's num_writer_threads
  ServeFaults faults;
};

class HiddenStatesServer {
 public:
  // Loads the model (config.json only with zero_work), creates the output
  // directory and binds the listening socket, so port() is known on return.
  static Result<std::unique_ptr<HiddenStatesServer>> Create(const ServeOptions& options);
  ~HiddenStatesServer();

  int port() const;
  const std::string& served_model_name() const;

  // Serves until Stop(); returns an error when the listener fails.
  Status Run();
  // Makes a running Run() return; thread-safe. A call before Run() has
  // started the listener does nothing, so callers repeat it until Run()
  // returns. Files still being written are finished before the destructor
  // returns.
  void Stop();

  struct Impl;

 private:
  explicit HiddenStatesServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace draftforge::hidden_states
