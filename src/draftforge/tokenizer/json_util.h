// Small simdjson DOM accessors for reading tokenizer.json, with errors that
// name the field and its location.
#pragma once

#include <simdjson.h>

#include <optional>
#include <string>
#include <string_view>

#include "draftforge/util/status.h"

namespace draftforge::tokenizer::internal {

inline std::optional<std::string_view> OptionalString(simdjson::dom::element object, std::string_view key) {
  std::string_view value;
  if (object[key].get(value) != simdjson::SUCCESS) return std::nullopt;
  return value;
}

// The boolean member `key`, or `fallback` when it is absent or not a boolean.
inline bool BoolOr(simdjson::dom::element object, std::string_view key, bool fallback) {
  bool value;
  if (object[key].get(value) != simdjson::SUCCESS) return fallback;
  return value;
}

inline Result<simdjson::dom::element> RequiredField(simdjson::dom::element object, std::string_view key,
                                                    const std::string& context) {
  simdjson::dom::element value;
  if (object[key].get(value) != simdjson::SUCCESS) {
    return Status::Invalid("{}: missing field \"{}\"", context, key);
  }
  return value;
}

inline Result<std::string> RequiredString(simdjson::dom::element object, std::string_view key,
                                          const std::string& context) {
  std::string_view value;
  if (object[key].get(value) != simdjson::SUCCESS) {
    return Status::Invalid("{}: field \"{}\" is missing or not a string", context, key);
  }
  return std::string(value);
}

inline Result<simdjson::dom::array> RequiredArray(simdjson::dom::element object, std::string_view key,
                                                  const std::string& context) {
  simdjson::dom::array value;
  if (object[key].get(value) != simdjson::SUCCESS) {
    return Status::Invalid("{}: field \"{}\" is missing or not an array", context, key);
  }
  return value;
}

}  // namespace draftforge::tokenizer::internal
