#include <fmt/format.h>

#include "draftforge/chat_template/chat_template.h"

namespace draftforge::chat_template {

namespace {

using Json = nlohmann::ordered_json;

// speculators' role mapping; false for roles it maps to assistant by default.
bool MapRole(const std::string& raw, std::string* role) {
  if (raw == "human" || raw == "user") {
    *role = "user";
  } else if (raw == "gpt" || raw == "assistant") {
    *role = "assistant";
  } else if (raw == "system" || raw == "tool") {
    *role = raw;
  } else {
    *role = "assistant";
    return false;
  }
  return true;
}

const Json* Field(const Json& object, const char* key) {
  auto it = object.find(key);
  return it == object.end() ? nullptr : &*it;
}

}  // namespace

Result<Json> NormalizeMessages(const Json& raw_messages, int64_t* unknown_roles) {
  if (!raw_messages.is_array()) {
    return Status::Invalid("a conversation must be a JSON list of messages, got {}", raw_messages.type_name());
  }
  Json out = Json::array();
  for (size_t i = 0; i < raw_messages.size(); ++i) {
    const Json& raw = raw_messages[i];
    Json message = Json::object();
    if (raw.is_string()) {
      message["role"] = i % 2 == 0 ? "user" : "assistant";
      message["content"] = raw;
      out.push_back(std::move(message));
      continue;
    }
    if (!raw.is_object()) {
      return Status::Invalid("message {} must be an object with role/content or from/value, got {}", i,
                             raw.dump().substr(0, 200));
    }

    const Json* role_field = Field(raw, "from");
    if (role_field == nullptr || role_field->is_null()) role_field = Field(raw, "role");
    std::string raw_role;
    if (role_field != nullptr && role_field->is_string()) raw_role = role_field->get<std::string>();
    std::string role;
    if (!MapRole(raw_role, &role) && unknown_roles != nullptr) ++*unknown_roles;
    message["role"] = role;

    const Json* content = Field(raw, "value");
    if (content == nullptr || content->is_null()) content = Field(raw, "content");
    if (content == nullptr || content->is_null()) {
      message["content"] = "";
    } else {
      message["content"] = *content;
    }

    for (const char* key : {"tool_calls", "tool_call_id"}) {
      const Json* field = Field(raw, key);
      if (field != nullptr) message[key] = *field;
    }
    const Json* thinking = Field(raw, "thinking");
    if (thinking == nullptr || thinking->is_null()) thinking = Field(raw, "reasoning_content");
    if (thinking != nullptr && !thinking->is_null()) {
      message["thinking"] = *thinking;
      message["reasoning_content"] = *thinking;
    }
    out.push_back(std::move(message));
  }
  return out;
}

}  // namespace draftforge::chat_template
