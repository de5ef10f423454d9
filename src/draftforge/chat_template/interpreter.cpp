#include "draftforge/chat_template/interpreter.h"

#include <fmt/format.h>

#include <cmath>
#include <ctime>

#include "draftforge/chat_template/py_string.h"

namespace draftforge::chat_template {

const Value* Frame::Lookup(std::string_view name) const {
  for (const Frame* f = this; f != nullptr; f = f->parent.get()) {
    for (const auto& [key, value] : f->vars) {
      if (key == name) return &value;
    }
  }
  return nullptr;
}

void Frame::Assign(const std::string& name, Value value) {
  for (auto& [key, existing] : vars) {
    if (key == name) {
      existing = std::move(value);
      return;
    }
  }
  vars.emplace_back(name, std::move(value));
}

Interpreter::Interpreter(std::vector<std::pair<std::string, Value>> variables, RenderClock clock)
    : clock_(clock) {
  auto globals = std::make_shared<Frame>();
  globals->vars = BuiltinGlobals();
  auto context = std::make_shared<Frame>();
  context->parent = globals;
  context->vars = std::move(variables);
  frame_ = std::make_shared<Frame>();
  frame_->parent = context;
}

std::string Interpreter::Render(const NodeList& nodes, std::vector<std::pair<int64_t, int64_t>>* spans) {
  std::string output;
  out_ = &output;
  root_out_ = &output;
  spans_ = spans;
  ExecList(nodes);
  return output;
}

Interpreter::Flow Interpreter::ExecList(const NodeList& nodes) {
  for (const auto& node : nodes) {
    Flow flow = Exec(*node);
    if (flow != Flow::kNormal) return flow;
  }
  return Flow::kNormal;
}

std::string Interpreter::Capture(const NodeList& nodes) {
  std::string buffer;
  std::string* saved = out_;
  out_ = &buffer;
  ExecList(nodes);
  out_ = saved;
  return buffer;
}

Interpreter::Flow Interpreter::Exec(const Node& node) {
  try {
    switch (node.kind) {
      case Node::Kind::kText:
        out_->append(node.text);
        return Flow::kNormal;
      case Node::Kind::kOutput:
        out_->append(ToPythonStr(Eval(*node.expr)));
        return Flow::kNormal;
      case Node::Kind::kIf:
        for (size_t i = 0; i < node.conditions.size(); ++i) {
          if (Eval(*node.conditions[i]).Truthy()) return ExecList(node.bodies[i]);
        }
        return ExecList(node.else_body);
      case Node::Kind::kFor:
        return ExecFor(node);
      case Node::Kind::kSet:
        AssignTarget(node.target, Eval(*node.expr));
        return Flow::kNormal;
      case Node::Kind::kSetBlock: {
        Value body = Value::String(Capture(node.body));
        if (node.expr) {
          CallArgs none;
          const Expr* filter = node.expr.get();
          // Apply the chain from the innermost filter outwards.
          std::vector<const Expr*> chain;
          for (; filter != nullptr; filter = filter->children[0].get()) chain.push_back(filter);
          for (auto it = chain.rbegin(); it != chain.rend(); ++it) {
            CallArgs args = EvalArgs(**it);
            body = ApplyFilter((*it)->name, body, args);
          }
        }
        AssignTarget(node.target, body);
        return Flow::kNormal;
      }
      case Node::Kind::kFilterBlock: {
        Value body = Value::String(Capture(node.body));
        std::vector<const Expr*> chain;
        for (const Expr* f = node.expr.get(); f != nullptr; f = f->children[0].get()) chain.push_back(f);
        for (auto it = chain.rbegin(); it != chain.rend(); ++it) {
          CallArgs args = EvalArgs(**it);
          body = ApplyFilter((*it)->name, body, args);
        }
        out_->append(ToPythonStr(body));
        return Flow::kNormal;
      }
      case Node::Kind::kMacro:
        frame_->Assign(node.name, MakeMacro(node, frame_, node.name));
        return Flow::kNormal;
      case Node::Kind::kCallBlock:
        ExecCallBlock(node);
        return Flow::kNormal;
      case Node::Kind::kWith: {
        std::vector<Value> values;
        for (const auto& [target, expr] : node.assignments) values.push_back(Eval(*expr));
        auto saved = frame_;
        frame_ = std::make_shared<Frame>();
        frame_->parent = saved;
        for (size_t i = 0; i < values.size(); ++i) AssignTarget(node.assignments[i].first, values[i]);
        Flow flow = ExecList(node.body);
        frame_ = saved;
        return flow;
      }
      case Node::Kind::kBreak:
        return Flow::kBreak;
      case Node::Kind::kContinue:
        return Flow::kContinue;
      case Node::Kind::kGeneration: {
        // NOTE: spans are recorded only for output written straight to the
        // result; a {% generation %} inside a macro or a captured block
        // renders its text but records no span.
        bool at_root = out_ == root_out_;
        int64_t start = static_cast<int64_t>(out_->size());
        Flow flow = ExecList(node.body);
        if (at_root && spans_ != nullptr) spans_->emplace_back(start, static_cast<int64_t>(out_->size()));
        return flow;
      }
    }
  } catch (TemplateException& e) {
    if (e.line() == 0) e.set_line(node.line);
    throw;
  }
  return Flow::kNormal;
}

Interpreter::Flow Interpreter::ExecFor(const Node& node) {
  std::vector<Value> items = Iterate(Eval(*node.expr));
  auto saved = frame_;
  if (node.filter) {
    std::vector<Value> kept;
    for (auto& item : items) {
      frame_ = std::make_shared<Frame>();
      frame_->parent = saved;
      AssignTarget(node.target, item);
      if (Eval(*node.filter).Truthy()) kept.push_back(std::move(item));
    }
    items = std::move(kept);
    frame_ = saved;
  }

  const int64_t length = static_cast<int64_t>(items.size());
  auto last_changed = std::make_shared<std::optional<Value>>();
  for (int64_t i = 0; i < length; ++i) {
    frame_ = std::make_shared<Frame>();
    frame_->parent = saved;
    AssignTarget(node.target, items[static_cast<size_t>(i)]);

    // The keys are distinct, so they are appended without Set()'s search.
    static const std::vector<Value> kLoopKeys = {
        Value::String("index"),    Value::String("index0"), Value::String("revindex"),
        Value::String("revindex0"), Value::String("first"), Value::String("last"),
        Value::String("length"),   Value::String("depth"),  Value::String("depth0"),
        Value::String("previtem"), Value::String("nextitem"), Value::String("cycle"),
        Value::String("changed")};
    Value loop = Value::Dict();
    auto& entries = loop.mutable_dict().items;
    entries.reserve(kLoopKeys.size());
    size_t key = 0;
    auto add = [&](Value value) { entries.emplace_back(kLoopKeys[key++], std::move(value)); };
    add(Value::Int(i + 1));
    add(Value::Int(i));
    add(Value::Int(length - i));
    add(Value::Int(length - i - 1));
    add(Value::Bool(i == 0));
    add(Value::Bool(i == length - 1));
    add(Value::Int(length));
    add(Value::Int(1));
    add(Value::Int(0));
    add(i > 0 ? items[static_cast<size_t>(i - 1)] : Value::Undefined("there is no previous item"));
    add(i + 1 < length ? items[static_cast<size_t>(i + 1)] : Value::Undefined("there is no next item"));
    add(Value::Function("cycle", [i](CallArgs& args, Interpreter&) {
      if (args.positional.empty()) ThrowError(ErrorType::kTypeError, "no items for cycling given");
      return args.positional[static_cast<size_t>(i) % args.positional.size()];
    }));
    add(Value::Function("changed", [last_changed](CallArgs& args, Interpreter&) {
      Value current = Value::Tuple(args.positional);
      if (*last_changed && ValuesEqual(**last_changed, current)) return Value::Bool(false);
      *last_changed = current;
      return Value::Bool(true);
    }));
    frame_->vars.emplace_back("loop", std::move(loop));

    Flow flow = ExecList(node.body);
    if (flow == Flow::kBreak) break;
  }
  frame_ = saved;
  if (length == 0 && !node.else_body.empty()) {
    frame_ = std::make_shared<Frame>();
    frame_->parent = saved;
    ExecList(node.else_body);
    frame_ = saved;
  }
  return Flow::kNormal;
}

Value Interpreter::MakeMacro(const Node& node, std::shared_ptr<Frame> closure, const std::string& name) {
  // A weak reference: the frame stores the macro, so a strong one would leak
  // the frame. Macros cannot outlive the render that defines them.
  std::weak_ptr<Frame> weak_closure = closure;
  const Node* macro = &node;
  return Value::Function(name, [macro, weak_closure](CallArgs& args, Interpreter& interpreter) {
    return interpreter.InvokeMacro(*macro, weak_closure.lock(), Value(), args);
  });
}

Value Interpreter::InvokeMacro(const Node& node, const std::shared_ptr<Frame>& closure, const Value& caller,
                               CallArgs& args) {
  auto frame = std::make_shared<Frame>();
  frame->parent = closure ? closure : frame_;
  std::vector<bool> bound(node.params.size(), false);
  std::vector<Value> varargs;
  Value kwargs = Value::Dict();
  Value caller_value = caller;

  for (size_t i = 0; i < args.positional.size(); ++i) {
    if (i < node.params.size()) {
      frame->vars.emplace_back(node.params[i].name, args.positional[i]);
      bound[i] = true;
    } else {
      varargs.push_back(args.positional[i]);
    }
  }
  for (auto& [key, value] : args.keyword) {
    if (key == "caller") {
      caller_value = value;
      continue;
    }
    bool matched = false;
    for (size_t i = 0; i < node.params.size(); ++i) {
      if (node.params[i].name != key) continue;
      if (bound[i]) {
        ThrowError(ErrorType::kTypeError,
                   fmt::format("macro '{}' got multiple values for argument '{}'", node.name, key));
      }
      frame->vars.emplace_back(key, value);
      bound[i] = true;
      matched = true;
    }
    if (!matched) kwargs.Set(key, value);
  }

  auto saved_frame = frame_;
  frame_ = frame;
  for (size_t i = 0; i < node.params.size(); ++i) {
    if (bound[i]) continue;
    const MacroParam& param = node.params[i];
    frame->vars.emplace_back(param.name, param.default_value
                                             ? Eval(*param.default_value)
                                             : Value::Undefined(fmt::format(
                                                   "parameter '{}' was not provided", param.name)));
  }
  frame->vars.emplace_back("varargs", Value::Tuple(std::move(varargs)));
  frame->vars.emplace_back("kwargs", kwargs);
  if (!caller_value.is_undefined()) frame->vars.emplace_back("caller", caller_value);

  if (macro_depth_ >= kMaxNestingDepth) {
    ThrowError(ErrorType::kRecursionError,
               fmt::format("maximum recursion depth exceeded in macro '{}'", node.name));
  }
  std::string output;
  std::string* saved_out = out_;
  out_ = &output;
  ++macro_depth_;
  ExecList(node.body);
  --macro_depth_;
  out_ = saved_out;
  frame_ = saved_frame;
  return Value::String(std::move(output));
}

void Interpreter::ExecCallBlock(const Node& node) {
  const Node* block = &node;
  std::weak_ptr<Frame> weak_closure = frame_;
  Value caller = Value::Function("caller", [block, weak_closure](CallArgs& args, Interpreter& interpreter) {
    return interpreter.InvokeMacro(*block, weak_closure.lock(), Value(), args);
  });
  const Expr& call = *node.expr;
  Value callee = Eval(*call.children[0]);
  CallArgs args = EvalArgs(call);
  args.keyword.emplace_back("caller", caller);
  out_->append(ToPythonStr(Call(callee, args)));
}

void Interpreter::AssignTarget(const Target& target, const Value& value) {
  if (!target.attribute.empty()) {
    const Value* ns = frame_->Lookup(target.name);
    if (ns == nullptr || !ns->is_namespace()) {
      ThrowError(ErrorType::kTemplateError, "cannot assign attribute on non-namespace object");
    }
    ns->Set(target.attribute, value);
    return;
  }
  if (!target.is_tuple) {
    frame_->Assign(target.name, value);
    return;
  }
  std::vector<Value> items = Iterate(value);
  if (items.size() != target.elements.size()) {
    ThrowError(ErrorType::kValueError,
               items.size() > target.elements.size()
                   ? fmt::format("too many values to unpack (expected {})", target.elements.size())
                   : fmt::format("not enough values to unpack (expected {}, got {})",
                                 target.elements.size(), items.size()));
  }
  for (size_t i = 0; i < items.size(); ++i) AssignTarget(target.elements[i], items[i]);
}

Value Interpreter::Lookup(const std::string& name) const {
  const Value* value = frame_->Lookup(name);
  if (value != nullptr) return *value;
  return Value::Undefined(fmt::format("'{}' is undefined", name));
}

CallArgs Interpreter::EvalArgs(const Expr& expr) {
  CallArgs args;
  for (const auto& arg : expr.args) args.positional.push_back(Eval(*arg));
  for (const auto& [key, arg] : expr.kwargs) args.keyword.emplace_back(key, Eval(*arg));
  if (expr.dyn_args) {
    for (auto& item : Iterate(Eval(*expr.dyn_args))) args.positional.push_back(std::move(item));
  }
  if (expr.dyn_kwargs) {
    Value extra = Eval(*expr.dyn_kwargs);
    if (!extra.is_dict()) ThrowError(ErrorType::kTypeError, "argument after ** must be a mapping");
    for (const auto& [k, v] : extra.dict().items) args.keyword.emplace_back(ToPythonStr(k), v);
  }
  return args;
}

Value Interpreter::Eval(const Expr& expr) {
  try {
    return EvalInner(expr);
  } catch (TemplateException& e) {
    if (e.line() == 0) e.set_line(expr.line);
    throw;
  }
}

namespace {

// Python slice index normalisation (PySlice_AdjustIndices).
std::vector<int64_t> SliceIndices(int64_t length, const Value& start_v, const Value& stop_v,
                                  const Value& step_v) {
  auto as_index = [](const Value& v, const char* what) -> std::optional<int64_t> {
    if (v.is_none() || v.is_undefined()) return std::nullopt;
    if (!v.is_integral()) {
      ThrowError(ErrorType::kTypeError,
                 fmt::format("slice indices must be integers or None, got {} for {}", v.TypeName(), what));
    }
    return v.as_int();
  };
  int64_t step = as_index(step_v, "step").value_or(1);
  if (step == 0) ThrowError(ErrorType::kValueError, "slice step cannot be zero");
  auto adjust = [&](std::optional<int64_t> index, int64_t default_value) {
    if (!index) return default_value;
    int64_t i = *index;
    if (i < 0) {
      i += length;
      if (i < 0) i = step < 0 ? -1 : 0;
    } else if (i >= length) {
      i = step < 0 ? length - 1 : length;
    }
    return i;
  };
  int64_t start = adjust(as_index(start_v, "start"), step < 0 ? length - 1 : 0);
  int64_t stop = adjust(as_index(stop_v, "stop"), step < 0 ? -1 : length);
  std::vector<int64_t> indices;
  for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) indices.push_back(i);
  return indices;
}

Value ApplySlice(const Value& object, const Value& start, const Value& stop, const Value& step) {
  if (object.is_list()) {
    const auto& items = object.items();
    std::vector<Value> out;
    for (int64_t i : SliceIndices(static_cast<int64_t>(items.size()), start, stop, step)) {
      out.push_back(items[static_cast<size_t>(i)]);
    }
    return object.is_tuple() ? Value::Tuple(std::move(out)) : Value::List(std::move(out));
  }
  if (object.is_string()) {
    const std::string& s = object.str();
    std::string out;
    if (IsAscii(s)) {
      for (int64_t i : SliceIndices(static_cast<int64_t>(s.size()), start, stop, step)) {
        out.push_back(s[static_cast<size_t>(i)]);
      }
    } else {
      std::vector<char32_t> cps = DecodeUtf8(s);
      for (int64_t i : SliceIndices(static_cast<int64_t>(cps.size()), start, stop, step)) {
        AppendUtf8(out, cps[static_cast<size_t>(i)]);
      }
    }
    return Value::String(std::move(out));
  }
  // Jinja compiles a slice to a plain Python subscript, so errors raise at once.
  if (object.is_undefined()) object.ThrowUndefined();
  if (object.is_dict()) ThrowError(ErrorType::kTypeError, "unhashable type: 'slice'");
  ThrowError(ErrorType::kTypeError, fmt::format("'{}' object is not subscriptable", object.TypeName()));
}

[[noreturn]] void UnsupportedOperands(const std::string& op, const Value& left, const Value& right) {
  if (left.is_undefined()) left.ThrowUndefined();
  if (right.is_undefined()) right.ThrowUndefined();
  if (op == "+" && (left.is_string() || left.is_list())) {
    ThrowError(ErrorType::kTypeError, fmt::format("can only concatenate {} (not \"{}\") to {}",
                                                  left.TypeName(), right.TypeName(), left.TypeName()));
  }
  ThrowError(ErrorType::kTypeError, fmt::format("unsupported operand type(s) for {}: '{}' and '{}'", op,
                                                left.TypeName(), right.TypeName()));
}

Value Repeat(const Value& sequence, int64_t times) {
  CheckBuiltSize(times, sequence.is_string() ? static_cast<int64_t>(sequence.str().size())
                                             : static_cast<int64_t>(sequence.items().size()));
  if (sequence.is_string()) {
    std::string out;
    for (int64_t i = 0; i < times; ++i) out += sequence.str();
    return Value::String(std::move(out));
  }
  std::vector<Value> out;
  for (int64_t i = 0; i < times; ++i) {
    out.insert(out.end(), sequence.items().begin(), sequence.items().end());
  }
  return sequence.is_tuple() ? Value::Tuple(std::move(out)) : Value::List(std::move(out));
}

int64_t FloorDiv(int64_t a, int64_t b) {
  int64_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) --q;
  return q;
}

int64_t FloorMod(int64_t a, int64_t b) {
  int64_t r = a % b;
  if (r != 0 && ((r < 0) != (b < 0))) r += b;
  return r;
}

}  // namespace

// Python printf-style formatting (`str % args`, the `format` filter).
std::string PercentFormat(const std::string& format, const Value& args);

Value Interpreter::EvalBinary(const std::string& op, const Value& left, const Value& right) {
  if (left.is_undefined()) left.ThrowUndefined();
  if (right.is_undefined()) right.ThrowUndefined();
  const bool numbers = left.is_number() && right.is_number();
  const bool integers = left.is_integral() && right.is_integral();
  // NOTE: Python ints are unbounded. An int64 result that would overflow is
  // computed as a float instead, so it loses precision where Python's does not.
  int64_t exact = 0;
  if (op == "+") {
    if (integers && !__builtin_add_overflow(left.as_int(), right.as_int(), &exact)) return Value::Int(exact);
    if (numbers) return Value::Float(left.as_double() + right.as_double());
    if (left.is_string() && right.is_string()) {
      return Value::String(left.str() + right.str(), left.is_safe() && right.is_safe());
    }
    if (left.is_list() && right.is_list() && left.is_tuple() == right.is_tuple()) {
      std::vector<Value> items = left.items();
      items.insert(items.end(), right.items().begin(), right.items().end());
      return left.is_tuple() ? Value::Tuple(std::move(items)) : Value::List(std::move(items));
    }
  } else if (op == "-") {
    if (integers && !__builtin_sub_overflow(left.as_int(), right.as_int(), &exact)) return Value::Int(exact);
    if (numbers) return Value::Float(left.as_double() - right.as_double());
  } else if (op == "*") {
    if (integers && !__builtin_mul_overflow(left.as_int(), right.as_int(), &exact)) return Value::Int(exact);
    if (numbers) return Value::Float(left.as_double() * right.as_double());
    if ((left.is_string() || left.is_list()) && right.is_integral()) return Repeat(left, right.as_int());
    if (left.is_integral() && (right.is_string() || right.is_list())) return Repeat(right, left.as_int());
  } else if (op == "/") {
    if (numbers) {
      if (right.as_double() == 0.0) ThrowError(ErrorType::kZeroDivisionError, "division by zero");
      return Value::Float(left.as_double() / right.as_double());
    }
  } else if (op == "//") {
    if (integers) {
      if (right.as_int() == 0) ThrowError(ErrorType::kZeroDivisionError, "integer division or modulo by zero");
      return Value::Int(FloorDiv(left.as_int(), right.as_int()));
    }
    if (numbers) {
      if (right.as_double() == 0.0) ThrowError(ErrorType::kZeroDivisionError, "float floor division by zero");
      return Value::Float(std::floor(left.as_double() / right.as_double()));
    }
  } else if (op == "%") {
    if (integers) {
      if (right.as_int() == 0) ThrowError(ErrorType::kZeroDivisionError, "integer division or modulo by zero");
      return Value::Int(FloorMod(left.as_int(), right.as_int()));
    }
    if (numbers) {
      if (right.as_double() == 0.0) ThrowError(ErrorType::kZeroDivisionError, "float modulo");
      double r = std::fmod(left.as_double(), right.as_double());
      if (r != 0 && ((r < 0) != (right.as_double() < 0))) r += right.as_double();
      return Value::Float(r);
    }
    if (left.is_string()) return Value::String(PercentFormat(left.str(), right));
  } else if (op == "**") {
    if (integers && right.as_int() >= 0) {
      // Exponentiation by squaring.
      int64_t result = 1;
      int64_t base = left.as_int();
      int64_t exponent = right.as_int();
      bool overflow = false;
      while (exponent > 0 && !overflow) {
        if (exponent & 1) overflow = __builtin_mul_overflow(result, base, &result);
        exponent >>= 1;
        if (exponent > 0 && !overflow) overflow = __builtin_mul_overflow(base, base, &base);
      }
      if (!overflow) return Value::Int(result);
    }
    if (numbers) return Value::Float(std::pow(left.as_double(), right.as_double()));
  }
  UnsupportedOperands(op, left, right);
}

bool Interpreter::EvalCompare(const std::string& op, const Value& left, const Value& right) {
  if (op == "==") return ValuesEqual(left, right);
  if (op == "!=") return !ValuesEqual(left, right);
  if (op == "<") return ValueLess(left, right);
  if (op == ">") return ValueLess(right, left);
  if (op == "<=") return ValueLess(left, right) || ValuesEqual(left, right);
  if (op == ">=") return ValueLess(right, left) || ValuesEqual(left, right);
  bool negate = op == "notin";
  bool found = false;
  if (right.is_string()) {
    if (!left.is_string()) {
      ThrowError(ErrorType::kTypeError,
                 fmt::format("'in <string>' requires string as left operand, not {}", left.TypeName()));
    }
    found = right.str().find(left.str()) != std::string::npos;
  } else if (right.is_list()) {
    for (const auto& item : right.items()) {
      if (ValuesEqual(item, left)) {
        found = true;
        break;
      }
    }
  } else if (right.is_dict()) {
    found = right.Find(left) != nullptr;
  } else if (!right.is_undefined()) {
    ThrowError(ErrorType::kTypeError, fmt::format("argument of type '{}' is not iterable", right.TypeName()));
  }
  return found != negate;
}

Value Interpreter::EvalInner(const Expr& expr) {
  switch (expr.kind) {
    case Expr::Kind::kConst:
      return expr.value;
    case Expr::Kind::kName:
      return Lookup(expr.name);
    case Expr::Kind::kList:
    case Expr::Kind::kTuple: {
      std::vector<Value> items;
      items.reserve(expr.children.size());
      for (const auto& child : expr.children) items.push_back(Eval(*child));
      return expr.kind == Expr::Kind::kTuple ? Value::Tuple(std::move(items)) : Value::List(std::move(items));
    }
    case Expr::Kind::kDict: {
      Value dict = Value::Dict();
      for (size_t i = 0; i + 1 < expr.children.size(); i += 2) {
        dict.Set(Eval(*expr.children[i]), Eval(*expr.children[i + 1]));
      }
      return dict;
    }
    case Expr::Kind::kGetAttr:
      return GetAttr(Eval(*expr.children[0]), expr.name);
    case Expr::Kind::kGetItem: {
      Value object = Eval(*expr.children[0]);
      const Expr& key = *expr.children[1];
      if (key.kind == Expr::Kind::kSlice) {
        auto part = [&](size_t i) { return key.children[i] ? Eval(*key.children[i]) : Value::None(); };
        Value start = part(0);
        Value stop = part(1);
        Value step = part(2);
        return ApplySlice(object, start, stop, step);
      }
      return GetItem(object, Eval(key));
    }
    case Expr::Kind::kSlice:
      ThrowError(ErrorType::kTemplateSyntaxError, "a slice is only valid inside []");
    case Expr::Kind::kCall: {
      Value callee = Eval(*expr.children[0]);
      CallArgs args = EvalArgs(expr);
      return Call(callee, args);
    }
    case Expr::Kind::kFilter: {
      Value input = Eval(*expr.children[0]);
      CallArgs args = EvalArgs(expr);
      return ApplyFilter(expr.name, input, args);
    }
    case Expr::Kind::kTest: {
      Value input = Eval(*expr.children[0]);
      CallArgs args = EvalArgs(expr);
      return Value::Bool(ApplyTest(expr.name, input, args));
    }
    case Expr::Kind::kNot:
      return Value::Bool(!Eval(*expr.children[0]).Truthy());
    case Expr::Kind::kNeg:
    case Expr::Kind::kPos: {
      Value operand = Eval(*expr.children[0]);
      if (operand.is_undefined()) operand.ThrowUndefined();
      bool negate = expr.kind == Expr::Kind::kNeg;
      if (operand.is_integral()) return Value::Int(negate ? -operand.as_int() : operand.as_int());
      if (operand.is_float()) return Value::Float(negate ? -operand.as_double() : operand.as_double());
      ThrowError(ErrorType::kTypeError, fmt::format("bad operand type for unary {}: '{}'", negate ? '-' : '+',
                                                    operand.TypeName()));
    }
    case Expr::Kind::kBinary: {
      Value left = Eval(*expr.children[0]);
      Value right = Eval(*expr.children[1]);
      if (expr.name == "~") return Value::String(ToPythonStr(left) + ToPythonStr(right));
      return EvalBinary(expr.name, left, right);
    }
    case Expr::Kind::kAnd: {
      Value left = Eval(*expr.children[0]);
      if (!left.Truthy()) return left;
      return Eval(*expr.children[1]);
    }
    case Expr::Kind::kOr: {
      Value left = Eval(*expr.children[0]);
      if (left.Truthy()) return left;
      return Eval(*expr.children[1]);
    }
    case Expr::Kind::kCompare: {
      Value left = Eval(*expr.children[0]);
      for (size_t i = 0; i < expr.ops.size(); ++i) {
        Value right = Eval(*expr.children[i + 1]);
        if (!EvalCompare(expr.ops[i], left, right)) return Value::Bool(false);
        left = std::move(right);
      }
      return Value::Bool(true);
    }
    case Expr::Kind::kCondExpr: {
      if (Eval(*expr.children[0]).Truthy()) return Eval(*expr.children[1]);
      if (expr.children[2]) return Eval(*expr.children[2]);
      return Value::Undefined(fmt::format(
          "the inline if-expression on line {} evaluated to false and no else section was defined.", expr.line));
    }
  }
  return Value();
}

Value Interpreter::Call(const Value& callee, CallArgs& args) {
  if (callee.is_callable()) return callee.callable().fn(args, *this);
  if (callee.is_undefined()) callee.ThrowUndefined();
  ThrowError(ErrorType::kTypeError, fmt::format("'{}' object is not callable", callee.TypeName()));
}

Value Interpreter::GetAttr(const Value& object, const std::string& name) {
  if (object.is_undefined()) object.ThrowUndefined();
  return GetBuiltinAttribute(object, name);
}

namespace {

// Jinja's object_type_repr: "None", or "<type> object".
std::string ObjectTypeRepr(const Value& v) {
  if (v.is_none()) return "None";
  return v.TypeName() + " object";
}

}  // namespace

Value Interpreter::GetItem(const Value& object, const Value& key) {
  if (object.is_undefined()) object.ThrowUndefined();
  if (object.is_dict() && !object.is_namespace()) {
    const Value* found = object.Find(key);
    if (found != nullptr) return *found;
  } else if ((object.is_list() || object.is_string()) && key.is_integral()) {
    int64_t length = object.is_list() ? static_cast<int64_t>(object.items().size())
                                      : CodePointLength(object.str());
    int64_t index = key.as_int();
    if (index < 0) index += length;
    if (index >= 0 && index < length) {
      if (object.is_list()) return object.items()[static_cast<size_t>(index)];
      if (IsAscii(object.str())) return Value::String(object.str().substr(static_cast<size_t>(index), 1));
      std::vector<char32_t> cps = DecodeUtf8(object.str());
      return Value::String(EncodeUtf8(cps, static_cast<size_t>(index), static_cast<size_t>(index) + 1));
    }
  }
  // Jinja falls back to attribute lookup for string keys.
  if (key.is_string()) return GetBuiltinAttribute(object, key.str());
  return Value::Undefined(fmt::format("{} has no element {}", ObjectTypeRepr(object), ToPythonRepr(key)));
}

std::vector<Value> Interpreter::Iterate(const Value& value) {
  switch (value.kind()) {
    case ValueKind::kUndefined:
      return {};
    case ValueKind::kList:
      return value.items();
    case ValueKind::kDict: {
      if (value.is_namespace()) break;
      std::vector<Value> keys;
      for (const auto& [k, v] : value.dict().items) keys.push_back(k);
      return keys;
    }
    case ValueKind::kString: {
      std::vector<Value> chars;
      const std::string& s = value.str();
      if (IsAscii(s)) {
        for (char c : s) chars.push_back(Value::String(std::string(1, c)));
      } else {
        for (char32_t cp : DecodeUtf8(s)) {
          std::string one;
          AppendUtf8(one, cp);
          chars.push_back(Value::String(std::move(one)));
        }
      }
      return chars;
    }
    default:
      break;
  }
  ThrowError(ErrorType::kTypeError, fmt::format("'{}' object is not iterable", value.TypeName()));
}

std::string Interpreter::StrftimeNow(const std::string& format) const {
  std::time_t seconds = std::chrono::system_clock::to_time_t(clock_.now);
  std::tm tm{};
  if (clock_.utc) {
    gmtime_r(&seconds, &tm);
  } else {
    localtime_r(&seconds, &tm);
  }
  // %f (microseconds) is Python's own directive, which C strftime lacks.
  auto micros = std::chrono::duration_cast<std::chrono::microseconds>(clock_.now.time_since_epoch()).count() %
                1000000;
  if (micros < 0) micros += 1000000;
  std::string expanded;
  for (size_t i = 0; i < format.size(); ++i) {
    if (format[i] == '%' && i + 1 < format.size()) {
      if (format[i + 1] == 'f') {
        expanded += fmt::format("{:06d}", micros);
        ++i;
        continue;
      }
      expanded += format.substr(i, 2);
      ++i;
      continue;
    }
    expanded.push_back(format[i]);
  }
  if (expanded.empty()) return "";
  std::string buffer(expanded.size() * 4 + 64, '\0');
  size_t n = std::strftime(buffer.data(), buffer.size(), expanded.c_str(), &tm);
  buffer.resize(n);
  return buffer;
}

}  // namespace draftforge::chat_template
