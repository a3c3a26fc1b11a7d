// Learning-rate schedules with linear warm-up, as transformers' get_*_schedule_with_warmup:
// the lr of optimizer step k (0-based) is lr · factor(k), factor(k) = k / warmup during warm-up,
// then cosine / linear decay to min_lr_ratio at total_steps, or constant.
#pragma once
#include <cstdint>
#include <string>

namespace onebit::distill {

struct ScheduleOptions {
  std::string kind = "cosine";  // cosine | linear | constant
  int64_t warmup_steps = 0;
  int64_t total_steps = 1;
  double min_lr_ratio = 0.0;
};

double lr_factor(int64_t step, const ScheduleOptions& o);

}  // namespace onebit::distill
