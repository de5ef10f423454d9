// Lexer and parser for the Jinja2 3.1 syntax chat templates use, configured
// as Hugging Face transformers configures its environment: trim_blocks and
// lstrip_blocks on, keep_trailing_newline off, the loopcontrols extension
// ({% break %}, {% continue %}) and transformers' {% generation %} block.
//
// Parse failures throw TemplateException (kTemplateSyntaxError, or
// kUnsupported for Jinja features this engine does not implement, such as
// {% extends %} or {% include %}) with the 1-based template line.
#pragma once

#include <string_view>

#include "draftforge/chat_template/ast.h"

namespace draftforge::chat_template {

struct ParsedTemplate {
  NodeList nodes;
  bool has_generation = false;  // the template contains {% generation %}
};

ParsedTemplate ParseTemplate(std::string_view source);

}  // namespace draftforge::chat_template
