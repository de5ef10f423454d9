#include <c10/util/Exception.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <limits>
#include <string>

#include "draftforge/cli/commands.h"

namespace draftforge::cli {

void ExitOnError(const Status& status) {
  if (status.ok()) return;
  spdlog::error("{}", status.ToString());
  throw CLI::RuntimeError(1);
}

CLI::Validator AtLeast(int64_t minimum) {
  return CLI::Validator(
      [minimum](std::string& input) -> std::string {
        int64_t value = 0;
        if (!CLI::detail::lexical_cast(input, value) || value < minimum) {
          return fmt::format("must be an integer >= {}, got {}", minimum, input);
        }
        return std::string();
      },
      fmt::format("INT>={}", minimum));
}

CLI::Validator Seed() {
  return CLI::Validator(
      [](std::string& input) -> std::string {
        const bool digits_only =
            !input.empty() && std::all_of(input.begin(), input.end(), [](char c) { return c >= '0' && c <= '9'; });
        // unsigned long long is 64 bits wide here, so strtoull sets ERANGE for
        // every value above the range.
        static_assert(std::numeric_limits<unsigned long long>::max() == std::numeric_limits<uint64_t>::max());
        errno = 0;
        if (digits_only) std::strtoull(input.c_str(), nullptr, 10);
        if (!digits_only || errno == ERANGE) {
          return fmt::format("must be an integer in 0..{} (NumPy's seed range), got {}",
                             std::numeric_limits<uint64_t>::max(), input);
        }
        return std::string();
      },
      "UINT64");
}

namespace {

// Joins the lines of an exception message so it fits one log line.
std::string OneLine(std::string text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  for (char& c : text) {
    if (c == '\n') c = ' ';
  }
  return text;
}

}  // namespace

std::vector<std::string>& PassthroughArgs() {
  static std::vector<std::string> args;
  return args;
}

int ParseAndRun(CLI::App& app, int argc, const char* const* argv) {
  // `launch-vllm ... -- VLLM_ARGS`: CLI11 takes a "--" right after a list
  // option (--layers 1 2 3 --) as the end of that list, and would then parse
  // vLLM's flags as ours. So everything after the first "--" that follows
  // the subcommand is set aside before parsing.
  int parsed_argc = argc;
  bool seen_launch = false;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "launch-vllm") seen_launch = true;
    if (seen_launch && arg == "--") {
      PassthroughArgs().assign(argv + i + 1, argv + argc);
      parsed_argc = i;
      break;
    }
  }
  try {
    app.parse(parsed_argc, argv);
  } catch (const CLI::ParseError& error) {
    return app.exit(error);
  } catch (const c10::Error& error) {
    // what() would append the C++ stack trace.
    spdlog::error("internal error from libtorch: {}", OneLine(error.what_without_backtrace()));
    return 1;
  } catch (const std::exception& error) {
    spdlog::error("internal error: {}", OneLine(error.what()));
    return 1;
  }
  return 0;
}

}  // namespace draftforge::cli
