// GradSync: how gradients and logged scalars are combined across ranks. The trainer calls
// after_backward(params) once per optimizer step and never reduces gradients itself.
#pragma once
#include <torch/types.h>

#include <vector>

namespace onebit::dist {

class GradSync {
 public:
  virtual ~GradSync() = default;
  // Average the gradients of `params` over all ranks (in place).
  virtual void after_backward(const std::vector<torch::Tensor>& params) = 0;
  // Mean of a logged scalar over all ranks.
  virtual double mean(double x) = 0;
  virtual int rank() const = 0;
  virtual int world_size() const = 0;
};

// Single process: nothing to combine.
class NoSync final : public GradSync {
 public:
  void after_backward(const std::vector<torch::Tensor>&) override {}
  double mean(double x) override { return x; }
  int rank() const override { return 0; }
  int world_size() const override { return 1; }
};

}  // namespace onebit::dist
