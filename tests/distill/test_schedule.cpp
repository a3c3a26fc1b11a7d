// Schedules vs transformers' formulas (get_cosine_schedule_with_warmup, linear, constant).
#include <cmath>

#include "onebit/distill/schedule.h"
#include "tests/support.h"

namespace {
constexpr double kTol = 1e-12;
}

TEST_CASE("schedule: cosine with warm-up", "[distill]") {
  onebit::distill::ScheduleOptions o;
  o.warmup_steps = 10;
  o.total_steps = 110;
  CHECK(onebit::distill::lr_factor(0, o) == 0.0);
  CHECK(std::abs(onebit::distill::lr_factor(5, o) - 0.5) < kTol);
  CHECK(std::abs(onebit::distill::lr_factor(10, o) - 1.0) < kTol);
  CHECK(std::abs(onebit::distill::lr_factor(60, o) - 0.5) < kTol);  // half-way: cos(pi/2)
  CHECK(std::abs(onebit::distill::lr_factor(110, o)) < kTol);
  o.min_lr_ratio = 0.1;
  CHECK(std::abs(onebit::distill::lr_factor(110, o) - 0.1) < kTol);
  CHECK(std::abs(onebit::distill::lr_factor(60, o) - 0.55) < kTol);
}

TEST_CASE("schedule: linear and constant; bad kind named", "[distill]") {
  onebit::distill::ScheduleOptions o;
  o.kind = "linear";
  o.warmup_steps = 0;
  o.total_steps = 4;
  CHECK(std::abs(onebit::distill::lr_factor(1, o) - 0.75) < kTol);
  o.kind = "constant";
  CHECK(onebit::distill::lr_factor(3, o) == 1.0);
  o.kind = "cosin";
  CHECK_THROWS_WITH(onebit::distill::lr_factor(3, o), OB_CONTAINS("optim.schedule"));
}
