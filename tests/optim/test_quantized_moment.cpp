// 8-bit blockwise moments (onebit/optim/quantized_moment.h) against their definition written
// out here: the logarithmic code values, unbiased stochastic rounding (the mean of many
// roundings is the value), the neighbouring-codes bound, per-block scales, and the second
// moment's floor.
#include <torch/torch.h>

#include <cmath>

#include "onebit/optim/quantized_moment.h"
#include "tests/support.h"

namespace {

using onebit::optim::dequantize;
using onebit::optim::kQuantBlock;
using onebit::optim::make_quantized_moment;
using onebit::optim::quantize_;
using onebit::optim::QuantizedMoment;

// The code spacing of the definition: 127 signed levels over 6 decades, 255 unsigned over 12.
const double kRhoSigned = std::pow(10.0, 6.0 / 126.0), kRhoUnsigned = std::pow(10.0, 12.0 / 254.0);

QuantizedMoment round_trip(const torch::Tensor& x, bool is_signed, uint64_t seed = 7) {
  auto q = make_quantized_moment(x.numel(), is_signed, x.options());
  quantize_(q, x, seed);
  return q;
}

}  // namespace

TEST_CASE("quantized moment: code values are scale times powers of rho, and round-trip exactly", "[optim]") {
  // One block with absmax 3: values on the grid 3·ρ^-j come back (to fp32 rounding of exp/log).
  for (const bool is_signed : {true, false}) {
    CAPTURE(is_signed);
    const double rho = is_signed ? kRhoSigned : kRhoUnsigned;
    const int64_t levels = is_signed ? 127 : 255;
    auto grid = torch::empty({levels}, torch::kFloat64);
    for (int64_t j = 0; j < levels; ++j) grid[j] = 3.0 * std::pow(rho, -double(j)) * (is_signed && j % 2 ? -1 : 1);
    const auto x = grid.to(torch::kFloat32);
    const auto q = round_trip(x, is_signed);
    CHECK(q.codes.scalar_type() == (is_signed ? torch::kChar : torch::kByte));
    CHECK(q.scales.item<float>() == 3.0f);
    const auto back = dequantize(q).to(torch::kFloat64);
    CHECK(((back - grid).abs() / grid.abs()).max().item<double>() < 1e-4);
    CHECK(q.codes.to(torch::kInt64).abs().max().item<int64_t>() == levels);
  }
}

TEST_CASE("quantized moment: stochastic rounding is unbiased and stays between neighbouring codes", "[optim]") {
  torch::manual_seed(1);
  for (const bool is_signed : {true, false}) {
    CAPTURE(is_signed);
    const double rho = is_signed ? kRhoSigned : kRhoUnsigned;
    // One block: an absmax of 1 and 2047 copies of a value between two codes (and one below the
    // smallest code for the signed moment). Many seeds: the mean of the decoded values is the value.
    for (const double v : {0.37, 2.2e-5, is_signed ? 4e-7 : 3e-11}) {
      CAPTURE(v);
      auto x = torch::full({kQuantBlock}, float(v));
      x[0] = 1.0f;
      double sum = 0;
      int64_t count = 0;
      const int seeds = 16;
      for (int s = 0; s < seeds; ++s) {
        const auto back = dequantize(round_trip(x, is_signed, 100 + s)).narrow(0, 1, kQuantBlock - 1).to(torch::kFloat64);
        sum += back.sum().item<double>();
        count += back.numel();
        // Each decoded value is one of the two codes around v: within a factor rho (or 0 / the
        // smallest code below it).
        const double smallest = std::pow(rho, -double((is_signed ? 127 : 255) - 1));
        if (v >= smallest) {
          CHECK(back.min().item<double>() >= v / rho * (1 - 1e-5));
          CHECK(back.max().item<double>() <= v * rho * (1 + 1e-5));
        } else {
          CHECK(back.max().item<double>() <= smallest * (1 + 1e-4));
        }
      }
      const double mean = sum / double(count);
      // The spread of one rounding is at most (rho − 1)·v; 32k roundings: the mean within ~1%.
      CHECK(std::abs(mean - v) / v < 0.01);
    }
  }
  // The second moment's floor: tiny positive values never decode to 0 (they round up), 0 stays 0.
  auto x = torch::full({100}, 1e-20f);
  x[0] = 1.0f;
  x[1] = 0.0f;
  const auto back = dequantize(round_trip(x, false));
  CHECK(back[1].item<float>() == 0.0f);
  CHECK(back.narrow(0, 2, 98).min().item<float>() > 0.0f);
  // The signed moment keeps signs and rounds tiny values to 0 or the smallest code.
  const auto m = torch::tensor({-0.5f, 0.25f, -1.0f, 0.0f});
  const auto mb = dequantize(round_trip(m, true));
  CHECK(torch::equal(mb.sign(), m.sign()));
}

TEST_CASE("quantized moment: every block has its own scale, the last one partial", "[optim]") {
  // Three blocks (the last of 5 values) with absmax 1e3, 1e-3 and 7: each keeps its relative precision.
  const int64_t n = 2 * kQuantBlock + 5;
  torch::manual_seed(2);
  auto x = torch::randn({n});
  x.narrow(0, 0, kQuantBlock).mul_(1e3);
  x.narrow(0, kQuantBlock, kQuantBlock).mul_(1e-3);
  x[n - 1] = 7.0f;
  const auto q = round_trip(x, true);
  REQUIRE(q.scales.numel() == 3);
  CHECK(q.scales[0].item<float>() == x.narrow(0, 0, kQuantBlock).abs().max().item<float>());
  CHECK(q.scales[1].item<float>() == x.narrow(0, kQuantBlock, kQuantBlock).abs().max().item<float>());
  CHECK(q.scales[2].item<float>() == 7.0f);
  const auto back = dequantize(q);
  REQUIRE(back.numel() == n);
  // Values within 6 decades of their block's scale: each within a factor rho of itself.
  const auto scale = torch::cat({torch::full({kQuantBlock}, q.scales[0].item<float>()),
                                 torch::full({kQuantBlock}, q.scales[1].item<float>()), torch::full({5}, 7.0f)});
  const auto big = x.abs() > scale * 1e-6;
  const auto ratio = (back / x).masked_select(big);
  CHECK(ratio.min().item<double>() >= 1 / kRhoSigned * (1 - 1e-5));
  CHECK(ratio.max().item<double>() <= kRhoSigned * (1 + 1e-5));
  // The same seed and offset give the same codes; a shard at an offset uses that part's bits.
  CHECK(torch::equal(round_trip(x, true).codes, q.codes));
  auto whole = make_quantized_moment(kQuantBlock, true, x.options());
  auto part = make_quantized_moment(kQuantBlock, true, x.options());
  quantize_(whole, x.narrow(0, kQuantBlock, kQuantBlock).contiguous(), 9, kQuantBlock);
  quantize_(part, x.narrow(0, kQuantBlock, kQuantBlock).contiguous(), 9, 0);
  CHECK_FALSE(torch::equal(whole.codes, part.codes));
  CHECK_THROWS_WITH(quantize_(whole, torch::zeros({3}), 1), OB_CONTAINS("needs fp32 values [2048]"));
}
