// Stochastic rounding of fp32 values to bf16, for low-precision optimizer state
// (docs/training.md, "Lean precision"). A value x between its two bf16 neighbours lo < x < hi
// becomes hi with probability (x - lo) / (hi - lo) and lo otherwise, so the rounding is unbiased
// (E[SR(x)] = x) and an update far below bf16's spacing still moves a value, on average, as far
// as it asked; round-to-nearest would drop it every time. Exactly representable values,
// infinities and NaN are kept.
//
// The random bits are a counter-based hash of (seed, element index): no generator state, the
// same bits on every device and in every run, so a resumed run rounds as an uninterrupted one.
#pragma once
#include <torch/types.h>

#include <cstdint>
#include <initializer_list>

namespace onebit::optim {

// dst (bf16) <- SR(src (fp32)), both contiguous with src's numel. Element i uses the bits of
// (seed, offset + i): a shard at offset k of a flat buffer rounds as the whole buffer would.
void stochastic_round_(torch::Tensor& dst, const torch::Tensor& src, uint64_t seed, int64_t offset = 0);
// A bf16 copy of src, rounded stochastically.
torch::Tensor stochastic_round(const torch::Tensor& src, uint64_t seed, int64_t offset = 0);

// The same with ATen ops (any device; stochastic_round_ uses it off the CPU). Bit-identical to
// the CPU loop (tests/optim/test_stochastic_round.cpp).
void stochastic_round_generic_(torch::Tensor& dst, const torch::Tensor& src, uint64_t seed, int64_t offset = 0);

// The 16 random bits (as int64 in [0, 65536)) that element i of a tensor of n values rounds
// with: those of (seed, offset + i), on the device of `options`, with ATen ops.
torch::Tensor random_bits16(int64_t n, uint64_t seed, int64_t offset, const torch::TensorOptions& options);

// One 64-bit seed from several parts (run seed, step, bucket, stream), each changing every bit.
uint64_t mix_seed(std::initializer_list<uint64_t> parts);

}  // namespace onebit::optim
