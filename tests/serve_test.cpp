// `draftforge serve` over HTTP: vLLM's completions protocol, the hidden-states
// file with its .lock, and rejection of bad requests without stopping.
#include <gtest/gtest.h>
#include <httplib.h>
#include <torch/torch.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "draftforge/engine/llama_model.h"
#include "draftforge/hidden_states/hs_file.h"
#include "draftforge/hidden_states/hs_lock.h"
#include "serve_process.h"
#include "test_support.h"

namespace draftforge {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using testing::ServeProcess;
using testing::TempDir;

const std::vector<int64_t> kIds = {1, 403, 407, 261, 378, 410, 379, 13};

std::string CompletionBody(const std::string& model, const json& prompt) {
  json body = {{"model", model}, {"prompt", prompt}, {"max_tokens", 1}, {"return_token_ids", true}};
  return body.dump();
}

httplib::Result Post(httplib::Client& client, const std::string& body) {
  return client.Post("/v1/completions", body, "application/json");
}

// Checks the vLLM error body shape and returns its message.
std::string ErrorMessage(const httplib::Result& response) {
  json body = json::parse(response->body, nullptr, false);
  EXPECT_TRUE(body.is_object()) << response->body;
  if (!body.is_object() || !body.contains("error")) return "";
  EXPECT_EQ(body["error"]["code"], response->status);
  EXPECT_TRUE(body["error"]["type"].is_string());
  return body["error"]["message"].get<std::string>();
}

TEST(Serve, CompletionWritesHiddenStatesFile) {
  DF_REQUIRE_SHARED(model_dir, "models/stories260k");
  TempDir dir;
  const fs::path output = dir.path() / "hs";
  ServeProcess server(dir.path(), model_dir.string(),
                      {"--layer-ids", "5", "1", "2", "3", "--hidden-states-path", output.string()});
  ASSERT_TRUE(server.ok()) << server.Log();
  httplib::Client client("127.0.0.1", server.port());

  auto models = client.Get("/v1/models");
  ASSERT_TRUE(models);
  ASSERT_EQ(models->status, 200);
  json listed = json::parse(models->body);
  EXPECT_EQ(listed["object"], "list");
  EXPECT_EQ(listed["data"][0]["id"], model_dir.string());

  auto response = Post(client, CompletionBody(model_dir.string(), kIds));
  ASSERT_TRUE(response);
  ASSERT_EQ(response->status, 200) << response->body;
  json body = json::parse(response->body);
  EXPECT_EQ(body["object"], "text_completion");
  EXPECT_EQ(body["model"], model_dir.string());
  EXPECT_EQ(body["choices"].size(), 1u);
  EXPECT_EQ(body["choices"][0]["prompt_token_ids"].get<std::vector<int64_t>>(), kIds);
  EXPECT_EQ(body["choices"][0]["token_ids"].size(), 1u);
  EXPECT_EQ(body["usage"]["prompt_tokens"], kIds.size());
  const std::string path = body["kv_transfer_params"]["hidden_states_path"].get<std::string>();
  EXPECT_EQ(fs::path(path).parent_path(), output);
  EXPECT_TRUE(fs::path(path).filename().string().starts_with("cmpl-"));

  // The lock file exists when the response arrives and stays after the write.
  EXPECT_TRUE(fs::exists(path + ".lock"));
  ASSERT_TRUE(hidden_states::WaitForWriterAndRemoveLock(path, std::chrono::seconds(10)).ok());
  auto file = hidden_states::ReadHiddenStatesFile(path);
  ASSERT_TRUE(file.ok()) << file.status().ToString();

  // Same values as the engine in this process, slots in ascending id order.
  auto model = engine::LlamaModel::Load(model_dir.string()).ValueOrDie();
  std::vector<int64_t> layer_ids = {1, 2, 3, 5};
  auto forward = model->Forward(kIds, layer_ids, true);
  ASSERT_TRUE(forward.ok());
  EXPECT_EQ(file->hidden_states.sizes(), forward->hidden_states.sizes());
  EXPECT_LT((file->hidden_states - forward->hidden_states).abs().max().item<double>(), 1e-5);
  EXPECT_EQ(file->token_ids.scalar_type(), torch::kInt64);
  EXPECT_EQ(body["choices"][0]["token_ids"][0].get<int64_t>(),
            forward->logits[static_cast<int64_t>(kIds.size()) - 1].argmax().item<int64_t>());
}

TEST(Serve, RejectsBadRequestsAndKeepsServing) {
  DF_REQUIRE_SHARED(model_dir, "models/stories260k");
  TempDir dir;
  ServeProcess server(dir.path(), model_dir.string(),
                      {"--layer-ids", "1", "2", "3", "5", "--hidden-states-path",
                       (dir.path() / "hs").string(), "--max-body-bytes", "4096",
                       "--allow-custom-save-path"});
  ASSERT_TRUE(server.ok()) << server.Log();
  httplib::Client client("127.0.0.1", server.port());
  const std::string model = model_dir.string();

  struct Case {
    std::string name;
    std::string body;
    int status;
    std::string message_part;
  };
  std::vector<Case> cases = {
      {"malformed JSON", "{\"prompt\": [1, 2", 400, "not valid JSON"},
      {"not an object", "[1, 2, 3]", 400, "JSON object"},
      {"out of vocabulary", CompletionBody(model, {1, 2, 512}), 400, "Token id 512 is out of vocabulary"},
      {"negative id", CompletionBody(model, {1, -1}), 400, "out of vocabulary"},
      {"text prompt", CompletionBody(model, "Once upon a time"), 400, "no tokenizer"},
      {"empty prompt", CompletionBody(model, json::array()), 400, "non-empty"},
      {"too long", CompletionBody(model, std::vector<int64_t>(512, 5)), 400, "maximum context length"},
      {"other model", CompletionBody("other", {1, 2}), 404, "does not exist"},
      {"max_tokens 5", json({{"model", model}, {"prompt", {1, 2}}, {"max_tokens", 5}}).dump(), 400,
       "max_tokens"},
      {"path traversal",
       json({{"model", model}, {"prompt", {1, 2}},
             {"kv_transfer_params", {{"hidden_states_path", (dir.path() / "a/../../x.safetensors").string()}}}})
           .dump(),
       400, "'..'"},
      {"relative path",
       json({{"model", model}, {"prompt", {1, 2}},
             {"kv_transfer_params", {{"hidden_states_path", "x.safetensors"}}}})
           .dump(),
       400, "absolute"},
      {"oversized body", CompletionBody(model, std::vector<int64_t>(3000, 5)), 413, "4096 bytes"},
  };
  for (const Case& test_case : cases) {
    SCOPED_TRACE(test_case.name);
    auto response = Post(client, test_case.body);
    ASSERT_TRUE(response) << "no response: " << httplib::to_string(response.error());
    EXPECT_EQ(response->status, test_case.status) << response->body;
    EXPECT_NE(ErrorMessage(response).find(test_case.message_part), std::string::npos)
        << response->body;
  }
  auto unknown = client.Get("/v1/unknown");
  ASSERT_TRUE(unknown);
  EXPECT_EQ(unknown->status, 404);

  // Still serving, and nothing was written for the rejected requests.
  httplib::Client fresh("127.0.0.1", server.port());
  auto good = Post(fresh, CompletionBody(model, kIds));
  ASSERT_TRUE(good);
  EXPECT_EQ(good->status, 200) << good->body;
  EXPECT_FALSE(fs::exists(dir.path() / "x.safetensors"));
  EXPECT_NE(server.Log().find("HTTP 400"), std::string::npos);
}

TEST(Serve, CustomSavePathOnlyWhenAllowed) {
  DF_REQUIRE_SHARED(model_dir, "models/stories260k");
  TempDir dir;
  const fs::path custom = dir.path() / "custom" / "sub" / "one.safetensors";
  const std::string body =
      json({{"model", model_dir.string()}, {"prompt", kIds}, {"max_tokens", 1},
            {"return_token_ids", true},
            {"kv_transfer_params", {{"hidden_states_path", custom.string()}}}})
          .dump();
  {
    ServeProcess server(dir.path(), model_dir.string(),
                        {"--layer-ids", "1", "2", "3", "5", "--hidden-states-path",
                         (dir.path() / "hs").string()});
    ASSERT_TRUE(server.ok()) << server.Log();
    httplib::Client client("127.0.0.1", server.port());
    auto response = Post(client, body);
    ASSERT_TRUE(response);
    ASSERT_EQ(response->status, 200) << response->body;
    const std::string path = json::parse(response->body)["kv_transfer_params"]["hidden_states_path"];
    EXPECT_EQ(fs::path(path).parent_path(), dir.path() / "hs");
    EXPECT_NE(server.Log().find("--allow-custom-save-path"), std::string::npos);
  }
  ServeProcess server(dir.path(), model_dir.string(),
                      {"--layer-ids", "1", "2", "3", "5", "--hidden-states-path",
                       (dir.path() / "hs").string(), "--allow-custom-save-path"});
  ASSERT_TRUE(server.ok()) << server.Log();
  httplib::Client client("127.0.0.1", server.port());
  auto response = Post(client, body);
  ASSERT_TRUE(response);
  ASSERT_EQ(response->status, 200) << response->body;
  EXPECT_EQ(json::parse(response->body)["kv_transfer_params"]["hidden_states_path"], custom.string());
  ASSERT_TRUE(hidden_states::WaitForWriterAndRemoveLock(custom.string(), std::chrono::seconds(10)).ok());
  EXPECT_TRUE(hidden_states::ReadHiddenStatesFile(custom.string()).ok());
}

TEST(Serve, BatchPromptAndZeroWork) {
  DF_REQUIRE_SHARED(model_dir, "models/stories260k");
  TempDir dir;
  ServeProcess server(dir.path(), model_dir.string(),
                      {"--layer-ids", "1", "2", "3", "5", "--hidden-states-path",
                       (dir.path() / "hs").string(), "--zero-work"});
  ASSERT_TRUE(server.ok()) << server.Log();
  httplib::Client client("127.0.0.1", server.port());
  auto response = Post(client, CompletionBody(model_dir.string(), json::array({kIds, {1, 2, 3}})));
  ASSERT_TRUE(response);
  ASSERT_EQ(response->status, 200) << response->body;
  json body = json::parse(response->body);
  ASSERT_EQ(body["choices"].size(), 2u);
  EXPECT_EQ(body["choices"][1]["index"], 1);
  EXPECT_EQ(body["choices"][1]["prompt_token_ids"].get<std::vector<int64_t>>(),
            (std::vector<int64_t>{1, 2, 3}));
  EXPECT_EQ(body["usage"]["prompt_tokens"], kIds.size() + 3);
  const std::string path = body["kv_transfer_params"]["hidden_states_path"];
  ASSERT_TRUE(hidden_states::WaitForWriterAndRemoveLock(path, std::chrono::seconds(10)).ok());
  auto file = hidden_states::ReadHiddenStatesFile(path);
  ASSERT_TRUE(file.ok()) << file.status().ToString();
  EXPECT_EQ(file->hidden_states.sizes(), (std::vector<int64_t>{8, 4, 64}));
  EXPECT_EQ(file->hidden_states.abs().max().item<float>(), 0.0f);
}

}  // namespace
}  // namespace draftforge
