// 8-bit blockwise AdamW moments (optim.state_dtype=int8; docs/training.md, "Lean precision").
// A moment of n fp32 values is kept as n one-byte codes and one fp32 scale per block of
// kQuantBlock values: the block's largest magnitude, so a block of small gradients keeps its
// precision beside a block of large ones (the block-wise quantization of Dettmers et al.,
// "8-bit Optimizers via Block-wise Quantization", 2022). 1.002 bytes per value instead of 4.
//
// The codes are logarithmic, as the moments span many decades within a block:
//   first moment (signed, int8):  code ±c (c = 1..127) is ±scale·ρ₁^(c−127), ρ₁ = 10^(6/126):
//                                 magnitudes from scale down to 10⁻⁶·scale, 11.6% apart;
//   second moment (≥ 0, uint8):   code c (1..255) is scale·ρ₂^(c−255), ρ₂ = 10^(12/254): down
//                                 to 10⁻¹²·scale (its square root then spans the first
//                                 moment's 6 decades), 11.5% apart;
//   code 0 is 0.
// A value between two codes becomes one of them stochastically, with the probability that keeps
// its expectation (E[decode(code)] = value), from the counter-hash bits of stochastic_round.h
// (seed, element index): the exponential averages move by (1−β)·(g − m) a step, often less than
// a code's spacing (β₂ = 0.98: 2% of v), and round-to-nearest would freeze them there. Below the
// smallest code the first moment rounds to it or to 0 the same way; a non-zero second moment
// never rounds to 0 (it rounds up to the smallest code), as v = 0 under m ≠ 0 would make an update
// of m/eps.
#pragma once
#include <torch/types.h>

#include <cstdint>

namespace onebit::optim {

constexpr int64_t kQuantBlock = 2048;

struct QuantizedMoment {
  torch::Tensor codes;   // [n] int8 (signed) or uint8
  torch::Tensor scales;  // [⌈n / kQuantBlock⌉] fp32, the largest magnitude of each block
  bool is_signed = true;
};

// All zeros: n codes and their scales on the device of `options`.
QuantizedMoment make_quantized_moment(int64_t n, bool is_signed, const torch::TensorOptions& options);
// The fp32 values [n].
torch::Tensor dequantize(const QuantizedMoment& q);
// q <- the codes of src (fp32 [n], finite; the second moment ≥ 0). Element i rounds with the bits
// of (seed, offset + i): a shard at offset k of a flat buffer rounds as that part of the buffer would.
void quantize_(QuantizedMoment& q, const torch::Tensor& src, uint64_t seed, int64_t offset = 0);

}  // namespace onebit::optim
