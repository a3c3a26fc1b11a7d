// LossScaler: dynamic loss scaling for fp16 training, with torch.amp.GradScaler's semantics.
// fp16 keeps only ~5 decimal exponents: small activation gradients flush to zero. The loss is
// multiplied by scale() before backward, unscale_() divides the gradients back before clipping
// and reports inf/NaN, and update(overflow) adapts the scale: on overflow the caller skips the
// step, the scale is multiplied by backoff_factor and the growth counter restarts; after
// growth_interval finite steps in a row the scale is multiplied by growth_factor.
// bf16 has fp32's exponent range and needs no scaler.
#pragma once
#include <torch/types.h>

#include <cstdint>
#include <vector>

namespace onebit::distill {

struct LossScalerOptions {
  double init_scale = 65536.0;  // 2^16, as GradScaler
  double growth_factor = 2.0;
  double backoff_factor = 0.5;
  int64_t growth_interval = 2000;
  // An overflow at a scale this small is not a scaling problem (the fp16 forward or backward
  // itself overflows): update() then throws instead of skipping steps forever.
  double min_scale = 1.0 / (1 << 24);
};

class LossScaler {
 public:
  explicit LossScaler(LossScalerOptions options = {});

  double scale() const { return scale_; }
  // Finite steps since the scale last changed.
  int64_t growth_tracker() const { return growth_tracker_; }

  // Divides every defined gradient of `params` by scale() in place; true when any of them
  // holds inf or NaN (this process only: combine across ranks before deciding).
  bool unscale_(const std::vector<torch::Tensor>& params) const;
  // The same on gradient tensors themselves (e.g. ParamSync::grads()).
  bool unscale_grads_(const std::vector<torch::Tensor>& grads) const;

  // After the (rank-agreed) overflow decision of one optimizer step.
  void update(bool overflow);

  // Checkpoint state.
  void load(double scale, int64_t growth_tracker);

  const LossScalerOptions& options() const { return options_; }

 private:
  LossScalerOptions options_;
  double scale_;
  int64_t growth_tracker_ = 0;
};

}  // namespace onebit::distill
