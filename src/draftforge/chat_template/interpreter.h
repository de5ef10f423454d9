// Tree-walking evaluator for parsed chat templates, with Jinja2's
// ImmutableSandboxedEnvironment semantics and the default Undefined: an
// undefined value prints as "" and iterates as empty, but reading its
// attributes or items, calling it or doing arithmetic with it raises
// UndefinedError.
//
// One Interpreter renders one template once; it is not shared between
// threads. Failures are thrown as TemplateException with the template line.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "draftforge/chat_template/ast.h"
#include "draftforge/chat_template/value.h"

namespace draftforge::chat_template {

bool IsKnownFilter(std::string_view name);
bool IsKnownTest(std::string_view name);

struct Frame {
  std::shared_ptr<Frame> parent;
  std::vector<std::pair<std::string, Value>> vars;

  const Value* Lookup(std::string_view name) const;
  void Assign(const std::string& name, Value value);
};

struct RenderClock {
  std::chrono::system_clock::time_point now;
  bool utc = false;  // format in UTC instead of the local time zone
};

class Interpreter {
 public:
  Interpreter(std::vector<std::pair<std::string, Value>> variables, RenderClock clock);

  // Renders `nodes`; `spans` receives the byte ranges of the output written
  // inside {% generation %} blocks.
  std::string Render(const NodeList& nodes, std::vector<std::pair<int64_t, int64_t>>* spans);

  Value Call(const Value& callee, CallArgs& args);
  Value GetAttr(const Value& object, const std::string& name);
  Value GetItem(const Value& object, const Value& key);
  Value ApplyFilter(const std::string& name, const Value& input, CallArgs& args);
  bool ApplyTest(const std::string& name, const Value& input, CallArgs& args);
  // Python iter(): list items, dict keys or string characters. Undefined is
  // empty, and other values raise TypeError.
  std::vector<Value> Iterate(const Value& value);
  std::string StrftimeNow(const std::string& format) const;
  // Runs a {% macro %} body in a new frame under `closure` and returns its output.
  Value InvokeMacro(const Node& node, const std::shared_ptr<Frame>& closure, const Value& caller,
                    CallArgs& args);

 private:
  enum class Flow { kNormal, kBreak, kContinue };

  Flow ExecList(const NodeList& nodes);
  Flow Exec(const Node& node);
  Flow ExecFor(const Node& node);
  void ExecMacro(const Node& node);
  void ExecCallBlock(const Node& node);
  Value Eval(const Expr& expr);
  Value EvalInner(const Expr& expr);
  Value EvalBinary(const std::string& op, const Value& left, const Value& right);
  bool EvalCompare(const std::string& op, const Value& left, const Value& right);
  CallArgs EvalArgs(const Expr& expr);
  Value MakeMacro(const Node& node, std::shared_ptr<Frame> closure, const std::string& name);
  void AssignTarget(const Target& target, const Value& value);
  Value Lookup(const std::string& name) const;
  std::string Capture(const NodeList& nodes);

  std::shared_ptr<Frame> frame_;
  std::string* out_ = nullptr;
  std::string* root_out_ = nullptr;
  std::vector<std::pair<int64_t, int64_t>>* spans_ = nullptr;
  RenderClock clock_;
  int macro_depth_ = 0;
};

// The global functions of transformers' environment: range, dict, namespace,
// joiner, raise_exception and strftime_now.
// NOTE: Jinja's cycler() and lipsum() globals are not implemented, so a
// template calling them fails with UndefinedError.
std::vector<std::pair<std::string, Value>> BuiltinGlobals();

// Looks up an attribute: bound str/dict/list methods, dict keys and namespace
// attributes. A mutating method or a name starting with "_" yields an
// undefined value that raises SecurityError, and an absent attribute one that
// raises UndefinedError with Jinja's message.
Value GetBuiltinAttribute(const Value& object, const std::string& name);

}  // namespace draftforge::chat_template
