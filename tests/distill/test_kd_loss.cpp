// KD loss vs the naive formula of method.md §3 (full [B,T,V] logits, F::kl_div batchmean).
#include <torch/torch.h>

#include "onebit/distill/kd_loss.h"
#include "tests/support.h"

namespace {

constexpr double kTol = 1e-5;
namespace F = torch::nn::functional;
using onebit::models::ForwardOutput;

struct Fake {
  ForwardOutput teacher, student;
  torch::Tensor t_w, s_w, ids;
  std::vector<torch::Tensor> leaves;  // student tensors requiring grad
};

Fake make_fake(int64_t B, int64_t T, int64_t H, int64_t V, int64_t L) {
  torch::manual_seed(0);
  auto opt = torch::TensorOptions().dtype(torch::kFloat64);
  Fake f;
  for (int64_t i = 0; i <= L; ++i) {
    f.teacher.hidden_states.push_back(torch::randn({B, T, H}, opt));
    auto s = torch::randn({B, T, H}, opt).requires_grad_(true);
    f.student.hidden_states.push_back(s);
    if (i < L) f.leaves.push_back(s);  // hidden_states[L] (after the final norm) is not used
  }
  f.teacher.last_hidden = torch::randn({B, T, H}, opt);
  f.student.last_hidden = torch::randn({B, T, H}, opt).requires_grad_(true);
  f.leaves.push_back(f.student.last_hidden);
  f.t_w = torch::randn({V, H}, opt);
  f.s_w = torch::randn({V, H}, opt);
  f.ids = torch::randint(V, {B, T}, torch::kLong);
  return f;
}

torch::Tensor naive(const Fake& f, const onebit::distill::KdLossOptions& o) {
  const int64_t B = f.ids.size(0), T = f.ids.size(1);
  const auto s_logits = torch::matmul(f.student.last_hidden, f.s_w.t());
  const auto t_logits = torch::matmul(f.teacher.last_hidden, f.t_w.t());
  // Hinton et al.'s distillation term: τ²·KL at temperature τ (the paper's loss is τ = 1).
  const double tau = o.temperature;
  torch::Tensor kl;
  if (o.top_k > 0) {
    // Top-k logit distillation: the teacher's softmax over its k largest logits, renormalised,
    // as a dense target with zeros elsewhere (F::kl_div takes 0·log 0 as 0).
    const auto [tk, ik] = t_logits.topk(o.top_k, -1);
    const auto target = torch::zeros_like(t_logits).scatter(-1, ik, torch::softmax(tk / tau, -1));
    kl = tau * tau * F::kl_div(torch::log_softmax(s_logits / tau, -1), target,
                               F::KLDivFuncOptions().reduction(torch::kBatchMean));
  } else {
    kl = tau * tau * F::kl_div(torch::log_softmax(s_logits / tau, -1), torch::log_softmax(t_logits / tau, -1),
                               F::KLDivFuncOptions().reduction(torch::kBatchMean).log_target(true));
  }
  auto hidden = torch::zeros({}, s_logits.options());
  for (size_t i = 0; i + 1 < f.teacher.hidden_states.size(); ++i) {
    const auto t = F::normalize(f.teacher.hidden_states[i].reshape({B * T, -1}), F::NormalizeFuncOptions().dim(-1));
    const auto s = F::normalize(f.student.hidden_states[i].reshape({B * T, -1}), F::NormalizeFuncOptions().dim(-1));
    hidden = hidden + (t - s).pow(2).sum(-1).mean();
  }
  const auto ce = F::cross_entropy(s_logits.narrow(1, 0, T - 1).reshape({-1, s_logits.size(-1)}),
                                   f.ids.narrow(1, 1, T - 1).reshape({-1}));
  return kl * o.kd_loss_scale + hidden * o.alpha + ce * o.ce_weight;
}

}  // namespace

TEST_CASE("kd_loss equals the naive formula, value and gradients", "[distill]") {
  // fp64 inputs: the chunked path computes in fp32, so compare at fp32 accuracy.
  Fake f = make_fake(2, 7, 16, 50, 3);
  onebit::distill::KdLossOptions o;
  o.kd_loss_scale = 0.5;
  o.alpha = 1.5;
  o.ce_weight = 0.25;
  o.chunk_tokens = 5;  // 14 tokens: chunks 5, 5, 4
  o.temperature = GENERATE(1.0, 2.5, 0.5);  // the CE stays at temperature 1
  o.top_k = GENERATE(0, 1, 7, 50);           // 50 = the whole vocabulary: the same as 0
  INFO("kd.temperature " << o.temperature << ", kd.top_k " << o.top_k);

  auto ref = naive(f, o);
  auto ref_grads = torch::autograd::grad({ref}, f.leaves);
  auto parts = onebit::distill::kd_loss(f.teacher, f.t_w, f.student, f.s_w, f.ids, o);
  auto grads = torch::autograd::grad({parts.total}, f.leaves);

  CHECK(std::abs(parts.total.item<double>() - ref.item<double>()) <= kTol * std::max(1.0, ref.abs().item<double>()));
  for (size_t i = 0; i < grads.size(); ++i) {
    INFO("gradient " << i);
    CHECK(torch::allclose(grads[i].to(torch::kDouble), ref_grads[i], kTol, kTol));
  }
  // Parts are reported separately and recombine into the total.
  const double recombined = o.kd_loss_scale * parts.kl.item<double>() + o.alpha * parts.hidden.item<double>() +
                            o.ce_weight * parts.ce.item<double>();
  CHECK(std::abs(recombined - parts.total.item<double>()) <= kTol * std::max(1.0, std::abs(recombined)));
  CHECK(parts.kl.item<double>() > 0);
  CHECK(!parts.kl.requires_grad());
}

TEST_CASE("kd_loss: chunk size does not change the result", "[distill]") {
  Fake f = make_fake(3, 4, 8, 20, 2);
  onebit::distill::KdLossOptions o;
  o.ce_weight = 1.0;
  o.chunk_tokens = 1;
  const double a = onebit::distill::kd_loss(f.teacher, f.t_w, f.student, f.s_w, f.ids, o).total.item<double>();
  o.chunk_tokens = 1000;
  const double b = onebit::distill::kd_loss(f.teacher, f.t_w, f.student, f.s_w, f.ids, o).total.item<double>();
  CHECK(std::abs(a - b) <= kTol * std::max(1.0, std::abs(a)));
}

TEST_CASE("kd_loss: identical teacher and student give zero KL and hidden terms", "[distill]") {
  Fake f = make_fake(1, 5, 8, 10, 2);
  f.student.hidden_states = f.teacher.hidden_states;
  f.student.last_hidden = f.teacher.last_hidden;
  onebit::distill::KdLossOptions o;
  auto parts = onebit::distill::kd_loss(f.teacher, f.t_w, f.student, f.t_w, f.ids, o);
  CHECK(std::abs(parts.kl.item<double>()) <= kTol);
  CHECK(std::abs(parts.hidden.item<double>()) <= kTol);
}

TEST_CASE("kd_loss: bad inputs name the problem", "[distill]") {
  Fake f = make_fake(1, 4, 8, 10, 2);
  onebit::distill::KdLossOptions o;
  auto missing = f.student;
  missing.hidden_states.clear();
  CHECK_THROWS_WITH(onebit::distill::kd_loss(f.teacher, f.t_w, missing, f.s_w, f.ids, o),
                    OB_CONTAINS("output_hidden_states"));
  o.chunk_tokens = 0;
  CHECK_THROWS_WITH(onebit::distill::kd_loss(f.teacher, f.t_w, f.student, f.s_w, f.ids, o),
                    OB_CONTAINS("kd.chunk_tokens"));
}

TEST_CASE("chunked_kl_ce: gradients of s_h and s_w equal the naive formula; ce_grad=false", "[distill]") {
  namespace D = onebit::distill;
  torch::manual_seed(1);
  auto opt = torch::TensorOptions().dtype(torch::kFloat64);
  const int64_t N = 11, H = 6, V = 37;
  auto s_h = torch::randn({N, H}, opt).requires_grad_(true);
  auto s_w = torch::randn({V, H}, opt).requires_grad_(true);
  auto t_h = torch::randn({N, H}, opt), t_w = torch::randn({V, H}, opt);
  auto labels = torch::randint(V, {N}, torch::kLong);
  labels[N - 1] = -1;  // no label

  const auto logq = torch::log_softmax(torch::matmul(s_h, s_w.t()), -1);
  const auto logp = torch::log_softmax(torch::matmul(t_h, t_w.t()), -1);
  const auto ref_kl = (logp.exp() * (logp - logq)).sum();
  const auto valid = labels.ge(0);
  const auto ref_ce = -logq.gather(1, labels.clamp_min(0).unsqueeze(1)).squeeze(1).masked_select(valid).sum();
  const double w_kl = 0.7, w_ce = -0.3;  // any upstream weights
  auto ref = torch::autograd::grad({ref_kl * w_kl + ref_ce * w_ce}, {s_h, s_w}, {}, /*retain_graph=*/true);
  auto ref_kl_g = torch::autograd::grad({ref_kl}, {s_h, s_w});

  for (int64_t chunk : {4, 100}) {
    INFO("chunk " << chunk);
    auto [kl, ce] = D::chunked_kl_ce(s_h, s_w, t_h, t_w, labels, chunk);
    CHECK(std::abs(kl.item<double>() - ref_kl.item<double>()) <= kTol * std::max(1.0, ref_kl.item<double>()));
    CHECK(std::abs(ce.item<double>() - ref_ce.item<double>()) <= kTol * std::max(1.0, ref_ce.item<double>()));
    auto g = torch::autograd::grad({kl * w_kl + ce * w_ce}, {s_h, s_w});
    CHECK(g[0].scalar_type() == torch::kFloat64);
    CHECK(torch::allclose(g[0], ref[0], kTol, kTol));
    CHECK(torch::allclose(g[1], ref[1], kTol, kTol));

    // ce_grad=false: the CE is a logged value only; the KL gradient is unchanged.
    auto [kl2, ce2] = D::chunked_kl_ce(s_h, s_w, t_h, t_w, labels, chunk, /*ce_grad=*/false);
    CHECK(!ce2.requires_grad());
    CHECK(std::abs(ce2.item<double>() - ce.item<double>()) <= kTol);
    auto g2 = torch::autograd::grad({kl2}, {s_h, s_w});
    CHECK(torch::allclose(g2[0], ref_kl_g[0], kTol, kTol));
    CHECK(torch::allclose(g2[1], ref_kl_g[1], kTol, kTol));
  }

  // Without grad mode nothing is differentiable (and no gradient work is done).
  torch::NoGradGuard no_grad;
  auto [kl3, ce3] = D::chunked_kl_ce(s_h, s_w, t_h, t_w, labels, 4);
  CHECK(!kl3.requires_grad());
  CHECK(std::abs(kl3.item<double>() - ref_kl.item<double>()) <= kTol * std::max(1.0, ref_kl.item<double>()));
}

TEST_CASE("normalized_mse: value and gradient equal F::normalize's composition, zero rows and bf16 included",
          "[distill]") {
  torch::manual_seed(3);
  const auto f64 = torch::TensorOptions().dtype(torch::kFloat64);
  // 3000 rows of 700: several row blocks of the backward (2^20 / 700 = 1497 rows each).
  auto s0 = torch::randn({3000, 700}, f64), t = torch::randn({3000, 700}, f64);
  s0[5].zero_();        // ‖s‖ = 0: F.normalize's clamp
  s0[6].mul_(1e-14);    // ‖s‖ below eps
  t[7].zero_();
  auto s = s0.clone().requires_grad_(true), ref_s = s0.clone().requires_grad_(true);
  const auto loss = onebit::distill::normalized_mse(s, t);
  const auto opts = F::NormalizeFuncOptions().dim(-1);
  const auto ref = (F::normalize(t, opts) - F::normalize(ref_s, opts)).pow(2).sum(-1).mean();
  CHECK(loss.scalar_type() == torch::kFloat32);
  CHECK(std::abs(loss.item<double>() - ref.item<double>()) < 1e-5 * ref.item<double>());
  (loss * 3.0).backward();
  (ref * 3.0).backward();
  REQUIRE(s.grad().defined());
  // Row by row, relative: rows 5 and 6 (‖s‖ ≤ eps) have gradients of order 1/eps; row 7
  // (t = 0) has none in exact arithmetic.
  const auto err = (s.grad() - ref_s.grad()).norm(2, -1) / ref_s.grad().norm(2, -1).clamp_min(1e-8);
  CHECK(err.max().item<double>() < 1e-5);
  CHECK(ref_s.grad()[5].abs().max().item<double>() > 1e6);

  // bf16 states (the residual stream of a bf16 run): fp32 loss, bf16 gradient of the same value.
  auto sb = s0.to(torch::kBFloat16).requires_grad_(true);
  const auto lb = onebit::distill::normalized_mse(sb, t.to(torch::kBFloat16));
  CHECK(lb.scalar_type() == torch::kFloat32);
  CHECK(std::abs(lb.item<double>() - ref.item<double>()) < 2e-2 * ref.item<double>());
  lb.backward();
  CHECK(sb.grad().scalar_type() == torch::kBFloat16);
  const auto rel = (sb.grad().to(torch::kFloat64) * 3.0 - ref_s.grad()).norm() / ref_s.grad().norm();
  CHECK(rel.item<double>() < 2e-2);
}

TEST_CASE("kd_loss: alpha = 0 logs the hidden term but builds no graph for it", "[distill]") {
  Fake f = make_fake(2, 3, 8, 11, 2);
  onebit::distill::KdLossOptions o;
  o.alpha = 0;
  const auto parts = onebit::distill::kd_loss(f.teacher, f.t_w, f.student, f.s_w, f.ids, o);
  CHECK(parts.hidden.item<double>() > 0);
  parts.total.backward();
  for (size_t i = 0; i + 1 < f.leaves.size(); ++i) CHECK(!f.leaves[i].grad().defined());  // the hidden states
  CHECK(f.leaves.back().grad().defined());  // last_hidden, through the KL
}

TEST_CASE("block_loss: the normalised distance of states 1..L, each with its own gradient", "[distill]") {
  Fake f = make_fake(2, 5, 8, 10, 3);
  const size_t L1 = f.teacher.hidden_states.size();
  std::vector<torch::Tensor> states(f.student.hidden_states.begin() + 1, f.student.hidden_states.end());
  auto ref = torch::zeros({}, torch::kFloat64);
  for (size_t i = 1; i < L1; ++i) {
    const auto t = F::normalize(f.teacher.hidden_states[i].reshape({10, -1}), F::NormalizeFuncOptions().dim(-1));
    const auto s = F::normalize(f.student.hidden_states[i].reshape({10, -1}), F::NormalizeFuncOptions().dim(-1));
    ref = ref + (t - s).pow(2).sum(-1).mean();
  }
  const auto ref_grads = torch::autograd::grad({ref}, states);
  const auto parts = onebit::distill::block_loss(f.teacher, f.student);
  const auto grads = torch::autograd::grad({parts.total}, states);
  CHECK(std::abs(parts.total.item<double>() - ref.item<double>()) <= kTol * ref.item<double>());
  CHECK(parts.hidden.item<double>() == parts.total.item<double>());
  CHECK(parts.kl.item<double>() == 0);
  for (size_t i = 0; i < grads.size(); ++i) {
    INFO("state " << i + 1);
    CHECK(torch::allclose(grads[i].to(torch::kDouble), ref_grads[i], kTol, kTol));
  }
  auto missing = f.student;
  missing.hidden_states.pop_back();
  CHECK_THROWS_WITH(onebit::distill::block_loss(f.teacher, missing), OB_CONTAINS("need L+1 hidden states"));
}
