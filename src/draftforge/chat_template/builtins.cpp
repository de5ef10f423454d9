// Jinja2 3.1's built-in filters, tests and globals, the str/dict/list methods
// the sandbox allows, and transformers' tojson, raise_exception and
// strftime_now.
#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <unordered_map>

#include <utf8proc.h>

#include "draftforge/chat_template/interpreter.h"
#include "draftforge/chat_template/py_string.h"

namespace draftforge::chat_template {

std::string PercentFormat(const std::string& format, const Value& args);

namespace {

// Binds positional and keyword arguments to parameter names, Python style.
class Args {
 public:
  Args(CallArgs& args, std::string function, std::vector<const char*> names)
      : args_(args), function_(std::move(function)), names_(std::move(names)) {
    if (args_.positional.size() > names_.size()) {
      ThrowError(ErrorType::kTypeError, fmt::format("{}() takes at most {} argument(s) ({} given)", function_,
                                                    names_.size(), args_.positional.size()));
    }
    for (const auto& [key, value] : args_.keyword) {
      if (std::find_if(names_.begin(), names_.end(), [&](const char* n) { return key == n; }) == names_.end()) {
        ThrowError(ErrorType::kTypeError,
                   fmt::format("{}() got an unexpected keyword argument '{}'", function_, key));
      }
    }
  }

  const Value* Get(size_t index) const {
    if (index < args_.positional.size()) return &args_.positional[index];
    for (const auto& [key, value] : args_.keyword) {
      if (key == names_[index]) return &value;
    }
    return nullptr;
  }

  Value Or(size_t index, Value fallback) const {
    const Value* v = Get(index);
    return v != nullptr ? *v : fallback;
  }

  const Value& Required(size_t index) const {
    const Value* v = Get(index);
    if (v == nullptr) {
      ThrowError(ErrorType::kTypeError,
                 fmt::format("{}() missing required argument '{}'", function_, names_[index]));
    }
    return *v;
  }

  int64_t Int(size_t index, int64_t fallback) const {
    const Value* v = Get(index);
    if (v == nullptr || v->is_none()) return fallback;
    if (!v->is_integral()) {
      ThrowError(ErrorType::kTypeError, fmt::format("{}() argument '{}' must be an integer, not {}", function_,
                                                    names_[index], v->TypeName()));
    }
    return v->as_int();
  }

  bool Bool(size_t index, bool fallback) const {
    const Value* v = Get(index);
    return v != nullptr ? v->Truthy() : fallback;
  }

  std::optional<std::string> OptString(size_t index) const {
    const Value* v = Get(index);
    if (v == nullptr || v->is_none()) return std::nullopt;
    return ToPythonStr(*v);
  }

 private:
  CallArgs& args_;
  std::string function_;
  std::vector<const char*> names_;
};

Value Str(std::string s) { return Value::String(std::move(s)); }

std::string Escape(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&#34;"; break;
      case '\'': out += "&#39;"; break;
      default: out.push_back(c);
    }
  }
  return out;
}

int64_t Length(const Value& v) {
  switch (v.kind()) {
    case ValueKind::kUndefined: return 0;
    case ValueKind::kString: return CodePointLength(v.str());
    case ValueKind::kList: return static_cast<int64_t>(v.items().size());
    case ValueKind::kDict: if (!v.is_namespace()) return static_cast<int64_t>(v.dict().items.size()); break;
    default: break;
  }
  ThrowError(ErrorType::kTypeError, fmt::format("object of type '{}' has no len()", v.TypeName()));
}

// Sort key for case-insensitive comparisons of Jinja's sort, dictsort, unique.
Value SortKey(const Value& v, bool case_sensitive) {
  if (!case_sensitive && v.is_string()) return Str(PyLower(v.str()));
  return v;
}

// Jinja's make_attrgetter: "a.b.0" walks attributes and indices.
Value GetAttributePath(Interpreter& interp, const Value& item, const Value& attribute) {
  if (attribute.is_integral()) return interp.GetItem(item, attribute);
  Value current = item;
  std::string path = ToPythonStr(attribute);
  size_t start = 0;
  while (true) {
    size_t dot = path.find('.', start);
    std::string part = path.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    bool numeric = !part.empty() && std::all_of(part.begin(), part.end(), ::isdigit);
    current = interp.GetItem(current, numeric ? Value::Int(std::stoll(part)) : Str(part));
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  return current;
}

void SortValues(std::vector<Value>& values, bool reverse, const std::function<Value(const Value&)>& key) {
  std::vector<std::pair<Value, Value>> keyed;
  keyed.reserve(values.size());
  for (auto& v : values) keyed.emplace_back(key(v), v);
  std::stable_sort(keyed.begin(), keyed.end(), [reverse](const auto& a, const auto& b) {
    return reverse ? ValueLess(b.first, a.first) : ValueLess(a.first, b.first);
  });
  for (size_t i = 0; i < values.size(); ++i) values[i] = keyed[i].second;
}

// Python round(x, ndigits): correctly rounded, ties to even on the exact
// binary value, which is what glibc's printf does.
double RoundFloat(double value, int64_t ndigits) {
  if (!std::isfinite(value)) return value;
  if (ndigits >= 0) {
    if (ndigits > 300) return value;
    char buf[512];
    std::snprintf(buf, sizeof(buf), "%.*f", static_cast<int>(ndigits), value);
    return std::strtod(buf, nullptr);
  }
  double scale = std::pow(10.0, static_cast<double>(-ndigits));
  return std::nearbyint(value / scale) * scale;
}

std::optional<int64_t> ParsePythonInt(std::string s, int base) {
  s = PyStrip(s, std::nullopt, true, true);
  s.erase(std::remove(s.begin(), s.end(), '_'), s.end());
  if (s.empty()) return std::nullopt;
  size_t start = (s[0] == '+' || s[0] == '-') ? 1 : 0;
  if (base == 16 && s.size() > start + 1 && s[start] == '0' && (s[start + 1] == 'x' || s[start + 1] == 'X')) {
    s.erase(start, 2);
  }
  if (start >= s.size()) return std::nullopt;
  char* end = nullptr;
  errno = 0;
  long long v = std::strtoll(s.c_str(), &end, base);
  if (errno != 0 || end != s.c_str() + s.size()) return std::nullopt;
  return v;
}

std::optional<double> ParsePythonFloat(std::string s) {
  s = PyStrip(s, std::nullopt, true, true);
  s.erase(std::remove(s.begin(), s.end(), '_'), s.end());
  if (s.empty()) return std::nullopt;
  char* end = nullptr;
  double v = std::strtod(s.c_str(), &end);
  if (end != s.c_str() + s.size()) return std::nullopt;
  std::string lower = PyLower(s);
  // strtod accepts hex floats, which Python's float() rejects.
  if (lower.find("0x") != std::string::npos) return std::nullopt;
  return v;
}

// ---------------------------------------------------------------------------
// Filters
// ---------------------------------------------------------------------------

using FilterFn = Value (*)(const Value& input, CallArgs& args, Interpreter& interp);

Value FilterTojson(const Value& input, CallArgs& call, Interpreter&) {
  Args a(call, "tojson", {"ensure_ascii", "indent", "separators", "sort_keys"});
  JsonDumpOptions options;
  options.ensure_ascii = a.Bool(0, false);
  options.sort_keys = a.Bool(3, false);
  Value indent = a.Or(1, Value::None());
  if (!indent.is_none()) {
    options.has_indent = true;
    if (indent.is_integral()) CheckBuiltSize(indent.as_int(), 1);
    options.indent = indent.is_integral() ? std::string(static_cast<size_t>(std::max<int64_t>(0, indent.as_int())), ' ')
                                          : ToPythonStr(indent);
    options.item_separator = ",";
  }
  Value separators = a.Or(2, Value::None());
  if (!separators.is_none()) {
    if (!separators.is_list() || separators.items().size() != 2) {
      ThrowError(ErrorType::kValueError, "tojson separators must be a (item_separator, key_separator) pair");
    }
    options.item_separator = ToPythonStr(separators.items()[0]);
    options.key_separator = ToPythonStr(separators.items()[1]);
  }
  return Str(JsonDumps(input, options));
}

Value FilterLength(const Value& input, CallArgs& call, Interpreter&) {
  Args a(call, "length", {});
  return Value::Int(Length(input));
}

Value FilterFirst(const Value& input, CallArgs& call, Interpreter& interp) {
  Args a(call, "first", {});
  std::vector<Value> items = interp.Iterate(input);
  if (items.empty()) return Value::Undefined("No first item, sequence was empty.");
  return items.front();
}

Value FilterLast(const Value& input, CallArgs& call, Interpreter& interp) {
  Args a(call, "last", {});
  std::vector<Value> items = interp.Iterate(input);
  if (items.empty()) return Value::Undefined("No last item, sequence was empty.");
  return items.back();
}

Value FilterJoin(const Value& input, CallArgs& call, Interpreter& interp) {
  Args a(call, "join", {"d", "attribute"});
  std::string separator = ToPythonStr(a.Or(0, Str("")));
  const Value* attribute = a.Get(1);
  std::string out;
  bool first = true;
  for (const auto& item : interp.Iterate(input)) {
    if (!first) out += separator;
    first = false;
    out += ToPythonStr(attribute && !attribute->is_none() ? GetAttributePath(interp, item, *attribute) : item);
  }
  return Str(std::move(out));
}

Value FilterTrim(const Value& input, CallArgs& call, Interpreter&) {
  Args a(call, "trim", {"chars"});
  return Str(PyStrip(ToPythonStr(input), a.OptString(0), true, true));
}

Value FilterUpper(const Value& input, CallArgs& call, Interpreter&) {
  Args a(call, "upper", {});
  return Str(PyUpper(ToPythonStr(input)));
}

Value FilterLower(const Value& input, CallArgs& call, Interpreter&) {
  Args a(call, "lower", {});
  return Str(PyLower(ToPythonStr(input)));
}

// Jinja's title filter: capitalise each word, where words start after
// whitespace, '-', '(', '{', '[' or '<'.
Value FilterTitle(const Value& input, CallArgs& call, Interpreter&) {
  Args a(call, "title", {});
  std::vector<char32_t> cps = DecodeUtf8(ToPythonStr(input));
  auto is_boundary = [](char32_t cp) {
    return IsPythonSpace(cp) || cp == '-' || cp == '(' || cp == '{' || cp == '[' || cp == '<';
  };
  std::string out;
  size_t i = 0;
  while (i < cps.size()) {
    size_t j = i;
    if (is_boundary(cps[i])) {
      while (j < cps.size() && is_boundary(cps[j])) ++j;
      out += EncodeUtf8(cps, i, j);
    } else {
      while (j < cps.size() && !is_boundary(cps[j])) ++j;
      std::string word = EncodeUtf8(cps, i, j);
      std::string head = EncodeUtf8(cps, i, i + 1);
      out += PyUpper(head) + PyLower(EncodeUtf8(cps, i + 1, j));
    }
    i = j;
  }
  return Str(std::move(out));
}

Value FilterCapitalize(const Value& input, CallArgs& call, Interpreter&) {
  Args a(call, "capitalize", {});
  return Str(PyCapitalize(ToPythonStr(input)));
}

Value FilterReplace(const Value& input, CallArgs& call, Interpreter&) {
  Args a(call, "replace", {"old", "new", "count"});
  int64_t count = a.Int(2, -1);
  return Str(PyReplace(ToPythonStr(input), ToPythonStr(a.Required(0)), ToPythonStr(a.Required(1)), count));
}

Value FilterDefault(const Value& input, CallArgs& call, Interpreter&) {
  Args a(call, "default", {"default_value", "boolean"});
  bool use_default = input.is_undefined() || (a.Bool(1, false) && !input.Truthy());
  return use_default ? a.Or(0, Str("")) : input;
}

Value FilterList(const Value& input, CallArgs& call, Interpreter& interp) {
  Args a(call, "list", {});
  return Value::List(interp.Iterate(input));
}

Value FilterItems(const Value& input, CallArgs& call, Interpreter&) {
  Args a(call, "items", {});
  if (input.is_undefined()) return Value::List();
  if (!input.is_dict() || input.is_namespace()) {
    ThrowError(ErrorType::kTypeError, "Can only get item pairs from a mapping.");
  }
  std::vector<Value> pairs;
  for (const auto& [k, v] : input.dict().items) pairs.push_back(Value::Tuple({k, v}));
  return Value::List(std::move(pairs));
}

Value FilterDictsort(const Value& input, CallArgs& call, Interpreter&) {
  Args a(call, "dictsort", {"case_sensitive", "by", "reverse"});
  if (!input.is_dict()) {
    ThrowError(ErrorType::kAttributeError, fmt::format("'{}' object has no attribute 'items'", input.TypeName()));
  }
  bool case_sensitive = a.Bool(0, false);
  std::string by = ToPythonStr(a.Or(1, Str("key")));
  if (by != "key" && by != "value") ThrowError(ErrorType::kValueError, "You can only sort by either 'key' or 'value'");
  std::vector<Value> pairs;
  for (const auto& [k, v] : input.dict().items) pairs.push_back(Value::Tuple({k, v}));
  size_t index = by == "key" ? 0 : 1;
  SortValues(pairs, a.Bool(2, false),
             [&](const Value& pair) { return SortKey(pair.items()[index], case_sensitive); });
  return Value::List(std::move(pairs));
}

Value ApplyMapItem(Interpreter& interp, const Value& item, CallArgs& call) {
  // map(attribute='x', default=...) or map('filter', *args, **kwargs).
  for (const auto& [key, value] : call.keyword) {
    if (key == "attribute") {
      Value result = GetAttributePath(interp, item, value);
      if (result.is_undefined()) {
        for (const auto& [k2, v2] : call.keyword) {
          if (k2 == "default") return v2;
        }
      }
      return result;
    }
  }
  if (call.positional.empty()) ThrowError(ErrorType::kTypeError, "map requires a filter name or an attribute");
  CallArgs rest;
  rest.positional.assign(call.positional.begin() + 1, call.positional.end());
  rest.keyword = call.keyword;
  return interp.ApplyFilter(ToPythonStr(call.positional[0]), item, rest);
}

Value FilterMap(const Value& input, CallArgs& call, Interpreter& interp) {
  std::vector<Value> out;
  if (!input.Truthy()) return Value::List();  // Jinja checks `if value:` first
  for (const auto& item : interp.Iterate(input)) out.push_back(ApplyMapItem(interp, item, call));
  return Value::List(std::move(out));
}

// select / reject / selectattr / rejectattr.
Value SelectOrReject(const Value& input, CallArgs& call, Interpreter& interp, bool select, bool by_attribute) {
  size_t next = 0;
  Value attribute;
  if (by_attribute) {
    if (call.positional.empty()) ThrowError(ErrorType::kTypeError, "selectattr/rejectattr need an attribute");
    attribute = call.positional[next++];
  }
  std::string test;
  if (call.positional.size() > next) test = ToPythonStr(call.positional[next++]);
  CallArgs test_args;
  test_args.positional.assign(call.positional.begin() + static_cast<std::ptrdiff_t>(std::min(next, call.positional.size())),
                              call.positional.end());
  test_args.keyword = call.keyword;
  std::vector<Value> out;
  if (!input.Truthy()) return Value::List();  // Jinja checks `if seq:` first
  for (const auto& item : interp.Iterate(input)) {
    Value subject = by_attribute ? GetAttributePath(interp, item, attribute) : item;
    bool passed = test.empty() ? subject.Truthy() : interp.ApplyTest(test, subject, test_args);
    if (passed == select) out.push_back(item);
  }
  return Value::List(std::move(out));
}

Value FilterSelect(const Value& input, CallArgs& call, Interpreter& interp) {
  return SelectOrReject(input, call, interp, true, false);
}
Value FilterReject(const Value& input, CallArgs& call, Interpreter& interp) {
  return SelectOrReject(input, call, interp, false, false);
}
Value FilterSelectattr(const Value& input, CallArgs& call, Interpreter& interp) {
  return SelectOrReject(input, call, interp, true, true);
}
Value FilterRejectattr(const Value& input, CallArgs& call, Interpreter& interp) {
  return SelectOrReject(input, call, interp, false, true);
}

Value FilterSafe(const Value& input, CallArgs& call, Interpreter&) {
  Args a(call, "safe", {});
  return Value::String(ToPythonStr(input), true);
}

Value FilterString(const Value& input, CallArgs& call, Interpreter&) {
  Args a(call, "string", {});
  if (input.is_string()) return input;
  return Str(ToPythonStr(input));
}

Value FilterEscape(const Value& input, CallArgs& call, Interpreter&) {
  Args a(call, "escape", {});
  if (input.is_string() && input.is_safe()) return input;
  return Value::String(Escape(ToPythonStr(input)), true);
}

Value FilterForceescape(const Value& input, CallArgs& call, Interpreter&) {
  Args a(call, "forceescape", {});
  return Value::String(Escape(ToPythonStr(input)), true);
}

Value FilterInt(const Value& input, CallArgs& call, Interpreter&) {
  Args a(call, "int", {"default", "base"});
  Value fallback = a.Or(0, Value::Int(0));
  int64_t base = a.Int(1, 10);
  if (input.is_undefined()) input.ThrowUndefined();
  if (input.is_integral()) return Value::Int(input.as_int());
  if (input.is_float()) {
    if (!std::isfinite(input.as_double())) return fallback;
    double truncated = std::trunc(input.as_double());
    // NOTE: Python returns an exact big int here; beyond int64 this keeps the float.
    if (std::fabs(truncated) >= 9.2e18) return Value::Float(truncated);
    return Value::Int(static_cast<int64_t>(truncated));
  }
  if (input.is_string()) {
    if (auto v = ParsePythonInt(input.str(), static_cast<int>(base))) return Value::Int(*v);
    if (auto d = ParsePythonFloat(input.str()); d && std::isfinite(*d)) {
      return Value::Int(static_cast<int64_t>(std::trunc(*d)));
    }
  }
  return fallback;
}

Value FilterFloat(const Value& input, CallArgs& call, Interpreter&) {
  Args a(call, "float", {"default"});
  Value fallback = a.Or(0, Value::Float(0.0));
  if (input.is_undefined()) input.ThrowUndefined();
  if (input.is_number()) return Value::Float(input.as_double());
  if (input.is_string()) {
    if (auto d = ParsePythonFloat(input.str())) return Value::Float(*d);
  }
  return fallback;
}

Value FilterAbs(const Value& input, CallArgs& call, Interpreter&) {
  Args a(call, "abs", {});
  if (input.is_integral()) return Value::Int(std::llabs(input.as_int()));
  if (input.is_float()) return Value::Float(std::fabs(input.as_double()));
  if (input.is_undefined()) input.ThrowUndefined();
  ThrowError(ErrorType::kTypeError, fmt::format("bad operand type for abs(): '{}'", input.TypeName()));
}

Value FilterRound(const Value& input, CallArgs& call, Interpreter&) {
  Args a(call, "round", {"precision", "method"});
  int64_t precision = a.Int(0, 0);
  std::string method = ToPythonStr(a.Or(1, Str("common")));
  if (input.is_undefined()) input.ThrowUndefined();
  if (!input.is_number()) {
    ThrowError(ErrorType::kTypeError, fmt::format("type {} doesn't define __round__ method", input.TypeName()));
  }
  if (method == "common") {
    if (input.is_integral()) return Value::Int(input.as_int());
    return Value::Float(RoundFloat(input.as_double(), precision));
  }
  if (method != "ceil" && method != "floor") {
    ThrowError(ErrorType::kTypeError, "method must be common, ceil or floor");
  }
  double scale = std::pow(10.0, static_cast<double>(precision));
  double scaled = input.as_double() * scale;
  return Value::Float((method == "ceil" ? std::ceil(scaled) : std::floor(scaled)) / scale);
}

Value FilterIndent(const Value& input, CallArgs& call, Interpreter&) {
  Args a(call, "indent", {"width", "first", "blank"});
  Value width = a.Or(0, Value::Int(4));
  if (width.is_integral()) CheckBuiltSize(width.as_int(), 1);
  std::string indentation = width.is_string() ? width.str()
                                              : std::string(static_cast<size_t>(std::max<int64_t>(0, width.as_int())), ' ');
  bool first = a.Bool(1, false);
  bool blank = a.Bool(2, false);
  // Jinja appends "\n" to the input itself, which only a str supports.
  if (input.is_undefined()) input.ThrowUndefined();
  if (!input.is_string()) {
    ThrowError(ErrorType::kTypeError,
               fmt::format("unsupported operand type(s) for +=: '{}' and 'str'", input.TypeName()));
  }
  std::string s = input.str() + "\n";
  std::vector<std::string> lines = PySplitLines(s);
  std::string out;
  if (blank) {
    for (size_t i = 0; i < lines.size(); ++i) {
      if (i > 0) out += "\n" + indentation;
      out += lines[i];
    }
  } else {
    out = lines.empty() ? "" : lines[0];
    for (size_t i = 1; i < lines.size(); ++i) {
      out += "\n";
      if (!lines[i].empty()) out += indentation;
      out += lines[i];
    }
  }
  if (first) out = indentation + out;
  return Str(std::move(out));
}

Value FilterUnique(const Value& input, CallArgs& call, Interpreter& interp) {
  Args a(call, "unique", {"case_sensitive", "attribute"});
  bool case_sensitive = a.Bool(0, false);
  const Value* attribute = a.Get(1);
  std::vector<Value> seen;
  std::vector<Value> out;
  for (const auto& item : interp.Iterate(input)) {
    Value key = SortKey(attribute && !attribute->is_none() ? GetAttributePath(interp, item, *attribute) : item,
                        case_sensitive);
    bool duplicate = std::any_of(seen.begin(), seen.end(), [&](const Value& s) { return ValuesEqual(s, key); });
    if (duplicate) continue;
    seen.push_back(key);
    out.push_back(item);
  }
  return Value::List(std::move(out));
}

Value FilterSort(const Value& input, CallArgs& call, Interpreter& interp) {
  Args a(call, "sort", {"reverse", "case_sensitive", "attribute"});
  bool case_sensitive = a.Bool(1, false);
  const Value* attribute = a.Get(2);
  std::vector<Value> items = interp.Iterate(input);
  SortValues(items, a.Bool(0, false), [&](const Value& item) {
    return SortKey(attribute && !attribute->is_none() ? GetAttributePath(interp, item, *attribute) : item,
                   case_sensitive);
  });
  return Value::List(std::move(items));
}

Value FilterReverse(const Value& input, CallArgs& call, Interpreter& interp) {
  Args a(call, "reverse", {});
  if (input.is_string()) {
    std::vector<char32_t> cps = DecodeUtf8(input.str());
    std::reverse(cps.begin(), cps.end());
    return Str(EncodeUtf8(cps, 0, cps.size()));
  }
  std::vector<Value> items = interp.Iterate(input);
  std::reverse(items.begin(), items.end());
  return Value::List(std::move(items));
}

Value MinMax(const Value& input, CallArgs& call, Interpreter& interp, bool want_max) {
  Args a(call, want_max ? "max" : "min", {"case_sensitive", "attribute"});
  bool case_sensitive = a.Bool(0, false);
  const Value* attribute = a.Get(1);
  std::vector<Value> items = interp.Iterate(input);
  if (items.empty()) return Value::Undefined(fmt::format("No aggregated item, sequence was empty."));
  auto key = [&](const Value& item) {
    return SortKey(attribute && !attribute->is_none() ? GetAttributePath(interp, item, *attribute) : item,
                   case_sensitive);
  };
  Value best = items[0];
  Value best_key = key(best);
  for (size_t i = 1; i < items.size(); ++i) {
    Value k = key(items[i]);
    if (want_max ? ValueLess(best_key, k) : ValueLess(k, best_key)) {
      best = items[i];
      best_key = k;
    }
  }
  return best;
}

Value FilterMax(const Value& input, CallArgs& call, Interpreter& interp) { return MinMax(input, call, interp, true); }
Value FilterMin(const Value& input, CallArgs& call, Interpreter& interp) { return MinMax(input, call, interp, false); }

Value FilterSum(const Value& input, CallArgs& call, Interpreter& interp) {
  Args a(call, "sum", {"attribute", "start"});
  const Value* attribute = a.Get(0);
  Value total = a.Or(1, Value::Int(0));
  for (const auto& item : interp.Iterate(input)) {
    Value v = attribute && !attribute->is_none() ? GetAttributePath(interp, item, *attribute) : item;
    if (total.is_integral() && v.is_integral()) {
      total = Value::Int(total.as_int() + v.as_int());
    } else if (total.is_number() && v.is_number()) {
      total = Value::Float(total.as_double() + v.as_double());
    } else {
      ThrowError(ErrorType::kTypeError, fmt::format("unsupported operand type(s) for +: '{}' and '{}'",
                                                    total.TypeName(), v.TypeName()));
    }
  }
  return total;
}

Value FilterCenter(const Value& input, CallArgs& call, Interpreter&) {
  Args a(call, "center", {"width"});
  std::string s = ToPythonStr(input);
  int64_t width = a.Int(0, 80);
  CheckBuiltSize(width, 1);
  int64_t length = CodePointLength(s);
  if (width <= length) return Str(s);
  int64_t pad = width - length;
  // CPython: left = pad / 2 + (pad & width & 1).
  int64_t left = pad / 2 + (pad & width & 1);
  return Str(std::string(static_cast<size_t>(left), ' ') + s + std::string(static_cast<size_t>(pad - left), ' '));
}

Value FilterTruncate(const Value& input, CallArgs& call, Interpreter&) {
  Args a(call, "truncate", {"length", "killwords", "end", "leeway"});
  int64_t length = a.Int(0, 255);
  bool killwords = a.Bool(1, false);
  std::string end = ToPythonStr(a.Or(2, Str("...")));
  int64_t leeway = a.Int(3, 5);
  // Jinja compares len() of the input itself and returns short inputs unchanged.
  if (Length(input) <= length + leeway) return input;
  std::string s = ToPythonStr(input);
  std::vector<char32_t> cps = DecodeUtf8(s);
  int64_t end_length = CodePointLength(end);
  if (length < end_length) ThrowError(ErrorType::kValueError, "expected length >= len(end)");
  if (static_cast<int64_t>(cps.size()) <= length + leeway) return Str(s);
  std::string head = EncodeUtf8(cps, 0, static_cast<size_t>(length - end_length));
  if (killwords) return Str(head + end);
  size_t space = head.rfind(' ');
  if (space != std::string::npos) head.resize(space);
  return Str(head + end);
}

Value FilterWordcount(const Value& input, CallArgs& call, Interpreter&) {
  Args a(call, "wordcount", {});
  int64_t count = 0;
  bool in_word = false;
  for (char32_t cp : DecodeUtf8(ToPythonStr(input))) {
    bool word_char = cp == '_' || (cp < 0x80 ? std::isalnum(static_cast<int>(cp)) != 0 : !IsPythonSpace(cp));
    if (word_char && !in_word) ++count;
    in_word = word_char;
  }
  return Value::Int(count);
}

Value FilterBatch(const Value& input, CallArgs& call, Interpreter& interp) {
  Args a(call, "batch", {"linecount", "fill_with"});
  int64_t size = a.Int(0, 0);
  if (size <= 0) ThrowError(ErrorType::kValueError, "batch linecount must be positive");
  const Value* fill = a.Get(1);
  std::vector<Value> batches;
  std::vector<Value> current;
  for (const auto& item : interp.Iterate(input)) {
    current.push_back(item);
    if (static_cast<int64_t>(current.size()) == size) {
      batches.push_back(Value::List(std::move(current)));
      current.clear();
    }
  }
  if (!current.empty()) {
    if (fill && !fill->is_none()) {
      while (static_cast<int64_t>(current.size()) < size) current.push_back(*fill);
    }
    batches.push_back(Value::List(std::move(current)));
  }
  return Value::List(std::move(batches));
}

Value FilterAttr(const Value& input, CallArgs& call, Interpreter& interp) {
  Args a(call, "attr", {"name"});
  return interp.GetAttr(input, ToPythonStr(a.Required(0)));
}

Value FilterFormat(const Value& input, CallArgs& call, Interpreter&) {
  if (!call.keyword.empty() && !call.positional.empty()) {
    ThrowError(ErrorType::kTypeError, "can't handle positional and keyword arguments at the same time");
  }
  if (!call.keyword.empty()) {
    Value mapping = Value::Dict();
    for (const auto& [k, v] : call.keyword) mapping.Set(k, v);
    return Str(PercentFormat(ToPythonStr(input), mapping));
  }
  return Str(PercentFormat(ToPythonStr(input), Value::Tuple(call.positional)));
}

Value FilterPprint(const Value& input, CallArgs& call, Interpreter&) {
  Args a(call, "pprint", {});
  return Str(ToPythonRepr(input));
}

const std::unordered_map<std::string, FilterFn>& Filters() {
  static const std::unordered_map<std::string, FilterFn> kFilters = {
      {"abs", FilterAbs},           {"attr", FilterAttr},
      {"batch", FilterBatch},       {"capitalize", FilterCapitalize},
      {"center", FilterCenter},     {"count", FilterLength},
      {"d", FilterDefault},         {"default", FilterDefault},
      {"dictsort", FilterDictsort}, {"e", FilterEscape},
      {"escape", FilterEscape},     {"first", FilterFirst},
      {"float", FilterFloat},       {"forceescape", FilterForceescape},
      {"format", FilterFormat},     {"indent", FilterIndent},
      {"int", FilterInt},           {"items", FilterItems},
      {"join", FilterJoin},         {"last", FilterLast},
      {"length", FilterLength},     {"list", FilterList},
      {"lower", FilterLower},       {"map", FilterMap},
      {"max", FilterMax},           {"min", FilterMin},
      {"pprint", FilterPprint},     {"reject", FilterReject},
      {"rejectattr", FilterRejectattr}, {"replace", FilterReplace},
      {"reverse", FilterReverse},   {"round", FilterRound},
      {"safe", FilterSafe},         {"select", FilterSelect},
      {"selectattr", FilterSelectattr}, {"sort", FilterSort},
      {"string", FilterString},     {"sum", FilterSum},
      {"title", FilterTitle},       {"tojson", FilterTojson},
      {"trim", FilterTrim},         {"truncate", FilterTruncate},
      {"unique", FilterUnique},     {"upper", FilterUpper},
      {"wordcount", FilterWordcount},
  };
  return kFilters;
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

using TestFn = bool (*)(const Value& input, CallArgs& args, Interpreter& interp);

const Value& TestArgument(CallArgs& call, const char* test) {
  if (call.positional.empty()) {
    if (!call.keyword.empty()) return call.keyword[0].second;
    ThrowError(ErrorType::kTypeError, fmt::format("test '{}' requires an argument", test));
  }
  return call.positional[0];
}

// Python's a % b for the numeric tests (odd, even, divisibleby), as a double.
double PythonMod(const Value& a, const Value& b) {
  if (a.is_undefined()) a.ThrowUndefined();
  if (b.is_undefined()) b.ThrowUndefined();
  if (a.is_string()) ThrowError(ErrorType::kTypeError, "not all arguments converted during string formatting");
  if (!a.is_number() || !b.is_number()) {
    ThrowError(ErrorType::kTypeError, fmt::format("unsupported operand type(s) for %: '{}' and '{}'", a.TypeName(),
                                                  b.TypeName()));
  }
  if (a.is_integral() && b.is_integral()) {
    if (b.as_int() == 0) ThrowError(ErrorType::kZeroDivisionError, "integer modulo by zero");
    int64_t r = a.as_int() % b.as_int();
    if (r != 0 && ((r < 0) != (b.as_int() < 0))) r += b.as_int();
    return static_cast<double>(r);
  }
  if (b.as_double() == 0.0) ThrowError(ErrorType::kZeroDivisionError, "float modulo");
  double r = std::fmod(a.as_double(), b.as_double());
  if (r != 0 && ((r < 0) != (b.as_double() < 0))) r += b.as_double();
  return r;
}

bool IsSameAs(const Value& a, const Value& b) {
  if (a.kind() != b.kind()) return false;
  switch (a.kind()) {
    case ValueKind::kNone: case ValueKind::kUndefined: return true;
    case ValueKind::kBool: return a.as_bool() == b.as_bool();
    case ValueKind::kList: return &a.items() == &b.items();
    case ValueKind::kDict: return &a.dict() == &b.dict();
    case ValueKind::kCallable: return &a.callable() == &b.callable();
    default: return ValuesEqual(a, b);
  }
}

const std::unordered_map<std::string, TestFn>& Tests() {
  static const std::unordered_map<std::string, TestFn> kTests = {
      {"defined", [](const Value& v, CallArgs&, Interpreter&) { return !v.is_undefined(); }},
      {"undefined", [](const Value& v, CallArgs&, Interpreter&) { return v.is_undefined(); }},
      {"none", [](const Value& v, CallArgs&, Interpreter&) { return v.is_none(); }},
      {"boolean", [](const Value& v, CallArgs&, Interpreter&) { return v.is_bool(); }},
      {"true", [](const Value& v, CallArgs&, Interpreter&) { return v.is_bool() && v.as_bool(); }},
      {"false", [](const Value& v, CallArgs&, Interpreter&) { return v.is_bool() && !v.as_bool(); }},
      {"integer", [](const Value& v, CallArgs&, Interpreter&) { return v.is_int(); }},
      {"float", [](const Value& v, CallArgs&, Interpreter&) { return v.is_float(); }},
      {"number", [](const Value& v, CallArgs&, Interpreter&) { return v.is_number(); }},
      {"string", [](const Value& v, CallArgs&, Interpreter&) { return v.is_string(); }},
      {"mapping", [](const Value& v, CallArgs&, Interpreter&) { return v.is_dict() && !v.is_namespace(); }},
      {"sequence", [](const Value& v, CallArgs&, Interpreter&) {
         return v.is_string() || v.is_list() || (v.is_dict() && !v.is_namespace());
       }},
      {"iterable", [](const Value& v, CallArgs&, Interpreter&) {
         return v.is_undefined() || v.is_string() || v.is_list() || (v.is_dict() && !v.is_namespace());
       }},
      {"callable", [](const Value& v, CallArgs&, Interpreter&) { return v.is_callable(); }},
      {"lower", [](const Value& v, CallArgs&, Interpreter&) {
         std::string s = ToPythonStr(v);
         return PyLower(s) == s && PyUpper(s) != s;
       }},
      {"upper", [](const Value& v, CallArgs&, Interpreter&) {
         std::string s = ToPythonStr(v);
         return PyUpper(s) == s && PyLower(s) != s;
       }},
      {"escaped", [](const Value& v, CallArgs&, Interpreter&) { return v.is_string() && v.is_safe(); }},
      {"odd", [](const Value& v, CallArgs&, Interpreter&) { return PythonMod(v, Value::Int(2)) == 1.0; }},
      {"even", [](const Value& v, CallArgs&, Interpreter&) { return PythonMod(v, Value::Int(2)) == 0.0; }},
      {"divisibleby", [](const Value& v, CallArgs& c, Interpreter&) {
         return PythonMod(v, TestArgument(c, "divisibleby")) == 0.0;
       }},
      {"eq", [](const Value& v, CallArgs& c, Interpreter&) { return ValuesEqual(v, TestArgument(c, "eq")); }},
      {"ne", [](const Value& v, CallArgs& c, Interpreter&) { return !ValuesEqual(v, TestArgument(c, "ne")); }},
      {"lt", [](const Value& v, CallArgs& c, Interpreter&) { return ValueLess(v, TestArgument(c, "lt")); }},
      {"gt", [](const Value& v, CallArgs& c, Interpreter&) { return ValueLess(TestArgument(c, "gt"), v); }},
      {"le", [](const Value& v, CallArgs& c, Interpreter&) {
         const Value& o = TestArgument(c, "le");
         return ValueLess(v, o) || ValuesEqual(v, o);
       }},
      {"ge", [](const Value& v, CallArgs& c, Interpreter&) {
         const Value& o = TestArgument(c, "ge");
         return ValueLess(o, v) || ValuesEqual(v, o);
       }},
      {"sameas", [](const Value& v, CallArgs& c, Interpreter&) { return IsSameAs(v, TestArgument(c, "sameas")); }},
      {"in", [](const Value& v, CallArgs& c, Interpreter&) {
         const Value& container = TestArgument(c, "in");
         if (container.is_string()) return v.is_string() && container.str().find(v.str()) != std::string::npos;
         if (container.is_list()) {
           return std::any_of(container.items().begin(), container.items().end(),
                              [&](const Value& item) { return ValuesEqual(item, v); });
         }
         if (container.is_dict()) return container.Find(v) != nullptr;
         if (container.is_undefined()) return false;
         ThrowError(ErrorType::kTypeError,
                    fmt::format("argument of type '{}' is not iterable", container.TypeName()));
       }},
      {"filter", [](const Value& v, CallArgs&, Interpreter&) { return v.is_string() && IsKnownFilter(v.str()); }},
      {"test", [](const Value& v, CallArgs&, Interpreter&) { return v.is_string() && IsKnownTest(v.str()); }},
  };
  return kTests;
}

// Operator aliases of Jinja's tests.
std::string CanonicalTestName(const std::string& name) {
  static const std::unordered_map<std::string, std::string> kAliases = {
      {"==", "eq"}, {"equalto", "eq"}, {"!=", "ne"}, {"<", "lt"}, {"lessthan", "lt"},
      {">", "gt"},  {"greaterthan", "gt"}, {"<=", "le"}, {">=", "ge"},
  };
  auto it = kAliases.find(name);
  return it == kAliases.end() ? name : it->second;
}

// ---------------------------------------------------------------------------
// Methods
// ---------------------------------------------------------------------------

// A str method argument that Python requires to be a str.
const std::string& RequireStr(const Value& v) {
  if (v.is_undefined()) v.ThrowUndefined();
  if (!v.is_string()) ThrowError(ErrorType::kTypeError, fmt::format("must be str, not {}", v.TypeName()));
  return v.str();
}

std::optional<std::string> OptionalStringArg(const Value* v) {
  if (v == nullptr || v->is_none()) return std::nullopt;
  if (!v->is_string()) ThrowError(ErrorType::kTypeError, fmt::format("expected str, got {}", v->TypeName()));
  return v->str();
}

bool MatchesAffix(const std::string& s, const Value& affix, bool prefix) {
  auto check = [&](const Value& a) {
    if (!a.is_string()) {
      ThrowError(ErrorType::kTypeError,
                 fmt::format("{} first arg must be str or a tuple of str, not {}",
                             prefix ? "startswith" : "endswith", a.TypeName()));
    }
    const std::string& t = a.str();
    if (t.size() > s.size()) return false;
    return prefix ? s.compare(0, t.size(), t) == 0 : s.compare(s.size() - t.size(), t.size(), t) == 0;
  };
  if (affix.is_list()) {
    return std::any_of(affix.items().begin(), affix.items().end(), check);
  }
  return check(affix);
}

bool AllCodePoints(const std::string& s, bool (*predicate)(char32_t)) {
  if (s.empty()) return false;
  for (char32_t cp : DecodeUtf8(s)) {
    if (!predicate(cp)) return false;
  }
  return true;
}

std::string FormatSpec(const Value& value, const std::string& spec);

// Python str.format with positional and keyword fields; the format spec
// supports fill, alignment, width, precision and the s/d/f types.
std::string StrFormat(const std::string& format, CallArgs& call, Interpreter& interp) {
  std::string out;
  size_t auto_index = 0;
  for (size_t i = 0; i < format.size(); ++i) {
    char c = format[i];
    if (c == '{' && i + 1 < format.size() && format[i + 1] == '{') {
      out.push_back('{');
      ++i;
      continue;
    }
    if (c == '}' && i + 1 < format.size() && format[i + 1] == '}') {
      out.push_back('}');
      ++i;
      continue;
    }
    if (c != '{') {
      out.push_back(c);
      continue;
    }
    size_t close = format.find('}', i);
    if (close == std::string::npos) ThrowError(ErrorType::kValueError, "Single '{' encountered in format string");
    std::string field = format.substr(i + 1, close - i - 1);
    std::string spec;
    size_t colon = field.find(':');
    if (colon != std::string::npos) {
      spec = field.substr(colon + 1);
      field.resize(colon);
    }
    bool repr = false;
    if (field.size() >= 2 && field[field.size() - 2] == '!') {
      repr = field.back() == 'r';
      field.resize(field.size() - 2);
    }
    Value value;
    std::string name = field.substr(0, field.find_first_of(".["));
    std::string rest = field.substr(name.size());
    if (name.empty()) {
      if (auto_index >= call.positional.size()) ThrowError(ErrorType::kIndexError, "Replacement index out of range");
      value = call.positional[auto_index++];
    } else if (std::all_of(name.begin(), name.end(), ::isdigit)) {
      size_t index = std::stoul(name);
      if (index >= call.positional.size()) ThrowError(ErrorType::kIndexError, "Replacement index out of range");
      value = call.positional[index];
    } else {
      bool found = false;
      for (const auto& [k, v] : call.keyword) {
        if (k == name) {
          value = v;
          found = true;
        }
      }
      if (!found) ThrowError(ErrorType::kValueError, fmt::format("KeyError: '{}'", name));
    }
    while (!rest.empty()) {
      if (rest[0] == '.') {
        size_t end = rest.find_first_of(".[", 1);
        value = interp.GetAttr(value, rest.substr(1, end == std::string::npos ? std::string::npos : end - 1));
        rest = end == std::string::npos ? "" : rest.substr(end);
      } else {
        size_t end = rest.find(']');
        std::string key = rest.substr(1, end - 1);
        bool numeric = !key.empty() && std::all_of(key.begin(), key.end(), ::isdigit);
        value = interp.GetItem(value, numeric ? Value::Int(std::stoll(key)) : Str(key));
        rest = end == std::string::npos ? "" : rest.substr(end + 1);
      }
    }
    out += repr ? FormatSpec(Str(ToPythonRepr(value)), spec) : FormatSpec(value, spec);
    i = close;
  }
  return out;
}

std::string FormatSpec(const Value& value, const std::string& spec) {
  if (spec.empty()) return ToPythonStr(value);
  size_t p = 0;
  char fill = ' ';
  char align = '\0';
  if (spec.size() >= 2 && std::strchr("<>^=", spec[1])) {
    fill = spec[0];
    align = spec[1];
    p = 2;
  } else if (std::strchr("<>^=", spec[0])) {
    align = spec[0];
    p = 1;
  }
  bool zero = false;
  if (p < spec.size() && spec[p] == '0') {
    zero = true;
    ++p;
  }
  auto read_number = [&]() {
    int64_t n = 0;
    while (p < spec.size() && std::isdigit(static_cast<unsigned char>(spec[p]))) {
      n = n * 10 + (spec[p++] - '0');
      CheckBuiltSize(n, 1);
    }
    return static_cast<int>(n);
  };
  int width = read_number();
  int precision = -1;
  if (p < spec.size() && spec[p] == '.') {
    ++p;
    precision = read_number();
  }
  char type = p < spec.size() ? spec[p] : '\0';
  std::string body;
  if (type == 'f' || type == 'F' || type == 'e' || type == '%') {
    if (!value.is_number()) ThrowError(ErrorType::kValueError, "Unknown format code for non-number");
    double d = value.as_double() * (type == '%' ? 100.0 : 1.0);
    int digits = precision < 0 ? 6 : precision;
    body = type == 'e' ? fmt::format("{:.{}e}", d, digits) : fmt::format("{:.{}f}", d, digits);
    if (type == '%') body += "%";
  } else if (type == 'd') {
    if (!value.is_integral()) ThrowError(ErrorType::kValueError, "Unknown format code 'd' for non-integer");
    body = std::to_string(value.as_int());
  } else {
    body = ToPythonStr(value);
    if (precision >= 0 && value.is_string()) {
      std::vector<char32_t> cps = DecodeUtf8(body);
      body = EncodeUtf8(cps, 0, static_cast<size_t>(precision));
    }
  }
  int64_t length = CodePointLength(body);
  if (width <= length) return body;
  size_t pad = static_cast<size_t>(width - length);
  if (align == '\0') align = (value.is_number() && !value.is_bool()) ? '>' : '<';
  if (zero && align == '>') fill = '0';
  if (align == '<') return body + std::string(pad, fill);
  if (align == '^') return std::string(pad / 2, fill) + body + std::string(pad - pad / 2, fill);
  return std::string(pad, fill) + body;
}

Value StrMethod(const std::string& s, const std::string& name, CallArgs& call, Interpreter& interp) {
  if (name == "startswith" || name == "endswith") {
    Args a(call, name, {"prefix", "start", "end"});
    return Value::Bool(MatchesAffix(s, a.Required(0), name == "startswith"));
  }
  if (name == "strip" || name == "lstrip" || name == "rstrip") {
    Args a(call, name, {"chars"});
    return Str(PyStrip(s, OptionalStringArg(a.Get(0)), name != "rstrip", name != "lstrip"));
  }
  if (name == "split" || name == "rsplit") {
    Args a(call, name, {"sep", "maxsplit"});
    auto sep = OptionalStringArg(a.Get(0));
    if (sep && sep->empty()) ThrowError(ErrorType::kValueError, "empty separator");
    std::vector<Value> parts;
    for (auto& part : PySplit(s, sep, a.Int(1, -1), name == "rsplit")) parts.push_back(Str(std::move(part)));
    return Value::List(std::move(parts));
  }
  if (name == "splitlines") {
    Args a(call, name, {"keepends"});
    std::vector<Value> parts;
    for (auto& part : PySplitLines(s)) parts.push_back(Str(std::move(part)));
    return Value::List(std::move(parts));
  }
  if (name == "replace") {
    Args a(call, name, {"old", "new", "count"});
    return Str(PyReplace(s, RequireStr(a.Required(0)), RequireStr(a.Required(1)), a.Int(2, -1)));
  }
  if (name == "upper") return Str(PyUpper(s));
  if (name == "lower" || name == "casefold") return Str(PyLower(s));
  if (name == "title") return Str(PyTitle(s));
  if (name == "capitalize") return Str(PyCapitalize(s));
  if (name == "find" || name == "rfind" || name == "index" || name == "rindex") {
    Args a(call, name, {"sub"});
    int64_t found = PyFind(s, RequireStr(a.Required(0)), name[0] == 'r');
    if (found < 0 && (name == "index" || name == "rindex")) ThrowError(ErrorType::kValueError, "substring not found");
    return Value::Int(found);
  }
  if (name == "count") {
    Args a(call, name, {"sub"});
    return Value::Int(PyCount(s, RequireStr(a.Required(0))));
  }
  if (name == "join") {
    Args a(call, name, {"iterable"});
    std::string out;
    size_t i = 0;
    for (const auto& item : interp.Iterate(a.Required(0))) {
      if (!item.is_string()) {
        ThrowError(ErrorType::kTypeError,
                   fmt::format("sequence item {}: expected str instance, {} found", i, item.TypeName()));
      }
      if (i++ > 0) out += s;
      out += item.str();
    }
    return Str(std::move(out));
  }
  if (name == "format") return Str(StrFormat(s, call, interp));
  if (name == "removeprefix" || name == "removesuffix") {
    Args a(call, name, {"affix"});
    std::string affix = ToPythonStr(a.Required(0));
    if (name == "removeprefix" && s.compare(0, affix.size(), affix) == 0) return Str(s.substr(affix.size()));
    if (name == "removesuffix" && !affix.empty() && s.size() >= affix.size() &&
        s.compare(s.size() - affix.size(), affix.size(), affix) == 0) {
      return Str(s.substr(0, s.size() - affix.size()));
    }
    return Str(s);
  }
  if (name == "partition" || name == "rpartition") {
    Args a(call, name, {"sep"});
    std::string sep = ToPythonStr(a.Required(0));
    size_t found = name == "partition" ? s.find(sep) : s.rfind(sep);
    if (found == std::string::npos) {
      return name == "partition" ? Value::Tuple({Str(s), Str(""), Str("")}) : Value::Tuple({Str(""), Str(""), Str(s)});
    }
    return Value::Tuple({Str(s.substr(0, found)), Str(sep), Str(s.substr(found + sep.size()))});
  }
  if (name == "zfill") {
    Args a(call, name, {"width"});
    int64_t width = a.Int(0, 0);
    CheckBuiltSize(width, 1);
    int64_t length = CodePointLength(s);
    if (width <= length) return Str(s);
    size_t sign = (!s.empty() && (s[0] == '+' || s[0] == '-')) ? 1 : 0;
    return Str(s.substr(0, sign) + std::string(static_cast<size_t>(width - length), '0') + s.substr(sign));
  }
  if (name == "ljust" || name == "rjust" || name == "center") {
    Args a(call, name, {"width", "fillchar"});
    int64_t width = a.Int(0, 0);
    std::string fill = ToPythonStr(a.Or(1, Str(" ")));
    CheckBuiltSize(width, static_cast<int64_t>(fill.size()));
    int64_t length = CodePointLength(s);
    if (width <= length) return Str(s);
    int64_t pad = width - length;
    auto repeat = [&](int64_t n) {
      std::string r;
      for (int64_t i = 0; i < n; ++i) r += fill;
      return r;
    };
    if (name == "ljust") return Str(s + repeat(pad));
    if (name == "rjust") return Str(repeat(pad) + s);
    int64_t left = pad / 2 + (pad & width & 1);
    return Str(repeat(left) + s + repeat(pad - left));
  }
  if (name == "isspace") return Value::Bool(AllCodePoints(s, IsPythonSpace));
  if (name == "isdigit" || name == "isdecimal" || name == "isnumeric") {
    return Value::Bool(AllCodePoints(s, [](char32_t cp) { return cp >= '0' && cp <= '9'; }));
  }
  if (name == "isalpha") {
    return Value::Bool(AllCodePoints(s, [](char32_t cp) {
      auto category = utf8proc_category(static_cast<utf8proc_int32_t>(cp));
      return category >= UTF8PROC_CATEGORY_LU && category <= UTF8PROC_CATEGORY_LO;
    }));
  }
  if (name == "isalnum") {
    return Value::Bool(AllCodePoints(s, [](char32_t cp) { return cp < 0x80 && std::isalnum(static_cast<int>(cp)) != 0; }));
  }
  if (name == "isupper") return Value::Bool(PyUpper(s) == s && PyLower(s) != s);
  if (name == "islower") return Value::Bool(PyLower(s) == s && PyUpper(s) != s);
  ThrowError(ErrorType::kTypeError, fmt::format("str method '{}' is not implemented", name));
}

const char* const kStrMethods[] = {
    "startswith", "endswith", "strip", "lstrip", "rstrip", "split", "rsplit", "splitlines", "replace",
    "upper", "lower", "casefold", "title", "capitalize", "find", "rfind", "index", "rindex", "count",
    "join", "format", "removeprefix", "removesuffix", "partition", "rpartition", "zfill", "ljust",
    "rjust", "center", "isspace", "isdigit", "isdecimal", "isnumeric", "isalpha", "isalnum", "isupper",
    "islower"};

// Methods the immutable sandbox blocks (jinja2.sandbox._mutable_spec).
const char* const kUnsafeListMethods[] = {"append", "clear", "pop", "reverse", "insert", "sort", "extend", "remove"};
const char* const kUnsafeDictMethods[] = {"clear", "pop", "popitem", "setdefault", "update"};

template <size_t N>
bool Contains(const char* const (&names)[N], const std::string& name) {
  return std::any_of(std::begin(names), std::end(names), [&](const char* n) { return name == n; });
}

Value UnsafeAttribute(const Value& object, const std::string& name) {
  return Value::Undefined(
      fmt::format("access to attribute '{}' of '{}' object is unsafe.", name, object.TypeName()),
      ErrorType::kSecurityError);
}

Value Bound(const Value& object, const std::string& name,
            Value (*method)(const Value&, const std::string&, CallArgs&, Interpreter&)) {
  return Value::Function(name, [object, name, method](CallArgs& args, Interpreter& interp) {
    return method(object, name, args, interp);
  });
}

Value DictMethod(const Value& dict, const std::string& name, CallArgs& call, Interpreter&) {
  if (name == "get") {
    Args a(call, name, {"key", "default"});
    const Value* found = dict.Find(a.Required(0));
    return found != nullptr ? *found : a.Or(1, Value::None());
  }
  Args a(call, name, {});
  std::vector<Value> out;
  if (name == "copy") {
    Value copy = Value::Dict();
    for (const auto& [k, v] : dict.dict().items) copy.mutable_dict().items.emplace_back(k, v);
    return copy;
  }
  for (const auto& [k, v] : dict.dict().items) {
    if (name == "keys") out.push_back(k);
    if (name == "values") out.push_back(v);
    if (name == "items") out.push_back(Value::Tuple({k, v}));
  }
  return Value::List(std::move(out));
}

Value ListMethod(const Value& list, const std::string& name, CallArgs& call, Interpreter&) {
  if (name == "copy") {
    Args a(call, name, {});
    return Value::List(list.items());
  }
  Args a(call, name, {"value"});
  const Value& needle = a.Required(0);
  int64_t count = 0;
  for (size_t i = 0; i < list.items().size(); ++i) {
    if (!ValuesEqual(list.items()[i], needle)) continue;
    if (name == "index") return Value::Int(static_cast<int64_t>(i));
    ++count;
  }
  if (name == "index") ThrowError(ErrorType::kValueError, fmt::format("{} is not in list", ToPythonRepr(needle)));
  return Value::Int(count);
}

Value StrMethodBound(const Value& s, const std::string& name, CallArgs& call, Interpreter& interp) {
  return StrMethod(s.str(), name, call, interp);
}

// Jinja's object_type_repr: "None", or "<type> object".
std::string ObjectTypeRepr(const Value& object) {
  return object.is_none() ? "None" : object.TypeName() + " object";
}

Value MakeJoiner(CallArgs& call, Interpreter&) {
  Args a(call, "joiner", {"sep"});
  std::string separator = ToPythonStr(a.Or(0, Str(", ")));
  auto used = std::make_shared<bool>(false);
  return Value::Function("joiner", [separator, used](CallArgs&, Interpreter&) {
    if (!*used) {
      *used = true;
      return Str("");
    }
    return Str(separator);
  });
}

}  // namespace

bool IsKnownFilter(std::string_view name) { return Filters().count(std::string(name)) > 0; }

bool IsKnownTest(std::string_view name) { return Tests().count(CanonicalTestName(std::string(name))) > 0; }

Value Interpreter::ApplyFilter(const std::string& name, const Value& input, CallArgs& args) {
  auto it = Filters().find(name);
  if (it == Filters().end()) ThrowError(ErrorType::kTemplateError, fmt::format("no filter named '{}'", name));
  return it->second(input, args, *this);
}

bool Interpreter::ApplyTest(const std::string& name, const Value& input, CallArgs& args) {
  auto it = Tests().find(CanonicalTestName(name));
  if (it == Tests().end()) ThrowError(ErrorType::kTemplateError, fmt::format("no test named '{}'", name));
  return it->second(input, args, *this);
}

Value GetBuiltinAttribute(const Value& object, const std::string& name) {
  if (!name.empty() && name[0] == '_') return UnsafeAttribute(object, name);
  switch (object.kind()) {
    case ValueKind::kDict: {
      if (object.is_namespace()) {
        const Value* found = object.Find(name);
        if (found != nullptr) return *found;
        break;
      }
      if (name == "get" || name == "items" || name == "keys" || name == "values" || name == "copy") {
        return Bound(object, name, DictMethod);
      }
      if (Contains(kUnsafeDictMethods, name)) return UnsafeAttribute(object, name);
      const Value* found = object.Find(name);
      if (found != nullptr) return *found;
      break;
    }
    case ValueKind::kString:
      if (Contains(kStrMethods, name)) return Bound(object, name, StrMethodBound);
      break;
    case ValueKind::kList:
      if (name == "index" || name == "count" || name == "copy") return Bound(object, name, ListMethod);
      if (Contains(kUnsafeListMethods, name)) return UnsafeAttribute(object, name);
      break;
    default:
      break;
  }
  return Value::MissingAttribute(ObjectTypeRepr(object), name);
}

std::vector<std::pair<std::string, Value>> BuiltinGlobals() {
  std::vector<std::pair<std::string, Value>> globals;
  globals.emplace_back("raise_exception", Value::Function("raise_exception", [](CallArgs& call, Interpreter&) -> Value {
                         Args a(call, "raise_exception", {"message"});
                         throw TemplateException(ErrorType::kTemplateError, ToPythonStr(a.Or(0, Str(""))));
                       }));
  globals.emplace_back("strftime_now", Value::Function("strftime_now", [](CallArgs& call, Interpreter& interp) {
                         Args a(call, "strftime_now", {"format"});
                         return Str(interp.StrftimeNow(ToPythonStr(a.Required(0))));
                       }));
  globals.emplace_back("range", Value::Function("range", [](CallArgs& call, Interpreter&) {
                         Args a(call, "range", {"start", "stop", "step"});
                         int64_t start = 0;
                         int64_t stop = 0;
                         int64_t step = a.Int(2, 1);
                         if (a.Get(1) == nullptr) {
                           stop = a.Int(0, 0);
                         } else {
                           start = a.Int(0, 0);
                           stop = a.Int(1, 0);
                         }
                         if (step == 0) ThrowError(ErrorType::kValueError, "range() arg 3 must not be zero");
                         std::vector<Value> items;
                         for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) {
                           // jinja2.sandbox.MAX_RANGE
                           if (items.size() >= 100000) {
                             ThrowError(ErrorType::kOverflowError,
                                        "Range too big. The sandbox blocks ranges larger than MAX_RANGE (100000).");
                           }
                           items.push_back(Value::Int(i));
                         }
                         return Value::List(std::move(items));
                       }));
  auto build_dict = [](Value target, CallArgs& call, Interpreter& interp) {
    for (const auto& positional : call.positional) {
      if (positional.is_dict()) {
        for (const auto& [k, v] : positional.dict().items) target.Set(k, v);
      } else {
        for (const auto& pair : interp.Iterate(positional)) {
          if (!pair.is_list() || pair.items().size() != 2) {
            ThrowError(ErrorType::kValueError, "dictionary update sequence element has wrong length");
          }
          target.Set(pair.items()[0], pair.items()[1]);
        }
      }
    }
    for (const auto& [k, v] : call.keyword) target.Set(k, v);
    return target;
  };
  globals.emplace_back("dict", Value::Function("dict", [build_dict](CallArgs& call, Interpreter& interp) {
                         return build_dict(Value::Dict(), call, interp);
                       }));
  globals.emplace_back("namespace", Value::Function("namespace", [build_dict](CallArgs& call, Interpreter& interp) {
                         return build_dict(Value::Namespace(), call, interp);
                       }));
  globals.emplace_back("joiner", Value::Function("joiner", MakeJoiner));
  return globals;
}

std::string PercentFormat(const std::string& format, const Value& args) {
  std::vector<Value> values;
  const Value* mapping = nullptr;
  if (args.is_tuple()) {
    values = args.items();
  } else if (args.is_list()) {
    values.push_back(args);
  } else if (args.is_dict()) {
    // A mapping serves "%(name)s" fields, and a plain "%s" formats it whole.
    mapping = &args;
    values.push_back(args);
  } else {
    values.push_back(args);
  }
  size_t next = 0;
  std::string out;
  for (size_t i = 0; i < format.size(); ++i) {
    if (format[i] != '%') {
      out.push_back(format[i]);
      continue;
    }
    ++i;
    if (i >= format.size()) ThrowError(ErrorType::kValueError, "incomplete format");
    if (format[i] == '%') {
      out.push_back('%');
      continue;
    }
    Value value;
    if (format[i] == '(') {
      size_t close = format.find(')', i);
      if (close == std::string::npos || mapping == nullptr) ThrowError(ErrorType::kTypeError, "format requires a mapping");
      const Value* found = mapping->Find(format.substr(i + 1, close - i - 1));
      if (found == nullptr) ThrowError(ErrorType::kValueError, "KeyError in format mapping");
      value = *found;
      i = close + 1;
    } else {
      if (next >= values.size()) ThrowError(ErrorType::kTypeError, "not enough arguments for format string");
      value = values[next++];
    }
    std::string flags;
    while (i < format.size() && std::strchr("-+ #0", format[i])) flags.push_back(format[i++]);
    std::string width;
    while (i < format.size() && std::isdigit(static_cast<unsigned char>(format[i]))) width.push_back(format[i++]);
    std::string precision;
    if (i < format.size() && format[i] == '.') {
      ++i;
      while (i < format.size() && std::isdigit(static_cast<unsigned char>(format[i]))) precision.push_back(format[i++]);
      if (precision.empty()) precision = "0";
    }
    // snprintf below writes into a fixed buffer, so widths stay small.
    if (width.size() > 3 || precision.size() > 3) {
      ThrowError(ErrorType::kOverflowError, "format width or precision above 999 is not supported");
    }
    if (i >= format.size()) ThrowError(ErrorType::kValueError, "incomplete format");
    char conversion = format[i];
    std::string spec = "%" + flags + width + (precision.empty() ? "" : "." + precision);
    char buf[512];
    switch (conversion) {
      case 's': case 'r': case 'a': {
        std::string text = conversion == 's' ? ToPythonStr(value) : ToPythonRepr(value);
        if (!precision.empty()) text = EncodeUtf8(DecodeUtf8(text), 0, std::stoul(precision));
        int pad = width.empty() ? 0 : std::stoi(width) - static_cast<int>(CodePointLength(text));
        if (pad > 0) {
          text = flags.find('-') != std::string::npos ? text + std::string(static_cast<size_t>(pad), ' ')
                                                      : std::string(static_cast<size_t>(pad), ' ') + text;
        }
        out += text;
        break;
      }
      case 'd': case 'i': case 'u':
        if (!value.is_number()) ThrowError(ErrorType::kTypeError, fmt::format("%d format: a real number is required, not {}", value.TypeName()));
        std::snprintf(buf, sizeof(buf), (spec + "lld").c_str(),
                      static_cast<long long>(value.is_float() ? std::trunc(value.as_double()) : value.as_int()));
        out += buf;
        break;
      case 'x': case 'X': case 'o':
        if (!value.is_integral()) ThrowError(ErrorType::kTypeError, "%x format: an integer is required");
        std::snprintf(buf, sizeof(buf), (spec + "ll" + conversion).c_str(), static_cast<long long>(value.as_int()));
        out += buf;
        break;
      case 'f': case 'F': case 'e': case 'E': case 'g': case 'G':
        if (!value.is_number()) ThrowError(ErrorType::kTypeError, "must be real number");
        std::snprintf(buf, sizeof(buf), (spec + conversion).c_str(), value.as_double());
        out += buf;
        break;
      case 'c':
        if (value.is_integral()) {
          AppendUtf8(out, static_cast<char32_t>(value.as_int()));
        } else {
          out += ToPythonStr(value);
        }
        break;
      default:
        ThrowError(ErrorType::kValueError, fmt::format("unsupported format character '{}'", conversion));
    }
  }
  // Python skips this check for arguments with __getitem__ (lists, dicts).
  if (mapping == nullptr && !args.is_list() && next < values.size()) {
    ThrowError(ErrorType::kTypeError, "not all arguments converted during string formatting");
  }
  return out;
}

}  // namespace draftforge::chat_template
