// SVID against torch::linalg_svd: power iteration and rank-1 NMF must reach the optimal
// rank-1 error of |W| (within 1%) and beat the naive sign(W)·mean|W| scale.
#include <torch/torch.h>

#include "onebit/core/error.h"
#include "onebit/init/svid.h"
#include "onebit/io/safetensors.h"
#include "tests/references.h"
#include "tests/support.h"

namespace init = onebit::init;

namespace {
constexpr double kOptimalSlack = 1.01;  // SVID error ≤ 1.01 × optimal rank-1 error
constexpr double kSvdVectorTol = 1e-3;  // power-iteration a bᵀ vs σ₁u₁v₁ᵀ, relative Frobenius

void check_matrix(const torch::Tensor& w) {
  const auto svd = init::svid_svd(w);
  const auto nmf = init::svid_nmf(w);
  CHECK(svd.converged);
  CHECK(nmf.converged);
  CHECK((svd.a >= 0).all().item<bool>());
  CHECK((svd.b >= 0).all().item<bool>());
  CHECK((nmf.a >= 0).all().item<bool>());
  CHECK((nmf.b >= 0).all().item<bool>());
  const double opt = init::optimal_rank1_error(w);
  const double e_svd = init::svid_error(w, svd.a, svd.b);
  const double e_nmf = init::svid_error(w, nmf.a, nmf.b);
  const double base = init::sign_mean_error(w);
  CAPTURE(opt, e_svd, e_nmf, base, svd.iterations, nmf.iterations);
  CHECK(e_svd <= opt * kOptimalSlack);
  CHECK(e_nmf <= opt * kOptimalSlack);
  CHECK(e_svd < base);
  CHECK(e_nmf < base);
}
}  // namespace

TEST_CASE("SVID power iteration matches torch::linalg_svd's leading pair of |W|", "[layer]") {
  torch::manual_seed(11);
  for (auto shape : {std::pair<int64_t, int64_t>{64, 48}, {40, 200}}) {
    auto w = torch::randn({shape.first, shape.second}) * torch::exp(torch::randn({shape.first, 1}));
    auto [U, S, Vh] = torch::linalg_svd(w.abs().to(torch::kFloat64), false);
    auto best = torch::outer(U.select(1, 0), Vh.select(0, 0)) * S[0];  // sign flips cancel
    auto r = init::svid_svd(w);
    auto approx = torch::outer(r.a, r.b).to(torch::kFloat64);
    CHECK(((approx - best).norm() / best.norm()).item<double>() < kSvdVectorTol);
  }
}

TEST_CASE("SVID on Gaussian matrices: SVD and NMF reach the rank-1 optimum", "[layer]") {
  torch::manual_seed(12);
  check_matrix(torch::randn({128, 96}));
  check_matrix(torch::randn({50, 300}) * torch::exp(torch::randn({300}) * 0.5));
  check_matrix(torch::randn({200, 64}, torch::kFloat64));
}

TEST_CASE("SVID on every linear of stories260K beats sign·mean|W|", "[layer]") {
  OB_SHARED_OR_SKIP(dir, "models/stories260K");
  onebit::io::SafetensorsReader reader((dir / "model.safetensors").string());
  int checked = 0;
  for (const auto& name : reader.names()) {
    if (name.find("_proj.weight") == std::string::npos) continue;
    CAPTURE(name);
    check_matrix(reader.load(name, torch::kFloat32));
    ++checked;
  }
  CHECK(checked == 5 * 7);  // q, k, v, o, gate, up, down in each of 5 layers
}

TEST_CASE("NMF is deterministic for a seed and sign(W)⊙abᵀ reconstructs W's signs", "[layer]") {
  torch::manual_seed(13);
  auto w = torch::randn({30, 20});
  auto r1 = init::svid_nmf(w), r2 = init::svid_nmf(w);
  CHECK(torch::equal(r1.a, r2.a));
  CHECK(torch::equal(r1.b, r2.b));
  auto nmf_other_seed = init::svid_nmf(w, {200, 1e-4, 7});
  CHECK(init::svid_error(w, nmf_other_seed.a, nmf_other_seed.b) ==
        Approx(init::svid_error(w, r1.a, r1.b)).epsilon(1e-3));
  // An exactly rank-1 magnitude with arbitrary signs is recovered exactly.
  auto a = torch::rand({30}) + 0.1, b = torch::rand({20}) + 0.1;
  auto exact = torch::outer(a, b) * torch::where(torch::randn({30, 20}) >= 0, 1.0f, -1.0f);
  auto r = init::svid_svd(exact);
  CHECK(init::svid_error(exact, r.a, r.b) < 1e-5);
  auto n = init::svid_nmf(exact);
  CHECK(init::svid_error(exact, n.a, n.b) < 1e-3);
}

TEST_CASE("SVID rejects bad weights with clear messages", "[layer]") {
  CHECK_THROWS_WITH(init::svid_nmf(torch::zeros({2, 3, 4})), OB_CONTAINS("svid_nmf: weight must be 2-D"));
  CHECK_THROWS_WITH(init::svid_svd(torch::zeros({0, 3})), OB_CONTAINS("svid_svd: weight is empty"));
  auto nan = torch::ones({3, 3});
  nan[0][1] = NAN;
  CHECK_THROWS_WITH(init::svid_svd(nan), OB_CONTAINS("NaN or inf"));
  CHECK_THROWS_WITH(init::svid_error(torch::ones({3, 3}), torch::ones({2}), torch::ones({3})),
                    OB_CONTAINS("need W [out, in], a [out], b [in]"));
  // |W| = 0: a = b = 0 is exact and converged, no division by zero.
  auto z = init::svid_svd(torch::zeros({4, 5}));
  CHECK(z.converged);
  CHECK(z.a.abs().sum().item<double>() == 0);
  auto zn = init::svid_nmf(torch::zeros({4, 5}));
  CHECK(torch::isfinite(zn.a).all().item<bool>());
}
