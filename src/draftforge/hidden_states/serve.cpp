#include "draftforge/hidden_states/serve.h"

#include <fmt/ranges.h>
#include <httplib.h>
#include <sys/socket.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <functional>
#include <future>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "draftforge/engine/llama_model.h"
#include "draftforge/hidden_states/generate.h"
#include "draftforge/hidden_states/hs_file.h"
#include "draftforge/hidden_states/hs_lock.h"
#include "draftforge/io/safetensors.h"
#include "draftforge/io/torch_tensors.h"
#include "draftforge/util/fs.h"

namespace draftforge::hidden_states {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using nlohmann::ordered_json;

// A fixed set of threads running posted tasks in FIFO order. The destructor
// runs the tasks still queued, then joins.
class WorkQueue {
 public:
  explicit WorkQueue(int threads) {
    for (int i = 0; i < threads; ++i) workers_.emplace_back([this] { Work(); });
  }
  ~WorkQueue() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
    }
    ready_.notify_all();
    for (auto& worker : workers_) worker.join();
  }
  void Post(std::function<void()> task) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      tasks_.push_back(std::move(task));
    }
    ready_.notify_one();
  }

 private:
  void Work() {
    for (;;) {
      std::function<void()> task;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        ready_.wait(lock, [this] { return stopping_ || !tasks_.empty(); });
        if (tasks_.empty()) return;
        task = std::move(tasks_.front());
        tasks_.pop_front();
      }
      task();
    }
  }

  std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<std::function<void()>> tasks_;
  bool stopping_ = false;
  std::vector<std::thread> workers_;
};

// An HTTP error in vLLM's shape; `type` is the OpenAI error class name.
struct HttpError {
  int status = 400;
  std::string type = "BadRequestError";
  std::string message;
  std::string param;  // request field at fault; empty: null
};

HttpError BadRequest(std::string message, std::string param = "") {
  return HttpError{400, "BadRequestError", std::move(message), std::move(param)};
}

HttpError ServerError(std::string message) {
  return HttpError{500, "InternalServerError", std::move(message), ""};
}

std::string ErrorBody(const HttpError& error) {
  ordered_json body;
  body["error"]["message"] = error.message;
  body["error"]["type"] = error.type;
  body["error"]["param"] = error.param.empty() ? json(nullptr) : json(error.param);
  body["error"]["code"] = error.status;
  return body.dump();
}

const char* ErrorTypeForStatus(int status) {
  switch (status) {
    case 400: return "BadRequestError";
    case 404: return "NotFoundError";
    case 405: return "MethodNotAllowedError";
    case 413: return "RequestEntityTooLargeError";
    default: return status >= 500 ? "InternalServerError" : "BadRequestError";
  }
}

std::string NewRequestId() {
  thread_local std::mt19937_64 generator{std::random_device{}()};
  return fmt::format("cmpl-{:016x}{:016x}", generator(), generator());
}

// One prompt of a completion request after validation.
struct PromptWork {
  std::vector<int64_t> ids;
  std::string request_id;
  std::string path;
  std::shared_ptr<HeldFileLock> lock;
  torch::Tensor hidden_states;  // [T, L, H] in the stored dtype, T may be cut by a fault
  int64_t next_token = 0;
};

struct ParsedCompletion {
  std::vector<std::vector<int64_t>> prompts;
  bool return_token_ids = false;
  std::string custom_path;  // empty: default path
};

bool IsSafeCustomPath(const fs::path& path) {
  if (!path.is_absolute() || path.extension() != ".safetensors") return false;
  for (const auto& part : path) {
    if (part == "..") return false;
  }
  return true;
}

// Writes a hidden-states file straight to `path`, not atomically, the way
// safetensors' save_file does in vLLM's writer threads; readers wait
// for the lock to be released before they read it.
Status WriteInPlace(const std::string& path, const std::vector<int64_t>& ids,
                    const torch::Tensor& hidden_states) {
  torch::Tensor hidden = hidden_states.contiguous();
  DF_ASSIGN_OR_RAISE(io::DType hidden_dtype, io::SafetensorsDtypeOf(hidden.scalar_type()));
  std::vector<io::TensorBytes> tensors = {
      {kTokenIdsKey, io::DType::kI64, {static_cast<int64_t>(ids.size())}, ids.data(),
       ids.size() * sizeof(int64_t)},
      {kHiddenStatesKey, hidden_dtype, std::vector<int64_t>(hidden.sizes().begin(), hidden.sizes().end()),
       hidden.data_ptr(), static_cast<size_t>(hidden.nbytes())}};
  DF_ASSIGN_OR_RAISE(std::string header,
                     io::BuildSafetensorsHeader(tensors, {}, /*write_metadata=*/false));
  std::FILE* file = std::fopen(path.c_str(), "wb");
  if (file == nullptr) return Status::IOError("cannot create {}: {}", path, std::strerror(errno));
  bool ok = std::fwrite(header.data(), 1, header.size(), file) == header.size();
  for (const auto& tensor : tensors) {
    ok = ok && std::fwrite(tensor.data, 1, tensor.nbytes, file) == tensor.nbytes;
  }
  ok = (std::fclose(file) == 0) && ok;
  if (!ok) return Status::IOError("write failed on {}: {}", path, std::strerror(errno));
  return Status::OK();
}

}  // namespace

struct HiddenStatesServer::Impl {
  ServeOptions options;
  engine::ModelConfig config;
  std::unique_ptr<engine::LlamaModel> model;  // null with zero_work
  std::vector<int64_t> layer_ids;             // ascending
  std::string served_name;
  std::string output_dir;  // absolute
  httplib::Server http;
  int port = 0;
  std::atomic<int64_t> request_count{0};
  std::atomic<bool> stopped{false};
  // Declared last: destroyed first, so queued writes finish while the
  // members above are alive.
  std::unique_ptr<WorkQueue> writers;
  std::unique_ptr<WorkQueue> engine_queue;

  Result<ParsedCompletion> ParseCompletion(const std::string& body, HttpError& error) const;
  void HandleModels(httplib::Response& response) const;
  void HandleCompletion(const httplib::Request& request, httplib::Response& response);
  Status Compute(PromptWork& work) const;
  void Reply(httplib::Response& response, const HttpError& error) const;
};

void HiddenStatesServer::Impl::Reply(httplib::Response& response, const HttpError& error) const {
  if (error.status >= 500) {
    spdlog::error("serve: HTTP {}: {}", error.status, error.message);
  } else {
    spdlog::warn("serve: HTTP {}: {}", error.status, error.message);
  }
  response.status = error.status;
  response.set_content(ErrorBody(error), "application/json");
}

void HiddenStatesServer::Impl::HandleModels(httplib::Response& response) const {
  ordered_json model;
  model["id"] = served_name;
  model["object"] = "model";
  model["created"] = std::chrono::duration_cast<std::chrono::seconds>(
                         std::chrono::system_clock::now().time_since_epoch())
                         .count();
  model["owned_by"] = "draftforge";
  model["root"] = options.model_dir;
  // Not part of vLLM's answer: lets draftforge clients check the capture ids.
  model["draftforge_layer_ids"] = layer_ids;
  model["parent"] = nullptr;
  model["max_model_len"] = config.max_position_embeddings;
  ordered_json body;
  body["object"] = "list";
  body["data"] = ordered_json::array({model});
  response.set_content(body.dump(), "application/json");
}

Result<ParsedCompletion> HiddenStatesServer::Impl::ParseCompletion(const std::string& body,
                                                                   HttpError& error) const {
  auto fail = [&error](HttpError value) -> Status {
    error = std::move(value);
    return Status::Invalid("{}", error.message);
  };
  json request;
  try {
    request = json::parse(body);
  } catch (const json::parse_error& parse_error) {
    return fail(BadRequest(fmt::format("the request body is not valid JSON: {}", parse_error.what())));
  }
  if (!request.is_object()) return fail(BadRequest("the request body must be a JSON object"));

  if (auto it = request.find("model"); it != request.end() && !it->is_null()) {
    if (!it->is_string() || it->get<std::string>() != served_name) {
      const std::string requested = it->is_string() ? it->get<std::string>() : it->dump();
      return fail(HttpError{404, "NotFoundError",
                            fmt::format("The model `{}` does not exist; this server serves `{}`",
                                        requested, served_name),
                            "model"});
    }
  }
  if (auto it = request.find("max_tokens"); it != request.end() && !it->is_null()) {
    if (!it->is_number_integer() || it->get<int64_t>() != 1) {
      return fail(BadRequest(fmt::format("max_tokens is {}; draftforge serve only generates one "
                                         "token per prompt, send max_tokens 1",
                                         it->dump()),
                             "max_tokens"));
    }
  }

  ParsedCompletion parsed;
  auto prompt = request.find("prompt");
  if (prompt == request.end()) return fail(BadRequest("the request has no prompt", "prompt"));
  if (prompt->is_string() || (prompt->is_array() && !prompt->empty() && (*prompt)[0].is_string())) {
    return fail(BadRequest("text prompts are not supported because draftforge serve has no "
                           "tokenizer; send the prompt as a list of token ids",
                           "prompt"));
  }
  if (!prompt->is_array() || prompt->empty()) {
    return fail(BadRequest("prompt must be a non-empty list of token ids, or a list of such lists",
                           "prompt"));
  }
  const bool batch = (*prompt)[0].is_array();
  const json single = json::array({*prompt});
  const json& prompts = batch ? *prompt : single;
  const int64_t vocab = config.vocab_size;
  for (size_t p = 0; p < prompts.size(); ++p) {
    const json& ids = prompts[p];
    if (!ids.is_array() || ids.empty()) {
      return fail(BadRequest(fmt::format("prompt {} must be a non-empty list of token ids", p),
                             "prompt"));
    }
    std::vector<int64_t> values;
    values.reserve(ids.size());
    for (size_t t = 0; t < ids.size(); ++t) {
      if (!ids[t].is_number_integer()) {
        return fail(BadRequest(
            fmt::format("prompt {} position {}: {} is not an integer token id", p, t, ids[t].dump()),
            "prompt"));
      }
      const int64_t id = ids[t].get<int64_t>();
      if (id < 0 || id >= vocab) {
        return fail(BadRequest(fmt::format("Token id {} is out of vocabulary (prompt {} position "
                                           "{}; the vocabulary has {} ids)",
                                           id, p, t, vocab),
                               "prompt"));
      }
      values.push_back(id);
    }
    // One generated token must fit as well.
    const int64_t needed = static_cast<int64_t>(values.size()) + 1;
    if (needed > config.max_position_embeddings) {
      return fail(BadRequest(fmt::format("This model's maximum context length is {} tokens. "
                                         "However, you requested {} tokens ({} in the prompt, 1 "
                                         "in the completion). Shorten the prompt",
                                         config.max_position_embeddings, needed, values.size()),
                             "prompt"));
    }
    parsed.prompts.push_back(std::move(values));
  }

  if (auto it = request.find("return_token_ids"); it != request.end() && it->is_boolean()) {
    parsed.return_token_ids = it->get<bool>();
  }
  if (auto it = request.find("kv_transfer_params"); it != request.end() && !it->is_null()) {
    if (!it->is_object()) {
      return fail(BadRequest("kv_transfer_params must be a JSON object", "kv_transfer_params"));
    }
    if (auto path = it->find("hidden_states_path"); path != it->end() && !path->is_null()) {
      if (!path->is_string()) {
        return fail(BadRequest("kv_transfer_params.hidden_states_path must be a string",
                               "kv_transfer_params"));
      }
      const std::string custom = path->get<std::string>();
      if (!options.allow_custom_save_path) {
        // vLLM's connector behaves the same way: warn and use the default path.
        spdlog::warn("serve: ignoring kv_transfer_params.hidden_states_path '{}' because the "
                     "server runs without --allow-custom-save-path",
                     custom);
      } else if (!IsSafeCustomPath(custom)) {
        return fail(BadRequest(fmt::format("kv_transfer_params.hidden_states_path '{}' is rejected: "
                                           "it must be an absolute path ending in .safetensors "
                                           "without '..' components",
                                           custom),
                               "kv_transfer_params"));
      } else if (parsed.prompts.size() > 1) {
        return fail(BadRequest("kv_transfer_params.hidden_states_path names one file, so the "
                               "request must have a single prompt",
                               "kv_transfer_params"));
      } else {
        parsed.custom_path = custom;
      }
    }
  }
  return parsed;
}

Status HiddenStatesServer::Impl::Compute(PromptWork& work) const {
  const int64_t tokens = static_cast<int64_t>(work.ids.size());
  if (options.zero_work) {
    work.hidden_states = torch::zeros(
        {tokens, static_cast<int64_t>(layer_ids.size()), config.hidden_size}, options.dtype);
    work.next_token = 0;
  } else {
    auto forward = model->Forward(work.ids, layer_ids, /*compute_logits=*/true);
    if (!forward.ok()) return forward.status();
    work.hidden_states = forward->hidden_states.to(options.dtype);  // [T, L, H]
    work.next_token = forward->logits[tokens - 1].argmax().item<int64_t>();
  }
  const int64_t cached = options.faults.prefix_cache_rows;
  if (cached > 0 && tokens > cached) {
    work.hidden_states = work.hidden_states.slice(0, cached).contiguous();
  }
  return Status::OK();
}

void HiddenStatesServer::Impl::HandleCompletion(const httplib::Request& request,
                                                httplib::Response& response) {
  const int64_t number = ++request_count;
  const ServeFaults& faults = options.faults;
  auto hits = [number](int64_t every) { return every > 0 && number % every == 0; };
  if (faults.delay_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(faults.delay_ms));
  if (hits(faults.fail_every)) {
    Reply(response, ServerError(fmt::format("fault injected by --test-fail-every (request {})", number)));
    return;
  }
  if (hits(faults.drop_connection_every)) {
    spdlog::warn("serve: closing the connection of request {} without a body "
                 "(--test-drop-connection-every)",
                 number);
    // A content provider that fails makes httplib close the connection after
    // the status line and headers.
    response.set_chunked_content_provider("application/json",
                                          [](size_t, httplib::DataSink&) { return false; });
    return;
  }

  // httplib 0.11 applies the payload limit to Content-Length bodies only; a
  // chunked body arrives whole, so check its size here.
  // NOTE: such a body is still read into memory before this check.
  if (static_cast<int64_t>(request.body.size()) > static_cast<int64_t>(options.max_body_bytes)) {
    Reply(response, HttpError{413, ErrorTypeForStatus(413),
                              fmt::format("the request body of {} bytes exceeds the server limit of {} bytes "
                                          "(--max-body-bytes)",
                                          request.body.size(), options.max_body_bytes),
                              ""});
    return;
  }

  HttpError error;
  auto parsed = ParseCompletion(request.body, error);
  if (!parsed.ok()) {
    Reply(response, error);
    return;
  }

  const std::string base_id = NewRequestId();
  std::vector<PromptWork> works(parsed->prompts.size());
  for (size_t p = 0; p < works.size(); ++p) {
    PromptWork& work = works[p];
    work.ids = std::move(parsed->prompts[p]);
    work.request_id = fmt::format("{}-{}", base_id, p);
    work.path = parsed->custom_path.empty()
                    ? (fs::path(output_dir) / (work.request_id + ".safetensors")).string()
                    : parsed->custom_path;
    if (!parsed->custom_path.empty()) {
      Status created = CreateDirectories(fs::path(work.path).parent_path().string());
      if (!created.ok()) {
        Reply(response, ServerError(created.ToString()));
        return;
      }
    }
    // Like vLLM, the lock exists and is held before the request can finish.
    auto lock = HeldFileLock::Acquire(LockPathFor(work.path));
    if (!lock.ok()) {
      Reply(response, ServerError(lock.status().ToString()));
      return;
    }
    work.lock = std::make_shared<HeldFileLock>(lock.MoveValueUnsafe());
  }

  // Engine work: inline for zero_work, else one prompt at a time on the
  // engine thread, in arrival order.
  std::vector<Status> results(works.size());
  if (options.zero_work) {
    for (size_t p = 0; p < works.size(); ++p) results[p] = Compute(works[p]);
  } else {
    std::vector<std::future<void>> done;
    for (size_t p = 0; p < works.size(); ++p) {
      auto task = std::make_shared<std::packaged_task<void()>>(
          [this, &works, &results, p] { results[p] = Compute(works[p]); });
      done.push_back(task->get_future());
      engine_queue->Post([task] { (*task)(); });
    }
    for (auto& future : done) future.wait();
  }
  for (size_t p = 0; p < works.size(); ++p) {
    if (!results[p].ok()) {
      // The locks are released when `works` goes out of scope, with no file
      // written, as after a failed write in vLLM.
      Reply(response, ServerError(fmt::format("request {}: {}", works[p].request_id,
                                              results[p].ToString())));
      return;
    }
  }

  ordered_json body;
  body["id"] = base_id;
  body["object"] = "text_completion";
  body["created"] = std::chrono::duration_cast<std::chrono::seconds>(
                        std::chrono::system_clock::now().time_since_epoch())
                        .count();
  body["model"] = served_name;
  body["choices"] = ordered_json::array();
  int64_t prompt_tokens = 0;
  const bool wrong_ids = hits(faults.wrong_prompt_ids_every);
  for (size_t p = 0; p < works.size(); ++p) {
    const PromptWork& work = works[p];
    ordered_json choice;
    choice["index"] = p;
    choice["text"] = "";
    choice["logprobs"] = nullptr;
    choice["finish_reason"] = "length";
    choice["stop_reason"] = nullptr;
    if (parsed->return_token_ids) {
      choice["token_ids"] = std::vector<int64_t>{work.next_token};
      std::vector<int64_t> reported = work.ids;
      if (wrong_ids) reported.back() = (reported.back() + 1) % config.vocab_size;
      choice["prompt_token_ids"] = std::move(reported);
    } else {
      choice["token_ids"] = nullptr;
      choice["prompt_token_ids"] = nullptr;
    }
    choice["prompt_logprobs"] = nullptr;
    body["choices"].push_back(std::move(choice));
    prompt_tokens += static_cast<int64_t>(work.ids.size());
  }
  const int64_t completion_tokens = static_cast<int64_t>(works.size());
  body["usage"]["prompt_tokens"] = prompt_tokens;
  body["usage"]["total_tokens"] = prompt_tokens + completion_tokens;
  body["usage"]["completion_tokens"] = completion_tokens;
  body["usage"]["prompt_tokens_details"] = nullptr;
  // NOTE: a batch request gets one kv_transfer_params, that of its first
  // prompt, so clients that need every file send one prompt per request.
  if (!hits(faults.omit_path_every)) {
    body["kv_transfer_params"]["hidden_states_path"] = works[0].path;
  } else {
    spdlog::warn("serve: response to request {} has no kv_transfer_params "
                 "(--test-omit-path-every)",
                 number);
  }

  // As in vLLM, the file is written after the response may have gone out;
  // the lock is released when the write ends.
  for (PromptWork& work : works) {
    writers->Post([work = std::move(work)]() mutable {
      Status written = WriteInPlace(work.path, work.ids, work.hidden_states);
      if (!written.ok()) spdlog::error("serve: request {}: {}", work.request_id, written.ToString());
      work.lock->Release();
    });
  }
  response.set_content(body.dump(), "application/json");
}

HiddenStatesServer::HiddenStatesServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

HiddenStatesServer::~HiddenStatesServer() { Stop(); }

int HiddenStatesServer::port() const { return impl_->port; }

const std::string& HiddenStatesServer::served_model_name() const { return impl_->served_name; }

Result<std::unique_ptr<HiddenStatesServer>> HiddenStatesServer::Create(const ServeOptions& options) {
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  if (options.zero_work) {
    DF_ASSIGN_OR_RAISE(impl->config, engine::ModelConfig::Load(options.model_dir));
  } else {
    DF_ASSIGN_OR_RAISE(impl->model, engine::LlamaModel::Load(options.model_dir));
    impl->config = impl->model->config();
  }
  const int64_t num_layers = impl->config.num_hidden_layers;
  std::vector<int64_t> layer_ids =
      options.layer_ids.empty() ? engine::DefaultLayerIds(num_layers) : options.layer_ids;
  std::sort(layer_ids.begin(), layer_ids.end());
  if (std::adjacent_find(layer_ids.begin(), layer_ids.end()) != layer_ids.end() ||
      layer_ids.front() < 0 || layer_ids.back() > num_layers) {
    return Status::Invalid("layer ids [{}] must be distinct and in 0..{} for this model's {} "
                           "decoder layers; pass --layer-ids",
                           fmt::join(layer_ids, ", "), num_layers, num_layers);
  }
  impl->layer_ids = layer_ids;
  impl->served_name = options.served_model_name.empty() ? options.model_dir : options.served_model_name;
  DF_RETURN_NOT_OK(CreateDirectories(options.hidden_states_path));
  impl->output_dir = fs::absolute(options.hidden_states_path).lexically_normal().string();

  Impl* self = impl.get();
  const int http_threads = std::max(1, options.http_threads);
  impl->http.new_task_queue = [http_threads] { return new httplib::ThreadPool(http_threads); };
  impl->http.set_payload_max_length(options.max_body_bytes);
  impl->http.set_keep_alive_max_count(1000000);
  // Without TCP_NODELAY, delayed ACKs stall each small response by ~40 ms.
  impl->http.set_tcp_nodelay(true);
  impl->http.Get("/v1/models", [self](const httplib::Request&, httplib::Response& response) {
    self->HandleModels(response);
  });
  impl->http.Post("/v1/completions",
                  [self](const httplib::Request& request, httplib::Response& response) {
                    self->HandleCompletion(request, response);
                  });
  impl->http.set_error_handler(httplib::Server::HandlerWithResponse(
      [self](const httplib::Request& request, httplib::Response& response) {
    if (!response.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
    std::string message;
    if (response.status == 413) {
      message = fmt::format("the request body exceeds the server limit of {} bytes "
                            "(--max-body-bytes)",
                            self->options.max_body_bytes);
    } else if (response.status == 404) {
      message = fmt::format("no route for {} {}; this server offers GET /v1/models and POST "
                            "/v1/completions",
                            request.method, request.path);
    } else {
      message = fmt::format("{} {} failed with HTTP {}", request.method, request.path,
                            response.status);
    }
    self->Reply(response,
                HttpError{response.status, ErrorTypeForStatus(response.status), message, ""});
    return httplib::Server::HandlerResponse::Handled;
  }));
  impl->http.set_exception_handler(
      [self](const httplib::Request& request, httplib::Response& response, std::exception_ptr error) {
        std::string description = "unknown exception";
        try {
          std::rethrow_exception(error);
        } catch (const std::exception& exception) {
          description = exception.what();
        } catch (...) {
        }
        self->Reply(response, ServerError(fmt::format("{} {}: {}", request.method, request.path, description)));
      });

  // httplib 0.11 listens with a backlog of 5, so a burst of new client
  // connections overflows the accept queue and some requests stall until
  // httplib's 5 s read timeout closes them. Calling listen() again on the
  // bound socket raises the backlog.
  auto listen_socket = std::make_shared<std::atomic<int>>(-1);
  impl->http.set_socket_options([listen_socket](socket_t socket) {
    httplib::default_socket_options(socket);
    listen_socket->store(socket);
  });
  if (options.port == 0) {
    impl->port = impl->http.bind_to_any_port(options.host);
    if (impl->port <= 0) {
      return Status::IOError("cannot bind a free port on {}", options.host);
    }
  } else {
    if (!impl->http.bind_to_port(options.host, options.port)) {
      return Status::IOError("cannot listen on {}:{}; another process may use the port, pass "
                             "another --port",
                             options.host, options.port);
    }
    impl->port = options.port;
  }
  if (listen_socket->load() >= 0) ::listen(listen_socket->load(), SOMAXCONN);
  impl->writers = std::make_unique<WorkQueue>(std::max(1, options.writer_threads));
  if (!options.zero_work) impl->engine_queue = std::make_unique<WorkQueue>(1);
  return std::unique_ptr<HiddenStatesServer>(new HiddenStatesServer(std::move(impl)));
}

Status HiddenStatesServer::Run() {
  const ServeOptions& options = impl_->options;
  spdlog::info("serve: {} as '{}' on http://{}:{}/v1, layer ids [{}], hidden states ({}) in {}{}",
               options.model_dir, impl_->served_name, options.host, impl_->port,
               fmt::join(impl_->layer_ids, ", "), DtypeName(options.dtype), impl_->output_dir,
               options.zero_work ? " (zero-work mode: the model is not run)" : "");
  if (options.faults.any()) spdlog::warn("serve: test fault injection is on");
  const bool listened = impl_->http.listen_after_bind();
  spdlog::info("serve: stopped after {} completion requests", impl_->request_count.load());
  if (!listened && !impl_->stopped) {
    return Status::IOError("the HTTP listener on {}:{} failed", options.host, impl_->port);
  }
  return Status::OK();
}

void HiddenStatesServer::Stop() {
  impl_->stopped = true;
  impl_->http.stop();  // does nothing unless the listener runs
}

}  // namespace draftforge::hidden_states
