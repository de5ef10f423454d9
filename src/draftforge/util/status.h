// Status and Result<T>: error values in the style of Apache Arrow C++.
//
// Library code returns Status (no value) or Result<T> (a value or an error) and
// never throws for expected failures such as bad input files. A message names
// the file, line, record or field involved, shows the offending value and says
// what to do next. The CLI turns a failed Status into one log line and a
// non-zero exit code.
#pragma once

#include <fmt/format.h>

#include <optional>
#include <string>
#include <utility>
#include <variant>

namespace draftforge {

enum class StatusCode {
  kOk = 0,
  kInvalid,        // malformed input: bad JSON, wrong field type, out-of-range value
  kIOError,        // the operating system failed a read, write, rename or mmap
  kNotFound,       // a required file, tensor, column or key is absent
  kCorrupt,        // a binary file violates its format (truncated, bad header)
  kUnimplemented,  // valid input that this build does not support
  kNetwork,        // HTTP connection, timeout or server error
  kCancelled,      // stopped by a signal or by the caller
  kInternal,       // a broken invariant inside draftforge
};

const char* StatusCodeName(StatusCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status OK() { return Status(); }

  template <typename... Args>
  static Status Invalid(fmt::format_string<Args...> format, Args&&... args) {
    return Status(StatusCode::kInvalid, fmt::format(format, std::forward<Args>(args)...));
  }
  template <typename... Args>
  static Status IOError(fmt::format_string<Args...> format, Args&&... args) {
    return Status(StatusCode::kIOError, fmt::format(format, std::forward<Args>(args)...));
  }
  template <typename... Args>
  static Status NotFound(fmt::format_string<Args...> format, Args&&... args) {
    return Status(StatusCode::kNotFound, fmt::format(format, std::forward<Args>(args)...));
  }
  template <typename... Args>
  static Status Corrupt(fmt::format_string<Args...> format, Args&&... args) {
    return Status(StatusCode::kCorrupt, fmt::format(format, std::forward<Args>(args)...));
  }
  template <typename... Args>
  static Status Unimplemented(fmt::format_string<Args...> format, Args&&... args) {
    return Status(StatusCode::kUnimplemented, fmt::format(format, std::forward<Args>(args)...));
  }
  template <typename... Args>
  static Status Network(fmt::format_string<Args...> format, Args&&... args) {
    return Status(StatusCode::kNetwork, fmt::format(format, std::forward<Args>(args)...));
  }
  template <typename... Args>
  static Status Cancelled(fmt::format_string<Args...> format, Args&&... args) {
    return Status(StatusCode::kCancelled, fmt::format(format, std::forward<Args>(args)...));
  }
  template <typename... Args>
  static Status Internal(fmt::format_string<Args...> format, Args&&... args) {
    return Status(StatusCode::kInternal, fmt::format(format, std::forward<Args>(args)...));
  }

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }

  // "Invalid: <message>", or "OK".
  std::string ToString() const;

  // Returns a copy whose message is "<context>: <message>", for adding the file
  // or record that a lower layer did not know about.
  Status WithContext(const std::string& context) const;

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

// Holds either a value of type T or a non-OK Status.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : storage_(std::move(value)) {}  // NOLINT: implicit by design
  Result(Status status) : storage_(std::move(status)) {  // NOLINT: implicit by design
    if (std::get<Status>(storage_).ok()) {
      storage_ = Status::Internal("Result constructed from an OK Status without a value");
    }
  }

  bool ok() const { return std::holds_alternative<T>(storage_); }
  Status status() const { return ok() ? Status::OK() : std::get<Status>(storage_); }

  // Precondition: ok(). Checked in debug builds.
  T& operator*() & { return std::get<T>(storage_); }
  const T& operator*() const& { return std::get<T>(storage_); }
  T* operator->() { return &std::get<T>(storage_); }
  const T* operator->() const { return &std::get<T>(storage_); }
  T MoveValueUnsafe() { return std::move(std::get<T>(storage_)); }

  // Returns the value or throws std::runtime_error with the status text; for
  // tests and for the CLI's top level only.
  T ValueOrDie() && {
    if (!ok()) throw std::runtime_error(std::get<Status>(storage_).ToString());
    return std::move(std::get<T>(storage_));
  }

 private:
  std::variant<Status, T> storage_;
};

}  // namespace draftforge

#define DF_CONCAT_IMPL(a, b) a##b
#define DF_CONCAT(a, b) DF_CONCAT_IMPL(a, b)

// Returns the Status from the enclosing function when `expr` is not OK.
#define DF_RETURN_NOT_OK(expr)                         \
  do {                                                 \
    ::draftforge::Status _df_status = (expr);          \
    if (!_df_status.ok()) return _df_status;           \
  } while (false)

#define DF_ASSIGN_OR_RAISE_IMPL(result_name, lhs, rexpr) \
  auto result_name = (rexpr);                            \
  if (!result_name.ok()) return result_name.status();    \
  lhs = result_name.MoveValueUnsafe()

// `DF_ASSIGN_OR_RAISE(auto x, Compute());` declares x from a Result or returns
// its error Status from the enclosing function.
#define DF_ASSIGN_OR_RAISE(lhs, rexpr) \
  DF_ASSIGN_OR_RAISE_IMPL(DF_CONCAT(_df_result_, __COUNTER__), lhs, rexpr)
