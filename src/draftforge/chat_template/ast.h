// Syntax tree of a compiled chat template. Every node records its 1-based
// template line for error messages.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "draftforge/chat_template/value.h"

namespace draftforge::chat_template {

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

struct Expr {
  enum class Kind {
    kConst,      // value
    kName,       // name
    kList,       // children
    kTuple,      // children
    kDict,       // children: key, value, key, value, ...
    kGetAttr,    // children[0].name
    kGetItem,    // children[0][children[1]]
    kSlice,      // children[0..2]: start, stop, step (nullptr when omitted)
    kCall,       // children[0](args, kwargs)
    kFilter,     // children[0] | name(args, kwargs); children[0] null in {% filter %}
    kTest,       // children[0] is name(args, kwargs)
    kNot,        // not children[0]
    kNeg,        // -children[0]
    kPos,        // +children[0]
    kBinary,     // children[0] op children[1]: + - * / // % ** ~
    kAnd,
    kOr,
    kCompare,    // children[0] ops[0] children[1] ops[1] children[2] ...
    kCondExpr,   // children[1] if children[0] else children[2] (children[2] may be null)
  };

  Kind kind;
  int line = 0;
  Value value;
  std::string name;  // variable, attribute, filter or test name; operator for kBinary
  std::vector<ExprPtr> children;
  std::vector<ExprPtr> args;
  std::vector<std::pair<std::string, ExprPtr>> kwargs;
  ExprPtr dyn_args;    // *args
  ExprPtr dyn_kwargs;  // **kwargs
  std::vector<std::string> ops;  // comparison operators: == != < <= > >= in notin
};

struct Node;
using NodePtr = std::unique_ptr<Node>;
using NodeList = std::vector<NodePtr>;

// An assignment target: a name, `ns.attr`, or a tuple of names.
struct Target {
  std::string name;              // plain name, or namespace variable for attr targets
  std::string attribute;         // non-empty for `{% set ns.attr = ... %}`
  std::vector<Target> elements;  // non-empty for tuple unpacking
  bool is_tuple = false;
};

struct MacroParam {
  std::string name;
  ExprPtr default_value;  // null when required
};

struct Node {
  enum class Kind {
    kText,        // text
    kOutput,      // {{ expr }}
    kIf,          // conditions[i] -> bodies[i]; else_body
    kFor,         // for target in expr [if filter]: body; else_body
    kSet,         // target = expr
    kSetBlock,    // {% set target %}body{% endset %}, optional filter chain in expr
    kMacro,       // name(params): body
    kCallBlock,   // {% call(params) expr %}body{% endcall %}
    kFilterBlock, // {% filter f %}body{% endfilter %}: expr is the filter chain
    kWith,        // {% with a = x %}body{% endwith %}
    kBreak,
    kContinue,
    kGeneration,  // {% generation %}body{% endgeneration %}
  };

  Kind kind;
  int line = 0;
  std::string text;
  ExprPtr expr;
  ExprPtr filter;  // for-loop `if` condition
  Target target;
  std::vector<ExprPtr> conditions;
  std::vector<NodeList> bodies;
  NodeList body;
  NodeList else_body;
  std::string name;  // macro name
  std::vector<MacroParam> params;
  std::vector<std::pair<Target, ExprPtr>> assignments;  // {% with %}
  bool recursive = false;
};

}  // namespace draftforge::chat_template
