#include "onebit/optim/stochastic_round.h"

#include <torch/torch.h>

#include <cstring>

#include "onebit/core/error.h"

namespace onebit::optim {
namespace {

constexpr int64_t kGrain = 1 << 15;
constexpr uint64_t kGolden = 0x9E3779B97F4A7C15ull;  // 2^64 / golden ratio (splitmix64's increment)
constexpr uint64_t kMul1 = 0xBF58476D1CE4E5B9ull, kMul2 = 0x94D049BB133111EBull;
constexpr uint16_t kQuietNan = 0x7fc0;

// splitmix64's finaliser: every input bit changes every output bit.
inline uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * kMul1;
  z = (z ^ (z >> 27)) * kMul2;
  return z ^ (z >> 31);
}

// The 16 random bits of element i: the top bits of the hash of the i-th splitmix64 counter.
inline uint32_t random16(uint64_t seed, uint64_t i) { return uint32_t(mix64(seed + (i + 1) * kGolden) >> 48); }

// bf16 is the top half of an fp32: adding 16 random bits below the cut and truncating rounds the
// magnitude up with probability (low 16 bits) / 2^16, i.e. (|x| - |lo|) / (|hi| - |lo|).
inline uint16_t round_bits(uint32_t u, uint32_t r) {
  if ((u & 0x7fffffffu) > 0x7f800000u) return kQuietNan;
  return uint16_t((u + r) >> 16);
}

void check_args(const torch::Tensor& dst, const torch::Tensor& src) {
  OB_CHECK(src.scalar_type() == torch::kFloat32 && dst.scalar_type() == torch::kBFloat16,
           "stochastic_round_: needs an fp32 source and a bf16 destination, got ", src.scalar_type(), " and ",
           dst.scalar_type());
  OB_CHECK(src.numel() == dst.numel() && src.is_contiguous() && dst.is_contiguous() && src.device() == dst.device(),
           "stochastic_round_: source ", src.sizes(), " and destination ", dst.sizes(),
           " must be contiguous, on one device, with as many elements");
}

// Logical right shift of int64 values (ATen's >> is arithmetic on signed types).
torch::Tensor shr(const torch::Tensor& z, int64_t k) {
  return z.bitwise_right_shift(k).bitwise_and_(int64_t((uint64_t(1) << (64 - k)) - 1));
}

}  // namespace

void stochastic_round_(torch::Tensor& dst, const torch::Tensor& src, uint64_t seed, int64_t offset) {
  check_args(dst, src);
  if (!src.device().is_cpu()) return stochastic_round_generic_(dst, src, seed, offset);
  const float* s = src.data_ptr<float>();
  auto* d = reinterpret_cast<uint16_t*>(dst.data_ptr<at::BFloat16>());
  at::parallel_for(0, src.numel(), kGrain, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      uint32_t u;
      std::memcpy(&u, s + i, sizeof u);
      d[i] = round_bits(u, random16(seed, uint64_t(offset + i)));
    }
  });
}

torch::Tensor stochastic_round(const torch::Tensor& src, uint64_t seed, int64_t offset) {
  const torch::Tensor s = src.contiguous();
  torch::Tensor out = torch::empty(s.sizes(), s.options().dtype(torch::kBFloat16));
  stochastic_round_(out, s, seed, offset);
  return out;
}

torch::Tensor random_bits16(int64_t n, uint64_t seed, int64_t offset, const torch::TensorOptions& options) {
  torch::NoGradGuard no_grad;
  const auto i64 = options.dtype(torch::kInt64);
  // z = seed + (offset + i + 1)·golden, then mix64, all modulo 2^64 (int64 arithmetic wraps).
  torch::Tensor z = torch::arange(offset + 1, offset + 1 + n, i64).mul_(int64_t(kGolden)).add_(int64_t(seed));
  z = z.bitwise_xor_(shr(z, 30)).mul_(int64_t(kMul1));
  z = z.bitwise_xor_(shr(z, 27)).mul_(int64_t(kMul2));
  z = z.bitwise_xor_(shr(z, 31));
  return shr(z, 48);
}

void stochastic_round_generic_(torch::Tensor& dst, const torch::Tensor& src, uint64_t seed, int64_t offset) {
  check_args(dst, src);
  torch::NoGradGuard no_grad;
  const torch::Tensor r = random_bits16(src.numel(), seed, offset, src.options());
  const torch::Tensor u = src.reshape({-1}).view(torch::kInt32).to(torch::kInt64).bitwise_and_(int64_t(0xffffffff));
  torch::Tensor bits = shr(u.add_(r), 16).bitwise_and_(int64_t(0xffff));
  bits.masked_fill_(src.reshape({-1}).isnan(), int64_t(kQuietNan));
  dst.view({-1}).view(torch::kInt16).copy_(bits);
}

uint64_t mix_seed(std::initializer_list<uint64_t> parts) {
  uint64_t h = 0;
  for (uint64_t p : parts) h = mix64(h + kGolden + mix64(p));
  return h;
}

}  // namespace onebit::optim
