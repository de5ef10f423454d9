// Value: the runtime value of the chat-template engine, with Python semantics.
//
// Jinja2 evaluates templates over Python objects, and chat templates show
// Python behaviour in their output: `True`, list repr, exact integers,
// float repr, code-point string lengths. Value models the subset templates
// see: undefined, None, bool, int (int64, exact), float (double), str (UTF-8),
// list and tuple, dict with insertion order, namespace and callables.
//
// Containers are shared by reference like Python objects. The sandbox is
// immutable, so only a namespace is ever mutated after creation.
//
// Errors inside the engine are thrown as TemplateException and converted to a
// Status at the public boundary (ChatTemplate::Compile and Render), so they
// never escape the library.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace draftforge::chat_template {

// The Python exception class a render failure corresponds to.
enum class ErrorType {
  kTemplateError,      // raise_exception(), or a template that fails to compile
  kTemplateSyntaxError,
  kUndefinedError,
  kTypeError,
  kSecurityError,      // the immutable sandbox rejected an attribute
  kIndexError,
  kValueError,
  kZeroDivisionError,
  kOverflowError,
  kAttributeError,
  kRecursionError,     // nesting deeper than kMaxNestingDepth
  kUnsupported,        // a valid Jinja feature this engine does not implement
};

const char* ErrorTypeName(ErrorType type);

class TemplateException : public std::runtime_error {
 public:
  TemplateException(ErrorType type, std::string message, int line = 0)
      : std::runtime_error(message), type_(type), message_(std::move(message)), line_(line) {}
  ErrorType type() const { return type_; }
  const std::string& message() const { return message_; }
  int line() const { return line_; }
  void set_line(int line) { line_ = line; }

 private:
  ErrorType type_;
  std::string message_;
  int line_;
};

[[noreturn]] void ThrowError(ErrorType type, std::string message);

// Limit on template nesting, macro recursion and repr depth. Python stops
// runaway recursion with RecursionError near 1000 frames; a fixed lower limit
// keeps the C++ stack safe for any input.
inline constexpr int kMaxNestingDepth = 256;

// Limit on the size of one string or list a template builds by repetition or
// padding ('x' * n, center, indent widths). Python fails such requests with
// MemoryError or OverflowError once they exceed memory, which takes long.
inline constexpr int64_t kMaxBuiltSize = int64_t{1} << 28;

// Raises OverflowError when `count` copies of `unit` elements exceed kMaxBuiltSize.
inline void CheckBuiltSize(int64_t count, int64_t unit) {
  if (count > 0 && unit > 0 && count > kMaxBuiltSize / unit) {
    ThrowError(ErrorType::kOverflowError, "result of repetition or padding is too large");
  }
}

enum class ValueKind { kUndefined, kNone, kBool, kInt, kFloat, kString, kList, kDict, kCallable };

class Value;
class Interpreter;

struct ListData {
  std::vector<Value> items;
  bool is_tuple = false;
};

struct DictData {
  std::vector<std::pair<Value, Value>> items;  // insertion order
  bool is_namespace = false;                   // Jinja's namespace(): attribute set allowed
};

struct CallArgs {
  std::vector<Value> positional;
  std::vector<std::pair<std::string, Value>> keyword;
};

struct Callable {
  std::string name;
  std::function<Value(CallArgs&, Interpreter&)> fn;
};

// Why a value is undefined: the text of the UndefinedError (or SecurityError)
// raised when the value is used beyond printing, testing and iterating.
// Templates test for missing attributes far more often than they fail on
// them, so a missing attribute stores its owner's type and name and the
// message is formatted only when raised.
struct UndefinedInfo {
  std::string message;
  ErrorType error = ErrorType::kUndefinedError;
  std::string owner;      // Jinja's object_type_repr of the object, e.g. "dict object"
  std::string attribute;  // the missing attribute, when `owner` is set

  std::string Message() const;
};

class Value {
 public:
  Value() : kind_(ValueKind::kUndefined) {}

  static Value Undefined(std::string message, ErrorType error = ErrorType::kUndefinedError);
  // "'<owner>' has no attribute '<attribute>'", formatted when raised.
  static Value MissingAttribute(std::string owner, std::string attribute);
  static Value None();
  static Value Bool(bool b);
  static Value Int(int64_t i);
  static Value Float(double f);
  static Value String(std::string s, bool safe = false);
  static Value List(std::vector<Value> items = {});
  static Value Tuple(std::vector<Value> items);
  static Value Dict();
  static Value Namespace();
  static Value Function(std::string name, std::function<Value(CallArgs&, Interpreter&)> fn);
  static Value FromJson(const nlohmann::ordered_json& json);

  ValueKind kind() const { return kind_; }
  bool is_undefined() const { return kind_ == ValueKind::kUndefined; }
  bool is_none() const { return kind_ == ValueKind::kNone; }
  bool is_bool() const { return kind_ == ValueKind::kBool; }
  bool is_int() const { return kind_ == ValueKind::kInt; }
  bool is_float() const { return kind_ == ValueKind::kFloat; }
  // int or bool (bool is a subclass of int in Python) or float.
  bool is_number() const {
    return kind_ == ValueKind::kInt || kind_ == ValueKind::kFloat || kind_ == ValueKind::kBool;
  }
  bool is_integral() const { return kind_ == ValueKind::kInt || kind_ == ValueKind::kBool; }
  bool is_string() const { return kind_ == ValueKind::kString; }
  bool is_list() const { return kind_ == ValueKind::kList; }
  bool is_tuple() const { return kind_ == ValueKind::kList && list_->is_tuple; }
  bool is_dict() const { return kind_ == ValueKind::kDict; }
  bool is_namespace() const { return kind_ == ValueKind::kDict && dict_->is_namespace; }
  bool is_callable() const { return kind_ == ValueKind::kCallable; }
  bool is_safe() const { return safe_; }

  bool as_bool() const { return bool_; }
  int64_t as_int() const { return kind_ == ValueKind::kBool ? (bool_ ? 1 : 0) : int_; }
  double as_double() const { return kind_ == ValueKind::kFloat ? float_ : static_cast<double>(as_int()); }
  const std::string& str() const { return *string_; }
  const std::vector<Value>& items() const { return list_->items; }
  const DictData& dict() const { return *dict_; }
  DictData& mutable_dict() const { return *dict_; }
  std::vector<Value>& mutable_items() const { return list_->items; }
  const Callable& callable() const { return *callable_; }
  const UndefinedInfo& undefined_info() const;

  // Python truthiness; undefined is false.
  bool Truthy() const;

  // Python type name: 'str', 'int', 'list', 'dict', 'NoneType', ...
  std::string TypeName() const;

  // Dict lookup by string key; nullptr when absent.
  const Value* Find(std::string_view key) const;
  const Value* Find(const Value& key) const;
  // Adds or replaces a key (for building dicts and namespaces).
  void Set(const Value& key, Value value) const;
  void Set(std::string key, Value value) const;

  // Raises the UndefinedError (or SecurityError) an undefined value carries.
  [[noreturn]] void ThrowUndefined() const;

 private:
  ValueKind kind_;
  bool bool_ = false;
  bool safe_ = false;  // markupsafe.Markup: already escaped
  int64_t int_ = 0;
  double float_ = 0.0;
  std::shared_ptr<const std::string> string_;
  std::shared_ptr<ListData> list_;
  std::shared_ptr<DictData> dict_;
  std::shared_ptr<Callable> callable_;
  std::shared_ptr<UndefinedInfo> undefined_;
};

// Python str(value): what `{{ value }}` prints. Undefined prints as "".
std::string ToPythonStr(const Value& value);
// Python repr(value).
std::string ToPythonRepr(const Value& value);
// Python repr of a float: shortest round-trip digits, "2.5", "1e+100", "1.0".
std::string FloatRepr(double value);
// Python repr of a str: quotes chosen as Python chooses them, escapes for
// non-printable characters.
std::string StringRepr(std::string_view s);

// Python ==, with int/float/bool cross-type equality.
bool ValuesEqual(const Value& a, const Value& b);
// Python <, raising TypeError for unorderable types. Returns a < b.
bool ValueLess(const Value& a, const Value& b);

struct JsonDumpOptions {
  bool ensure_ascii = false;
  bool sort_keys = false;
  bool has_indent = false;
  std::string indent;  // the per-level indent text when has_indent
  std::string item_separator = ", ";
  std::string key_separator = ": ";
};

// Python json.dumps(value, ...). Raises TypeError for values JSON cannot hold
// (undefined, callables).
std::string JsonDumps(const Value& value, const JsonDumpOptions& options);

// Converts back to JSON (for tests and callers); undefined becomes null.
nlohmann::ordered_json ToJson(const Value& value);

}  // namespace draftforge::chat_template
