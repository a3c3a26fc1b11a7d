#include "onebit/init/svid.h"

#include <torch/torch.h>

#include <cmath>

#include "onebit/core/error.h"

namespace onebit::init {

namespace {
torch::Tensor checked_abs(const torch::Tensor& w, const char* who) {
  OB_CHECK(w.defined() && w.dim() == 2, who, ": weight must be 2-D [out, in], got ",
           w.defined() ? w.sizes() : torch::IntArrayRef{});
  OB_CHECK(w.numel() > 0, who, ": weight is empty, shape ", w.sizes());
  OB_CHECK(w.is_floating_point(), who, ": weight must be floating point, got ", w.scalar_type());
  OB_CHECK(torch::isfinite(w).all().item<bool>(), who, ": weight has NaN or inf values");
  return w.detach().to(torch::kFloat32).abs().contiguous();
}
}  // namespace

Rank1 svid_svd(const torch::Tensor& w, const SvdOptions& opt) {
  torch::NoGradGuard no_grad;
  const torch::Tensor A = checked_abs(w, "svid_svd");
  torch::Tensor v = torch::full({A.size(1)}, 1.0 / std::sqrt(double(A.size(1))), A.options());
  torch::Tensor u;
  double sigma = 0;
  Rank1 r;
  for (r.iterations = 1; r.iterations <= opt.max_iter; ++r.iterations) {
    u = torch::mv(A, v);
    const double nu = u.norm().item<double>();
    if (nu == 0) break;  // |W| == 0: a = b = 0 is exact
    u.div_(nu);
    torch::Tensor next = torch::mv(A.t(), u);
    sigma = next.norm().item<double>();
    next.div_(sigma);
    const double delta = (next - v).norm().item<double>();
    v = next;
    if (delta <= opt.tol) {
      r.converged = true;
      break;
    }
  }
  r.iterations = std::min(r.iterations, opt.max_iter);
  if (sigma == 0) {
    r.a = torch::zeros({A.size(0)}, A.options());
    r.b = torch::zeros({A.size(1)}, A.options());
    r.converged = true;
    return r;
  }
  const double s = std::sqrt(sigma);
  r.a = (u * s).clamp_min_(0);
  r.b = (v * s).clamp_min_(0);
  return r;
}

Rank1 svid_nmf(const torch::Tensor& w, const NmfOptions& opt) {
  torch::NoGradGuard no_grad;
  const torch::Tensor X = checked_abs(w, "svid_nmf");
  const int64_t m = X.size(0), n = X.size(1);
  // sklearn _initialize_nmf(init='random'): H [1, n] drawn first, then W [m, 1].
  const double avg = std::sqrt(X.mean().item<double>());
  auto gen = at::make_generator<at::CPUGeneratorImpl>(opt.seed);
  const auto cpu = torch::TensorOptions().dtype(torch::kFloat32);
  torch::Tensor b = (torch::randn({n}, gen, cpu).abs_() * avg).to(X.device());
  torch::Tensor a = (torch::randn({m}, gen, cpu).abs_() * avg).to(X.device());

  // One coordinate-descent sweep over factor f (rank 1: the Newton step is exact).
  // grad = (oᵀo)·f − X o; projected gradient is min(grad, 0) where f == 0; returns Σ|pg|.
  auto update = [](torch::Tensor& f, const torch::Tensor& xo, double oo) {
    const torch::Tensor grad = f * oo - xo;
    const torch::Tensor pg = torch::where(f.eq(0), grad.clamp_max(0), grad);
    const double violation = pg.abs().sum().item<double>();
    if (oo != 0) f = (xo / oo).clamp_min_(0);
    return violation;
  };
  Rank1 r;
  double violation_init = 0;
  for (r.iterations = 1; r.iterations <= opt.max_iter; ++r.iterations) {
    double violation = update(a, torch::mv(X, b), torch::dot(b, b).item<double>());
    violation += update(b, torch::mv(X.t(), a), torch::dot(a, a).item<double>());
    if (r.iterations == 1) violation_init = violation;
    if (violation_init == 0 || violation / violation_init <= opt.tol) {
      r.converged = true;
      break;
    }
  }
  r.iterations = std::min(r.iterations, opt.max_iter);
  r.a = a;
  r.b = b;
  return r;
}

double svid_error(const torch::Tensor& w, const torch::Tensor& a, const torch::Tensor& b) {
  torch::NoGradGuard no_grad;
  OB_CHECK(w.dim() == 2 && a.dim() == 1 && b.dim() == 1 && a.size(0) == w.size(0) &&
               b.size(0) == w.size(1),
           "svid_error: need W [out, in], a [out], b [in]; got ", w.sizes(), ", ", a.sizes(), ", ",
           b.sizes());
  const auto W = w.detach().to(torch::kFloat64);
  const auto approx = torch::where(W.ge(0), 1.0, -1.0) * torch::outer(a.to(W.options()), b.to(W.options()));
  return ((W - approx).norm() / W.norm()).item<double>();
}

double sign_mean_error(const torch::Tensor& w) {
  const auto W = w.detach().to(torch::kFloat64);
  return svid_error(W, W.abs().mean(1), torch::ones({W.size(1)}, W.options()));
}

double optimal_rank1_error(const torch::Tensor& w) {
  torch::NoGradGuard no_grad;
  const auto W = w.detach().to(torch::kFloat64);
  const auto s = torch::linalg_svdvals(W.abs());
  return (s.slice(0, 1).norm() / W.norm()).item<double>();
}

}  // namespace onebit::init
