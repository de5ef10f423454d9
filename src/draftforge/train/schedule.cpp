#include "draftforge/train/schedule.h"

#include <algorithm>
#include <cmath>
#include <numbers>

namespace draftforge::train {

Result<ScheduleType> ParseScheduleType(const std::string& name) {
  if (name == "linear") return ScheduleType::kLinear;
  if (name == "cosine") return ScheduleType::kCosine;
  if (name == "none") return ScheduleType::kNone;
  return Status::Invalid("--scheduler-type '{}' is not supported; use linear, cosine or none", name);
}

double LrSchedule::Factor(int64_t step) const {
  if (type == ScheduleType::kNone) return 1.0;
  if (step < warmup_steps) return static_cast<double>(step) / static_cast<double>(std::max<int64_t>(1, warmup_steps));
  double span = static_cast<double>(std::max<int64_t>(1, total_steps - warmup_steps));
  if (type == ScheduleType::kLinear) {
    return std::max(0.0, static_cast<double>(total_steps - step) / span);
  }
  double progress = static_cast<double>(step - warmup_steps) / span;
  return std::max(0.0, 0.5 * (1.0 + std::cos(2.0 * std::numbers::pi * num_cosine_cycles * progress)));
}

LrSchedule ResolveSchedule(ScheduleType type, std::optional<int64_t> warmup_steps,
                           std::optional<int64_t> total_steps, double num_cosine_cycles, int64_t epochs,
                           int64_t batches_per_epoch) {
  LrSchedule schedule;
  schedule.type = type;
  schedule.num_cosine_cycles = num_cosine_cycles;
  schedule.total_steps = total_steps.value_or(epochs * batches_per_epoch);
  schedule.warmup_steps = warmup_steps.value_or(schedule.total_steps / 100);
  return schedule;
}

}  // namespace draftforge::train
