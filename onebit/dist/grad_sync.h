// GradSync: the collectives that combine ranks. The trainer reaches them through ParamSync
// (onebit/dist/param_sync.h), which owns gradient reduction and the optimizer step for every
// dist.sharding mode, and through mean()/any() for logged scalars and rank-agreed decisions.
#pragma once
#include <torch/types.h>

#include <functional>
#include <vector>

namespace onebit::dist {

class GradSync {
 public:
  virtual ~GradSync() = default;
  // Average the gradients of `params` over all ranks (in place), in one pass after backward.
  virtual void after_backward(const std::vector<torch::Tensor>& params) = 0;
  // Mean of a logged scalar over all ranks.
  virtual double mean(double x) = 0;
  // True on every rank when `local` is true on any rank (e.g. inf/NaN gradients somewhere).
  virtual bool any(bool local) { return mean(local ? 1.0 : 0.0) > 0; }
  virtual int rank() const = 0;
  virtual int world_size() const = 0;

  // Asynchronous collectives on flat contiguous tensors (one dtype, the tensors' device), the
  // building blocks of ParamSync. Each starts the operation and returns a function that waits
  // for it; the tensors must stay alive and untouched until then. Sums over ranks. The
  // defaults are those of a single process.
  using Wait = std::function<void()>;
  // flat = sum over ranks of flat.
  virtual Wait allreduce_sum(torch::Tensor flat) {
    (void)flat;
    return [] {};
  }
  // in.numel() == world_size() * out.numel(); out = sum over ranks of in's chunk number rank().
  virtual Wait reduce_scatter_sum(torch::Tensor out, torch::Tensor in) {
    out.copy_(in);
    return [] {};
  }
  // out.numel() == world_size() * in.numel(); chunk r of out = rank r's in.
  virtual Wait all_gather(torch::Tensor out, torch::Tensor in) {
    out.copy_(in);
    return [] {};
  }
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
