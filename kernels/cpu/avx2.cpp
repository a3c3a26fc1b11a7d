// AVX2 packed kernel (kernels/packed_sign.h), compiled with -mavx2 for x86-64 only and chosen
// at run time (cpu/dispatch.cpp). Masked add/subtract: per byte of signs, one 256-bit load of
// its eight ±0 sign masks from an 8 KB table, xor-ed into eight inputs, added; the byte's mask
// serves every token of the call, so a weight is read once for all rows.
#include "kernels/packed_sign.h"

#if defined(__AVX2__)
#include <immintrin.h>

namespace onebit::kernels {

namespace {
constexpr int64_t kBytesPerBlock = kSignsPerBlock / 8;

struct SignMasks {
  alignas(32) uint32_t m[256][8];
  SignMasks() {
    for (int b = 0; b < 256; ++b)
      for (int k = 0; k < 8; ++k) m[b][k] = (b >> k) & 1 ? 0x80000000u : 0u;
  }
};
const SignMasks& sign_masks() {
  static const SignMasks table;
  return table;
}

inline float hsum(__m256 v) {
  const __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 s2 = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1)));
}

// R tokens against one output row, U independent accumulators per token (R·U ≤ 8 chains).
template <int R, int U>
void rows_block(const GemmArgs& a, int64_t t0, int64_t o_begin, int64_t o_end) {
  const SignMasks& s = sign_masks();
  const int64_t nbytes = a.blocks * kBytesPerBlock;
  const float* x[R];
  for (int r = 0; r < R; ++r) x[r] = a.xg + (t0 + r) * a.xs;
  for (int64_t o = o_begin; o < o_end; ++o) {
    const auto* row = reinterpret_cast<const uint8_t*>(a.w + o * a.blocks);
    __m256 acc[R][U];
    for (int r = 0; r < R; ++r)
      for (int u = 0; u < U; ++u) acc[r][u] = _mm256_setzero_ps();
    for (int64_t j = 0; j < nbytes; j += U) {  // nbytes is a multiple of 16 ≥ U
      for (int u = 0; u < U; ++u) {
        const __m256 m = _mm256_load_ps(reinterpret_cast<const float*>(s.m[row[j + u]]));
        for (int r = 0; r < R; ++r)
          acc[r][u] = _mm256_add_ps(acc[r][u], _mm256_xor_ps(_mm256_loadu_ps(x[r] + 8 * (j + u)), m));
      }
    }
    for (int r = 0; r < R; ++r) {
      __m256 sum = acc[r][0];
      for (int u = 1; u < U; ++u) sum = _mm256_add_ps(sum, acc[r][u]);
      a.y[(t0 + r) * a.ys + o] = hsum(sum) * a.h[o] + (a.bias ? a.bias[o] : 0.0f);
    }
  }
}
}  // namespace

void gemm_rows_avx2(const GemmArgs& a, int64_t o_begin, int64_t o_end) {
  int64_t t = 0;
  for (; t + 8 <= a.n; t += 8) rows_block<8, 1>(a, t, o_begin, o_end);
  for (; t + 4 <= a.n; t += 4) rows_block<4, 2>(a, t, o_begin, o_end);
  for (; t + 2 <= a.n; t += 2) rows_block<2, 4>(a, t, o_begin, o_end);
  for (; t < a.n; ++t) rows_block<1, 8>(a, t, o_begin, o_end);
}

}  // namespace onebit::kernels
#endif
