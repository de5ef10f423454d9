// Learning-rate schedule: lr_t = lr * lambda(t), t = completed optimizer steps.
//   linear: t / max(1, W) for t < W, else max(0, (T - t) / max(1, T - W))
//   cosine: t / max(1, W) for t < W, else
//           max(0, 0.5 * (1 + cos(2 pi c (t - W) / max(1, T - W))))
//           (no clamp of the progress: past T the factor rises again)
//   none:   1
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "draftforge/util/status.h"

namespace draftforge::train {

enum class ScheduleType { kLinear, kCosine, kNone };

// Parses "linear", "cosine" or "none"; Invalid names the accepted values.
Result<ScheduleType> ParseScheduleType(const std::string& name);

struct LrSchedule {
  ScheduleType type = ScheduleType::kLinear;
  int64_t warmup_steps = 0;  // W
  int64_t total_steps = 0;   // T
  double num_cosine_cycles = 0.5;  // c

  // lambda(t).
  double Factor(int64_t step) const;
};

// Resolves unset values: T = epochs * batches_per_epoch, W = floor(T / 100).
// An explicit 0 is kept (unlike speculators 2a1443c8, which replaced 0 by the
// default too).
LrSchedule ResolveSchedule(ScheduleType type, std::optional<int64_t> warmup_steps,
                           std::optional<int64_t> total_steps, double num_cosine_cycles, int64_t epochs,
                           int64_t batches_per_epoch);

}  // namespace draftforge::train
