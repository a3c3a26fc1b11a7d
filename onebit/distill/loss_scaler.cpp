#include "onebit/distill/loss_scaler.h"

#include <torch/torch.h>

#include <cfloat>
#include <cmath>

#include "onebit/core/error.h"

namespace onebit::distill {

LossScaler::LossScaler(LossScalerOptions options) : options_(options), scale_(options.init_scale) {
  OB_CHECK(std::isfinite(options_.init_scale) && options_.init_scale > 0,
           "loss scaler: the initial scale must be > 0, got ", options_.init_scale);
  OB_CHECK(options_.growth_factor > 1, "loss scaler: growth_factor must be > 1, got ", options_.growth_factor);
  OB_CHECK(options_.backoff_factor > 0 && options_.backoff_factor < 1,
           "loss scaler: backoff_factor must be in (0, 1), got ", options_.backoff_factor);
  OB_CHECK(options_.growth_interval > 0, "loss scaler: growth_interval must be > 0, got ",
           options_.growth_interval);
}

bool LossScaler::unscale_(const std::vector<torch::Tensor>& params) const {
  std::vector<torch::Tensor> grads;
  for (const auto& p : params)
    if (p.grad().defined()) grads.push_back(p.grad());
  return unscale_grads_(grads);
}

bool LossScaler::unscale_grads_(const std::vector<torch::Tensor>& grads) const {
  if (grads.empty()) return false;
  // One fused pass: multiply by 1/scale (exact for powers of two) and flag non-finite values.
  const auto opts = grads.front().options().dtype(torch::kFloat32);
  auto found_inf = torch::zeros({1}, opts);
  const auto inv_scale = torch::full({1}, 1.0 / scale_, opts);
  at::_amp_foreach_non_finite_check_and_unscale_(grads, found_inf, inv_scale);
  return found_inf.item<float>() != 0;
}

void LossScaler::update(bool overflow) {
  if (overflow) {
    OB_CHECK(scale_ * options_.backoff_factor >= options_.min_scale, "fp16: gradients are inf/NaN even at loss scale ",
             scale_, "; the model overflows fp16 itself (use train.precision=bf16)");
    scale_ *= options_.backoff_factor;
    growth_tracker_ = 0;
    return;
  }
  // >=: a run resumed with a shorter growth_interval grows at its next finite step.
  if (++growth_tracker_ >= options_.growth_interval) {
    // Stay representable as the fp32 1/scale and scaled loss (GradScaler keeps it finite too).
    if (scale_ * options_.growth_factor <= FLT_MAX) scale_ *= options_.growth_factor;
    growth_tracker_ = 0;
  }
}

void LossScaler::load(double scale, int64_t growth_tracker) {
  OB_CHECK(std::isfinite(scale) && scale > 0, "loss scaler: a saved scale must be > 0, got ", scale);
  OB_CHECK(growth_tracker >= 0, "loss scaler: a saved growth counter must be >= 0, got ", growth_tracker);
  scale_ = scale;
  growth_tracker_ = growth_tracker;
}

}  // namespace onebit::distill
