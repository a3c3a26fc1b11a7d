#include "onebit/optim/quantized_moment.h"

#include <torch/torch.h>

#include <cmath>

#include "onebit/core/error.h"
#include "onebit/optim/stochastic_round.h"

namespace onebit::optim {
namespace {

// Levels below the scale, and the decades they cover: the code of level j (0 = the scale itself)
// is top − j, and level j is ρ^(−j) with ρ = 10^(decades / (levels − 1)).
struct Codebook {
  int64_t top;      // the largest code: 127 | 255
  double decades;   // 6 | 12
  double log_rho() const { return decades * std::log(10.0) / double(top - 1); }
};
Codebook codebook(bool is_signed) { return is_signed ? Codebook{127, 6.0} : Codebook{255, 12.0}; }

int64_t blocks(int64_t n) { return (n + kQuantBlock - 1) / kQuantBlock; }

// x [n] -> [blocks, kQuantBlock] padded with zeros.
torch::Tensor by_block(const torch::Tensor& x) {
  const int64_t n = x.numel(), pad = blocks(n) * kQuantBlock - n;
  return (pad ? torch::constant_pad_nd(x.reshape({-1}), {0, pad}) : x.reshape({-1})).view({-1, kQuantBlock});
}

}  // namespace

QuantizedMoment make_quantized_moment(int64_t n, bool is_signed, const torch::TensorOptions& options) {
  OB_CHECK(n >= 0, "quantized moment: negative size ", n);
  QuantizedMoment q;
  q.is_signed = is_signed;
  q.codes = torch::zeros({n}, options.dtype(is_signed ? torch::kChar : torch::kByte));
  q.scales = torch::zeros({blocks(n)}, options.dtype(torch::kFloat32));
  return q;
}

torch::Tensor dequantize(const QuantizedMoment& q) {
  torch::NoGradGuard no_grad;
  const Codebook cb = codebook(q.is_signed);
  const int64_t n = q.codes.numel();
  const torch::Tensor c = q.codes.to(torch::kFloat32);
  // |value| = scale·ρ^(|c| − top) for c ≠ 0; 0 for c = 0.
  torch::Tensor mag = c.abs().sub_(double(cb.top)).mul_(cb.log_rho()).exp_().masked_fill_(c == 0, 0.0);
  if (q.is_signed) mag.mul_(c.sign());
  return by_block(mag).mul_(q.scales.unsqueeze(1)).view({-1}).narrow(0, 0, n).contiguous();
}

void quantize_(QuantizedMoment& q, const torch::Tensor& src, uint64_t seed, int64_t offset) {
  torch::NoGradGuard no_grad;
  OB_CHECK(src.scalar_type() == torch::kFloat32 && src.numel() == q.codes.numel() && src.device() == q.codes.device(),
           "quantized moment: needs fp32 values [", q.codes.numel(), "] on ", q.codes.device(), ", got ",
           src.scalar_type(), " ", src.sizes(), " on ", src.device());
  const Codebook cb = codebook(q.is_signed);
  const int64_t n = src.numel();
  const double log_rho = cb.log_rho(), last = double(cb.top - 1);  // the smallest non-zero level
  const torch::Tensor x = src.reshape({-1});
  const torch::Tensor a = by_block(x.abs());  // [blocks, kQuantBlock], the padding 0
  q.scales.copy_(a.amax(1));
  // t = |x| / scale in [0, 1]; its level j (real) = −ln t / ln ρ; the two levels around it:
  // j0 = ⌊j⌋ (the larger value, hi) and j0 + 1 (lo); below the last level, lo is 0.
  const torch::Tensor t = a.div_(q.scales.clamp_min(std::numeric_limits<float>::min()).unsqueeze(1))
                              .view({-1})
                              .narrow(0, 0, n)
                              .clamp_max(1.0);
  const torch::Tensor j0 = t.log().neg_().div_(log_rho).floor_().clamp_(0.0, last);
  const torch::Tensor hi = j0.neg().mul_(log_rho).exp_();
  const torch::Tensor below = j0 >= last;  // t under the last level, or exactly on it
  const torch::Tensor lo = torch::where(below, torch::zeros_like(t), hi * std::exp(-log_rho));
  const torch::Tensor p_hi = (t - lo).div_(hi - lo).clamp_(0.0, 1.0);
  const torch::Tensor u = random_bits16(n, seed, offset, x.options()).to(torch::kFloat32).add_(0.5).div_(65536.0);
  const torch::Tensor take_hi = u < p_hi;
  // code = top − level: hi's level j0, lo's j0 + 1 (or 0 below the last level).
  torch::Tensor code = torch::where(take_hi, double(cb.top) - j0, double(cb.top) - 1.0 - j0);
  code.masked_fill_(below.logical_and(take_hi.logical_not()), 0.0);
  if (!q.is_signed) code.masked_fill_(code.eq(0).logical_and(t > 0), 1.0);  // v ≠ 0 never becomes 0
  code.masked_fill_(t.eq(0), 0.0);
  if (q.is_signed) code.mul_(x.sign());
  q.codes.copy_(code);
}

}  // namespace onebit::optim
