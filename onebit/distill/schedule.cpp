#include "onebit/distill/schedule.h"

#include <algorithm>
#include <cmath>

#include "onebit/core/error.h"

namespace onebit::distill {

double lr_factor(int64_t step, const ScheduleOptions& o) {
  OB_CHECK(o.kind == "cosine" || o.kind == "linear" || o.kind == "constant",
           "optim.schedule must be cosine, linear or constant, got '", o.kind, "'");
  if (step < o.warmup_steps) return static_cast<double>(step) / static_cast<double>(std::max<int64_t>(1, o.warmup_steps));
  if (o.kind == "constant") return 1.0;
  const double progress = std::clamp(static_cast<double>(step - o.warmup_steps) /
                                         static_cast<double>(std::max<int64_t>(1, o.total_steps - o.warmup_steps)),
                                     0.0, 1.0);
  const double decay = o.kind == "cosine" ? 0.5 * (1.0 + std::cos(M_PI * progress)) : 1.0 - progress;
  return o.min_lr_ratio + (1.0 - o.min_lr_ratio) * decay;
}

}  // namespace onebit::distill
