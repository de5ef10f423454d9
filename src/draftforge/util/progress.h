// A single-line progress bar on stderr for long jobs (prepare, generate, train).
//
// Redraws at most every 200 ms; when stderr is not a terminal it logs one line
// every 10 s instead, so CI logs stay short.
#pragma once

#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>

namespace draftforge {

class ProgressBar {
 public:
  // `total` of 0 means unknown. `unit` names what is counted ("samples").
  // `bytes_verb` follows the byte count in the line, as in "1.20 GB written"
  // or "1.20 GB read".
  ProgressBar(std::string label, int64_t total, std::string unit,
              std::string bytes_verb = "written");
  ~ProgressBar();

  // Adds `count` items and `tokens` tokens; thread-safe.
  void Advance(int64_t count, int64_t tokens = 0, int64_t bytes = 0);
  // Text shown after the rates, e.g. "loss 1.23".
  void SetSuffix(std::string suffix);
  // Draws the final state and ends the line.
  void Finish();

  int64_t done() const { return done_; }
  double ElapsedSeconds() const;

 private:
  void DrawLocked(bool final_draw);

  std::string label_;
  std::string unit_;
  std::string bytes_verb_;
  std::string suffix_;
  int64_t total_;
  int64_t done_ = 0;
  int64_t tokens_ = 0;
  int64_t bytes_ = 0;
  bool is_tty_;
  bool finished_ = false;
  std::chrono::steady_clock::time_point start_;
  std::chrono::steady_clock::time_point last_draw_;
  mutable std::mutex mutex_;
};

}  // namespace draftforge
