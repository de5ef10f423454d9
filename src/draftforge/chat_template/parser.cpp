#include "draftforge/chat_template/parser.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <initializer_list>
#include <optional>

#include "draftforge/chat_template/interpreter.h"
#include "draftforge/chat_template/py_string.h"

namespace draftforge::chat_template {

namespace {

// ---------------------------------------------------------------------------
// Lexer
// ---------------------------------------------------------------------------

enum class TokenType {
  kData, kVariableBegin, kVariableEnd, kBlockBegin, kBlockEnd,
  kName, kString, kInteger, kFloat, kOperator, kEof,
};

struct Token {
  TokenType type;
  std::string value;
  int line;
};

[[noreturn]] void SyntaxError(int line, std::string message) {
  throw TemplateException(ErrorType::kTemplateSyntaxError, std::move(message), line);
}

// Python's str.splitlines() boundaries become "\n", and one trailing newline
// is dropped (keep_trailing_newline=False), as Jinja's lexer does.
std::string NormalizeSource(std::string_view source) {
  std::vector<std::string> lines = PySplitLines(source);
  std::string out;
  for (size_t i = 0; i < lines.size(); ++i) {
    if (i > 0) out.push_back('\n');
    out += lines[i];
  }
  return out;
}

// Length of the Python-whitespace run starting at `pos`.
size_t WhitespaceLength(std::string_view s, size_t pos) {
  size_t start = pos;
  while (pos < s.size()) {
    unsigned char c = static_cast<unsigned char>(s[pos]);
    if (c < 0x80) {
      if (!IsPythonSpace(c)) break;
      ++pos;
      continue;
    }
    // Decode one multi-byte code point.
    size_t len = (c >= 0xF0) ? 4 : (c >= 0xE0) ? 3 : (c >= 0xC0) ? 2 : 1;
    std::vector<char32_t> cp = DecodeUtf8(s.substr(pos, len));
    if (cp.size() != 1 || !IsPythonSpace(cp[0])) break;
    pos += len;
  }
  return pos - start;
}

bool IsNameStart(char c) { return std::isalpha(static_cast<unsigned char>(c)) || c == '_'; }
bool IsNameChar(char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; }
bool IsDigit(char c) { return c >= '0' && c <= '9'; }

class Lexer {
 public:
  explicit Lexer(std::string source) : src_(std::move(source)) {}

  std::vector<Token> Tokenize() {
    bool line_starting = true;
    while (pos_ < src_.size()) {
      size_t tag = FindTagStart(pos_);
      if (tag == std::string::npos) {
        Emit(TokenType::kData, src_.substr(pos_), LineAt(pos_));
        Advance(src_.size());
        break;
      }
      char kind = src_[tag + 1];
      char sign = tag + 2 < src_.size() ? src_[tag + 2] : '\0';
      if (sign != '-' && sign != '+') sign = '\0';

      std::string text = src_.substr(pos_, tag - pos_);
      StripBeforeTag(text, sign, kind != '{', line_starting);
      if (!text.empty()) Emit(TokenType::kData, text, LineAt(pos_));
      Advance(tag);

      size_t after_open = tag + 2 + (sign ? 1 : 0);
      std::optional<size_t> raw_body = kind == '%' ? MatchRawBegin(after_open) : std::nullopt;
      if (raw_body) {
        Advance(*raw_body);
        line_starting = LexRawBody();
      } else if (kind == '#') {
        line_starting = LexComment(after_open);
      } else {
        line_starting = LexTag(kind == '%', after_open);
      }
    }
    tokens_.push_back(Token{TokenType::kEof, "", LineAt(src_.size())});
    return std::move(tokens_);
  }

 private:
  size_t FindTagStart(size_t from) const {
    while (true) {
      size_t p = src_.find('{', from);
      if (p == std::string::npos || p + 1 >= src_.size()) return std::string::npos;
      char next = src_[p + 1];
      if (next == '{' || next == '%' || next == '#') return p;
      from = p + 1;
    }
  }

  // Applies whitespace control to the text in front of a tag. A "-" strips all
  // whitespace. Otherwise lstrip_blocks removes the spaces and tabs between
  // the line start and a block or comment tag, unless the tag has "+".
  void StripBeforeTag(std::string& text, char sign, bool is_block_or_comment, bool line_starting) {
    if (sign == '-') {
      text = PyStrip(text, std::nullopt, false, true);
      return;
    }
    if (sign == '+' || !is_block_or_comment) return;
    size_t line_pos = text.rfind('\n');
    line_pos = line_pos == std::string::npos ? 0 : line_pos + 1;
    if (line_pos == 0 && !line_starting) return;
    bool only_blanks = std::all_of(text.begin() + static_cast<std::ptrdiff_t>(line_pos), text.end(),
                                   [](char c) { return c == ' ' || c == '\t'; });
    if (only_blanks) text.resize(line_pos);
  }

  // Matches `\s*raw\s*(-%}\s*|%})` after "{%"; returns the body start.
  std::optional<size_t> MatchRawBegin(size_t p) const {
    p += WhitespaceLength(src_, p);
    if (src_.compare(p, 3, "raw") != 0) return std::nullopt;
    p += 3;
    if (p < src_.size() && IsNameChar(src_[p])) return std::nullopt;
    p += WhitespaceLength(src_, p);
    if (src_.compare(p, 3, "-%}") == 0) {
      p += 3;
      return p + WhitespaceLength(src_, p);
    }
    if (src_.compare(p, 2, "%}") == 0) return p + 2;
    return std::nullopt;
  }

  // Finds `{%[-+]?\s*endraw\s*(+%}|-%}\s*|%}\n?)` and emits the text before it.
  bool LexRawBody() {
    size_t search = pos_;
    while (true) {
      size_t tag = src_.find("{%", search);
      if (tag == std::string::npos) SyntaxError(LineAt(pos_), "missing end of raw directive");
      size_t p = tag + 2;
      char sign = '\0';
      if (p < src_.size() && (src_[p] == '-' || src_[p] == '+')) sign = src_[p++];
      p += WhitespaceLength(src_, p);
      if (src_.compare(p, 6, "endraw") != 0) {
        search = tag + 2;
        continue;
      }
      p += 6;
      p += WhitespaceLength(src_, p);
      size_t end;
      if (src_.compare(p, 3, "+%}") == 0) {
        end = p + 3;
      } else if (src_.compare(p, 3, "-%}") == 0) {
        end = p + 3 + WhitespaceLength(src_, p + 3);
      } else if (src_.compare(p, 2, "%}") == 0) {
        end = p + 2;
        if (end < src_.size() && src_[end] == '\n') ++end;
      } else {
        search = tag + 2;
        continue;
      }
      std::string text = src_.substr(pos_, tag - pos_);
      // The raw-begin tag never ends with a newline, so the line does not start here.
      StripBeforeTag(text, sign, true, src_[pos_ - 1] == '\n');
      if (!text.empty()) Emit(TokenType::kData, text, LineAt(pos_));
      Advance(end);
      return src_[end - 1] == '\n';
    }
  }

  bool LexComment(size_t body) {
    size_t close = src_.find("#}", body);
    if (close == std::string::npos) SyntaxError(LineAt(pos_), "missing end of comment tag");
    size_t end = close + 2;
    char sign = close > body ? src_[close - 1] : '\0';
    if (sign == '-') {
      end += WhitespaceLength(src_, end);
    } else if (sign != '+' && end < src_.size() && src_[end] == '\n') {
      ++end;  // trim_blocks
    }
    Advance(end);
    return src_[end - 1] == '\n';
  }

  // Lexes the expression tokens of a {% %} or {{ }} tag up to its end marker.
  bool LexTag(bool is_block, size_t p) {
    Emit(is_block ? TokenType::kBlockBegin : TokenType::kVariableBegin, "", LineAt(pos_));
    Advance(p);
    int depth = 0;
    while (true) {
      Advance(pos_ + WhitespaceLength(src_, pos_));
      if (pos_ >= src_.size()) {
        SyntaxError(LineAt(pos_), is_block ? "unexpected end of template, expected '%}'"
                                           : "unexpected end of template, expected '}}'");
      }
      if (depth == 0) {
        std::optional<size_t> end = MatchTagEnd(is_block);
        if (end) {
          Emit(is_block ? TokenType::kBlockEnd : TokenType::kVariableEnd, "", LineAt(pos_));
          Advance(*end);
          return src_[*end - 1] == '\n';
        }
      }
      LexExpressionToken(depth);
    }
  }

  std::optional<size_t> MatchTagEnd(bool is_block) const {
    const char* close = is_block ? "%}" : "}}";
    if (src_[pos_] == '-' && src_.compare(pos_ + 1, 2, close) == 0) {
      size_t end = pos_ + 3;
      return end + WhitespaceLength(src_, end);
    }
    if (is_block && src_[pos_] == '+' && src_.compare(pos_ + 1, 2, close) == 0) return pos_ + 3;
    if (src_.compare(pos_, 2, close) == 0) {
      size_t end = pos_ + 2;
      if (is_block && end < src_.size() && src_[end] == '\n') ++end;  // trim_blocks
      return end;
    }
    return std::nullopt;
  }

  void LexExpressionToken(int& depth) {
    int line = LineAt(pos_);
    char c = src_[pos_];
    if (IsNameStart(c)) {
      size_t end = pos_;
      while (end < src_.size() && IsNameChar(src_[end])) ++end;
      Emit(TokenType::kName, src_.substr(pos_, end - pos_), line);
      Advance(end);
      return;
    }
    if (IsDigit(c)) {
      LexNumber(line);
      return;
    }
    if (c == '\'' || c == '"') {
      LexString(line);
      return;
    }
    static const char* const kOperators[] = {"//", "**", "==", "!=", "<=", ">=", "+", "-", "/", "*",
                                             "%",  "~",  "[",  "]",  "(",  ")",  "{", "}", "<", ">",
                                             "=",  ".",  ":",  "|",  ",",  ";"};
    for (const char* op : kOperators) {
      size_t len = std::strlen(op);
      if (src_.compare(pos_, len, op) == 0) {
        if (op[0] == '(' || op[0] == '[' || op[0] == '{') ++depth;
        if (len == 1 && (op[0] == ')' || op[0] == ']' || op[0] == '}')) {
          if (depth == 0) SyntaxError(line, fmt::format("unexpected '{}'", op));
          --depth;
        }
        Emit(TokenType::kOperator, op, line);
        Advance(pos_ + len);
        return;
      }
    }
    SyntaxError(line, fmt::format("unexpected char '{}'", c));
  }

  void LexNumber(int line) {
    size_t p = pos_;
    auto digits = [&](auto is_digit) {
      size_t start = p;
      while (p < src_.size() && (is_digit(src_[p]) || (src_[p] == '_' && p > start))) ++p;
      return p > start;
    };
    if (src_[p] == '0' && p + 1 < src_.size() && std::strchr("xXoObB", src_[p + 1])) {
      char base_char = static_cast<char>(std::tolower(static_cast<unsigned char>(src_[p + 1])));
      int base = base_char == 'x' ? 16 : base_char == 'o' ? 8 : 2;
      p += 2;
      size_t start = p;
      digits([&](char ch) { return std::isxdigit(static_cast<unsigned char>(ch)) != 0; });
      std::string text;
      for (size_t i = start; i < p; ++i) {
        if (src_[i] != '_') text.push_back(src_[i]);
      }
      Emit(TokenType::kInteger, std::to_string(std::stoll(text, nullptr, base)), line);
      Advance(p);
      return;
    }
    digits(IsDigit);
    bool is_float = false;
    if (p + 1 < src_.size() && src_[p] == '.' && IsDigit(src_[p + 1])) {
      ++p;
      digits(IsDigit);
      is_float = true;
    }
    if (p < src_.size() && (src_[p] == 'e' || src_[p] == 'E')) {
      size_t q = p + 1;
      if (q < src_.size() && (src_[q] == '+' || src_[q] == '-')) ++q;
      if (q < src_.size() && IsDigit(src_[q])) {
        p = q;
        digits(IsDigit);
        is_float = true;
      }
    }
    std::string text;
    for (size_t i = pos_; i < p; ++i) {
      if (src_[i] != '_') text.push_back(src_[i]);
    }
    Emit(is_float ? TokenType::kFloat : TokenType::kInteger, text, line);
    Advance(p);
  }

  // Decodes the Python escapes that Jinja's string literals accept.
  void LexString(int line) {
    char quote = src_[pos_];
    size_t p = pos_ + 1;
    std::string value;
    while (true) {
      if (p >= src_.size()) SyntaxError(line, "unterminated string literal");
      char c = src_[p];
      if (c == quote) break;
      if (c != '\\' || p + 1 >= src_.size()) {
        value.push_back(c);
        ++p;
        continue;
      }
      char e = src_[p + 1];
      p += 2;
      auto hex = [&](int count) -> std::optional<char32_t> {
        if (p + static_cast<size_t>(count) > src_.size()) return std::nullopt;
        uint32_t v = 0;
        for (int i = 0; i < count; ++i) {
          char h = src_[p + static_cast<size_t>(i)];
          if (!std::isxdigit(static_cast<unsigned char>(h))) return std::nullopt;
          v = v * 16 + static_cast<uint32_t>(std::isdigit(static_cast<unsigned char>(h)) ? h - '0' : (std::tolower(h) - 'a' + 10));
        }
        p += static_cast<size_t>(count);
        return static_cast<char32_t>(v);
      };
      switch (e) {
        case '\n': break;
        case '\\': value.push_back('\\'); break;
        case '\'': value.push_back('\''); break;
        case '"': value.push_back('"'); break;
        case 'a': value.push_back('\a'); break;
        case 'b': value.push_back('\b'); break;
        case 'f': value.push_back('\f'); break;
        case 'n': value.push_back('\n'); break;
        case 'r': value.push_back('\r'); break;
        case 't': value.push_back('\t'); break;
        case 'v': value.push_back('\v'); break;
        case 'x': case 'u': case 'U': {
          auto cp = hex(e == 'x' ? 2 : e == 'u' ? 4 : 8);
          if (!cp) SyntaxError(line, fmt::format("invalid \\{} escape in string literal", e));
          AppendUtf8(value, *cp);
          break;
        }
        default:
          if (e >= '0' && e <= '7') {
            uint32_t v = static_cast<uint32_t>(e - '0');
            for (int i = 0; i < 2 && p < src_.size() && src_[p] >= '0' && src_[p] <= '7'; ++i) {
              v = v * 8 + static_cast<uint32_t>(src_[p++] - '0');
            }
            AppendUtf8(value, v);
          } else {
            // Python keeps unknown escapes verbatim.
            value.push_back('\\');
            value.push_back(e);
          }
      }
    }
    Emit(TokenType::kString, value, line);
    Advance(p + 1);
  }

  void Emit(TokenType type, std::string value, int line) {
    tokens_.push_back(Token{type, std::move(value), line});
  }

  // Moves to `to`, counting newlines for line numbers.
  void Advance(size_t to) {
    line_ += static_cast<int>(std::count(src_.begin() + static_cast<std::ptrdiff_t>(pos_),
                                         src_.begin() + static_cast<std::ptrdiff_t>(to), '\n'));
    pos_ = to;
  }

  int LineAt(size_t p) const {
    if (p < pos_) return line_;
    return line_ + static_cast<int>(std::count(src_.begin() + static_cast<std::ptrdiff_t>(pos_),
                                               src_.begin() + static_cast<std::ptrdiff_t>(p), '\n'));
  }

  std::string src_;
  size_t pos_ = 0;
  int line_ = 1;
  std::vector<Token> tokens_;
};

// ---------------------------------------------------------------------------
// Parser
// ---------------------------------------------------------------------------

ExprPtr MakeExpr(Expr::Kind kind, int line) {
  auto e = std::make_unique<Expr>();
  e->kind = kind;
  e->line = line;
  return e;
}

class Parser {
 public:
  explicit Parser(std::vector<Token> tokens) : tokens_(std::move(tokens)) {}

  ParsedTemplate Parse() {
    ParsedTemplate result;
    result.nodes = Subparse({});
    if (Current().type != TokenType::kEof) {
      SyntaxError(Current().line, fmt::format("unexpected '{}'", Describe(Current())));
    }
    result.has_generation = has_generation_;
    return result;
  }

 private:
  const Token& Current() const { return tokens_[pos_]; }
  const Token& Peek(size_t ahead = 1) const {
    return tokens_[std::min(pos_ + ahead, tokens_.size() - 1)];
  }
  void Next() {
    if (pos_ + 1 < tokens_.size()) ++pos_;
  }

  static std::string Describe(const Token& t) {
    switch (t.type) {
      case TokenType::kData: return "template data";
      case TokenType::kVariableBegin: return "{{";
      case TokenType::kVariableEnd: return "}}";
      case TokenType::kBlockBegin: return "{%";
      case TokenType::kBlockEnd: return "%}";
      case TokenType::kEof: return "end of template";
      default: return t.value;
    }
  }

  bool IsOp(const char* op) const {
    return Current().type == TokenType::kOperator && Current().value == op;
  }
  bool IsName(const char* name) const {
    return Current().type == TokenType::kName && Current().value == name;
  }
  bool SkipOp(const char* op) {
    if (!IsOp(op)) return false;
    Next();
    return true;
  }
  bool SkipName(const char* name) {
    if (!IsName(name)) return false;
    Next();
    return true;
  }
  void ExpectOp(const char* op) {
    if (!SkipOp(op)) {
      SyntaxError(Current().line, fmt::format("expected '{}', got '{}'", op, Describe(Current())));
    }
  }
  void ExpectName(const char* name) {
    if (!SkipName(name)) {
      SyntaxError(Current().line, fmt::format("expected '{}', got '{}'", name, Describe(Current())));
    }
  }
  std::string ExpectIdentifier() {
    if (Current().type != TokenType::kName) {
      SyntaxError(Current().line, fmt::format("expected a name, got '{}'", Describe(Current())));
    }
    std::string name = Current().value;
    Next();
    return name;
  }
  void ExpectBlockEnd() {
    if (Current().type != TokenType::kBlockEnd) {
      SyntaxError(Current().line, fmt::format("expected end of statement block '%}}', got '{}'",
                                              Describe(Current())));
    }
    Next();
  }

  // Parses nodes until a block tag whose name is in `end_tags`; stops with the
  // current token on that name.
  NodeList Subparse(std::initializer_list<const char*> end_tags) {
    DepthGuard guard(this);
    NodeList nodes;
    while (Current().type != TokenType::kEof) {
      const Token& token = Current();
      if (token.type == TokenType::kData) {
        auto node = std::make_unique<Node>();
        node->kind = Node::Kind::kText;
        node->line = token.line;
        node->text = token.value;
        nodes.push_back(std::move(node));
        Next();
      } else if (token.type == TokenType::kVariableBegin) {
        auto node = std::make_unique<Node>();
        node->kind = Node::Kind::kOutput;
        node->line = token.line;
        Next();
        node->expr = ParseTuple(false, true, {}, false);
        if (Current().type != TokenType::kVariableEnd) {
          SyntaxError(Current().line, fmt::format("expected end of print statement '}}}}', got '{}'",
                                                  Describe(Current())));
        }
        Next();
        nodes.push_back(std::move(node));
      } else if (token.type == TokenType::kBlockBegin) {
        Next();
        if (Current().type == TokenType::kName) {
          for (const char* end : end_tags) {
            if (Current().value == end) return nodes;
          }
        }
        nodes.push_back(ParseStatement());
      } else {
        SyntaxError(token.line, fmt::format("unexpected '{}'", Describe(token)));
      }
    }
    if (end_tags.size() > 0) {
      std::string expected;
      for (const char* end : end_tags) expected += (expected.empty() ? "'" : " or '") + std::string(end) + "'";
      SyntaxError(Current().line, fmt::format("unexpected end of template, expected {}", expected));
    }
    return nodes;
  }

  NodePtr NewNode(Node::Kind kind, int line) {
    auto node = std::make_unique<Node>();
    node->kind = kind;
    node->line = line;
    return node;
  }

  NodePtr ParseStatement() {
    const Token& token = Current();
    int line = token.line;
    if (token.type != TokenType::kName) SyntaxError(line, "tag name expected");
    const std::string tag = token.value;
    if (tag == "if") return ParseIf();
    if (tag == "for") return ParseFor();
    if (tag == "set") return ParseSet();
    if (tag == "macro") return ParseMacro();
    if (tag == "call") return ParseCallBlock();
    if (tag == "filter") return ParseFilterBlock();
    if (tag == "with") return ParseWith();
    if (tag == "block") return ParseBlock();
    if (tag == "generation") {
      Next();
      ExpectBlockEnd();
      auto node = NewNode(Node::Kind::kGeneration, line);
      node->body = Subparse({"endgeneration"});
      Next();
      ExpectBlockEnd();
      has_generation_ = true;
      return node;
    }
    if (tag == "break" || tag == "continue") {
      if (loop_depth_ == 0) SyntaxError(line, fmt::format("'{}' outside of a for loop", tag));
      Next();
      ExpectBlockEnd();
      return NewNode(tag == "break" ? Node::Kind::kBreak : Node::Kind::kContinue, line);
    }
    static const char* const kUnsupported[] = {"extends", "include", "import", "from",
                                               "autoescape", "do", "trans"};
    for (const char* name : kUnsupported) {
      if (tag == name) {
        throw TemplateException(
            ErrorType::kUnsupported,
            fmt::format("unsupported Jinja feature '{{% {} %}}': chat templates are rendered "
                        "standalone, without loaders or extensions beyond loop controls",
                        tag),
            line);
      }
    }
    SyntaxError(line, fmt::format("encountered unknown tag '{}'", tag));
  }

  NodePtr ParseIf() {
    auto node = NewNode(Node::Kind::kIf, Current().line);
    Next();
    node->conditions.push_back(ParseTuple(false, false, {}, false));
    ExpectBlockEnd();
    node->bodies.push_back(Subparse({"elif", "else", "endif"}));
    while (true) {
      if (SkipName("elif")) {
        node->conditions.push_back(ParseTuple(false, false, {}, false));
        ExpectBlockEnd();
        node->bodies.push_back(Subparse({"elif", "else", "endif"}));
      } else if (SkipName("else")) {
        ExpectBlockEnd();
        node->else_body = Subparse({"endif"});
        Next();
        break;
      } else {
        Next();  // endif
        break;
      }
    }
    ExpectBlockEnd();
    return node;
  }

  NodePtr ParseFor() {
    auto node = NewNode(Node::Kind::kFor, Current().line);
    Next();
    node->target = ParseAssignTarget(true, {"in"}, false);
    ExpectName("in");
    node->expr = ParseTuple(false, false, {"recursive"}, false);
    if (SkipName("if")) node->filter = ParseExpression(true);
    if (SkipName("recursive")) {
      throw TemplateException(ErrorType::kUnsupported,
                              "unsupported Jinja feature 'for ... recursive'", node->line);
    }
    ExpectBlockEnd();
    ++loop_depth_;
    node->body = Subparse({"endfor", "else"});
    --loop_depth_;
    if (SkipName("else")) {
      ExpectBlockEnd();
      node->else_body = Subparse({"endfor"});
    }
    Next();
    ExpectBlockEnd();
    return node;
  }

  NodePtr ParseSet() {
    int line = Current().line;
    Next();
    Target target = ParseAssignTarget(true, {}, true);
    if (SkipOp("=")) {
      auto node = NewNode(Node::Kind::kSet, line);
      node->target = std::move(target);
      node->expr = ParseTuple(false, true, {}, false);
      ExpectBlockEnd();
      return node;
    }
    auto node = NewNode(Node::Kind::kSetBlock, line);
    node->target = std::move(target);
    if (IsOp("|")) node->expr = ParseFilterChain(nullptr);
    ExpectBlockEnd();
    node->body = Subparse({"endset"});
    Next();
    ExpectBlockEnd();
    return node;
  }

  void ParseSignature(std::vector<MacroParam>& params) {
    ExpectOp("(");
    while (!IsOp(")")) {
      if (!params.empty()) ExpectOp(",");
      if (IsOp(")")) break;
      MacroParam param;
      param.name = ExpectIdentifier();
      if (SkipOp("=")) param.default_value = ParseExpression(true);
      params.push_back(std::move(param));
    }
    ExpectOp(")");
  }

  NodePtr ParseMacro() {
    auto node = NewNode(Node::Kind::kMacro, Current().line);
    Next();
    node->name = ExpectIdentifier();
    ParseSignature(node->params);
    ExpectBlockEnd();
    int saved_depth = loop_depth_;
    loop_depth_ = 0;
    node->body = Subparse({"endmacro"});
    loop_depth_ = saved_depth;
    Next();
    ExpectBlockEnd();
    return node;
  }

  NodePtr ParseCallBlock() {
    auto node = NewNode(Node::Kind::kCallBlock, Current().line);
    Next();
    if (IsOp("(")) ParseSignature(node->params);
    node->expr = ParseExpression(true);
    if (node->expr->kind != Expr::Kind::kCall) SyntaxError(node->line, "expected a call in {% call %}");
    ExpectBlockEnd();
    node->body = Subparse({"endcall"});
    Next();
    ExpectBlockEnd();
    return node;
  }

  NodePtr ParseFilterBlock() {
    auto node = NewNode(Node::Kind::kFilterBlock, Current().line);
    Next();
    node->expr = ParseFilterChain(nullptr, /*leading_pipe=*/false);
    ExpectBlockEnd();
    node->body = Subparse({"endfilter"});
    Next();
    ExpectBlockEnd();
    return node;
  }

  NodePtr ParseWith() {
    auto node = NewNode(Node::Kind::kWith, Current().line);
    Next();
    while (Current().type != TokenType::kBlockEnd) {
      if (!node->assignments.empty()) ExpectOp(",");
      Target target = ParseAssignTarget(false, {}, false);
      ExpectOp("=");
      node->assignments.emplace_back(std::move(target), ParseExpression(true));
    }
    ExpectBlockEnd();
    node->body = Subparse({"endwith"});
    Next();
    ExpectBlockEnd();
    return node;
  }

  // {% block name %} renders its body in place: a standalone template has no
  // parent that could override it.
  NodePtr ParseBlock() {
    auto node = NewNode(Node::Kind::kWith, Current().line);
    Next();
    ExpectIdentifier();
    SkipName("scoped");
    SkipName("required");
    ExpectBlockEnd();
    node->body = Subparse({"endblock"});
    Next();
    if (Current().type == TokenType::kName) Next();
    ExpectBlockEnd();
    return node;
  }

  Target ParseAssignTarget(bool with_tuple, std::initializer_list<const char*> extra_end,
                           bool with_namespace) {
    int line = Current().line;
    if (with_namespace && Current().type == TokenType::kName && Peek().type == TokenType::kOperator &&
        Peek().value == ".") {
      Target target;
      target.name = Current().value;
      Next();
      Next();
      target.attribute = ExpectIdentifier();
      return target;
    }
    Target target;
    std::vector<Target> elements;
    bool is_tuple = false;
    while (true) {
      if (!elements.empty()) ExpectOp(",");
      if (IsTupleEnd(extra_end) || IsOp("=")) break;
      Target element;
      if (SkipOp("(")) {
        element = ParseAssignTarget(true, {}, false);
        ExpectOp(")");
      } else {
        element.name = ExpectIdentifier();
      }
      elements.push_back(std::move(element));
      if (with_tuple && IsOp(",")) {
        is_tuple = true;
      } else {
        break;
      }
    }
    if (elements.empty()) SyntaxError(line, "expected an assignment target");
    if (!is_tuple) return std::move(elements[0]);
    target.is_tuple = true;
    target.elements = std::move(elements);
    return target;
  }

  bool IsTupleEnd(std::initializer_list<const char*> extra_end) const {
    const Token& t = Current();
    if (t.type == TokenType::kVariableEnd || t.type == TokenType::kBlockEnd || t.type == TokenType::kEof) {
      return true;
    }
    if (t.type == TokenType::kOperator && t.value == ")") return true;
    if (t.type == TokenType::kName) {
      for (const char* end : extra_end) {
        if (t.value == end) return true;
      }
    }
    return false;
  }

  ExprPtr ParseTuple(bool simplified, bool with_condexpr, std::initializer_list<const char*> extra_end,
                     bool explicit_parentheses) {
    int line = Current().line;
    std::vector<ExprPtr> items;
    bool is_tuple = false;
    while (true) {
      if (!items.empty()) ExpectOp(",");
      if (IsTupleEnd(extra_end)) break;
      items.push_back(simplified ? ParsePrimary() : ParseExpression(with_condexpr));
      if (IsOp(",")) {
        is_tuple = true;
      } else {
        break;
      }
    }
    if (!is_tuple) {
      if (!items.empty()) return std::move(items[0]);
      if (!explicit_parentheses) {
        SyntaxError(line, fmt::format("expected an expression, got '{}'", Describe(Current())));
      }
    }
    auto tuple = MakeExpr(Expr::Kind::kTuple, line);
    tuple->children = std::move(items);
    return tuple;
  }

  ExprPtr ParseExpression(bool with_condexpr) {
    DepthGuard guard(this);
    return with_condexpr ? ParseCondExpr() : ParseOr();
  }

  ExprPtr ParseCondExpr() {
    int line = Current().line;
    ExprPtr expr1 = ParseOr();
    while (SkipName("if")) {
      ExprPtr expr2 = ParseOr();
      ExprPtr expr3;
      if (SkipName("else")) expr3 = ParseCondExpr();
      auto node = MakeExpr(Expr::Kind::kCondExpr, line);
      node->children.push_back(std::move(expr2));
      node->children.push_back(std::move(expr1));
      node->children.push_back(std::move(expr3));
      expr1 = std::move(node);
    }
    return expr1;
  }

  ExprPtr ParseOr() {
    int line = Current().line;
    ExprPtr left = ParseAnd();
    while (SkipName("or")) {
      auto node = MakeExpr(Expr::Kind::kOr, line);
      node->children.push_back(std::move(left));
      node->children.push_back(ParseAnd());
      left = std::move(node);
    }
    return left;
  }

  ExprPtr ParseAnd() {
    int line = Current().line;
    ExprPtr left = ParseNot();
    while (SkipName("and")) {
      auto node = MakeExpr(Expr::Kind::kAnd, line);
      node->children.push_back(std::move(left));
      node->children.push_back(ParseNot());
      left = std::move(node);
    }
    return left;
  }

  ExprPtr ParseNot() {
    if (IsName("not")) {
      int line = Current().line;
      Next();
      auto node = MakeExpr(Expr::Kind::kNot, line);
      node->children.push_back(ParseNot());
      return node;
    }
    return ParseCompare();
  }

  ExprPtr ParseCompare() {
    int line = Current().line;
    ExprPtr expr = ParseMath1();
    ExprPtr node;
    while (true) {
      std::string op;
      if (Current().type == TokenType::kOperator &&
          (Current().value == "==" || Current().value == "!=" || Current().value == "<" ||
           Current().value == "<=" || Current().value == ">" || Current().value == ">=")) {
        op = Current().value;
        Next();
      } else if (SkipName("in")) {
        op = "in";
      } else if (IsName("not") && Peek().type == TokenType::kName && Peek().value == "in") {
        Next();
        Next();
        op = "notin";
      } else {
        break;
      }
      if (!node) {
        node = MakeExpr(Expr::Kind::kCompare, line);
        node->children.push_back(std::move(expr));
      }
      node->ops.push_back(op);
      node->children.push_back(ParseMath1());
    }
    return node ? std::move(node) : std::move(expr);
  }

  ExprPtr Binary(const std::string& op, ExprPtr left, ExprPtr right, int line) {
    auto node = MakeExpr(Expr::Kind::kBinary, line);
    node->name = op;
    node->children.push_back(std::move(left));
    node->children.push_back(std::move(right));
    return node;
  }

  ExprPtr ParseMath1() {
    int line = Current().line;
    ExprPtr left = ParseConcat();
    while (IsOp("+") || IsOp("-")) {
      std::string op = Current().value;
      Next();
      left = Binary(op, std::move(left), ParseConcat(), line);
    }
    return left;
  }

  ExprPtr ParseConcat() {
    int line = Current().line;
    ExprPtr left = ParseMath2();
    while (SkipOp("~")) left = Binary("~", std::move(left), ParseMath2(), line);
    return left;
  }

  ExprPtr ParseMath2() {
    int line = Current().line;
    ExprPtr left = ParsePow();
    while (IsOp("*") || IsOp("/") || IsOp("//") || IsOp("%")) {
      std::string op = Current().value;
      Next();
      left = Binary(op, std::move(left), ParsePow(), line);
    }
    return left;
  }

  ExprPtr ParsePow() {
    int line = Current().line;
    ExprPtr left = ParseUnary(true);
    while (SkipOp("**")) left = Binary("**", std::move(left), ParseUnary(true), line);
    return left;
  }

  ExprPtr ParseUnary(bool with_filter) {
    DepthGuard guard(this);
    int line = Current().line;
    ExprPtr node;
    if (SkipOp("-")) {
      node = MakeExpr(Expr::Kind::kNeg, line);
      node->children.push_back(ParseUnary(false));
    } else if (SkipOp("+")) {
      node = MakeExpr(Expr::Kind::kPos, line);
      node->children.push_back(ParseUnary(false));
    } else {
      node = ParsePrimary();
    }
    node = ParsePostfix(std::move(node));
    if (with_filter) node = ParseFilterExpr(std::move(node));
    return node;
  }

  ExprPtr ParsePrimary() {
    const Token& token = Current();
    int line = token.line;
    if (token.type == TokenType::kName) {
      const std::string& v = token.value;
      auto node = MakeExpr(Expr::Kind::kConst, line);
      if (v == "true" || v == "True") {
        node->value = Value::Bool(true);
      } else if (v == "false" || v == "False") {
        node->value = Value::Bool(false);
      } else if (v == "none" || v == "None") {
        node->value = Value::None();
      } else {
        node->kind = Expr::Kind::kName;
        node->name = v;
      }
      Next();
      return node;
    }
    if (token.type == TokenType::kString) {
      std::string s;
      while (Current().type == TokenType::kString) {
        s += Current().value;
        Next();
      }
      auto node = MakeExpr(Expr::Kind::kConst, line);
      node->value = Value::String(std::move(s));
      return node;
    }
    if (token.type == TokenType::kInteger) {
      auto node = MakeExpr(Expr::Kind::kConst, line);
      try {
        node->value = Value::Int(std::stoll(token.value));
      } catch (const std::out_of_range&) {
        // NOTE: Python ints are unbounded, but literals beyond int64 become floats here.
        node->value = Value::Float(std::stod(token.value));
      }
      Next();
      return node;
    }
    if (token.type == TokenType::kFloat) {
      auto node = MakeExpr(Expr::Kind::kConst, line);
      node->value = Value::Float(std::stod(token.value));
      Next();
      return node;
    }
    if (SkipOp("(")) {
      ExprPtr node = ParseTuple(false, true, {}, true);
      ExpectOp(")");
      return node;
    }
    if (SkipOp("[")) {
      auto node = MakeExpr(Expr::Kind::kList, line);
      while (!IsOp("]")) {
        if (!node->children.empty()) ExpectOp(",");
        if (IsOp("]")) break;
        node->children.push_back(ParseExpression(true));
      }
      ExpectOp("]");
      return node;
    }
    if (SkipOp("{")) {
      auto node = MakeExpr(Expr::Kind::kDict, line);
      while (!IsOp("}")) {
        if (!node->children.empty()) ExpectOp(",");
        if (IsOp("}")) break;
        node->children.push_back(ParseExpression(true));
        ExpectOp(":");
        node->children.push_back(ParseExpression(true));
      }
      ExpectOp("}");
      return node;
    }
    SyntaxError(line, fmt::format("unexpected '{}'", Describe(token)));
  }

  ExprPtr ParsePostfix(ExprPtr node) {
    while (true) {
      int line = Current().line;
      if (SkipOp(".")) {
        if (Current().type == TokenType::kName) {
          auto attr = MakeExpr(Expr::Kind::kGetAttr, line);
          attr->name = Current().value;
          attr->children.push_back(std::move(node));
          node = std::move(attr);
          Next();
        } else if (Current().type == TokenType::kInteger) {
          auto item = MakeExpr(Expr::Kind::kGetItem, line);
          item->children.push_back(std::move(node));
          auto index = MakeExpr(Expr::Kind::kConst, line);
          index->value = Value::Int(std::stoll(Current().value));
          item->children.push_back(std::move(index));
          node = std::move(item);
          Next();
        } else {
          SyntaxError(line, "expected a name or number after '.'");
        }
      } else if (SkipOp("[")) {
        std::vector<ExprPtr> subscripts;
        while (!IsOp("]")) {
          if (!subscripts.empty()) ExpectOp(",");
          subscripts.push_back(ParseSubscribed());
        }
        ExpectOp("]");
        auto item = MakeExpr(Expr::Kind::kGetItem, line);
        item->children.push_back(std::move(node));
        if (subscripts.size() == 1) {
          item->children.push_back(std::move(subscripts[0]));
        } else {
          auto tuple = MakeExpr(Expr::Kind::kTuple, line);
          tuple->children = std::move(subscripts);
          item->children.push_back(std::move(tuple));
        }
        node = std::move(item);
      } else if (IsOp("(")) {
        node = ParseCall(std::move(node));
      } else {
        return node;
      }
    }
  }

  ExprPtr ParseSubscribed() {
    int line = Current().line;
    std::vector<ExprPtr> parts;
    if (SkipOp(":")) {
      parts.push_back(nullptr);
    } else {
      ExprPtr node = ParseExpression(true);
      if (!SkipOp(":")) return node;
      parts.push_back(std::move(node));
    }
    if (IsOp(":")) {
      parts.push_back(nullptr);
    } else if (!IsOp("]") && !IsOp(",")) {
      parts.push_back(ParseExpression(true));
    } else {
      parts.push_back(nullptr);
    }
    if (SkipOp(":")) {
      if (!IsOp("]") && !IsOp(",")) {
        parts.push_back(ParseExpression(true));
      } else {
        parts.push_back(nullptr);
      }
    } else {
      parts.push_back(nullptr);
    }
    auto slice = MakeExpr(Expr::Kind::kSlice, line);
    slice->children = std::move(parts);
    return slice;
  }

  void ParseCallArgs(Expr& node) {
    ExpectOp("(");
    bool first = true;
    while (!IsOp(")")) {
      if (!first) {
        ExpectOp(",");
        if (IsOp(")")) break;
      }
      first = false;
      if (SkipOp("*")) {
        node.dyn_args = ParseExpression(true);
      } else if (SkipOp("**")) {
        node.dyn_kwargs = ParseExpression(true);
      } else if (Current().type == TokenType::kName && Peek().type == TokenType::kOperator &&
                 Peek().value == "=") {
        std::string key = Current().value;
        Next();
        Next();
        node.kwargs.emplace_back(key, ParseExpression(true));
      } else {
        node.args.push_back(ParseExpression(true));
      }
    }
    ExpectOp(")");
  }

  ExprPtr ParseCall(ExprPtr callee) {
    auto node = MakeExpr(Expr::Kind::kCall, Current().line);
    node->children.push_back(std::move(callee));
    ParseCallArgs(*node);
    return node;
  }

  std::string ParseDottedName() {
    std::string name = ExpectIdentifier();
    while (IsOp(".") && Peek().type == TokenType::kName) {
      Next();
      name += "." + Current().value;
      Next();
    }
    return name;
  }

  // `| name(args) | name ...` applied to `node` (null inside {% filter %}
  // and block set, where the body is the input).
  ExprPtr ParseFilterChain(ExprPtr node, bool leading_pipe = true) {
    bool first = true;
    while (first ? (!leading_pipe || IsOp("|")) : IsOp("|")) {
      if (leading_pipe || !first) ExpectOp("|");
      first = false;
      int line = Current().line;
      auto filter = MakeExpr(Expr::Kind::kFilter, line);
      filter->name = ParseDottedName();
      if (!IsKnownFilter(filter->name)) SyntaxError(line, fmt::format("no filter named '{}'", filter->name));
      filter->children.push_back(std::move(node));
      if (IsOp("(")) ParseCallArgs(*filter);
      node = std::move(filter);
    }
    return node;
  }

  ExprPtr ParseFilterExpr(ExprPtr node) {
    while (true) {
      if (IsOp("|")) {
        node = ParseFilterChain(std::move(node));
      } else if (IsName("is")) {
        node = ParseTest(std::move(node));
      } else if (IsOp("(")) {
        node = ParseCall(std::move(node));
      } else {
        return node;
      }
    }
  }

  ExprPtr ParseTest(ExprPtr node) {
    int line = Current().line;
    Next();  // is
    bool negated = SkipName("not");
    auto test = MakeExpr(Expr::Kind::kTest, line);
    test->name = ParseDottedName();
    if (!IsKnownTest(test->name)) SyntaxError(line, fmt::format("no test named '{}'", test->name));
    test->children.push_back(std::move(node));
    const Token& t = Current();
    if (IsOp("(")) {
      ParseCallArgs(*test);
    } else if ((t.type == TokenType::kName || t.type == TokenType::kString ||
                t.type == TokenType::kInteger || t.type == TokenType::kFloat ||
                (t.type == TokenType::kOperator && (t.value == "[" || t.value == "{"))) &&
               !(t.type == TokenType::kName &&
                 (t.value == "else" || t.value == "or" || t.value == "and"))) {
      if (IsName("is")) SyntaxError(line, "you cannot chain multiple tests with is");
      test->args.push_back(ParsePostfix(ParsePrimary()));
    }
    if (!negated) return test;
    auto not_node = MakeExpr(Expr::Kind::kNot, line);
    not_node->children.push_back(std::move(test));
    return not_node;
  }

  // Bounds the parser's recursion, and with it the evaluator's, for any input.
  struct DepthGuard {
    explicit DepthGuard(Parser* parser) : parser_(parser) {
      if (++parser_->depth_ > kMaxNestingDepth * 4) {
        throw TemplateException(ErrorType::kRecursionError, "template nesting is too deep",
                                parser_->Current().line);
      }
    }
    ~DepthGuard() { --parser_->depth_; }
    Parser* parser_;
  };

  std::vector<Token> tokens_;
  size_t pos_ = 0;
  int depth_ = 0;
  int loop_depth_ = 0;
  bool has_generation_ = false;
};

}  // namespace

ParsedTemplate ParseTemplate(std::string_view source) {
  Lexer lexer(NormalizeSource(source));
  Parser parser(lexer.Tokenize());
  return parser.Parse();
}

}  // namespace draftforge::chat_template
