// ParamSync in one process: its fused AdamW over flat shards against LibTorch's own per-tensor
// torch::optim::AdamW, its clipping against torch::nn::utils::clip_grad_norm_, gradient
// accumulation, and reductions that start from hooks while the backward still runs.
#include <torch/torch.h>

#include <cmath>
#include <string>
#include <tuple>
#include <vector>

#include "onebit/dist/grad_sync.h"
#include "onebit/dist/param_sync.h"
#include "onebit/optim/quantized_moment.h"
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

ParamSyncOptions sharded(Sharding mode, int64_t bucket_bytes) {
  ParamSyncOptions o;
  o.sharding = mode;
  o.bucket_bytes = bucket_bytes;
  return o;
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

TEST_CASE("ParamSync: per-tensor lr scales equal torch::optim::AdamW with two param groups", "[dist]") {
  // optim.gh_lr_scale: tensors 1 and 3 (the 1-D ones, like g and h) at 4x the lr of the others.
  for (const auto mode : {Sharding::None, Sharding::Full}) {
    CAPTURE(onebit::dist::sharding_name(mode));
    auto ours = make_params(5);
    auto ref = clones(ours);
    onebit::dist::NoSync sync;
    ParamSyncOptions o = sharded(mode, 256);
    o.lr_scale = {1.0, 4.0, 1.0, 4.0};
    ParamSync ps(ours, sync, o);
    const auto base = torch::optim::AdamWOptions(0.02).betas({0.9, 0.999}).eps(1e-8).weight_decay(0.01);
    std::vector<torch::optim::OptimizerParamGroup> groups;
    groups.emplace_back(std::vector<torch::Tensor>{ref[0], ref[2]},
                        std::make_unique<torch::optim::AdamWOptions>(torch::optim::AdamWOptions(base).lr(0.02)));
    groups.emplace_back(std::vector<torch::Tensor>{ref[1], ref[3]},
                        std::make_unique<torch::optim::AdamWOptions>(torch::optim::AdamWOptions(base).lr(0.08)));
    torch::optim::AdamW adam(std::move(groups), base);
    auto steps = [](ParamSync& sync_of, const std::vector<torch::Tensor>& params) {
      for (int64_t step = 0; step < 5; ++step) {
        sync_of.begin_backward(true);
        loss_of(params, step).backward();
        sync_of.finish_backward();
        sync_of.step(0.02);
        sync_of.zero_grad();
      }
    };
    steps(ps, ours);
    for (int64_t step = 0; step < 5; ++step) {
      adam.zero_grad();
      loss_of(ref, step).backward();
      adam.step();
    }
    const double d = max_diff(ours, ref);
    CAPTURE(d);
    CHECK(d < kAdamTol);
    // The scale mattered: one lr for all moves the 1-D tensors differently.
    auto plain = make_params(5);
    ParamSync one(plain, sync, ParamSyncOptions{});
    steps(one, plain);
    CHECK((plain[1] - ref[1]).abs().max().item<double>() > 0.01);
  }
  onebit::dist::NoSync sync;
  ParamSyncOptions bad;
  bad.lr_scale = {1.0};
  CHECK_THROWS_WITH(ParamSync(make_params(1), sync, bad), OB_CONTAINS("1 learning-rate scales for 4 tensors"));
}

TEST_CASE("ParamSync: accumulated gradients and clipping match torch", "[dist]") {
  for (const auto mode : {Sharding::None, Sharding::Gradients}) {
    CAPTURE(onebit::dist::sharding_name(mode));
    auto ours = make_params(5);
    auto ref = clones(ours);
    onebit::dist::NoSync sync;
    ParamSync ps(ours, sync, sharded(mode, 100));
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

namespace {

// bf16's spacing at |x| (8 significant bits): between 2^(e-1) and 2^e it is 2^(e-8).
double bf16_spacing(double x) {
  int e;
  std::frexp(std::abs(x), &e);
  return std::ldexp(1.0, e - 8);
}

// The kernel's fp32 math differs from the double reference by a few fp32 ulps: the stored value
// may sit that far beyond a neighbour of the exact value (relative to the spacing, and absolute
// where a difference cancels to near zero).
constexpr double kNeighbourSlack = 1e-3, kFp32Slack = 1e-8;

// Stored value vs the exact (double) value it stands for, element by element: every stored
// bf16 value must be one of the exact value's two bf16 neighbours. Returns the mean signed
// error in units of the spacing (for the unbiasedness check).
// AdamW of the tests that write its formula out: lr, betas, eps, weight decay.
constexpr double kLr = 0.01, kB1 = 0.9, kB2 = 0.95, kEps = 1e-8, kWd = 0.1;
ParamSyncOptions formula_options(torch::ScalarType state_dtype) {
  ParamSyncOptions o;
  std::tie(o.beta1, o.beta2, o.eps, o.weight_decay, o.state_dtype) = std::tuple{kB1, kB2, kEps, kWd, state_dtype};
  return o;
}

double check_neighbours(const torch::Tensor& stored, const torch::Tensor& exact) {
  const auto s = stored.to(torch::kFloat64).contiguous(), x = exact.to(torch::kFloat64).contiguous();
  const double* ps = s.data_ptr<double>();
  const double* px = x.data_ptr<double>();
  double sum = 0;
  for (int64_t i = 0; i < s.numel(); ++i) {
    const double sp = bf16_spacing(px[i]);
    INFO("element " << i << ": stored " << ps[i] << ", exact " << px[i]);
    REQUIRE(std::abs(ps[i] - px[i]) <= sp * (1 + kNeighbourSlack) + kFp32Slack);
    sum += (ps[i] - px[i]) / sp;
  }
  return sum / double(s.numel());
}

}  // namespace

TEST_CASE("ParamSync: bf16 latent and bf16 moments follow AdamW's formula up to stochastic rounding", "[dist]") {
  // w: a bf16 latent [64, 64]; g: an fp32 vector. Two steps with fixed gradients, the second
  // checked against AdamW written out in double from the stored (rounded) state of the first.
  constexpr double kMeanBias = 0.05;  // 5 sigma of a mean of 4096 errors in [-1, 1] spacings
  torch::manual_seed(4);
  auto w = (torch::randn({64, 64}) * 0.01).to(torch::kBFloat16).requires_grad_(true);
  auto g = torch::randn({64}).requires_grad_(true);
  const auto G1 = torch::randn({64, 64}), G2 = torch::randn({64, 64}), H = torch::randn({64});
  onebit::dist::NoSync sync;
  ParamSyncOptions o = formula_options(torch::kBFloat16);
  o.seed = 7;
  ParamSync ps({w, g}, sync, o);
  auto step = [&](const torch::Tensor& G) {
    ps.begin_backward(true);
    ((w.to(torch::kFloat32) * G).sum() + (g * H).sum()).backward();
    ps.finish_backward();
    ps.step(kLr);
    ps.zero_grad();
  };
  auto state = [&](const char* key) { return ps.state().at(key).to(torch::kFloat64); };
  // Bucket 0 holds w (bf16), bucket 1 holds g (fp32); both have bf16 moments.
  REQUIRE(ps.state().at("bucket0000.param").scalar_type() == torch::kBFloat16);
  REQUIRE(ps.state().at("bucket0001.param").scalar_type() == torch::kFloat32);
  REQUIRE(ps.state().at("bucket0001.exp_avg").scalar_type() == torch::kBFloat16);

  const auto w0 = w.detach().to(torch::kFloat64).reshape({-1});
  const auto g0 = g.detach().to(torch::kFloat64);
  const auto g1 = G1.to(torch::kBFloat16).to(torch::kFloat64).reshape({-1});  // w's gradient is bf16
  step(G1);
  // Step 1: m = (1-b1)·g, v = (1-b2)·g², update lr·m̂/(√v̂+eps) with m̂ = m/(1-b1), v̂ = v/(1-b2).
  const auto m1 = (1 - kB1) * g1, v1 = (1 - kB2) * g1 * g1;
  const auto w1 = w0 * (1 - kLr * kWd) - kLr * (m1 / (1 - kB1)) / ((v1 / (1 - kB2)).sqrt() + kEps);
  double bias = check_neighbours(state("bucket0000.param"), w1);
  CHECK(std::abs(bias) < kMeanBias);
  check_neighbours(state("bucket0000.exp_avg"), m1);
  check_neighbours(state("bucket0000.exp_avg_sq"), v1);
  // g stays fp32 (no rounding beyond fp32's), its moments are bf16.
  const auto h = H.to(torch::kFloat64);
  const auto gm1 = (1 - kB1) * h, gv1 = (1 - kB2) * h * h;
  const auto gw1 = g0 * (1 - kLr * kWd) - kLr * (gm1 / (1 - kB1)) / ((gv1 / (1 - kB2)).sqrt() + kEps);
  CHECK(torch::allclose(state("bucket0001.param"), gw1, 0, 1e-6));
  check_neighbours(state("bucket0001.exp_avg"), gm1);
  check_neighbours(state("bucket0001.exp_avg_sq"), gv1);

  // Step 2 from the stored state.
  const auto ws = state("bucket0000.param"), ms = state("bucket0000.exp_avg"), vs = state("bucket0000.exp_avg_sq");
  const auto g2 = G2.to(torch::kBFloat16).to(torch::kFloat64).reshape({-1});
  step(G2);
  const auto m2 = kB1 * ms + (1 - kB1) * g2, v2 = kB2 * vs + (1 - kB2) * g2 * g2;
  const auto w2 = ws * (1 - kLr * kWd) -
                  kLr * (m2 / (1 - kB1 * kB1)) / ((v2 / (1 - kB2 * kB2)).sqrt() + kEps);
  bias = check_neighbours(state("bucket0000.param"), w2);
  CHECK(std::abs(bias) < kMeanBias);
  const double m_bias = check_neighbours(state("bucket0000.exp_avg"), m2);
  CHECK(std::abs(m_bias) < kMeanBias);
  check_neighbours(state("bucket0000.exp_avg_sq"), v2);
  CHECK(state("bucket0000.step").item<double>() == 2);
}

TEST_CASE("ParamSync: int8 moments follow AdamW's formula from their decoded state and converge like fp32", "[dist]") {
  // Two steps with fixed gradients on a 3000-value tensor (two blocks, the second partial): the
  // stored moments decode to within a code spacing of the exact ones, and the second update is
  // AdamW written out in double from the decoded state of the first.
  const double rho_m = std::pow(10.0, 6.0 / 126.0), rho_v = std::pow(10.0, 12.0 / 254.0);
  torch::manual_seed(5);
  auto w = torch::randn({3000}).requires_grad_(true);
  const auto G1 = torch::randn({3000}), G2 = torch::randn({3000});
  onebit::dist::NoSync sync;
  const ParamSyncOptions o = formula_options(torch::kChar);
  ParamSync ps({w}, sync, o);
  auto step = [&](const torch::Tensor& G) {
    ps.begin_backward(true);
    (w * G).sum().backward();
    ps.finish_backward();
    ps.step(kLr);
    ps.zero_grad();
  };
  auto decoded = [&](const char* moment) {
    const auto st = ps.state();
    const std::string k = std::string("bucket0000.") + moment;
    return onebit::optim::dequantize({st.at(k), st.at(k + "_scale"), std::string(moment) == "exp_avg"})
        .to(torch::kFloat64);
  };
  REQUIRE(ps.state().at("bucket0000.exp_avg").scalar_type() == torch::kChar);
  REQUIRE(ps.state().at("bucket0000.exp_avg_sq").scalar_type() == torch::kByte);
  REQUIRE(ps.state().at("bucket0000.exp_avg_scale").numel() == 2);
  auto within = [](const torch::Tensor& q, const torch::Tensor& x, double rho) {
    const auto r = q / x;
    CHECK(r.min().item<double>() >= 1 / rho * (1 - 1e-5));
    CHECK(r.max().item<double>() <= rho * (1 + 1e-5));
  };
  const auto w0 = w.detach().to(torch::kFloat64), g1 = G1.to(torch::kFloat64), g2 = G2.to(torch::kFloat64);
  step(G1);
  // Step 1 updates from the exact moments; the stored ones are their codes.
  const auto m1 = (1 - kB1) * g1, v1 = (1 - kB2) * g1 * g1;
  const auto w1 = w0 * (1 - kLr * kWd) - kLr * (m1 / (1 - kB1)) / ((v1 / (1 - kB2)).sqrt() + kEps);
  CHECK(torch::allclose(w.detach().to(torch::kFloat64), w1, 0, 1e-6));
  const auto mq = decoded("exp_avg"), vq = decoded("exp_avg_sq");
  within(mq, m1, rho_m);
  within(vq, v1, rho_v);
  step(G2);
  const auto m2 = kB1 * mq + (1 - kB1) * g2, v2 = kB2 * vq + (1 - kB2) * g2 * g2;
  const auto w2 = w1 * (1 - kLr * kWd) - kLr * (m2 / (1 - kB1 * kB1)) / ((v2 / (1 - kB2 * kB2)).sqrt() + kEps);
  CHECK(torch::allclose(w.detach().to(torch::kFloat64), w2, 0, 1e-5));

  // 300 steps on loss_of (β2 = 0.999): int8 moments descend as far as fp32 moments do.
  auto train = [](torch::ScalarType state) {
    auto ps_ = make_params(12);
    onebit::dist::NoSync sync_;
    ParamSyncOptions oo;
    oo.state_dtype = state;
    ParamSync p(ps_, sync_, oo);
    for (int64_t s = 0; s < 300; ++s) {
      p.begin_backward(true);
      loss_of(ps_, 0).backward();
      p.finish_backward();
      p.step(0.01);
      p.zero_grad();
    }
    return ps_;
  };
  const auto a = train(torch::kFloat32), b = train(torch::kChar);
  // The loss they reach: as close to fp32's as bf16 moments get (0.45 and 0.39 here, of a 772 descent).
  const double la = loss_of(a, 0).item<double>(), lb = loss_of(b, 0).item<double>();
  const double descent = loss_of(make_params(12), 0).item<double>() - la;
  CAPTURE(la, lb, descent);
  CHECK(descent > 500);
  CHECK(std::abs(lb - la) < 2e-3 * descent);
}

TEST_CASE("ParamSync: lean precision shrinks the state, moves W by steps below bf16's spacing, repeats exactly",
          "[dist]") {
  constexpr int64_t kW = 4096, kG = 64;
  auto run = [&](torch::Dtype latent, torch::Dtype state, uint64_t seed, double lr, int64_t* bytes) {
    auto w = torch::full({kW}, 0.01, torch::kFloat32).to(latent).requires_grad_(true);
    auto g = torch::ones({kG}).requires_grad_(true);
    onebit::dist::NoSync sync;
    ParamSyncOptions o;
    o.weight_decay = 0;
    o.state_dtype = state;
    o.seed = seed;
    ParamSync ps({w, g}, sync, o);
    if (bytes) *bytes = ps.state_bytes();
    ps.begin_backward(true);
    (w.to(torch::kFloat32).sum() + g.sum()).backward();  // gradient 1: the first step moves by lr
    ps.finish_backward();
    ps.step(lr);
    return w.detach().to(torch::kFloat64);
  };
  // Bytes: parameters + gradients in their dtype, two moments in the state dtype, one fp32 step
  // count per bucket (one bucket when everything is fp32, two otherwise).
  int64_t fp32 = 0, lean_w = 0, lean_state = 0, lean_both = 0;
  run(torch::kFloat32, torch::kFloat32, 1, 1e-3, &fp32);
  run(torch::kBFloat16, torch::kFloat32, 1, 1e-3, &lean_w);
  run(torch::kFloat32, torch::kBFloat16, 1, 1e-3, &lean_state);
  run(torch::kBFloat16, torch::kBFloat16, 1, 1e-3, &lean_both);
  CHECK(fp32 == 2 * (kW + kG) * 4 + 2 * (kW + kG) * 4 + 4);
  CHECK(lean_w == 2 * (kW * 2 + kG * 4) + 2 * (kW + kG) * 4 + 2 * 4);
  CHECK(lean_state == 2 * (kW + kG) * 4 + 2 * (kW + kG) * 2 + 4);
  CHECK(lean_both == 2 * (kW * 2 + kG * 4) + 2 * (kW + kG) * 2 + 2 * 4);

  // A step of 1e-5 is 1/6 of bf16's spacing at 0.01 (2^-14): round-to-nearest would keep every
  // weight; stochastic rounding moves each down one spacing with probability 1e-5 / 2^-14.
  const double w0 = double(float(at::BFloat16(0.01f))), spacing = std::ldexp(1.0, -14), lr = 1e-5;
  const auto a = run(torch::kBFloat16, torch::kBFloat16, 1, lr, nullptr);
  const double p = lr / spacing;
  const double moved = a.ne(w0).to(torch::kFloat64).mean().item<double>();
  CHECK(std::abs(moved - p) < 5 * std::sqrt(p * (1 - p) / double(kW)));
  CHECK(torch::all(a.eq(w0) | a.eq(w0 - spacing)).item<bool>());
  // The same seed repeats the run bit for bit; another seed rounds differently.
  CHECK(torch::equal(a, run(torch::kBFloat16, torch::kBFloat16, 1, lr, nullptr)));
  CHECK(!torch::equal(a, run(torch::kBFloat16, torch::kBFloat16, 2, lr, nullptr)));
}
