#include "draftforge/hidden_states/vllm_client.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <httplib.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "draftforge/hidden_states/hs_file.h"
#include "draftforge/hidden_states/hs_lock.h"
#include "draftforge/io/safetensors.h"
#include "draftforge/io/torch_tensors.h"
#include "draftforge/hidden_states/generate.h"
#include "draftforge/util/bytes.h"

namespace draftforge::hidden_states {
namespace {

// httplib's error names ("Connection", "Read") in words a user can act on.
std::string DescribeHttpError(httplib::Error error) {
  switch (error) {
    case httplib::Error::Connection:
      return "cannot connect (connection refused or host unreachable; is the server running?)";
    case httplib::Error::Read:
      return "the connection was closed or reset while reading the response, or the read timed out";
    case httplib::Error::Write:
      return "the connection was closed or reset while sending the request";
    case httplib::Error::ConnectionTimeout:
      return "connecting timed out";
    default:
      return "HTTP client error " + httplib::to_string(error);
  }
}


namespace fs = std::filesystem;
using nlohmann::json;

// The outcome of one attempt; `retryable` marks failures that another
// attempt may not repeat (network, 5xx, server-side write failures).
struct AttemptError {
  Status status;
  bool retryable = false;
};

AttemptError Retryable(Status status) { return {std::move(status), true}; }
AttemptError Final(Status status) { return {std::move(status), false}; }

struct Endpoint {
  std::string url;        // as given, without a trailing slash
  std::string host_port;  // scheme://host:port
  std::string base_path;  // e.g. /v1
  std::mutex mutex;
  std::vector<std::unique_ptr<httplib::Client>> idle;  // keep-alive connections
  std::atomic<int> in_flight{0};
};

Result<std::unique_ptr<Endpoint>> ParseEndpoint(std::string url) {
  while (!url.empty() && url.back() == '/') url.pop_back();
  const size_t scheme_end = url.find("://");
  if (scheme_end == std::string::npos ||
      (url.compare(0, scheme_end, "http") != 0 && url.compare(0, scheme_end, "https") != 0)) {
    return Status::Invalid("endpoint '{}' is not an http:// or https:// URL; pass e.g. "
                           "http://127.0.0.1:8000/v1",
                           url);
  }
  auto endpoint = std::make_unique<Endpoint>();
  endpoint->url = url;
  const size_t path_start = url.find('/', scheme_end + 3);
  endpoint->host_port = url.substr(0, path_start);
  endpoint->base_path = path_start == std::string::npos ? "" : url.substr(path_start);
  if (endpoint->host_port.size() <= scheme_end + 3) {
    return Status::Invalid("endpoint '{}' has no host; pass e.g. http://127.0.0.1:8000/v1", url);
  }
  return endpoint;
}

// The message of an error body in vLLM's shapes: {"error": {"message"}} or
// {"message"}; else the body itself, cut short.
std::string ServerErrorMessage(const std::string& body) {
  json parsed = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (parsed.is_object()) {
    if (auto error = parsed.find("error"); error != parsed.end() && error->is_object()) {
      if (auto message = error->find("message"); message != error->end() && message->is_string()) {
        return message->get<std::string>();
      }
    }
    if (auto message = parsed.find("message"); message != parsed.end() && message->is_string()) {
      return message->get<std::string>();
    }
  }
  return body.substr(0, 300);
}

// Moves `from` to `to` on the same file system, else copies and deletes.
Status MoveFile(const std::string& from, const std::string& to) {
  if (std::rename(from.c_str(), to.c_str()) == 0) return Status::OK();
  if (errno != EXDEV) {
    return Status::IOError("cannot move {} to {}: {}", from, to, std::strerror(errno));
  }
  std::error_code error;
  fs::copy_file(from, to, fs::copy_options::overwrite_existing, error);
  if (error) {
    fs::remove(to, error);
    return Status::IOError("cannot copy {} to {}: {}", from, to, error.message());
  }
  fs::remove(from, error);
  return Status::OK();
}

bool SameTokens(const json& reported, std::span<const int64_t> ids) {
  if (!reported.is_array() || reported.size() != ids.size()) return false;
  for (size_t t = 0; t < ids.size(); ++t) {
    const json& value = reported[t];
    if (!value.is_number_integer() || value.get<int64_t>() != ids[t]) return false;
  }
  return true;
}

std::string DescribeMismatch(const json& reported, std::span<const int64_t> ids) {
  if (!reported.is_array()) return fmt::format("it is {}, not a list", reported.type_name());
  if (reported.size() != ids.size()) {
    return fmt::format("it has {} ids but {} were sent", reported.size(), ids.size());
  }
  for (size_t t = 0; t < ids.size(); ++t) {
    if (!reported[t].is_number_integer() || reported[t].get<int64_t>() != ids[t]) {
      return fmt::format("position {} is {} but {} was sent", t, reported[t].dump(), ids[t]);
    }
  }
  return "they match";
}

}  // namespace

struct HiddenStatesClient::Impl {
  ClientOptions options;
  std::vector<std::unique_ptr<Endpoint>> endpoints;
  std::string model;
  std::string model_json;  // `model` as a JSON string literal
  std::atomic<uint64_t> temp_counter{0};

  // Returns an idle keep-alive connection (`reused` true) or a new one.
  std::unique_ptr<httplib::Client> AcquireConnection(Endpoint& endpoint, bool* reused = nullptr) const;
  std::unique_ptr<httplib::Client> NewConnection(const Endpoint& endpoint) const;
  void ReleaseConnection(Endpoint& endpoint, std::unique_ptr<httplib::Client> client) const;
  Endpoint& ChooseEndpoint(const Endpoint* avoid) const;
  // The served model id and, from `draftforge serve`, its capture layer ids.
  Result<std::pair<std::string, std::optional<std::vector<int64_t>>>> FetchModelId(Endpoint& endpoint) const;
  std::optional<AttemptError> Attempt(Endpoint& endpoint, int64_t index,
                                      std::span<const int64_t> ids, const std::string& dest_path,
                                      SampleOutput& output);
  std::optional<AttemptError> CheckFile(const std::string& path, const std::string& server_path,
                                        std::span<const int64_t> ids, int64_t& file_size) const;
  std::optional<AttemptError> KeepFile(int64_t index, std::span<const int64_t> ids,
                                       const std::string& server_path, const std::string& dest_path,
                                       SampleOutput& output);
};

namespace {

// Returns the index of the first NaN or Inf among `count` little-endian
// floats of `dtype` (F32, BF16 or F16), or -1: a value is not finite when
// all its exponent bits are set.
int64_t FirstNonFinite(const uint8_t* data, int64_t count, io::DType dtype) {
  if (dtype == io::DType::kF32) {
    for (int64_t i = 0; i < count; ++i) {
      if ((LoadLittleEndian<uint32_t>(data + 4 * i) & 0x7f800000u) == 0x7f800000u) return i;
    }
    return -1;
  }
  const uint16_t exponent = dtype == io::DType::kBF16 ? 0x7f80 : 0x7c00;
  for (int64_t i = 0; i < count; ++i) {
    if ((LoadLittleEndian<uint16_t>(data + 2 * i) & exponent) == exponent) return i;
  }
  return -1;
}

}  // namespace

// The checks of ReadHiddenStatesFile (hs_file.h), done on the mapped bytes
// without copying into tensors, because this runs once per request.
std::optional<AttemptError> HiddenStatesClient::Impl::CheckFile(const std::string& path,
                                                                const std::string& server_path,
                                                                std::span<const int64_t> ids,
                                                                int64_t& file_size) const {
  auto opened = io::SafetensorsFile::Open(path);
  if (!opened.ok()) return Retryable(opened.status().WithContext(server_path));
  const io::SafetensorsFile& file = *opened;
  file_size = static_cast<int64_t>(file.mapping()->size());
  const io::TensorInfo* token_ids = file.Find(kTokenIdsKey);
  const io::TensorInfo* hidden = file.Find(kHiddenStatesKey);
  if (token_ids == nullptr || hidden == nullptr) {
    return Retryable(Status::Corrupt("{}: a hidden-states file needs the tensors '{}' and '{}'",
                                     server_path, kTokenIdsKey, kHiddenStatesKey));
  }
  if (token_ids->shape.size() != 1 ||
      (token_ids->dtype != io::DType::kI64 && token_ids->dtype != io::DType::kI32)) {
    return Final(Status::Invalid("{}: token_ids must be I64 or I32 of rank 1, got {} with {} "
                                 "dimensions",
                                 server_path, io::DTypeName(token_ids->dtype),
                                 token_ids->shape.size()));
  }
  if (hidden->shape.size() != 3 ||
      (hidden->dtype != io::DType::kF32 && hidden->dtype != io::DType::kBF16 &&
       hidden->dtype != io::DType::kF16)) {
    return Final(Status::Invalid("{}: hidden_states must be F32, BF16 or F16 [T, L, H], got {} "
                                 "with {} dimensions",
                                 server_path, io::DTypeName(hidden->dtype), hidden->shape.size()));
  }

  const int64_t tokens = static_cast<int64_t>(ids.size());
  if (token_ids->shape[0] != tokens) {
    return Final(Status::Invalid("{}: token_ids has {} tokens but {} were sent", server_path,
                                 token_ids->shape[0], tokens));
  }
  const uint8_t* stored_ids = file.DataOf(*token_ids);
  for (int64_t t = 0; t < tokens; ++t) {
    const int64_t value = token_ids->dtype == io::DType::kI64
                              ? LoadLittleEndian<int64_t>(stored_ids + 8 * t)
                              : LoadLittleEndian<int32_t>(stored_ids + 4 * t);
    if (value != ids[t]) {
      return Final(Status::Invalid("{}: token_ids[{}] is {} but {} was sent; the file belongs to "
                                   "another request",
                                   server_path, t, value, ids[t]));
    }
  }
  // Fewer rows than tokens is what prefix caching produces.
  if (hidden->shape[0] < tokens) {
    return Final(Status::Invalid(
        "{}: hidden_states has {} rows for {} tokens; a vLLM server with prefix caching skips "
        "the cached prefix, so start it with --no-enable-prefix-caching",
        server_path, hidden->shape[0], tokens));
  }
  if (hidden->shape[0] != tokens) {
    return Final(Status::Invalid("{}: hidden_states has {} rows for {} tokens", server_path,
                                 hidden->shape[0], tokens));
  }
  if (options.num_layers && hidden->shape[1] != *options.num_layers) {
    return Final(Status::Invalid("{}: hidden_states holds {} layers but {} layer ids are "
                                 "configured; pass the server's layer ids with --layer-ids",
                                 server_path, hidden->shape[1], *options.num_layers));
  }
  if (options.hidden_size && hidden->shape[2] != *options.hidden_size) {
    return Final(Status::Invalid("{}: hidden_states has hidden size {} but the model has {}; the "
                                 "server runs another model",
                                 server_path, hidden->shape[2], *options.hidden_size));
  }
  if (options.dtype) {
    auto stored = io::TorchDtypeOf(hidden->dtype);
    if (!stored.ok() || *stored != *options.dtype) {
      return Final(Status::Invalid("{}: hidden_states is {} but {} is configured; the server runs "
                                   "the model in another dtype, pass --hidden-states-dtype to "
                                   "match it or restart the server",
                                   server_path, io::DTypeName(hidden->dtype),
                                   DtypeName(*options.dtype)));
    }
  }
  const int64_t bad = FirstNonFinite(file.DataOf(*hidden), hidden->numel(), hidden->dtype);
  if (bad >= 0) {
    const int64_t per_token = hidden->shape[1] * hidden->shape[2];
    return Final(Status::Invalid("{}: hidden_states has a NaN or Inf at token {}, slot {}; the "
                                 "model produced non-finite values for this sample",
                                 server_path, bad / per_token, (bad % per_token) / hidden->shape[2]));
  }
  return std::nullopt;
}


std::unique_ptr<httplib::Client> HiddenStatesClient::Impl::AcquireConnection(
    Endpoint& endpoint, bool* reused) const {
  {
    std::lock_guard<std::mutex> lock(endpoint.mutex);
    if (reused != nullptr) *reused = !endpoint.idle.empty();
    if (!endpoint.idle.empty()) {
      auto client = std::move(endpoint.idle.back());
      endpoint.idle.pop_back();
      return client;
    }
  }
  return NewConnection(endpoint);
}

std::unique_ptr<httplib::Client> HiddenStatesClient::Impl::NewConnection(
    const Endpoint& endpoint) const {
  auto client = std::make_unique<httplib::Client>(endpoint.host_port);
  const auto timeout = options.timeout;
  client->set_connection_timeout(timeout);
  client->set_read_timeout(timeout);
  client->set_write_timeout(timeout);
  client->set_keep_alive(true);
  client->set_tcp_nodelay(true);
  client->set_default_headers({{"Authorization", "Bearer EMPTY"}});
  return client;
}

void HiddenStatesClient::Impl::ReleaseConnection(Endpoint& endpoint,
                                                 std::unique_ptr<httplib::Client> client) const {
  std::lock_guard<std::mutex> lock(endpoint.mutex);
  endpoint.idle.push_back(std::move(client));
}

Endpoint& HiddenStatesClient::Impl::ChooseEndpoint(const Endpoint* avoid) const {
  Endpoint* best = nullptr;
  for (const auto& endpoint : endpoints) {
    if (endpoint.get() == avoid && endpoints.size() > 1) continue;
    if (best == nullptr || endpoint->in_flight.load() < best->in_flight.load()) best = endpoint.get();
  }
  return *best;
}

Result<std::pair<std::string, std::optional<std::vector<int64_t>>>> HiddenStatesClient::Impl::FetchModelId(
    Endpoint& endpoint) const {
  Status last;
  for (int attempt = 0; attempt <= options.max_retries; ++attempt) {
    if (attempt > 0) std::this_thread::sleep_for(options.backoff * (1 << (attempt - 1)));
    auto client = AcquireConnection(endpoint);
    auto response = client->Get(endpoint.base_path + "/models");
    if (!response) {
      last = Status::Network("GET {}/models failed: {}", endpoint.url, DescribeHttpError(response.error()));
      spdlog::warn("{}; attempt {} of {}", last.message(), attempt + 1, options.max_retries + 1);
      continue;
    }
    ReleaseConnection(endpoint, std::move(client));
    if (response->status != 200) {
      last = Status::Network("GET {}/models returned HTTP {}: {}", endpoint.url, response->status,
                             ServerErrorMessage(response->body));
      if (response->status < 500) return last;
      continue;
    }
    json body = json::parse(response->body, nullptr, /*allow_exceptions=*/false);
    if (!body.is_object() || !body.contains("data") || !body["data"].is_array() ||
        body["data"].empty() || !body["data"][0].is_object() ||
        !body["data"][0].contains("id") || !body["data"][0]["id"].is_string()) {
      return Status::Invalid("GET {}/models returned no data[0].id; is this a vLLM server? Body: {}",
                             endpoint.url, response->body.substr(0, 300));
    }
    std::optional<std::vector<int64_t>> layer_ids;
    const json& model = body["data"][0];
    if (model.contains("draftforge_layer_ids") && model["draftforge_layer_ids"].is_array()) {
      layer_ids = model["draftforge_layer_ids"].get<std::vector<int64_t>>();
    }
    return std::make_pair(model["id"].get<std::string>(), layer_ids);
  }
  return last;
}

HiddenStatesClient::HiddenStatesClient(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
HiddenStatesClient::~HiddenStatesClient() = default;

const std::string& HiddenStatesClient::model() const { return impl_->model; }

Result<std::unique_ptr<HiddenStatesClient>> HiddenStatesClient::Connect(
    const ClientOptions& options) {
  if (options.endpoints.empty()) {
    return Status::Invalid("no endpoint given; pass --endpoint http://HOST:PORT/v1");
  }
  if (options.max_retries < 0) {
    return Status::Invalid("max retries {} is negative; pass a count >= 0", options.max_retries);
  }
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  for (const auto& url : options.endpoints) {
    DF_ASSIGN_OR_RAISE(auto endpoint, ParseEndpoint(url));
    impl->endpoints.push_back(std::move(endpoint));
  }
  for (const auto& endpoint : impl->endpoints) {
    DF_ASSIGN_OR_RAISE(auto served, impl->FetchModelId(*endpoint));
    const std::string& id = served.first;
    if (options.layer_ids && served.second && *served.second != *options.layer_ids) {
      return Status::Invalid("{} captures layer ids [{}] but [{}] are expected; restart the server with "
                             "--layer-ids {}, or pass the server's ids",
                             endpoint->url, fmt::join(*served.second, ", "), fmt::join(*options.layer_ids, ", "),
                             fmt::join(*options.layer_ids, " "));
    }
    if (options.layer_ids && !served.second) {
      spdlog::info("{} does not report its capture layer ids (vLLM does not); they must be [{}], as set with "
                   "`draftforge launch-vllm --layers`",
                   endpoint->url, fmt::join(*options.layer_ids, ", "));
    }
    const std::string& expected = impl->model.empty() ? options.expected_model : impl->model;
    if (!expected.empty() && id != expected) {
      return Status::Invalid("{} serves model '{}' but '{}' is expected; start the server with "
                             "--served-model-name '{}' (`draftforge generate` may instead take --model '{}')",
                             endpoint->url, id, expected, expected, id);
    }
    impl->model = id;
    spdlog::info("hidden-states server {} serves '{}'", endpoint->url, id);
  }
  impl->model_json = json(impl->model).dump();
  return std::unique_ptr<HiddenStatesClient>(new HiddenStatesClient(std::move(impl)));
}

std::optional<AttemptError> HiddenStatesClient::Impl::Attempt(Endpoint& endpoint, int64_t index,
                                                              std::span<const int64_t> ids,
                                                              const std::string& dest_path,
                                                              SampleOutput& output) {
  std::string body;
  body.reserve(64 + model_json.size() + ids.size() * 7);
  body += "{\"model\":";
  body += model_json;
  body += ",\"prompt\":[";
  for (size_t t = 0; t < ids.size(); ++t) {
    if (t > 0) body += ',';
    fmt::format_to(std::back_inserter(body), "{}", ids[t]);
  }
  body += "],\"max_tokens\":1,\"return_token_ids\":true}";

  bool reused = false;
  auto client = AcquireConnection(endpoint, &reused);
  auto response = client->Post(endpoint.base_path + "/completions", body, "application/json");
  if (!response && reused &&
      (response.error() == httplib::Error::Read || response.error() == httplib::Error::Write)) {
    // The server may have closed an idle keep-alive connection; resend once
    // on a new connection before counting an attempt.
    client = NewConnection(endpoint);
    response = client->Post(endpoint.base_path + "/completions", body, "application/json");
  }
  if (!response) {
    // The connection is in an unknown state; drop it.
    return Retryable(Status::Network("POST {}/completions failed: {}", endpoint.url,
                                     DescribeHttpError(response.error())));
  }
  ReleaseConnection(endpoint, std::move(client));
  if (response->status >= 500) {
    return Retryable(Status::Network("{} returned HTTP {}: {}", endpoint.url, response->status,
                                     ServerErrorMessage(response->body)));
  }
  if (response->status != 200) {
    return Final(Status::Invalid("{} rejected the request with HTTP {}: {}", endpoint.url,
                                 response->status, ServerErrorMessage(response->body)));
  }

  json parsed = json::parse(response->body, nullptr, /*allow_exceptions=*/false);
  if (parsed.is_discarded() || !parsed.is_object()) {
    return Final(Status::Invalid("{} returned a body that is not a JSON object: {}", endpoint.url,
                                 response->body.substr(0, 200)));
  }
  const json* reported = nullptr;
  if (auto choices = parsed.find("choices");
      choices != parsed.end() && choices->is_array() && !choices->empty() &&
      (*choices)[0].is_object()) {
    if (auto ids_it = (*choices)[0].find("prompt_token_ids");
        ids_it != (*choices)[0].end() && !ids_it->is_null()) {
      reported = &*ids_it;
    }
  }
  if (reported == nullptr) {
    return Final(Status::Invalid("the response from {} has no choices[0].prompt_token_ids; the "
                                 "server must support \"return_token_ids\"; upgrade vLLM",
                                 endpoint.url));
  }
  std::string server_path;
  if (auto params = parsed.find("kv_transfer_params");
      params != parsed.end() && params->is_object()) {
    if (auto path = params->find("hidden_states_path");
        path != params->end() && path->is_string()) {
      server_path = path->get<std::string>();
    }
  }
  if (!SameTokens(*reported, ids)) {
    // The server wrote a file for ids this sample does not have. Remove it
    // (best effort) so rejected files do not pile up in the server directory.
    if (!server_path.empty() && WaitForWriterAndRemoveLock(server_path, options.lock_timeout).ok()) {
      std::error_code ignored;
      fs::remove(server_path, ignored);
    }
    return Final(Status::Invalid("the response from {} has prompt_token_ids that differ from the "
                                 "{} ids sent ({}); the file is not kept",
                                 endpoint.url, ids.size(), DescribeMismatch(*reported, ids)));
  }
  if (server_path.empty()) {
    return Final(Status::Invalid("the response from {} has no kv_transfer_params.hidden_states_path; "
                                 "start vLLM with the extract_hidden_states speculative config and "
                                 "the ExampleHiddenStatesConnector (see draftforge launch-vllm)",
                                 endpoint.url));
  }
  return KeepFile(index, ids, server_path, dest_path, output);
}

std::optional<AttemptError> HiddenStatesClient::Impl::KeepFile(int64_t index,
                                                               std::span<const int64_t> ids,
                                                               const std::string& server_path,
                                                               const std::string& dest_path,
                                                               SampleOutput& output) {
  Status waited = WaitForWriterAndRemoveLock(server_path, options.lock_timeout);
  if (!waited.ok()) return Retryable(waited);

  // The move comes first, to a temporary name next to the destination, so
  // the server directory does not fill up with rejected files and the
  // checks read the file only once.
  const std::string temp_path = fmt::format("{}.tmp-{}-{}", dest_path, ::getpid(),
                                            temp_counter.fetch_add(1));
  Status moved = MoveFile(server_path, temp_path);
  if (!moved.ok()) {
    std::error_code ignored;
    const bool missing = !fs::exists(server_path, ignored);
    if (missing) {
      return Retryable(Status::IOError("{} returned by the server does not exist; the server "
                                       "failed to write it, or client and server do not share "
                                       "this file system",
                                       server_path));
    }
    return Final(moved);
  }
  struct TempFile {
    std::string path;
    bool keep = false;
    ~TempFile() {
      if (!keep) std::remove(path.c_str());
    }
  } temp{temp_path};

  int64_t file_size = 0;
  if (auto error = CheckFile(temp_path, server_path, ids, file_size)) return error;

  // NOTE: no fsync, so the rename is atomic against process crashes but a
  // power loss may leave an empty or short file; --validate-outputs finds it.
  if (std::rename(temp_path.c_str(), dest_path.c_str()) != 0) {
    return Final(Status::IOError("cannot rename {} to {}: {}", temp_path, dest_path,
                                 std::strerror(errno)));
  }
  temp.keep = true;
  output.path = dest_path;
  output.tokens = static_cast<int64_t>(ids.size());
  output.bytes = file_size;
  return std::nullopt;
}

Result<SampleOutput> HiddenStatesClient::Generate(int64_t index, std::span<const int64_t> ids,
                                                  const std::string& dest_path) {
  if (ids.empty()) return Status::Invalid("sample {} has no tokens; nothing to request", index);
  const ClientOptions& options = impl_->options;
  SampleOutput output;
  const Endpoint* previous = nullptr;
  Status last;
  for (int attempt = 0; attempt <= options.max_retries; ++attempt) {
    if (attempt > 0) {
      const auto wait = options.backoff * (1 << std::min(attempt - 1, 20));
      spdlog::warn("sample {}: attempt {} of {} failed, retrying in {} ms: {}", index, attempt,
                   options.max_retries + 1, wait.count(), last.message());
      std::this_thread::sleep_for(wait);
    }
    Endpoint& endpoint = impl_->ChooseEndpoint(previous);
    previous = &endpoint;
    endpoint.in_flight.fetch_add(1);
    auto error = impl_->Attempt(endpoint, index, ids, dest_path, output);
    endpoint.in_flight.fetch_sub(1);
    if (!error) {
      output.attempts = attempt + 1;
      return output;
    }
    last = error->status;
    if (!error->retryable) return last.WithContext(fmt::format("sample {}", index));
  }
  return Status(last.code(), fmt::format("sample {}: gave up after {} attempts: {}", index,
                                         options.max_retries + 1, last.message()));
}

}  // namespace draftforge::hidden_states
