// LossScaler on its own: GradScaler's growth/backoff rules, exact unscaling, inf/NaN detection.
#include <torch/torch.h>

#include <limits>

#include "onebit/core/error.h"
#include "onebit/distill/loss_scaler.h"
#include "tests/support.h"

using onebit::distill::LossScaler;
using onebit::distill::LossScalerOptions;

namespace {
LossScalerOptions opts(double init, int64_t interval) {
  LossScalerOptions o;
  o.init_scale = init;
  o.growth_interval = interval;
  return o;
}

torch::Tensor param_with_grad(const torch::Tensor& grad) {
  auto p = torch::zeros_like(grad).requires_grad_();
  p.mutable_grad() = grad.clone();
  return p;
}
}  // namespace

TEST_CASE("loss scaler: grows after growth_interval finite steps, halves on overflow", "[distill]") {
  LossScaler s(opts(1024, 3));
  CHECK(s.scale() == 1024);
  s.update(false);
  s.update(false);
  CHECK(s.scale() == 1024);
  CHECK(s.growth_tracker() == 2);
  s.update(false);  // the third finite step in a row
  CHECK(s.scale() == 2048);
  CHECK(s.growth_tracker() == 0);
  s.update(false);
  s.update(false);
  s.update(true);  // an overflow restarts the count
  CHECK(s.scale() == 1024);
  CHECK(s.growth_tracker() == 0);
  s.update(false);
  s.update(false);
  CHECK(s.scale() == 1024);
  s.update(false);
  CHECK(s.scale() == 2048);
  // The defaults are GradScaler's.
  const LossScalerOptions d;
  CHECK(d.init_scale == 65536.0);
  CHECK(d.growth_factor == 2.0);
  CHECK(d.backoff_factor == 0.5);
  CHECK(d.growth_interval == 2000);
}

TEST_CASE("loss scaler: unscale_ divides exactly and reports inf and NaN", "[distill]") {
  LossScaler s(opts(4096, 10));
  torch::manual_seed(11);
  const auto g1 = torch::randn({5, 7}), g2 = torch::randn({3});
  std::vector<torch::Tensor> params = {param_with_grad(g1 * 4096), param_with_grad(g2 * 4096),
                                       torch::zeros({2}).requires_grad_()};  // no grad: ignored
  CHECK_FALSE(s.unscale_(params));
  CHECK(torch::equal(params[0].grad(), g1));  // a power of two: exact
  CHECK(torch::equal(params[1].grad(), g2));

  for (float bad : {std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity(),
                    std::numeric_limits<float>::quiet_NaN()}) {
    CAPTURE(bad);
    auto g = g2.clone() * 4096;
    g[1] = bad;
    std::vector<torch::Tensor> ps = {param_with_grad(g1 * 4096), param_with_grad(g)};
    CHECK(s.unscale_(ps));
  }
}

TEST_CASE("loss scaler: bad options, restored state, and a hopeless overflow", "[distill]") {
  CHECK_THROWS_WITH(LossScaler(opts(0, 10)), OB_CONTAINS("initial scale must be > 0"));
  CHECK_THROWS_WITH(LossScaler(opts(1024, 0)), OB_CONTAINS("growth_interval must be > 0"));

  LossScaler s(opts(1024, 4));
  s.load(256, 3);
  CHECK(s.scale() == 256);
  CHECK(s.growth_tracker() == 3);
  s.update(false);  // the saved count continues
  CHECK(s.scale() == 512);
  CHECK_THROWS_WITH(s.load(-1, 0), OB_CONTAINS("saved scale must be > 0"));

  // Overflow at every scale down to min_scale is not a scaling problem: stop with a hint.
  LossScalerOptions o = opts(1.0, 10);
  o.min_scale = 0.25;
  LossScaler tiny(o);
  tiny.update(true);
  tiny.update(true);
  CHECK(tiny.scale() == 0.25);
  CHECK_THROWS_WITH(tiny.update(true), OB_CONTAINS("use train.precision=bf16"));
}
