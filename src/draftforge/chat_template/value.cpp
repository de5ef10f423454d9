#include "draftforge/chat_template/value.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <cmath>

#include "draftforge/chat_template/py_string.h"

namespace draftforge::chat_template {

const char* ErrorTypeName(ErrorType type) {
  switch (type) {
    case ErrorType::kTemplateError: return "TemplateError";
    case ErrorType::kTemplateSyntaxError: return "TemplateSyntaxError";
    case ErrorType::kUndefinedError: return "UndefinedError";
    case ErrorType::kTypeError: return "TypeError";
    case ErrorType::kSecurityError: return "SecurityError";
    case ErrorType::kIndexError: return "IndexError";
    case ErrorType::kValueError: return "ValueError";
    case ErrorType::kZeroDivisionError: return "ZeroDivisionError";
    case ErrorType::kOverflowError: return "OverflowError";
    case ErrorType::kAttributeError: return "AttributeError";
    case ErrorType::kRecursionError: return "RecursionError";
    case ErrorType::kUnsupported: return "Unsupported";
  }
  return "TemplateError";
}

void ThrowError(ErrorType type, std::string message) {
  throw TemplateException(type, std::move(message));
}

Value Value::Undefined(std::string message, ErrorType error) {
  Value v;
  v.undefined_ = std::make_shared<UndefinedInfo>();
  v.undefined_->message = std::move(message);
  v.undefined_->error = error;
  return v;
}

Value Value::MissingAttribute(std::string owner, std::string attribute) {
  Value v;
  v.undefined_ = std::make_shared<UndefinedInfo>();
  v.undefined_->owner = std::move(owner);
  v.undefined_->attribute = std::move(attribute);
  return v;
}

std::string UndefinedInfo::Message() const {
  if (owner.empty()) return message;
  return fmt::format("{} has no attribute {}", StringRepr(owner), StringRepr(attribute));
}

Value Value::None() {
  Value v;
  v.kind_ = ValueKind::kNone;
  return v;
}

Value Value::Bool(bool b) {
  Value v;
  v.kind_ = ValueKind::kBool;
  v.bool_ = b;
  return v;
}

Value Value::Int(int64_t i) {
  Value v;
  v.kind_ = ValueKind::kInt;
  v.int_ = i;
  return v;
}

Value Value::Float(double f) {
  Value v;
  v.kind_ = ValueKind::kFloat;
  v.float_ = f;
  return v;
}

Value Value::String(std::string s, bool safe) {
  Value v;
  v.kind_ = ValueKind::kString;
  v.string_ = std::make_shared<const std::string>(std::move(s));
  v.safe_ = safe;
  return v;
}

Value Value::List(std::vector<Value> items) {
  Value v;
  v.kind_ = ValueKind::kList;
  v.list_ = std::make_shared<ListData>();
  v.list_->items = std::move(items);
  return v;
}

Value Value::Tuple(std::vector<Value> items) {
  Value v = List(std::move(items));
  v.list_->is_tuple = true;
  return v;
}

Value Value::Dict() {
  Value v;
  v.kind_ = ValueKind::kDict;
  v.dict_ = std::make_shared<DictData>();
  return v;
}

Value Value::Namespace() {
  Value v = Dict();
  v.dict_->is_namespace = true;
  return v;
}

Value Value::Function(std::string name, std::function<Value(CallArgs&, Interpreter&)> fn) {
  Value v;
  v.kind_ = ValueKind::kCallable;
  v.callable_ = std::make_shared<Callable>(Callable{std::move(name), std::move(fn)});
  return v;
}

Value Value::FromJson(const nlohmann::ordered_json& json) {
  switch (json.type()) {
    case nlohmann::ordered_json::value_t::null:
      return None();
    case nlohmann::ordered_json::value_t::boolean:
      return Bool(json.get<bool>());
    case nlohmann::ordered_json::value_t::number_integer:
      return Int(json.get<int64_t>());
    case nlohmann::ordered_json::value_t::number_unsigned: {
      uint64_t u = json.get<uint64_t>();
      // NOTE: Python ints are unbounded, but values above INT64_MAX become floats here.
      if (u > static_cast<uint64_t>(INT64_MAX)) return Float(static_cast<double>(u));
      return Int(static_cast<int64_t>(u));
    }
    case nlohmann::ordered_json::value_t::number_float:
      return Float(json.get<double>());
    case nlohmann::ordered_json::value_t::string:
      return String(json.get<std::string>());
    case nlohmann::ordered_json::value_t::array: {
      std::vector<Value> items;
      items.reserve(json.size());
      for (const auto& item : json) items.push_back(FromJson(item));
      return List(std::move(items));
    }
    case nlohmann::ordered_json::value_t::object: {
      Value dict = Dict();
      dict.dict_->items.reserve(json.size());
      for (auto it = json.begin(); it != json.end(); ++it) {
        dict.dict_->items.emplace_back(String(it.key()), FromJson(it.value()));
      }
      return dict;
    }
    default:
      return None();
  }
}

const UndefinedInfo& Value::undefined_info() const {
  static const UndefinedInfo kPlain = [] {
    UndefinedInfo info;
    info.message = "value is undefined";
    return info;
  }();
  return undefined_ ? *undefined_ : kPlain;
}

void Value::ThrowUndefined() const {
  const UndefinedInfo& info = undefined_info();
  ThrowError(info.error, info.Message());
}

bool Value::Truthy() const {
  switch (kind_) {
    case ValueKind::kUndefined: return false;
    case ValueKind::kNone: return false;
    case ValueKind::kBool: return bool_;
    case ValueKind::kInt: return int_ != 0;
    case ValueKind::kFloat: return float_ != 0.0;
    case ValueKind::kString: return !string_->empty();
    case ValueKind::kList: return !list_->items.empty();
    case ValueKind::kDict: return dict_->is_namespace || !dict_->items.empty();
    case ValueKind::kCallable: return true;
  }
  return false;
}

std::string Value::TypeName() const {
  switch (kind_) {
    case ValueKind::kUndefined: return "Undefined";
    case ValueKind::kNone: return "NoneType";
    case ValueKind::kBool: return "bool";
    case ValueKind::kInt: return "int";
    case ValueKind::kFloat: return "float";
    case ValueKind::kString: return "str";
    case ValueKind::kList: return list_->is_tuple ? "tuple" : "list";
    case ValueKind::kDict: return dict_->is_namespace ? "Namespace" : "dict";
    case ValueKind::kCallable: return "function";
  }
  return "object";
}

const Value* Value::Find(std::string_view key) const {
  if (kind_ != ValueKind::kDict) return nullptr;
  for (const auto& [k, v] : dict_->items) {
    if (k.is_string() && k.str() == key) return &v;
  }
  return nullptr;
}

const Value* Value::Find(const Value& key) const {
  if (kind_ != ValueKind::kDict) return nullptr;
  if (key.is_string()) return Find(std::string_view(key.str()));
  for (const auto& [k, v] : dict_->items) {
    if (ValuesEqual(k, key)) return &v;
  }
  return nullptr;
}

void Value::Set(const Value& key, Value value) const {
  for (auto& [k, v] : dict_->items) {
    if (ValuesEqual(k, key)) {
      v = std::move(value);
      return;
    }
  }
  dict_->items.emplace_back(key, std::move(value));
}

void Value::Set(std::string key, Value value) const { Set(String(std::move(key)), std::move(value)); }

std::string FloatRepr(double value) {
  if (std::isnan(value)) return "nan";
  if (std::isinf(value)) return value > 0 ? "inf" : "-inf";
  if (value == 0.0) return std::signbit(value) ? "-0.0" : "0.0";

  // Shortest round-trip digits, then Python's layout: positional when the
  // decimal exponent is in [-4, 16), scientific otherwise.
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof(buf), value, std::chars_format::scientific);
  std::string sci(buf, res.ptr);
  bool negative = sci[0] == '-';
  if (negative) sci.erase(0, 1);
  size_t e_pos = sci.find('e');
  std::string mantissa = sci.substr(0, e_pos);
  int exponent = std::stoi(sci.substr(e_pos + 1));
  std::string digits;
  for (char c : mantissa) {
    if (c != '.') digits.push_back(c);
  }
  int decpt = exponent + 1;  // digits d1 d2 ... with the point after `decpt` digits
  std::string out = negative ? "-" : "";
  if (decpt <= -4 || decpt > 16) {
    out += digits.substr(0, 1);
    if (digits.size() > 1) out += "." + digits.substr(1);
    out += fmt::format("e{}{:02d}", exponent < 0 ? '-' : '+', std::abs(exponent));
  } else if (decpt <= 0) {
    out += "0." + std::string(static_cast<size_t>(-decpt), '0') + digits;
  } else if (static_cast<size_t>(decpt) >= digits.size()) {
    out += digits + std::string(static_cast<size_t>(decpt) - digits.size(), '0') + ".0";
  } else {
    out += digits.substr(0, static_cast<size_t>(decpt)) + "." + digits.substr(static_cast<size_t>(decpt));
  }
  return out;
}

std::string StringRepr(std::string_view s) {
  bool has_single = s.find('\'') != std::string_view::npos;
  bool has_double = s.find('"') != std::string_view::npos;
  char quote = (has_single && !has_double) ? '"' : '\'';
  std::string out(1, quote);
  for (char32_t cp : DecodeUtf8(s)) {
    if (cp == static_cast<char32_t>(quote) || cp == '\\') {
      out.push_back('\\');
      out.push_back(static_cast<char>(cp));
    } else if (cp == '\n') {
      out += "\\n";
    } else if (cp == '\r') {
      out += "\\r";
    } else if (cp == '\t') {
      out += "\\t";
    } else if (!IsPythonPrintable(cp)) {
      if (cp < 0x100) {
        out += fmt::format("\\x{:02x}", static_cast<uint32_t>(cp));
      } else if (cp < 0x10000) {
        out += fmt::format("\\u{:04x}", static_cast<uint32_t>(cp));
      } else {
        out += fmt::format("\\U{:08x}", static_cast<uint32_t>(cp));
      }
    } else {
      AppendUtf8(out, cp);
    }
  }
  out.push_back(quote);
  return out;
}

namespace {

std::string ReprAtDepth(const Value& value, int depth);

}  // namespace

std::string ToPythonRepr(const Value& value) { return ReprAtDepth(value, 0); }

namespace {

// A namespace can contain itself, so the depth is bounded.
std::string ReprAtDepth(const Value& value, int depth) {
  if (depth > kMaxNestingDepth) {
    ThrowError(ErrorType::kRecursionError, "maximum recursion depth exceeded while getting the repr of an object");
  }
  switch (value.kind()) {
    case ValueKind::kUndefined: return "Undefined";
    case ValueKind::kNone: return "None";
    case ValueKind::kBool: return value.as_bool() ? "True" : "False";
    case ValueKind::kInt: return std::to_string(value.as_int());
    case ValueKind::kFloat: return FloatRepr(value.as_double());
    case ValueKind::kString: return StringRepr(value.str());
    case ValueKind::kList: {
      bool tuple = value.is_tuple();
      std::string out = tuple ? "(" : "[";
      const auto& items = value.items();
      for (size_t i = 0; i < items.size(); ++i) {
        if (i > 0) out += ", ";
        out += ReprAtDepth(items[i], depth + 1);
      }
      if (tuple && items.size() == 1) out += ",";
      out += tuple ? ")" : "]";
      return out;
    }
    case ValueKind::kDict: {
      std::string out = value.is_namespace() ? "<Namespace {" : "{";
      bool first = true;
      for (const auto& [k, v] : value.dict().items) {
        if (!first) out += ", ";
        first = false;
        out += ReprAtDepth(k, depth + 1) + ": " + ReprAtDepth(v, depth + 1);
      }
      out += value.is_namespace() ? "}>" : "}";
      return out;
    }
    case ValueKind::kCallable: return "<function " + value.callable().name + ">";
  }
  return "";
}

}  // namespace

std::string ToPythonStr(const Value& value) {
  switch (value.kind()) {
    case ValueKind::kUndefined: return "";
    case ValueKind::kString: return value.str();
    default: return ToPythonRepr(value);
  }
}

bool ValuesEqual(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) {
    if (a.is_integral() && b.is_integral()) return a.as_int() == b.as_int();
    return a.as_double() == b.as_double();
  }
  if (a.kind() != b.kind()) return false;
  switch (a.kind()) {
    case ValueKind::kUndefined:
    case ValueKind::kNone:
      return true;
    case ValueKind::kString:
      return a.str() == b.str();
    case ValueKind::kList: {
      if (a.is_tuple() != b.is_tuple()) return false;
      const auto& x = a.items();
      const auto& y = b.items();
      if (x.size() != y.size()) return false;
      for (size_t i = 0; i < x.size(); ++i) {
        if (!ValuesEqual(x[i], y[i])) return false;
      }
      return true;
    }
    case ValueKind::kDict: {
      if (a.is_namespace() || b.is_namespace()) return &a.dict() == &b.dict();
      if (a.dict().items.size() != b.dict().items.size()) return false;
      for (const auto& [k, v] : a.dict().items) {
        const Value* other = b.Find(k);
        if (!other || !ValuesEqual(v, *other)) return false;
      }
      return true;
    }
    case ValueKind::kCallable:
      return &a.callable() == &b.callable();
    default:
      return false;
  }
}

bool ValueLess(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) {
    if (a.is_integral() && b.is_integral()) return a.as_int() < b.as_int();
    return a.as_double() < b.as_double();
  }
  // UTF-8 byte order equals code-point order, which is Python's str order.
  if (a.is_string() && b.is_string()) return a.str() < b.str();
  if (a.is_list() && b.is_list() && a.is_tuple() == b.is_tuple()) {
    const auto& x = a.items();
    const auto& y = b.items();
    for (size_t i = 0; i < x.size() && i < y.size(); ++i) {
      if (ValuesEqual(x[i], y[i])) continue;
      return ValueLess(x[i], y[i]);
    }
    return x.size() < y.size();
  }
  if (a.is_undefined()) a.ThrowUndefined();
  if (b.is_undefined()) b.ThrowUndefined();
  ThrowError(ErrorType::kTypeError, fmt::format("'<' not supported between instances of '{}' and '{}'",
                                                a.TypeName(), b.TypeName()));
}

namespace {

void AppendJsonString(std::string& out, std::string_view s, bool ensure_ascii) {
  out.push_back('"');
  for (char32_t cp : DecodeUtf8(s)) {
    switch (cp) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (cp < 0x20) {
          out += fmt::format("\\u{:04x}", static_cast<uint32_t>(cp));
        } else if (ensure_ascii && cp >= 0x7F) {
          if (cp >= 0x10000) {
            uint32_t v = static_cast<uint32_t>(cp) - 0x10000;
            out += fmt::format("\\u{:04x}\\u{:04x}", 0xD800 + (v >> 10), 0xDC00 + (v & 0x3FF));
          } else {
            out += fmt::format("\\u{:04x}", static_cast<uint32_t>(cp));
          }
        } else {
          AppendUtf8(out, cp);
        }
    }
  }
  out.push_back('"');
}

std::string JsonFloat(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "Infinity" : "-Infinity";
  return FloatRepr(value);
}

// json.dumps converts str, int, float, bool and None keys to strings.
std::string JsonKey(const Value& key) {
  switch (key.kind()) {
    case ValueKind::kString: return key.str();
    case ValueKind::kBool: return key.as_bool() ? "true" : "false";
    case ValueKind::kNone: return "null";
    case ValueKind::kInt: return std::to_string(key.as_int());
    case ValueKind::kFloat: return JsonFloat(key.as_double());
    default:
      ThrowError(ErrorType::kTypeError,
                 fmt::format("keys must be str, int, float, bool or None, not {}", key.TypeName()));
  }
}

void DumpJson(std::string& out, const Value& value, const JsonDumpOptions& options, int level) {
  auto newline_indent = [&](int depth) {
    std::string s = "\n";
    for (int i = 0; i < depth; ++i) s += options.indent;
    return s;
  };
  switch (value.kind()) {
    case ValueKind::kNone: out += "null"; return;
    case ValueKind::kBool: out += value.as_bool() ? "true" : "false"; return;
    case ValueKind::kInt: out += std::to_string(value.as_int()); return;
    case ValueKind::kFloat: out += JsonFloat(value.as_double()); return;
    case ValueKind::kString: AppendJsonString(out, value.str(), options.ensure_ascii); return;
    case ValueKind::kList: {
      const auto& items = value.items();
      if (items.empty()) {
        out += "[]";
        return;
      }
      out += "[";
      std::string separator = options.item_separator;
      if (options.has_indent) {
        separator += newline_indent(level + 1);
        out += newline_indent(level + 1);
      }
      for (size_t i = 0; i < items.size(); ++i) {
        if (i > 0) out += separator;
        DumpJson(out, items[i], options, level + 1);
      }
      if (options.has_indent) out += newline_indent(level);
      out += "]";
      return;
    }
    case ValueKind::kDict: {
      if (value.is_namespace()) break;
      std::vector<std::pair<std::string, const Value*>> entries;
      for (const auto& [k, v] : value.dict().items) entries.emplace_back(JsonKey(k), &v);
      if (entries.empty()) {
        out += "{}";
        return;
      }
      if (options.sort_keys) {
        std::stable_sort(entries.begin(), entries.end(),
                         [](const auto& x, const auto& y) { return x.first < y.first; });
      }
      out += "{";
      std::string separator = options.item_separator;
      if (options.has_indent) {
        separator += newline_indent(level + 1);
        out += newline_indent(level + 1);
      }
      for (size_t i = 0; i < entries.size(); ++i) {
        if (i > 0) out += separator;
        AppendJsonString(out, entries[i].first, options.ensure_ascii);
        out += options.key_separator;
        DumpJson(out, *entries[i].second, options, level + 1);
      }
      if (options.has_indent) out += newline_indent(level);
      out += "}";
      return;
    }
    default:
      break;
  }
  ThrowError(ErrorType::kTypeError,
             fmt::format("Object of type {} is not JSON serializable", value.TypeName()));
}

}  // namespace

std::string JsonDumps(const Value& value, const JsonDumpOptions& options) {
  std::string out;
  DumpJson(out, value, options, 0);
  return out;
}

nlohmann::ordered_json ToJson(const Value& value) {
  switch (value.kind()) {
    case ValueKind::kBool: return value.as_bool();
    case ValueKind::kInt: return value.as_int();
    case ValueKind::kFloat: return value.as_double();
    case ValueKind::kString: return value.str();
    case ValueKind::kList: {
      auto array = nlohmann::ordered_json::array();
      for (const auto& item : value.items()) array.push_back(ToJson(item));
      return array;
    }
    case ValueKind::kDict: {
      auto object = nlohmann::ordered_json::object();
      for (const auto& [k, v] : value.dict().items) object[ToPythonStr(k)] = ToJson(v);
      return object;
    }
    default:
      return nullptr;
  }
}

}  // namespace draftforge::chat_template
