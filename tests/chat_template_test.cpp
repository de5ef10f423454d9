// Chat-template engine: every golden render of transformers'
// apply_chat_template (byte for byte, or the same error class and
// raise_exception text), message normalisation, tokenizer_config loading and
// the Jinja semantics the renders depend on.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <ctime>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>

#include "draftforge/chat_template/chat_template.h"
#include "test_support.h"

namespace draftforge::chat_template {
namespace {

using Json = nlohmann::ordered_json;
namespace fs = std::filesystem;

std::vector<Json> ReadJsonLines(const fs::path& path) {
  std::ifstream in(path);
  std::vector<Json> lines;
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty()) lines.push_back(Json::parse(line));
  }
  return lines;
}

// "2025-03-07T09:05:03" as a UTC time point.
std::chrono::system_clock::time_point ParseIsoTime(const std::string& text) {
  std::tm tm{};
  std::istringstream in(text);
  in >> std::get_time(&tm, "%Y-%m-%dT%H:%M:%S");
  return std::chrono::system_clock::from_time_t(timegm(&tm));
}

Json Messages(std::initializer_list<std::pair<const char*, const char*>> turns) {
  Json messages = Json::array();
  for (const auto& [role, content] : turns) messages.push_back({{"role", role}, {"content", content}});
  return messages;
}

// Renders `source` with two plain messages and the given extra variables.
Result<RenderResult> RenderSource(const std::string& source, Json kwargs = Json::object(),
                                  Json messages = Messages({{"user", "hi"}, {"assistant", "yo"}})) {
  DF_ASSIGN_OR_RAISE(auto compiled, ChatTemplate::Compile(source, "unit"));
  RenderOptions options;
  options.extra_kwargs = std::move(kwargs);
  return compiled.Render(messages, TokenizerConfig{}, options);
}

std::string RenderText(const std::string& source, Json kwargs = Json::object()) {
  auto result = RenderSource(source, std::move(kwargs));
  EXPECT_TRUE(result.ok()) << result.status().ToString();
  return result.ok() ? result->text : "<error>";
}

std::string RenderErrorType(const std::string& source, Json kwargs = Json::object()) {
  auto result = RenderSource(source, std::move(kwargs));
  EXPECT_FALSE(result.ok()) << "rendered: " << (result.ok() ? result->text : "");
  return TemplateErrorType(result.status());
}

struct GoldenOutcome {
  int passed = 0;
  int total = 0;
  std::vector<std::string> failures;
};

// Runs every line of one golden file and returns its pass count with the
// first failures.
GoldenOutcome RunGoldenFile(const fs::path& file, const fs::path& tokenizers_dir) {
  GoldenOutcome outcome;
  std::map<std::string, Result<ChatTemplate>> compiled_cache;
  std::map<std::string, TokenizerConfig> configs;
  for (const Json& line : ReadJsonLines(file)) {
    ++outcome.total;
    std::string tokenizer = line["tokenizer"];
    std::string case_id = line["case"];
    auto fail = [&](const std::string& why) {
      if (outcome.failures.size() < 5) outcome.failures.push_back(case_id + ": " + why);
    };
    if (!configs.count(tokenizer)) {
      auto config = LoadTokenizerConfig((tokenizers_dir / tokenizer).string());
      if (!config.ok()) {
        fail(config.status().ToString());
        continue;
      }
      configs[tokenizer] = *config;
    }
    const TokenizerConfig& config = configs[tokenizer];
    std::string source = line.contains("chat_template") ? line["chat_template"].get<std::string>() : config.chat_template;
    auto it = compiled_cache.find(source);
    if (it == compiled_cache.end()) it = compiled_cache.emplace(source, ChatTemplate::Compile(source, tokenizer)).first;
    if (!it->second.ok()) {
      fail(it->second.status().ToString());
      continue;
    }

    RenderOptions options;
    options.add_generation_prompt = line["add_generation_prompt"].get<bool>();
    for (auto kw = line["kwargs"].begin(); kw != line["kwargs"].end(); ++kw) {
      if (kw.key() == "tools") {
        options.tools = kw.value();
      } else {
        options.extra_kwargs[kw.key()] = kw.value();
      }
    }
    if (line.contains("now")) options.now = ParseIsoTime(line["now"]);

    auto result = it->second->Render(line["messages"], config, options);
    if (line.contains("error")) {
      if (result.ok()) {
        fail("expected " + line["error_type"].get<std::string>() + " but rendered");
      } else if (TemplateErrorType(result.status()) != line["error_type"]) {
        fail("expected " + line["error_type"].get<std::string>() + ", got " + result.status().ToString());
      } else if (line["error_type"] == "TemplateError" && TemplateErrorMessage(result.status()) != line["error"]) {
        fail("raise_exception text differs: " + result.status().ToString());
      } else {
        ++outcome.passed;
      }
      continue;
    }
    if (!result.ok()) {
      fail(result.status().ToString());
    } else if (result->text != line["rendered"]) {
      std::string expected = line["rendered"];
      size_t at = 0;
      while (at < expected.size() && at < result->text.size() && expected[at] == result->text[at]) ++at;
      fail(fmt::format("text differs at byte {}: expected {} got {}", at, Json(expected.substr(at, 60)).dump(),
                       Json(result->text.substr(at, 60)).dump()));
    } else {
      ++outcome.passed;
    }
  }
  return outcome;
}

void RunGoldenDirectory(const fs::path& dir, const fs::path& tokenizers_dir) {
  std::vector<fs::path> files;
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (entry.path().extension() == ".jsonl") files.push_back(entry.path());
  }
  std::sort(files.begin(), files.end());
  ASSERT_FALSE(files.empty()) << "no .jsonl files in " << dir;
  std::string summary;
  bool all_passed = true;
  for (const auto& file : files) {
    GoldenOutcome outcome = RunGoldenFile(file, tokenizers_dir);
    summary += fmt::format("\n{}: {}/{} passed", file.filename().string(), outcome.passed, outcome.total);
    for (const auto& failure : outcome.failures) summary += "\n    " + failure;
    all_passed = all_passed && outcome.passed == outcome.total && outcome.total > 0;
  }
  EXPECT_TRUE(all_passed) << summary;
}

TEST(ChatTemplateGolden, TokenizerTemplates) {
  DF_REQUIRE_SHARED(dir, "golden/chat");
  DF_REQUIRE_SHARED(tokenizers, "tokenizers");
  RunGoldenDirectory(dir, tokenizers);
}

TEST(ChatTemplateGolden, CustomTemplates) {
  DF_REQUIRE_SHARED(dir, "golden/chat_custom");
  DF_REQUIRE_SHARED(tokenizers, "tokenizers");
  RunGoldenDirectory(dir, tokenizers);
}

TEST(ChatTemplateGolden, NormalizeRawMessages) {
  DF_REQUIRE_SHARED(dir, "golden/chat");
  int checked = 0;
  for (const auto& entry : fs::directory_iterator(dir)) {
    for (const Json& line : ReadJsonLines(entry.path())) {
      if (!line.contains("raw_messages")) continue;
      // Prefix cases ("@J+gen") hold the first J normalised messages.
      int64_t unknown = 0;
      auto normalized = NormalizeMessages(line["raw_messages"], &unknown);
      ASSERT_TRUE(normalized.ok()) << normalized.status().ToString();
      Json expected = line["messages"];
      Json prefix(normalized->begin(), normalized->begin() + static_cast<std::ptrdiff_t>(expected.size()));
      EXPECT_EQ(prefix.dump(), expected.dump()) << line["case"];
      ++checked;
    }
  }
  EXPECT_GT(checked, 0);
}

TEST(ChatTemplateMessages, RoleMappingAndCounts) {
  Json raw = Json::parse(R"([{"from":"human","value":"a"},{"from":"bot","value":null},
                              {"role":"tool","content":"r","tool_call_id":"c1"},
                              {"role":"assistant","content":[{"type":"text","text":"x"}],"reasoning_content":"why"}])");
  int64_t unknown = 0;
  auto normalized = NormalizeMessages(raw, &unknown);
  ASSERT_TRUE(normalized.ok()) << normalized.status().ToString();
  EXPECT_EQ(unknown, 1);
  EXPECT_EQ((*normalized)[1].dump(), R"({"role":"assistant","content":""})");
  EXPECT_EQ((*normalized)[2].dump(), R"({"role":"tool","content":"r","tool_call_id":"c1"})");
  EXPECT_EQ((*normalized)[3].dump(),
            R"({"role":"assistant","content":[{"type":"text","text":"x"}],"thinking":"why","reasoning_content":"why"})");
}

TEST(ChatTemplateMessages, UltraChatStringsAlternate) {
  auto normalized = NormalizeMessages(Json::parse(R"(["q", "a", "q2"])"), nullptr);
  ASSERT_TRUE(normalized.ok());
  EXPECT_EQ(normalized->dump(),
            R"([{"role":"user","content":"q"},{"role":"assistant","content":"a"},{"role":"user","content":"q2"}])");
}

TEST(ChatTemplateMessages, RejectsNonList) {
  EXPECT_FALSE(NormalizeMessages(Json::parse(R"({"role":"user"})"), nullptr).ok());
  EXPECT_FALSE(NormalizeMessages(Json::parse(R"([42])"), nullptr).ok());
}

TEST(ChatTemplateConfig, SpecialTokensAndOverrides) {
  testing::TempDir dir;
  std::ofstream(dir.path() / "tokenizer_config.json") << R"({
    "bos_token": {"__type": "AddedToken", "content": "<s>"}, "eos_token": "</s>", "pad_token": null,
    "additional_special_tokens": [], "add_bos_token": true,
    "chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}]})";
  auto config = LoadTokenizerConfig(dir.str());
  ASSERT_TRUE(config.ok()) << config.status().ToString();
  EXPECT_EQ(config->chat_template, "D");
  EXPECT_EQ(config->bos_token, "<s>");
  EXPECT_TRUE(config->add_bos_token);
  EXPECT_FALSE(config->add_eos_token);
  EXPECT_EQ(config->special_tokens.dump(), R"({"bos_token":"<s>","eos_token":"</s>"})");

  std::ofstream(dir.path() / "chat_template.json") << R"({"chat_template": "J"})";
  EXPECT_EQ(LoadTokenizerConfig(dir.str())->chat_template, "J");
  std::ofstream(dir.path() / "chat_template.jinja") << "{{ bos_token }}X";
  auto overridden = LoadTokenizerConfig(dir.str());
  ASSERT_TRUE(overridden.ok());
  EXPECT_EQ(overridden->chat_template, "{{ bos_token }}X");
  EXPECT_NE(overridden->chat_template_source.find("chat_template.jinja"), std::string::npos);
}

TEST(ChatTemplateConfig, MissingAndMalformed) {
  testing::TempDir dir;
  auto missing = LoadTokenizerConfig(dir.str());
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  std::ofstream(dir.path() / "tokenizer_config.json") << R"({"eos_token": 5})";
  auto bad = LoadTokenizerConfig(dir.str());
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("eos_token"), std::string::npos);
}

TEST(ChatTemplateConfig, QwenHasNoBosToken) {
  DF_REQUIRE_SHARED(dir, "tokenizers/qwen3");
  auto config = LoadTokenizerConfig(dir.string());
  ASSERT_TRUE(config.ok()) << config.status().ToString();
  EXPECT_FALSE(config->special_tokens.contains("bos_token"));
  EXPECT_EQ(config->eos_token, "<|im_end|>");
  EXPECT_TRUE(config->special_tokens["additional_special_tokens"].is_array());
  EXPECT_FALSE(config->chat_template.empty());
}

TEST(ChatTemplateWhitespace, TrimAndLstripBlocks) {
  EXPECT_EQ(RenderText("  {% if true %}\nA\n  {% endif %}\nB"), "A\nB");
  EXPECT_EQ(RenderText("x  {% if true %}y{% endif %}"), "x  y");
  EXPECT_EQ(RenderText("  {%+ if true %}A{% endif %}"), "  A");
  EXPECT_EQ(RenderText("{% if true +%}\nA{% endif %}"), "\nA");
  EXPECT_EQ(RenderText("a  \n {{- 'b' -}} \n c"), "abc");
  EXPECT_EQ(RenderText("  {# note #}\nA"), "A");
  EXPECT_EQ(RenderText("  {{ 'v' }}\n"), "  v");
}

TEST(ChatTemplateWhitespace, TrailingNewlineDroppedOnce) {
  EXPECT_EQ(RenderText("A\n"), "A");
  EXPECT_EQ(RenderText("A\n\n"), "A\n");
  EXPECT_EQ(RenderText("A\r\nB"), "A\nB");
}

TEST(ChatTemplateWhitespace, RawBlock) {
  EXPECT_EQ(RenderText("{% raw %}{{ x }}{% endraw %}"), "{{ x }}");
}

TEST(ChatTemplateSemantics, PythonReprAndStr) {
  EXPECT_EQ(RenderText("{{ true }} {{ none }} {{ [1, 'a', none] }} {{ {'k': [true]} }} {{ (1,) }}"),
            "True None [1, 'a', None] {'k': [True]} (1,)");
  EXPECT_EQ(RenderText("{{ messages[0] }}"), "{'role': 'user', 'content': 'hi'}");
  EXPECT_EQ(RenderText("{{ \"it's\" }}|{{ [\"it's\"] }}"), "it's|[\"it's\"]");
  EXPECT_EQ(RenderText("{{ 10 / 4 }} {{ 1.0 }} {{ 1e20 }} {{ 0.0001 }} {{ 7 // 2 }} {{ -7 // 2 }} {{ -7 % 3 }}"),
            "2.5 1.0 1e+20 0.0001 3 -4 2");
  EXPECT_EQ(RenderText("{{ [1, 2] | trim }}"), "[1, 2]");
}

TEST(ChatTemplateSemantics, StringMethods) {
  EXPECT_EQ(RenderText("{{ '\\ufeff x \\u3000' | trim }}|{{ '\\n\\nab\\n' .lstrip('\\n') }}|{{ 'xxaxx'.strip('x') }}"),
            "\xEF\xBB\xBF x|ab\n|a");
  EXPECT_EQ(RenderText("{{ 'a</think>b'.split('</think>')[-1] }}|{{ ' a  b '.split() }}|{{ 'a,b,c'.rsplit(',', 1) }}"),
            "b|['a', 'b']|['a,b', 'c']");
  EXPECT_EQ(RenderText("{{ 'Zürich'|length }} {{ 'Zürich'[1] }} {{ 'Zürich'[-3:] }} {{ 'abc'[::-1] }}"),
            "6 ü ich cba");
  EXPECT_EQ(RenderText("{{ 'hello world'.title() }} {{ 'ab'.upper() }} {{ 'aXb'.replace('X', '-') }}"),
            "Hello World AB a-b");
  EXPECT_EQ(RenderText("{{ 'a' in 'cat' }} {{ 'x' not in ['x'] }} {{ 'role' in messages[0] }}"), "True False True");
  EXPECT_EQ(RenderText("{{ '{} and {name}'.format(1, name='two') }}|{{ '%s-%d' % ('a', 3) }}"), "1 and two|a-3");
}

TEST(ChatTemplateSemantics, PythonCornerCases) {
  EXPECT_EQ(RenderText("{% macro m(a) %}{{ varargs }}{{ kwargs }}{% endmacro %}{{ m(1, 2, k=3) }}"), "(2,){'k': 3}");
  EXPECT_EQ(RenderText("{{ 'straße'.upper() }} {{ 'ﬁ' | upper }}"), "STRASSE FI");
  EXPECT_EQ(RenderText("{{ '%s' % messages[0] }}|{{ '%(a)s-%(b)d' % {'a': 'A', 'b': 2} }}|{{ '%.2f%%' % 12.345 }}"),
            "{'role': 'user', 'content': 'hi'}|A-2|12.35%");
  EXPECT_EQ(RenderText("{{ 2 ** 3 ** 2 }} {{ -2 ** 2 }} {{ 1 < 2 < 3 }} {{ [1, 2] == (1, 2) }} {{ 1 == 1.0 }}"),
            "64 4 True False True");
  EXPECT_EQ(RenderText("{{ {'a': {'b': [1, {'c': 2}]}}['a']['b'][1] }} {{ \"}}\" }}"), "{'c': 2} }}");
  EXPECT_EQ(RenderText("{{ 3 ** 5 }} {{ 1 ** 4000000000000000000 }}"), "243 1");
  // Python's result is exact; int64 overflow falls back to a float instead of wrapping.
  EXPECT_TRUE(RenderSource("{{ 9223372036854775807 + 1 }}{{ 3 ** 100 }}").ok());
  EXPECT_EQ(RenderErrorType("{{ range(200000) | length }}"), "OverflowError");
  EXPECT_EQ(RenderErrorType("{{ 3 is divisibleby 0 }}"), "ZeroDivisionError");
  EXPECT_EQ(RenderErrorType("{{ 1 // 0 }}"), "ZeroDivisionError");
}

TEST(ChatTemplateSemantics, ErrorsMatchJinja) {
  EXPECT_EQ(RenderErrorType("{{ messages[0].content[0].x[1:] }}"), "UndefinedError");
  EXPECT_EQ(RenderErrorType("{% set f = 2.5 %}{{ f[1:] }}"), "TypeError");
  EXPECT_EQ(RenderErrorType("{{ messages[0][1:] }}"), "TypeError");
  EXPECT_EQ(RenderErrorType("{{ missing | int }}"), "UndefinedError");
  EXPECT_EQ(RenderErrorType("{{ 'ab'.find(1) }}"), "TypeError");
  EXPECT_EQ(RenderErrorType("{{ 5 | indent }}"), "TypeError");
  EXPECT_EQ(RenderErrorType("{{ 'ab' * 4000000000 }}"), "OverflowError");
  EXPECT_EQ(RenderErrorType("{{ 'x'.center(4000000000) }}"), "OverflowError");
  EXPECT_EQ(RenderText("{{ 0 | map('string') | list }} {{ 2.5 is odd }} {{ 4.0 is divisibleby 2 }} {{ 'ab' % [1] }}"),
            "[] False True ab");
  EXPECT_EQ(RenderText("{{ {'k': 1} | truncate(3) }}"), "{'k': 1}");
}

TEST(ChatTemplateSemantics, UndefinedBehaviour) {
  EXPECT_EQ(RenderText("[{{ missing }}]{% for x in missing %}no{% endfor %}{{ missing is defined }}"),
            "[]False");
  EXPECT_EQ(RenderText("{{ missing | default('d') }} {{ messages[0].nope is defined }} {{ messages[9] is defined }}"),
            "d False False");
  EXPECT_EQ(RenderErrorType("{{ missing.attr }}"), "UndefinedError");
  EXPECT_EQ(RenderErrorType("{{ missing + 1 }}"), "UndefinedError");
  EXPECT_EQ(RenderErrorType("{{ missing() }}"), "UndefinedError");
  EXPECT_EQ(RenderErrorType("{{ messages[0].content.nope() }}"), "UndefinedError");
}

TEST(ChatTemplateSemantics, TypeErrorsAndSandbox) {
  EXPECT_EQ(RenderErrorType("{{ 'a' + [1] }}"), "TypeError");
  EXPECT_EQ(RenderErrorType("{{ 1 + 'a' }}"), "TypeError");
  EXPECT_EQ(RenderErrorType("{{ messages.append(1) }}"), "SecurityError");
  EXPECT_EQ(RenderErrorType("{{ messages[0].update({}) }}"), "SecurityError");
  EXPECT_EQ(RenderErrorType("{{ ''.__class__() }}"), "SecurityError");
  auto result = RenderSource("{{ 'a' + messages }}");
  EXPECT_EQ(TemplateErrorMessage(result.status()), "can only concatenate str (not \"list\") to str");
}

TEST(ChatTemplateSemantics, TojsonLikeJsonDumps) {
  Json kwargs = Json::parse(R"({"v": {"b": [1, 2.5, null, true], "a": "ü\"", "big": 9007199254740993}})");
  EXPECT_EQ(RenderText("{{ v | tojson }}", kwargs),
            R"({"b": [1, 2.5, null, true], "a": "ü\"", "big": 9007199254740993})");
  EXPECT_EQ(RenderText("{{ v.b | tojson(indent=2) }}", kwargs), "[\n  1,\n  2.5,\n  null,\n  true\n]");
  EXPECT_EQ(RenderText("{{ v | tojson(sort_keys=true, ensure_ascii=true) }}", kwargs),
            R"({"a": "\u00fc\"", "b": [1, 2.5, null, true], "big": 9007199254740993})");
  EXPECT_EQ(RenderErrorType("{{ missing | tojson }}"), "TypeError");
}

TEST(ChatTemplateSemantics, LoopsAndControls) {
  EXPECT_EQ(RenderText("{% for m in messages %}{{ loop.index }}{{ loop.first }}{{ loop.last }}{{ loop.length }}"
                       "{% if not loop.first %}{{ loop.previtem.role }}{% endif %}|{% endfor %}"),
            "1TrueFalse2|2FalseTrue2user|");
  EXPECT_EQ(RenderText("{% for i in range(10) if i is odd %}{% if i > 6 %}{% break %}{% endif %}"
                       "{% if i == 3 %}{% continue %}{% endif %}{{ i }}{% endfor %}"),
            "15");
  EXPECT_EQ(RenderText("{% for x in [] %}x{% else %}empty{% endfor %}"), "empty");
  EXPECT_EQ(RenderText("{% for k, v in {'a': 1, 'b': 2}.items() %}{{ k }}={{ v }};{% endfor %}"), "a=1;b=2;");
  EXPECT_EQ(RenderText("{% set x = 1 %}{% for i in [1] %}{% set x = 2 %}{% endfor %}{{ x }}"), "1");
  EXPECT_EQ(RenderText("{% set ns = namespace(x=1) %}{% for i in [1] %}{% set ns.x = 2 %}{% endfor %}{{ ns.x }}"),
            "2");
  EXPECT_EQ(RenderText("{% for m in messages %}{{ loop.cycle('a', 'b') }}{% endfor %}"), "ab");
}

TEST(ChatTemplateSemantics, MacrosSetBlocksFilters) {
  EXPECT_EQ(RenderText("{% macro greet(name, p='Hi') %}{{ p }} {{ name }}{% endmacro %}{{ greet('A') }}/"
                       "{{ greet('B', p='Yo') }}"),
            "Hi A/Yo B");
  EXPECT_EQ(RenderText("{% set body %}x{{ 1 + 1 }}{% endset %}[{{ body }}]"), "[x2]");
  EXPECT_EQ(RenderText("{% filter upper %}abc{% endfilter %}"), "ABC");
  EXPECT_EQ(RenderText("{% macro w() %}<{{ caller() }}>{% endmacro %}{% call w() %}in{% endcall %}"), "<in>");
  EXPECT_EQ(RenderText("{{ messages | map(attribute='role') | join(',') }}|{{ messages | selectattr('role', 'eq', "
                       "'user') | list | length }}|{{ [3, 1, 2] | sort | first }}|{{ [1, 1, 2] | unique | list }}"),
            "user,assistant|1|1|[1, 2]");
  EXPECT_EQ(RenderText("{{ 2.675 | round(2) }} {{ 2.5 | round }} {{ 3 | round }} {{ '7' | int + 1 }} {{ 'x' | int }}"),
            "2.67 2.0 3 8 0");
  EXPECT_EQ(RenderText("{{ 'a' if false }}|{{ 'a' if false else 'b' }}|{{ none or 'z' }}|{{ 0 and 1 }}"), "|b|z|0");
}

TEST(ChatTemplateSemantics, StrftimeNowUsesInjectedClock) {
  auto compiled = ChatTemplate::Compile("{{ strftime_now('%d %b %Y %H:%M') }}");
  ASSERT_TRUE(compiled.ok());
  RenderOptions options;
  options.now = ParseIsoTime("2025-03-07T09:05:03");
  auto result = compiled->Render(Messages({{"user", "x"}}), TokenizerConfig{}, options);
  ASSERT_TRUE(result.ok()) << result.status().ToString();
  EXPECT_EQ(result->text, "07 Mar 2025 09:05");
}

TEST(ChatTemplateSemantics, GenerationSpansAreBytes) {
  auto compiled = ChatTemplate::Compile(
      "{% for m in messages %}<{{ m.role }}>{% if m.role == 'assistant' %}{% generation %}{{ m.content }}!"
      "{% endgeneration %}{% else %}{{ m.content }}{% endif %}{% endfor %}");
  ASSERT_TRUE(compiled.ok()) << compiled.status().ToString();
  EXPECT_TRUE(compiled->has_generation_markers());
  auto result = compiled->Render(Messages({{"user", "ü"}, {"assistant", "né"}, {"user", "q"}, {"assistant", "b"}}),
                                 TokenizerConfig{}, RenderOptions{});
  ASSERT_TRUE(result.ok()) << result.status().ToString();
  ASSERT_EQ(result->generation_spans.size(), 2u);
  auto [begin, end] = result->generation_spans[0];
  EXPECT_EQ(result->text.substr(static_cast<size_t>(begin), static_cast<size_t>(end - begin)), "né!");
  auto [begin2, end2] = result->generation_spans[1];
  EXPECT_EQ(result->text.substr(static_cast<size_t>(begin2), static_cast<size_t>(end2 - begin2)), "b!");
  EXPECT_FALSE(ChatTemplate::Compile("{{ x }}")->has_generation_markers());
}

TEST(ChatTemplateErrors, ParseErrorNamesLine) {
  auto compiled = ChatTemplate::Compile("line1\n{% if x %}\nok\n{% endfor %}", "broken");
  ASSERT_FALSE(compiled.ok());
  EXPECT_NE(compiled.status().message().find("template 'broken', line 4"), std::string::npos)
      << compiled.status().message();
  auto unclosed = ChatTemplate::Compile("{% for x in y %}\n\nno end", "open");
  ASSERT_FALSE(unclosed.ok());
  EXPECT_NE(unclosed.status().message().find("endfor"), std::string::npos) << unclosed.status().message();
  EXPECT_FALSE(ChatTemplate::Compile("{{ x | no_such_filter }}").ok());
  EXPECT_FALSE(ChatTemplate::Compile("{{ 'unterminated }}").ok());
}

TEST(ChatTemplateErrors, UnsupportedFeaturesNamed) {
  for (const char* source : {"{% extends 'base.html' %}", "{% include 'x' %}", "{% import 'm' as m %}",
                             "{% from 'm' import f %}"}) {
    auto compiled = ChatTemplate::Compile(source);
    ASSERT_FALSE(compiled.ok()) << source;
    EXPECT_EQ(compiled.status().code(), StatusCode::kUnimplemented) << source;
    std::string tag = std::string(source).substr(3, std::string(source).find(' ', 3) - 3);
    EXPECT_NE(compiled.status().message().find("'{% " + tag + " %}'"), std::string::npos)
        << compiled.status().message();
  }
}

TEST(ChatTemplateErrors, RuntimeErrorNamesLineAndMessage) {
  auto result = RenderSource("a\nb\n{{ raise_exception('bad ' ~ messages|length) }}");
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(TemplateErrorType(result.status()), "TemplateError");
  EXPECT_EQ(TemplateErrorMessage(result.status()), "bad 2");
  EXPECT_NE(result.status().message().find("line 3"), std::string::npos) << result.status().message();
}

TEST(ChatTemplateErrors, RunawayNestingFailsCleanly) {
  EXPECT_EQ(RenderErrorType("{% macro r() %}{{ r() }}{% endmacro %}{{ r() }}"), "RecursionError");
  EXPECT_EQ(RenderErrorType("{% set ns = namespace() %}{% set ns.me = ns %}{{ ns }}"), "RecursionError");
  auto deep = ChatTemplate::Compile("{{ " + std::string(100000, '(') + "1" + std::string(100000, ')') + " }}");
  ASSERT_FALSE(deep.ok());
  EXPECT_NE(deep.status().message().find("RecursionError"), std::string::npos) << deep.status().message();
  std::string nested_ifs;
  for (int i = 0; i < 5000; ++i) nested_ifs += "{% if true %}";
  EXPECT_FALSE(ChatTemplate::Compile(nested_ifs).ok());
}

TEST(ChatTemplateErrors, EmptyConversationIsIndexError) {
  auto compiled = ChatTemplate::Compile("{{ messages }}");
  ASSERT_TRUE(compiled.ok());
  auto result = compiled->Render(Json::array(), TokenizerConfig{}, RenderOptions{});
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(TemplateErrorType(result.status()), "IndexError");
}

TEST(ChatTemplateThreads, ConcurrentRendersAgree) {
  auto compiled = ChatTemplate::Compile(
      "{% set ns = namespace(n=0) %}{% for m in messages %}{% set ns.n = ns.n + 1 %}{{ m.content }}{% endfor %}"
      "{{ ns.n }}");
  ASSERT_TRUE(compiled.ok());
  std::vector<std::string> outputs(4);
  std::vector<std::thread> threads;
  for (size_t t = 0; t < outputs.size(); ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 200; ++i) {
        auto r = compiled->Render(Messages({{"user", "a"}, {"assistant", "b"}}), TokenizerConfig{}, RenderOptions{});
        outputs[t] = r.ok() ? r->text : r.status().ToString();
      }
    });
  }
  for (auto& thread : threads) thread.join();
  for (const auto& output : outputs) EXPECT_EQ(output, "ab2");
}

}  // namespace
}  // namespace draftforge::chat_template
