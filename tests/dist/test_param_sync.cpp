// ParamSync in one process: its fused AdamW over flat shards against LibTorch's own per-tensor
// torch::optim::AdamW, its clipping against torch::nn::utils::clip_grad_norm_, gradient
// accumulation, and reductions that start from hooks while the backward still runs.
#include <torch/torch.h>

#include <string>
#include <vector>

#include "onebit/dist/grad_sync.h"
#include "onebit/dist/param_sync.h"
#include "tests/support.h"

using onebit::dist::ParamSync;
using onebit::dist::ParamSyncOptions;
using onebit::dist::Sharding;

namespace {

constexpr double kAdamTol = 1e-6;  // fused flat update vs per-tensor AdamW, fp32, 6 steps

std::vector<torch::Tensor> make_params(int seed) {
  torch::manual_seed(seed);
  std::vector<torch::Tensor> ps = {torch::randn({5, 7}), torch::randn({7}), torch::randn({3, 2, 4}), torch::randn({1})};
  for (auto& p : ps) p.requires_grad_(true);
  return ps;
}

std::vector<torch::Tensor> clones(const std::vector<torch::Tensor>& ps) {
  std::vector<torch::Tensor> out;
  for (const auto& p : ps) out.push_back(p.detach().clone().requires_grad_(true));
  return out;
}

// A loss with different curvature per tensor, so AdamW's per-element state matters.
torch::Tensor loss_of(const std::vector<torch::Tensor>& ps, int64_t step) {
  auto l = torch::zeros({});
  for (size_t i = 0; i < ps.size(); ++i) l = l + ((ps[i] - 0.3 * double(i)).pow(2) * double(i + 1 + step)).sum();
  return l + ps[0].sin().sum() * ps[1].sum();
}

double max_diff(const std::vector<torch::Tensor>& a, const std::vector<torch::Tensor>& b) {
  double worst = 0;
  for (size_t i = 0; i < a.size(); ++i) worst = std::max(worst, (a[i] - b[i]).abs().max().item<double>());
  return worst;
}

// Logs the order of reductions and of a marker the backward passes after the first layer.
struct LogSync final : onebit::dist::GradSync {
  std::vector<std::string>* log;
  explicit LogSync(std::vector<std::string>* l) : log(l) {}
  void after_backward(const std::vector<torch::Tensor>&) override {}
  double mean(double x) override { return x; }
  Wait allreduce_sum(torch::Tensor flat) override {
    log->push_back("reduce " + std::to_string(flat.numel()));
    return [] {};
  }
  int rank() const override { return 0; }
  int world_size() const override { return 1; }
};

}  // namespace

TEST_CASE("ParamSync: fused AdamW over flat buckets equals torch::optim::AdamW", "[dist]") {
  for (const auto mode : {Sharding::None, Sharding::Optimizer, Sharding::Gradients, Sharding::Full}) {
    for (const int64_t bucket_bytes : {int64_t(64), int64_t(25) << 20}) {
      CAPTURE(onebit::dist::sharding_name(mode), bucket_bytes);
      auto ours = make_params(11);
      auto ref = clones(ours);
      onebit::dist::NoSync sync;
      ParamSyncOptions o;
      o.sharding = mode;
      o.bucket_bytes = bucket_bytes;  // 64: several buckets, tensors never split
      o.beta1 = 0.8;
      o.beta2 = 0.95;
      o.eps = 1e-6;
      o.weight_decay = 0.1;
      ParamSync ps(ours, sync, o);
      torch::optim::AdamW adam(ref, torch::optim::AdamWOptions(0.05).betas({0.8, 0.95}).eps(1e-6).weight_decay(0.1));
      CHECK(max_diff(ours, ref) == 0);  // packing keeps the values
      for (int64_t step = 0; step < 6; ++step) {
        const double lr = 0.05 * (1.0 - 0.1 * double(step));  // a schedule: lr given per step
        ps.begin_backward(true);
        loss_of(ours, step).backward();
        ps.finish_backward();
        ps.step(lr);
        ps.zero_grad();
        adam.zero_grad();
        loss_of(ref, step).backward();
        for (auto& g : adam.param_groups()) static_cast<torch::optim::AdamWOptions&>(g.options()).lr(lr);
        adam.step();
      }
      const double d = max_diff(ours, ref);
      CAPTURE(d);
      CHECK(d < kAdamTol);
      CHECK(max_diff(ours, make_params(11)) > 0.1);  // it trained
    }
  }
}

TEST_CASE("ParamSync: accumulated gradients and clipping match torch", "[dist]") {
  for (const auto mode : {Sharding::None, Sharding::Gradients}) {
    CAPTURE(onebit::dist::sharding_name(mode));
    auto ours = make_params(5);
    auto ref = clones(ours);
    onebit::dist::NoSync sync;
    ParamSyncOptions o;
    o.sharding = mode;
    o.bucket_bytes = 100;
    ParamSync ps(ours, sync, o);
    for (int64_t micro = 0; micro < 3; ++micro) {
      ps.begin_backward(micro == 2);
      loss_of(ours, micro).backward();
      loss_of(ref, micro).backward();
    }
    ps.finish_backward();
    // grads() holds the flat accumulated gradient, in tensor order.
    std::vector<torch::Tensor> want;
    for (const auto& p : ref) want.push_back(p.grad().reshape({-1}));
    const auto flat_want = torch::cat(want);
    const auto flat_ours = torch::cat(ps.grads());
    REQUIRE(flat_ours.numel() == flat_want.numel());
    CHECK(torch::allclose(flat_ours, flat_want, 1e-6, 1e-6));
    const double ref_norm = torch::nn::utils::clip_grad_norm_(ref, 1.0);
    const double norm = ps.clip_grad_norm(1.0);
    CHECK(std::abs(norm - ref_norm) < 1e-4 * ref_norm);
    std::vector<torch::Tensor> clipped;
    for (const auto& p : ref) clipped.push_back(p.grad().reshape({-1}));
    CHECK(torch::allclose(torch::cat(ps.grads()), torch::cat(clipped), 1e-6, 1e-7));
    // ZeRO-2 keeps no gradient on the tensors themselves.
    if (mode == Sharding::Gradients)
      for (const auto& p : ours) CHECK(!p.grad().defined());
  }
}

TEST_CASE("ParamSync: a bucket is reduced from a hook as soon as its gradients are ready", "[dist]") {
  // Two layers, one bucket each: the second layer's bucket must go out before the backward
  // reaches the first layer's input.
  torch::manual_seed(2);
  auto w1 = torch::randn({4, 4}).requires_grad_(true), w2 = torch::randn({4, 4}).requires_grad_(true);
  std::vector<std::string> log;
  LogSync sync(&log);
  ParamSyncOptions o;
  o.bucket_bytes = 16 * 4;  // one 4x4 fp32 tensor per bucket
  ParamSync ps({w1, w2}, sync, o);
  const auto x = torch::randn({3, 4}).requires_grad_(true);
  auto h = torch::matmul(x, w1);
  h.register_hook([&](const torch::Tensor& g) {
    log.push_back("backward reached layer 1");
    return g;
  });
  const auto y = torch::matmul(torch::tanh(h), w2).pow(2).sum();
  ps.begin_backward(false);  // not the last micro-batch: nothing is reduced
  y.backward({}, /*retain_graph=*/true);
  ps.finish_backward();
  CHECK(log == std::vector<std::string>{"backward reached layer 1"});
  log.clear();
  ps.begin_backward(true);
  y.backward();
  ps.finish_backward();
  CHECK(log == std::vector<std::string>{"reduce 16", "backward reached layer 1", "reduce 16"});
}

TEST_CASE("ParamSync: bad options are one-line errors", "[dist]") {
  CHECK_THROWS_WITH(onebit::dist::parse_sharding("zero3"),
                    OB_CONTAINS("dist.sharding must be none, optimizer, gradients or full, got 'zero3'"));
  CHECK(onebit::dist::parse_sharding("gradients") == Sharding::Gradients);
  onebit::dist::NoSync sync;
  CHECK_THROWS_WITH(ParamSync({}, sync, {}), OB_CONTAINS("no trainable tensors"));
}
