// Stochastic rounding fp32 -> bf16 against bf16's definition: a result is one of the two bf16
// neighbours (8 significant bits, from frexp), the mean of many roundings is the value, and an
// update far below bf16's spacing moves a weight (across zero) where round-to-nearest never does.
#include <torch/torch.h>

#include <cmath>
#include <cstdint>

#include "onebit/optim/stochastic_round.h"
#include "tests/support.h"

using onebit::optim::stochastic_round;

namespace {

// Five standard deviations of a mean or of a fraction: the statistical bounds below.
constexpr double kSigmas = 5;

// The bf16 values just below and just above |x| (x finite, nonzero): bf16 keeps 8 significant
// bits, so between 2^(e-1) and 2^e its spacing is 2^(e-8).
std::pair<double, double> bf16_neighbours(double x) {
  int e;
  std::frexp(std::abs(x), &e);
  const double spacing = std::ldexp(1.0, e - 8);
  const double lo = std::floor(std::abs(x) / spacing) * spacing;
  return {lo, lo + spacing};
}

double spacing_at(double x) {
  const auto [lo, hi] = bf16_neighbours(x);
  return hi - lo;
}

}  // namespace

TEST_CASE("stochastic_round: every result is one of the two bf16 neighbours", "[optim]") {
  torch::manual_seed(1);
  // Magnitudes from 1e-30 to 1e30, both signs, plus exactly representable values.
  auto x = torch::randn({20000}) * torch::pow(10.0, torch::randint(-30, 31, {20000}).to(torch::kFloat32));
  x.narrow(0, 0, 100).copy_(x.narrow(0, 0, 100).to(torch::kBFloat16).to(torch::kFloat32));
  const auto y = stochastic_round(x, 1234).to(torch::kFloat32);
  const float* px = x.data_ptr<float>();
  const float* py = y.data_ptr<float>();
  int64_t up = 0, down = 0;
  for (int64_t i = 0; i < x.numel(); ++i) {
    const double xi = px[i], yi = py[i];
    if (xi == 0) continue;
    const auto [lo, hi] = bf16_neighbours(xi);
    INFO("x = " << xi << ", rounded " << yi << ", neighbours " << lo << ", " << hi);
    REQUIRE(std::signbit(yi) == std::signbit(xi));
    if (lo == std::abs(xi)) {
      REQUIRE(yi == xi);  // representable: kept
      continue;
    }
    REQUIRE((std::abs(yi) == lo || std::abs(yi) == hi));
    (std::abs(yi) == hi ? up : down) += 1;
  }
  CHECK(up > 1000);  // both neighbours occur
  CHECK(down > 1000);

  // Zeros, infinities and NaN are kept.
  const auto special = torch::tensor({0.0f, -0.0f, INFINITY, -INFINITY, NAN});
  const auto r = stochastic_round(special, 7).to(torch::kFloat32);
  CHECK(r[0].item<float>() == 0);
  CHECK(std::signbit(r[1].item<float>()));
  CHECK(r[2].item<float>() == INFINITY);
  CHECK(r[3].item<float>() == -INFINITY);
  CHECK(std::isnan(r[4].item<float>()));
}

TEST_CASE("stochastic_round: the mean of many roundings is the value", "[optim]") {
  constexpr int64_t kN = 1'000'000;
  for (const double x : {1.0 + 0.3 / 128, -3.0e-5, 0.01, 123.456}) {
    CAPTURE(x);
    const double xf = double(float(x));  // the fp32 value that is rounded
    const auto [lo, hi] = bf16_neighbours(xf);
    const double p = (std::abs(xf) - lo) / (hi - lo);  // the probability of rounding up
    const auto y = stochastic_round(torch::full({kN}, xf, torch::kFloat32), 99).to(torch::kFloat64);
    const double sd = (hi - lo) * std::sqrt(p * (1 - p) / double(kN));
    CHECK(std::abs(y.mean().item<double>() - xf) < kSigmas * sd);
    const double frac_up = y.abs().eq(hi).to(torch::kFloat64).mean().item<double>();
    CHECK(std::abs(frac_up - p) < kSigmas * std::sqrt(p * (1 - p) / double(kN)));
  }
}

TEST_CASE("stochastic_round: updates far below bf16's spacing still move a weight across zero", "[optim]") {
  // W = 0.01 in bf16 (spacing 2^-14 ≈ 6.1e-5), then 20000 updates of -1e-6 (1/61 of a spacing):
  // the exact sum ends at -0.01. Round-to-nearest drops every update; SR follows the sum.
  constexpr int kSteps = 20000;
  constexpr double kDelta = -1e-6;
  const double w0 = double(float(at::BFloat16(0.01f)));
  REQUIRE(std::abs(kDelta) < spacing_at(w0) / 50);
  auto sr = torch::full({64}, w0, torch::kBFloat16);  // 64 independent weights
  auto rn = sr.clone();
  for (int s = 0; s < kSteps; ++s) {
    sr = stochastic_round(sr.to(torch::kFloat32) + kDelta, onebit::optim::mix_seed({5, uint64_t(s)}));
    rn = (rn.to(torch::kFloat32) + kDelta).to(torch::kBFloat16);
  }
  CHECK(torch::all(rn.to(torch::kFloat64) == w0).item<bool>());  // never moved
  const auto w = sr.to(torch::kFloat64);
  CHECK(torch::all(w < 0).item<bool>());  // every weight crossed zero
  // Each step's rounding error has variance <= p(1-p)·spacing² with p = 1/61: the sum over the
  // steps stays within a few 1e-3 of the exact -0.01.
  const double expected = w0 + kSteps * kDelta;
  CHECK(std::abs(w.mean().item<double>() - expected) < 1e-3);
  CHECK((w - expected).abs().max().item<double>() < 5e-3);

  // One step: the probability of moving is |delta| / spacing.
  constexpr int64_t kN = 1'000'000;
  const auto once = stochastic_round(torch::full({kN}, w0 + kDelta, torch::kFloat32), 3).to(torch::kFloat64);
  const double p = (w0 - double(float(w0 + kDelta))) / spacing_at(w0);
  const double moved = once.ne(w0).to(torch::kFloat64).mean().item<double>();
  CHECK(std::abs(moved - p) < kSigmas * std::sqrt(p * (1 - p) / double(kN)));
}

TEST_CASE("stochastic_round: the bits depend on (seed, index) only: offsets, devices, repeats", "[optim]") {
  torch::manual_seed(2);
  const auto x = torch::randn({10007});
  const auto a = stochastic_round(x, 42);
  CHECK(torch::equal(a, stochastic_round(x, 42)));    // the same seed: the same result
  CHECK(!torch::equal(a, stochastic_round(x, 43)));   // another seed: another
  // A slice at offset k rounds as inside the whole.
  const auto part = stochastic_round(x.narrow(0, 5000, 3000), 42, 5000);
  CHECK(torch::equal(part, a.narrow(0, 5000, 3000)));
  // The ATen-op version (used off the CPU) gives the CPU loop's bits.
  const auto with_nan = torch::cat({x, torch::tensor({NAN, INFINITY, -0.0f})});
  auto generic = torch::empty(with_nan.sizes(), torch::kBFloat16);
  onebit::optim::stochastic_round_generic_(generic, with_nan, 42, 17);
  const auto loop = stochastic_round(with_nan, 42, 17);
  CHECK(torch::equal(generic.view(torch::kInt16), loop.view(torch::kInt16)));
  // mix_seed: order matters, every part counts.
  using onebit::optim::mix_seed;
  CHECK(mix_seed({1, 2}) != mix_seed({2, 1}));
  CHECK(mix_seed({1, 2, 0}) != mix_seed({1, 2}));
  if (torch::cuda::is_available()) {
    const auto xc = with_nan.cuda();
    CHECK(torch::equal(stochastic_round(xc, 42, 17).cpu().view(torch::kInt16), loop.view(torch::kInt16)));
  }
}
