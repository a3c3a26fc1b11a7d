// Trainer on a tiny random LLaMA (CPU): the KD loss falls, NaN streaks stop the run; bf16 and
// fp16 (loss scaling) against the fp32 step, and exact resume of the fp16 scaler.
#include <torch/torch.h>

#include <cmath>
#include <functional>
#include <limits>

#include "onebit/config/train_config.h"
#include "onebit/dist/grad_sync.h"
#include "onebit/distill/checkpoint.h"
#include "onebit/distill/trainer.h"
#include "onebit/models/loader.h"
#include "onebit/models/model_config.h"
#include "onebit/models/to_onebit.h"
#include "onebit/optim/quantized_moment.h"
#include "tests/data/tmpdir.h"
#include "tests/distill/tiny_trainer.h"
#include "tests/models/tiny.h"
#include "tests/support.h"

namespace {

using onebit::test::TrainerSetup;
using Setup = TrainerSetup;

onebit::models::ModelConfig tiny() { return onebit::test::tiny_llama_config(); }

Setup make_setup(const onebit::models::ModelConfig& mc = tiny()) { return onebit::test::make_trainer_setup(mc); }

// Mixed precision vs fp32 on the same weights and batch.
constexpr double kLossRel = 2e-2;       // relative difference of the first-step loss
constexpr double kMinGradCosine = 0.99; // all trainable gradients as one vector
constexpr double kGradNormRel = 2e-2;   // relative difference of the gradient norm

// One process whose hooks let a test see or change the gradient buckets as ParamSync reduces
// them (dist.sharding=none: one allreduce per bucket; the tiny model fits one bucket).
struct ProbeSync final : onebit::dist::GradSync {
  std::function<void(const torch::Tensor&)> on_reduce;
  // Plays a second rank that saw inf/NaN gradients: the vote on them says yes.
  bool remote_overflow = false;
  void after_backward(const std::vector<torch::Tensor>&) override {}
  double mean(double x) override { return x; }
  bool any(bool local) override { return local || remote_overflow; }
  Wait allreduce_sum(torch::Tensor flat) override {
    if (on_reduce) on_reduce(flat);
    return [] {};
  }
  int rank() const override { return 0; }
  int world_size() const override { return 1; }
};

// A copy of the gradients as they are reduced (before any unscaling), one flat bucket.
std::function<void(const torch::Tensor&)> capture(std::vector<torch::Tensor>& into) {
  return [&into](const torch::Tensor& bucket) { into = {bucket.detach().clone()}; };
}

torch::Tensor flat(const std::vector<torch::Tensor>& ts) {
  std::vector<torch::Tensor> parts;
  for (const auto& t : ts) parts.push_back(t.to(torch::kFloat64).flatten());
  return torch::cat(parts);
}

double cosine(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.dot(b) / (a.norm() * b.norm())).item<double>();
}

double rel(double a, double b) { return std::abs(a - b) / std::abs(b); }

std::map<std::string, torch::Tensor> snapshot(const onebit::distill::Trainer& tr) {
  std::map<std::string, torch::Tensor> out;
  for (const auto& [name, t] : tr.trainable()) out.emplace(name, t.detach().clone());
  return out;
}

bool same(const std::map<std::string, torch::Tensor>& a, const std::map<std::string, torch::Tensor>& b) {
  for (const auto& [name, t] : a)
    if (!torch::equal(t, b.at(name))) return false;
  return true;
}

// The first fp32 step on the setup: its stats and gradients (the reference of mixed precision).
std::pair<onebit::distill::StepStats, std::vector<torch::Tensor>> fp32_first_step(
    const onebit::models::ModelConfig& mc = tiny()) {
  Setup s = make_setup(mc);
  ProbeSync sync;
  std::vector<torch::Tensor> grads;
  sync.on_reduce = capture(grads);
  onebit::distill::Trainer tr(s.cfg, s.teacher, s.student, [&] { return s.batch; }, sync, 30);
  const auto st = tr.step();
  return {st, grads};
}

}  // namespace

TEST_CASE("trainer: distillation loss falls on a fixed batch", "[distill]") {
  Setup s = make_setup();
  onebit::dist::NoSync sync;
  onebit::distill::Trainer tr(s.cfg, s.teacher, s.student, [&] { return s.batch; }, sync, 30);
  const auto first = tr.step();
  onebit::distill::StepStats last;
  for (int i = 0; i < 29; ++i) last = tr.step();
  CHECK(last.step == 30);
  CHECK(last.tokens == 24);
  CHECK(first.kl > 0);
  CHECK(last.loss < 0.7 * first.loss);
  CHECK(last.grad_norm > 0);
  CHECK(!tr.trainable().empty());
  // Only latent W, g, h train.
  for (const auto& [name, t] : tr.trainable()) CHECK(name.find("embed") == std::string::npos);
}

TEST_CASE("trainer: kd.block_warmup_steps trains each block alone on the teacher's inputs, then end to end",
          "[distill]") {
  // `steps` steps with 3 of warm-up, without clipping (a global norm would couple the layers).
  auto run = [](int steps, bool flip_layer0, bool checkpointing) {
    Setup s = make_setup();
    s.cfg.kd.block_warmup_steps = 3;
    s.cfg.optim.grad_clip = 0;
    s.cfg.model.gradient_checkpointing = checkpointing;
    if (flip_layer0) {
      torch::NoGradGuard no_grad;
      for (auto& p : s.student->named_parameters())
        if (p.key().find("layers.0.") != std::string::npos && p.key().find(".weight") != std::string::npos)
          p.value().mul_(-1);
    }
    onebit::dist::NoSync sync;
    onebit::distill::Trainer tr(s.cfg, s.teacher, s.student, [&] { return s.batch; }, sync, 30);
    std::vector<onebit::distill::StepStats> stats;
    for (int i = 0; i < steps; ++i) stats.push_back(tr.step());
    return std::make_pair(stats, snapshot(tr));
  };
  const auto [stats, after] = run(5, false, false);
  // Warm-up steps: only the block term (kl is not computed), and it falls; then the KD loss.
  for (int i = 0; i < 3; ++i) {
    CHECK(stats[i].kl == 0);
    CHECK(stats[i].hidden > 0);
    CHECK(stats[i].loss == stats[i].hidden);
  }
  CHECK(stats[2].hidden < stats[0].hidden);
  CHECK(stats[3].kl > 0);
  // One warm-up step updates layer 1 the same whatever layer 0 holds: its input is the
  // teacher's, not layer 0's output. After the warm-up, layer 0 matters.
  const auto a = run(1, false, false).second, b = run(1, true, false).second;
  const auto a5 = run(5, true, false).second;
  int checked = 0;
  bool differs_later = false;
  for (const auto& [name, t] : a) {
    if (name.find("layers.1.") == std::string::npos) continue;
    INFO(name);
    CHECK(torch::equal(t, b.at(name)));
    differs_later = differs_later || !torch::allclose(after.at(name), a5.at(name));
    ++checked;
  }
  CHECK(checked > 0);
  CHECK(differs_later);
  // Gradient checkpointing recomputes the forced layers to the same result.
  const auto ckpt = run(5, false, true).second;
  for (const auto& [name, t] : after) {
    INFO(name);
    CHECK(torch::allclose(t, ckpt.at(name), 1e-6, 1e-7));
  }
}

TEST_CASE("trainer: a NaN loss streak stops with a clear error", "[distill]") {
  Setup s = make_setup();
  {
    torch::NoGradGuard g;
    for (auto& p : s.teacher->parameters()) p.fill_(std::numeric_limits<float>::quiet_NaN());
  }
  s.cfg.train.max_bad_steps = 3;
  onebit::dist::NoSync sync;
  onebit::distill::Trainer tr(s.cfg, s.teacher, s.student, [&] { return s.batch; }, sync, 10);
  CHECK(tr.step().skipped);
  CHECK(tr.step().skipped);
  CHECK_THROWS_WITH(tr.step(), OB_CONTAINS("NaN/inf for 3 steps in a row"));
  CHECK(tr.steps_done() == 0);
}

TEST_CASE("trainer: bf16 autocast is close to fp32, keeps fp32 masters, and learns", "[distill]") {
  const auto [ref, ref_grads] = fp32_first_step();
  Setup s = make_setup();
  s.cfg.train.precision = "bf16";
  ProbeSync sync;
  std::vector<torch::Tensor> grads;
  sync.on_reduce = capture(grads);
  onebit::distill::Trainer tr(s.cfg, s.teacher, s.student, [&] { return s.batch; }, sync, 30);
  CHECK(tr.loss_scaler() == nullptr);
  const auto first = tr.step();
  CAPTURE(first.loss, ref.loss, first.kl, ref.kl, first.hidden, ref.hidden);
  CHECK(rel(first.loss, ref.loss) < kLossRel);
  CHECK(rel(first.kl, ref.kl) < kLossRel);
  CHECK(rel(first.hidden, ref.hidden) < kLossRel);
  CHECK(first.loss != ref.loss);  // the forwards really ran in bf16
  CHECK(first.loss_scale == 1.0);
  REQUIRE(grads.size() == ref_grads.size());
  const double cos = cosine(flat(grads), flat(ref_grads));
  CAPTURE(cos);
  CHECK(cos > kMinGradCosine);
  CHECK(rel(first.grad_norm, ref.grad_norm) < kGradNormRel);
  // fp32 masters, fp32 gradients and fp32 AdamW state.
  for (const auto& g : grads) CHECK(g.scalar_type() == torch::kFloat32);
  for (const auto& [name, t] : tr.trainable()) {
    INFO(name);
    CHECK(t.scalar_type() == torch::kFloat32);
  }
  REQUIRE(!tr.param_sync().state().empty());
  for (const auto& [key, t] : tr.param_sync().state()) {
    INFO(key);
    CHECK(t.scalar_type() == torch::kFloat32);  // master shard, exp_avg, exp_avg_sq, step
  }
  onebit::distill::StepStats last;
  for (int i = 0; i < 19; ++i) last = tr.step();
  CHECK(last.step == 20);
  CHECK(last.loss < 0.7 * first.loss);
}

TEST_CASE("trainer: bf16 and fp16 steps of an OPT student and of a bf16 teacher stay close to fp32", "[distill]") {
  // OPT brings LayerNorm, biases, learned positions and project_in/out under autocast; a teacher
  // loaded in bf16 (model.dtype) runs under the same autocast region.
  for (bool opt : {true, false}) {
    const auto mc = opt ? onebit::test::tiny_opt_config() : tiny();
    const auto [ref, ref_grads] = fp32_first_step(mc);
    for (const std::string precision : {"bf16", "fp16"}) {
      CAPTURE(opt, precision);
      Setup s = make_setup(mc);
      s.cfg.train.precision = precision;
      if (!opt) s.teacher->to(torch::kBFloat16);
      ProbeSync sync;
      std::vector<torch::Tensor> grads;
      sync.on_reduce = capture(grads);
      onebit::distill::Trainer tr(s.cfg, s.teacher, s.student, [&] { return s.batch; }, sync, 30);
      onebit::distill::StepStats st;
      for (int i = 0; i < 20 && (i == 0 || st.overflow); ++i) st = tr.step();
      REQUIRE(!st.skipped);
      std::vector<torch::Tensor> unscaled;
      for (const auto& g : grads) unscaled.push_back(g / st.loss_scale);
      const double cos = cosine(flat(unscaled), flat(ref_grads));
      CAPTURE(st.loss, ref.loss, cos);
      CHECK(rel(st.loss, ref.loss) < kLossRel);
      CHECK(cos > kMinGradCosine);
    }
  }
}

TEST_CASE("trainer: fp16 with loss scaling gives the fp32 gradients once unscaled", "[distill]") {
  const auto [ref, ref_grads] = fp32_first_step();
  Setup s = make_setup();
  s.cfg.train.precision = "fp16";  // default initial scale 2^16
  ProbeSync sync;
  std::vector<torch::Tensor> grads;
  sync.on_reduce = capture(grads);
  onebit::distill::Trainer tr(s.cfg, s.teacher, s.student, [&] { return s.batch; }, sync, 30);
  REQUIRE(tr.loss_scaler() != nullptr);
  CHECK(tr.loss_scaler()->scale() == 65536.0);
  // Overflowing steps change nothing, so the first finite one sees the initial weights.
  onebit::distill::StepStats st;
  for (int i = 0; i < 20 && (i == 0 || st.overflow); ++i) st = tr.step();
  REQUIRE(!st.skipped);
  CHECK(tr.steps_done() == 1);
  CAPTURE(st.loss_scale, st.loss, ref.loss);
  CHECK(rel(st.loss, ref.loss) < kLossRel);
  CHECK(st.loss != ref.loss);  // the forwards really ran in fp16
  // The reduction saw scaled gradients; divided by the scale they are the fp32 ones.
  std::vector<torch::Tensor> unscaled;
  for (const auto& g : grads) unscaled.push_back(g / st.loss_scale);
  const auto u = flat(unscaled), r = flat(ref_grads);
  const double cos = cosine(u, r);
  CAPTURE(cos);
  CHECK(cos > kMinGradCosine);
  CHECK(rel(u.norm().item<double>(), r.norm().item<double>()) < kGradNormRel);
  // The trainer clipped (and reports the norm of) unscaled gradients.
  CHECK(rel(st.grad_norm, ref.grad_norm) < kGradNormRel);
  for (const auto& [name, t] : tr.trainable()) CHECK(t.scalar_type() == torch::kFloat32);
}

TEST_CASE("trainer: fp16 overflow backs off and skips without counting as a bad step", "[distill]") {
  Setup s = make_setup();
  s.cfg.train.precision = "fp16";
  s.cfg.train.loss_scale_init = 1024;
  s.cfg.train.loss_scale_growth_interval = 2;
  s.cfg.train.max_bad_steps = 2;
  ProbeSync sync;
  bool poison = false;  // this step's gradient buckets get an inf as they are reduced
  sync.on_reduce = [&](const torch::Tensor& bucket) {
    if (poison) bucket[0] = std::numeric_limits<float>::infinity();
  };
  onebit::distill::Trainer tr(s.cfg, s.teacher, s.student, [&] { return s.batch; }, sync, 30);
  const auto& scaler = *tr.loss_scaler();

  // Growth: two finite steps at 1024, then 2048.
  auto a = tr.step(), b = tr.step();
  CHECK((!a.skipped && !b.skipped));
  CHECK(a.loss_scale == 1024);
  CHECK(b.loss_scale == 1024);
  CHECK(scaler.scale() == 2048);
  auto c = tr.step();
  CHECK(c.loss_scale == 2048);
  CHECK(scaler.growth_tracker() == 1);
  CHECK(tr.steps_done() == 3);

  // Three overflows in a row (more than max_bad_steps): skipped, halved, weights untouched.
  const auto before = snapshot(tr);
  for (double expect : {1024.0, 512.0, 256.0}) {
    poison = true;
    const auto st = tr.step();
    poison = false;
    CHECK(st.skipped);
    CHECK(st.overflow);
    CHECK(std::isfinite(st.loss));
    CHECK(scaler.scale() == expect);
    CHECK(scaler.growth_tracker() == 0);
    CHECK(tr.bad_streak() == 0);
    CHECK(tr.steps_done() == 3);
    CHECK(st.step == 3);
  }
  CHECK(same(before, snapshot(tr)));
  // Then training goes on at the lower scale.
  const auto d = tr.step();
  CHECK(!d.skipped);
  CHECK(d.loss_scale == 256);
  CHECK(tr.steps_done() == 4);
  CHECK(!same(before, snapshot(tr)));

  // Another rank's overflow skips this rank's step too (finite gradients here).
  sync.remote_overflow = true;
  const auto before_remote = snapshot(tr);
  const auto e = tr.step();
  sync.remote_overflow = false;
  CHECK(e.skipped);
  CHECK(e.overflow);
  CHECK(scaler.scale() == 128);
  CHECK(same(before_remote, snapshot(tr)));
  CHECK(tr.steps_done() == 4);
}

TEST_CASE("trainer: under fp16 a NaN loss is still a bad step and leaves the scale alone", "[distill]") {
  Setup s = make_setup();
  {
    torch::NoGradGuard g;
    for (auto& p : s.teacher->parameters()) p.fill_(std::numeric_limits<float>::quiet_NaN());
  }
  s.cfg.train.precision = "fp16";
  s.cfg.train.max_bad_steps = 2;
  onebit::dist::NoSync sync;
  onebit::distill::Trainer tr(s.cfg, s.teacher, s.student, [&] { return s.batch; }, sync, 10);
  const auto st = tr.step();
  CHECK(st.skipped);
  CHECK(!st.overflow);
  CHECK(tr.bad_streak() == 1);
  CHECK(tr.loss_scaler()->scale() == 65536.0);
  CHECK_THROWS_WITH(tr.step(), OB_CONTAINS("NaN/inf for 2 steps in a row"));
}

TEST_CASE("trainer: fp16 resume restores the loss scaler exactly", "[distill]") {
  // A high initial scale and a short growth interval: overflows and growth both happen.
  auto configure = [](Setup& s) {
    s.cfg.train.precision = "fp16";
    s.cfg.train.loss_scale_init = std::ldexp(1.0, 24);
    s.cfg.train.loss_scale_growth_interval = 3;
  };
  struct Rec {
    double loss, scale;
    bool skipped;
    bool operator==(const Rec& o) const { return loss == o.loss && scale == o.scale && skipped == o.skipped; }
  };
  constexpr int kCalls = 14, kCut = 7;
  std::vector<Rec> whole, resumed;
  {
    Setup s = make_setup();
    configure(s);
    onebit::dist::NoSync sync;
    onebit::distill::Trainer tr(s.cfg, s.teacher, s.student, [&] { return s.batch; }, sync, 30);
    for (int i = 0; i < kCalls; ++i) {
      const auto st = tr.step();
      whole.push_back({st.loss, st.loss_scale, st.skipped});
    }
  }
  int overflows = 0, growths = 0;
  for (size_t i = 0; i < whole.size(); ++i) {
    overflows += whole[i].skipped;
    if (i > 0 && whole[i].scale > whole[i - 1].scale) ++growths;
  }
  CAPTURE(overflows, growths);
  REQUIRE(overflows > 0);
  REQUIRE(growths > 0);

  onebit::test::TempDir dir("trainer_fp16_resume");
  onebit::distill::CheckpointManager ckpts(dir.path, 1);
  {
    Setup s = make_setup();
    configure(s);
    onebit::dist::NoSync sync;
    onebit::distill::Trainer tr(s.cfg, s.teacher, s.student, [&] { return s.batch; }, sync, 30);
    for (int i = 0; i < kCut; ++i) {
      const auto st = tr.step();
      resumed.push_back({st.loss, st.loss_scale, st.skipped});
    }
    onebit::distill::TrainState state;
    tr.save_state(state);
    CHECK(state.scalars.at("loss_scale") == tr.loss_scaler()->scale());
    ckpts.save(tr.param_sync(), state);
  }
  {
    Setup s = make_setup();  // fresh weights and scaler: everything must come from the checkpoint
    configure(s);
    onebit::dist::NoSync sync;
    onebit::distill::Trainer tr(s.cfg, s.teacher, s.student, [&] { return s.batch; }, sync, 30);
    const auto latest = ckpts.latest_valid();
    REQUIRE(latest.has_value());
    tr.load_state(ckpts.load(*latest, tr.param_sync()));
    for (int i = kCut; i < kCalls; ++i) {
      const auto st = tr.step();
      resumed.push_back({st.loss, st.loss_scale, st.skipped});
    }
  }
  for (int i = 0; i < kCalls; ++i) {
    INFO("call " << i << ": loss " << whole[i].loss << " vs " << resumed[i].loss << ", scale " << whole[i].scale
                 << " vs " << resumed[i].scale);
    CHECK(whole[i] == resumed[i]);
  }
}

namespace {
// The gradient of every trainable tensor by name, summed over a step's backwards (autograd's
// tensor hooks see each micro-batch's contribution before it is accumulated). The caller moves
// to the next step with next(); the hooks stay for the trainer's lifetime.
struct GradCapture {
  std::vector<std::map<std::string, torch::Tensor>> steps{1};
  void attach(const onebit::distill::Trainer& tr) {
    for (const auto& [name, t] : tr.trainable()) {
      auto p = t;  // the hook is the tensor's own; the name says where it goes
      p.register_hook([this, name = name](const torch::Tensor& g) {
        auto& slot = steps.back()[name];
        slot = slot.defined() ? slot + g.detach() : g.detach().clone();
      });
    }
  }
  void next() { steps.emplace_back(); }
  size_t done() const { return steps.size() - 1; }
};

double max_abs_diff(const std::map<std::string, torch::Tensor>& a, const std::map<std::string, torch::Tensor>& b) {
  double worst = 0;
  for (const auto& [name, t] : a) worst = std::max(worst, (t - b.at(name)).abs().max().item<double>());
  return worst;
}
}  // namespace

// k micro-batches of B and one batch of k·B: the same gradients, losses and weights (fp32).
TEST_CASE("trainer: gradient accumulation over k micro-batches equals one batch of k*B", "[distill]") {
  constexpr int64_t k = 3, steps = 3;
  constexpr double kGradTol = 1e-6;    // relative to the largest gradient
  constexpr double kWeightTol = 1e-5;  // absolute, after `steps` AdamW steps of lr 1e-2
  torch::manual_seed(21);
  std::vector<torch::Tensor> micro;
  for (int64_t i = 0; i < k * steps; ++i) micro.push_back(torch::randint(64, {2, 12}, torch::kLong));

  struct Run {
    std::vector<onebit::distill::StepStats> stats;
    std::vector<std::map<std::string, torch::Tensor>> grads;
    std::map<std::string, torch::Tensor> weights;
  };
  auto run = [&](int64_t accum) {
    Setup s = make_setup();
    s.cfg.optim.grad_accum = accum;
    s.cfg.optim.eps = 1e-6;  // as the multi-process test: no amplified rounding of near-zero gradients
    size_t next = 0;
    auto batch = [&] {
      if (accum > 1) return micro[next++];
      std::vector<torch::Tensor> parts(micro.begin() + int64_t(next), micro.begin() + int64_t(next) + k);
      next += k;
      return torch::cat(parts, 0);
    };
    ProbeSync sync;
    Run r;
    GradCapture cap;
    onebit::distill::Trainer tr(s.cfg, s.teacher, s.student, batch, sync, steps);
    cap.attach(tr);
    for (int64_t i = 0; i < steps; ++i) {
      r.stats.push_back(tr.step());
      cap.next();
    }
    r.grads.assign(cap.steps.begin(), cap.steps.end() - 1);
    r.weights = snapshot(tr);
    return r;
  };
  const Run a = run(k), b = run(1);
  REQUIRE(a.grads.size() == size_t(steps));
  REQUIRE(b.grads.size() == size_t(steps));
  for (int64_t i = 0; i < steps; ++i) {
    INFO("step " << i + 1);
    CHECK(a.stats[size_t(i)].tokens == b.stats[size_t(i)].tokens);
    CHECK(a.stats[size_t(i)].loss == Approx(b.stats[size_t(i)].loss).epsilon(1e-5));
    CHECK(a.stats[size_t(i)].kl == Approx(b.stats[size_t(i)].kl).epsilon(1e-5));
    CHECK(a.stats[size_t(i)].hidden == Approx(b.stats[size_t(i)].hidden).epsilon(1e-5));
    double scale = 0;
    for (const auto& [name, g] : b.grads[size_t(i)]) scale = std::max(scale, g.abs().max().item<double>());
    CHECK(scale > 0);
    CHECK(max_abs_diff(a.grads[size_t(i)], b.grads[size_t(i)]) <= kGradTol * scale);
  }
  CHECK(a.stats.front().loss != a.stats.back().loss);  // training moved
  CHECK(max_abs_diff(a.weights, b.weights) <= kWeightTol);
}

// The optimizer keys reach the update: torch.optim.AdamW's formula (decoupled weight decay,
// bias correction) by hand, on the gradients the trainer computed, with transformers' cosine
// schedule with warm-up and a floor (get_cosine_with_min_lr_schedule_with_warmup).
TEST_CASE("trainer: lr schedule, betas, eps and weight decay on W, g and h follow AdamW by hand", "[distill]") {
  constexpr int64_t steps = 6, total = 8, warmup = 2;
  constexpr double lr = 2e-2, b1 = 0.8, b2 = 0.95, eps = 1e-3, wd = 0.3, min_ratio = 0.1;
  constexpr double kTol = 1e-6;  // absolute, on weights of order 0.01-1
  Setup s = make_setup();
  s.cfg.optim.lr = lr;
  s.cfg.optim.beta1 = b1;
  s.cfg.optim.beta2 = b2;
  s.cfg.optim.eps = eps;
  s.cfg.optim.weight_decay = wd;
  s.cfg.optim.warmup_steps = warmup;
  s.cfg.optim.schedule = "cosine";
  s.cfg.optim.min_lr_ratio = min_ratio;
  s.cfg.optim.grad_clip = 0;  // off: the update sees the raw gradients
  ProbeSync sync;
  GradCapture cap;
  onebit::distill::Trainer tr(s.cfg, s.teacher, s.student, [&] { return s.batch; }, sync, total);
  cap.attach(tr);
  const auto& grads = cap.steps;
  const auto start = snapshot(tr);

  auto lr_at = [&](int64_t step) {  // 0-based optimizer step
    if (step < warmup) return lr * double(step) / double(warmup);
    const double progress = double(step - warmup) / double(total - warmup);
    return lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + std::cos(M_PI * progress)));
  };
  // p, m, v in float64; decay = the weight decay used by the reference.
  auto reference = [&](double decay) {
    std::map<std::string, torch::Tensor> p, m, v;
    for (const auto& [name, t] : start) {
      p[name] = t.to(torch::kFloat64);
      m[name] = torch::zeros_like(p[name]);
      v[name] = torch::zeros_like(p[name]);
    }
    for (int64_t t = 1; t <= steps; ++t) {
      const double a = lr_at(t - 1);
      for (auto& [name, x] : p) {
        const auto g = grads[size_t(t - 1)].at(name).to(torch::kFloat64);
        x = x * (1 - a * decay);
        m[name] = b1 * m[name] + (1 - b1) * g;
        v[name] = b2 * v[name] + (1 - b2) * g * g;
        const auto mhat = m[name] / (1 - std::pow(b1, double(t)));
        const auto vhat = v[name] / (1 - std::pow(b2, double(t)));
        x = x - a * mhat / (vhat.sqrt() + eps);
      }
    }
    return p;
  };

  for (int64_t t = 0; t < steps; ++t) {
    const auto st = tr.step();
    cap.next();
    INFO("step " << t + 1);
    CHECK(st.lr == Approx(lr_at(t)).epsilon(1e-12));
  }
  CHECK(lr_at(0) == 0);
  CHECK(lr_at(warmup) == lr);
  REQUIRE(cap.done() == size_t(steps));
  const auto want = reference(wd), without_decay = reference(0);
  std::map<std::string, double> worst, decay_effect;  // by kind: W (weight), g, h
  for (const auto& [name, t] : tr.trainable()) {
    const std::string kind = name.substr(name.rfind('.') + 1);
    const double d = (t.to(torch::kFloat64) - want.at(name)).abs().max().item<double>();
    const double e = (want.at(name) - without_decay.at(name)).abs().max().item<double>();
    worst[kind] = std::max(worst[kind], d);
    decay_effect[kind] = std::max(decay_effect[kind], e);
  }
  for (const char* kind : {"weight", "g", "h"}) {
    INFO(kind << ": max |trainer - AdamW by hand| " << worst[kind] << ", weight decay moved it by " << decay_effect[kind]);
    REQUIRE(worst.count(kind));
    CHECK(worst[kind] <= kTol);
    CHECK(decay_effect[kind] > 20 * kTol);  // the decay is visible at this tolerance
  }
}

TEST_CASE("trainer: inf/NaN gradients in fp32 and bf16 skip the step on every rank and count as bad steps",
          "[distill]") {
  for (const std::string precision : {"fp32", "bf16"}) {
    CAPTURE(precision);
    Setup s = make_setup();
    s.cfg.train.precision = precision;
    s.cfg.train.max_bad_steps = 3;
    ProbeSync sync;
    int inject = 0;  // steps whose gradient bucket gets a NaN as it is reduced (loss stays finite)
    sync.on_reduce = [&](const torch::Tensor& bucket) {
      if (inject > 0) {
        --inject;
        bucket[0] = std::numeric_limits<float>::quiet_NaN();
      }
    };
    onebit::distill::Trainer tr(s.cfg, s.teacher, s.student, [&] { return s.batch; }, sync, 30);
    REQUIRE(!tr.step().skipped);
    const auto before = snapshot(tr);
    inject = 1;
    const auto a = tr.step();
    CHECK(a.skipped);
    CHECK(!a.overflow);
    CHECK(std::isfinite(a.loss));
    CHECK(tr.bad_streak() == 1);
    CHECK(tr.steps_done() == 1);
    CHECK(same(before, snapshot(tr)));
    // Another rank's NaN gradient skips this rank's step too (finite gradients here).
    sync.remote_overflow = true;
    CHECK(tr.step().skipped);
    sync.remote_overflow = false;
    CHECK(tr.bad_streak() == 2);
    CHECK(same(before, snapshot(tr)));
    // A finite step clears the gradients of the skipped ones and resets the streak.
    const auto c = tr.step();
    CHECK(!c.skipped);
    CHECK(std::isfinite(c.grad_norm));
    CHECK(tr.bad_streak() == 0);
    CHECK(tr.steps_done() == 2);
    CHECK(!same(before, snapshot(tr)));
    // max_bad_steps in a row stop the run.
    sync.remote_overflow = true;
    tr.step();
    tr.step();
    CHECK_THROWS_WITH(tr.step(), OB_CONTAINS("the gradients were NaN/inf for 3 steps in a row"));
  }
}

TEST_CASE("trainer: bf16 latent W and bf16 AdamW moments learn, shrink the state, and resume bit for bit",
          "[distill]") {
  // student.latent_dtype=bf16 (set_latent_dtype does what load_train_models does with it) and
  // optim.state_dtype=bf16, in fp32 compute and under bf16 autocast.
  auto lean = [](const std::string& precision) {
    Setup s = make_setup();
    s.cfg.train.precision = precision;
    s.cfg.student.latent_dtype = "bf16";
    s.cfg.optim.state_dtype = "bf16";
    onebit::models::set_latent_dtype(*s.student, torch::kBFloat16);
    return s;
  };
  auto buckets = [](onebit::distill::Trainer& tr) {
    int64_t n = 0;
    for (const auto& [key, t] : tr.param_sync().state()) n += key.size() > 5 && key.substr(key.size() - 5) == ".step";
    return n;
  };
  int64_t fp32_bytes = 0, fp32_buckets = 0;
  {
    Setup s = make_setup();
    onebit::dist::NoSync sync;
    onebit::distill::Trainer tr(s.cfg, s.teacher, s.student, [&] { return s.batch; }, sync, 30);
    fp32_bytes = tr.param_sync().state_bytes();
    fp32_buckets = buckets(tr);
  }
  for (const std::string precision : {"fp32", "bf16"}) {
    CAPTURE(precision);
    Setup s = lean(precision);
    onebit::dist::NoSync sync;
    onebit::distill::Trainer tr(s.cfg, s.teacher, s.student, [&] { return s.batch; }, sync, 30);
    int64_t latent = 0, other = 0;
    for (const auto& [name, t] : tr.trainable()) {
      INFO(name);
      const bool is_w = name.size() > 7 && name.substr(name.size() - 7) == ".weight";
      CHECK(t.scalar_type() == (is_w ? torch::kBFloat16 : torch::kFloat32));
      (is_w ? latent : other) += t.numel();
    }
    // Each layer's latent W share a bf16 bucket, its g and h an fp32 one: twice the buckets.
    CHECK(buckets(tr) == 2 * fp32_buckets);
    // Parameters and gradients: 2 bytes per latent value instead of 4; moments: 4 bytes instead
    // of 8 per trainable value; one more fp32 step count per extra bucket.
    const int64_t want = fp32_bytes - 2 * 2 * latent - 4 * (latent + other) + 4 * fp32_buckets;
    CHECK(tr.param_sync().state_bytes() == want);
    const auto first = tr.step();
    onebit::distill::StepStats last;
    for (int i = 0; i < 29; ++i) last = tr.step();
    CAPTURE(first.loss, last.loss);
    CHECK(last.step == 30);
    CHECK(last.loss < 0.7 * first.loss);
  }

  // Resume: 6 steps, a checkpoint, 6 more from it in a fresh trainer give the uninterrupted 12
  // steps' losses and trainable tensors exactly (the rounding bits come from the seed and step).
  constexpr int kSteps = 12, kCut = 6;
  std::vector<double> whole, resumed;
  std::map<std::string, torch::Tensor> whole_end, resumed_end;
  {
    Setup s = lean("fp32");
    onebit::dist::NoSync sync;
    onebit::distill::Trainer tr(s.cfg, s.teacher, s.student, [&] { return s.batch; }, sync, 30);
    for (int i = 0; i < kSteps; ++i) whole.push_back(tr.step().loss);
    whole_end = snapshot(tr);
  }
  onebit::test::TempDir dir("trainer_lean_resume");
  onebit::distill::CheckpointManager ckpts(dir.path, 1);
  {
    Setup s = lean("fp32");
    onebit::dist::NoSync sync;
    onebit::distill::Trainer tr(s.cfg, s.teacher, s.student, [&] { return s.batch; }, sync, 30);
    for (int i = 0; i < kCut; ++i) resumed.push_back(tr.step().loss);
    onebit::distill::TrainState state;
    tr.save_state(state);
    ckpts.save(tr.param_sync(), state);
  }
  {
    Setup s = lean("fp32");
    onebit::dist::NoSync sync;
    onebit::distill::Trainer tr(s.cfg, s.teacher, s.student, [&] { return s.batch; }, sync, 30);
    const auto latest = ckpts.latest_valid();
    REQUIRE(latest.has_value());
    tr.load_state(ckpts.load(*latest, tr.param_sync()));
    for (int i = kCut; i < kSteps; ++i) resumed.push_back(tr.step().loss);
    resumed_end = snapshot(tr);
  }
  CHECK(resumed == whole);
  CHECK(same(whole_end, resumed_end));
}

TEST_CASE("trainer: int8 AdamW moments track the fp32 ones, take a quarter of their bytes, and resume bit for bit",
          "[distill]") {
  auto run = [](const std::string& state, int steps) {
    Setup s = make_setup();
    s.cfg.optim.state_dtype = state;
    onebit::dist::NoSync sync;
    onebit::distill::Trainer tr(s.cfg, s.teacher, s.student, [&] { return s.batch; }, sync, 30);
    const int64_t bytes = tr.param_sync().state_bytes();
    std::vector<double> losses;
    for (int i = 0; i < steps; ++i) losses.push_back(tr.step().loss);
    return std::make_tuple(losses, snapshot(tr), bytes);
  };
  const auto [l32, p32, b32] = run("fp32", 30);
  const auto [l8, p8, b8] = run("int8", 30);
  int64_t n = 0;
  for (const auto& [name, t] : p32) n += t.numel();
  // One bucket (the tiny model): moments 8 bytes a value -> 2 bytes, plus two fp32 scales per 2048.
  const int64_t blocks = (n + onebit::optim::kQuantBlock - 1) / onebit::optim::kQuantBlock;
  CHECK(b8 == b32 - 6 * n + 2 * 4 * blocks);
  // It learns about as fp32 does. (Which latent signs flip differs from fp32 after a few steps,
  // so the runs part ways; bf16 moments end 8% from fp32 here, int8 14%.)
  CAPTURE(l32.back(), l8.back());
  CHECK(l8.back() < 0.7 * l8.front());
  CHECK(std::abs(l8.back() - l32.back()) < 0.25 * l32.back());

  // Resume: the codes and scales are in the checkpoint, the rounding bits come from the seed and step.
  constexpr int kSteps = 12, kCut = 6;
  [[maybe_unused]] const auto [whole, whole_end, bytes] = run("int8", kSteps);
  onebit::test::TempDir dir("trainer_int8_resume");
  onebit::distill::CheckpointManager ckpts(dir.path, 1);
  std::vector<double> resumed;
  std::map<std::string, torch::Tensor> resumed_end;
  for (const bool second : {false, true}) {
    Setup s = make_setup();
    s.cfg.optim.state_dtype = "int8";
    onebit::dist::NoSync sync;
    onebit::distill::Trainer tr(s.cfg, s.teacher, s.student, [&] { return s.batch; }, sync, 30);
    if (second) {
      const auto latest = ckpts.latest_valid();
      REQUIRE(latest.has_value());
      tr.load_state(ckpts.load(*latest, tr.param_sync()));
    }
    for (int i = second ? kCut : 0; i < (second ? kSteps : kCut); ++i) resumed.push_back(tr.step().loss);
    if (!second) {
      onebit::distill::TrainState state;
      tr.save_state(state);
      ckpts.save(tr.param_sync(), state);
    }
    resumed_end = snapshot(tr);
  }
  CHECK(resumed == whole);
  CHECK(same(whole_end, resumed_end));
}
