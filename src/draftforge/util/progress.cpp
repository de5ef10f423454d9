#include "draftforge/util/progress.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cstdio>

namespace draftforge {

ProgressBar::ProgressBar(std::string label, int64_t total, std::string unit,
                         std::string bytes_verb)
    : label_(std::move(label)),
      unit_(std::move(unit)),
      bytes_verb_(std::move(bytes_verb)),
      total_(total),
      is_tty_(::isatty(STDERR_FILENO) == 1),
      start_(std::chrono::steady_clock::now()),
      last_draw_(start_) {}

ProgressBar::~ProgressBar() { Finish(); }

double ProgressBar::ElapsedSeconds() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

void ProgressBar::Advance(int64_t count, int64_t tokens, int64_t bytes) {
  std::lock_guard<std::mutex> lock(mutex_);
  done_ += count;
  tokens_ += tokens;
  bytes_ += bytes;
  auto now = std::chrono::steady_clock::now();
  auto interval = is_tty_ ? std::chrono::milliseconds(200) : std::chrono::milliseconds(10000);
  if (now - last_draw_ >= interval) {
    last_draw_ = now;
    DrawLocked(false);
  }
}

void ProgressBar::SetSuffix(std::string suffix) {
  std::lock_guard<std::mutex> lock(mutex_);
  suffix_ = std::move(suffix);
}

void ProgressBar::Finish() {
  std::lock_guard<std::mutex> lock(mutex_);
  if (finished_) return;
  finished_ = true;
  DrawLocked(true);
}

void ProgressBar::DrawLocked(bool final_draw) {
  double seconds = std::max(1e-9, ElapsedSeconds());
  std::string bar;
  if (total_ > 0) {
    constexpr int kWidth = 24;
    int filled = static_cast<int>(kWidth * std::min<int64_t>(done_, total_) / total_);
    bar = fmt::format("[{}{}] {}/{} {}", std::string(filled, '#'), std::string(kWidth - filled, '.'),
                      done_, total_, unit_);
  } else {
    bar = fmt::format("{} {}", done_, unit_);
  }
  std::string rates = fmt::format("{:.1f} {}/s", done_ / seconds, unit_);
  if (tokens_ > 0) rates += fmt::format(", {:.0f} tokens/s", tokens_ / seconds);
  if (bytes_ > 0) rates += fmt::format(", {:.2f} GB {}", bytes_ / 1e9, bytes_verb_);
  std::string line = fmt::format("{} {} | {} | {:.0f}s{}{}", label_, bar, rates, seconds,
                                 suffix_.empty() ? "" : " | ", suffix_);
  if (is_tty_) {
    std::fprintf(stderr, "\r\033[K%s%s", line.c_str(), final_draw ? "\n" : "");
    std::fflush(stderr);
  } else {
    spdlog::info("{}", line);
  }
}

}  // namespace draftforge
