// AVX-512 packed kernel (kernels/packed_sign.h), compiled with -mavx512f for x86-64 only and
// chosen at run time (cpu/dispatch.cpp). Two bytes of signs are a 16-lane mask register as
// they stand (bit k = input k, 1 = −1): a masked xor of the sign bit negates those inputs,
// then one add; the mask serves every token of the call.
#include "kernels/packed_sign.h"

#if defined(__AVX512F__)
#include <immintrin.h>

#include <cstring>

namespace onebit::kernels {

namespace {
constexpr int64_t kBytesPerBlock = kSignsPerBlock / 8;

template <int R, int U>
void rows_block(const GemmArgs& a, int64_t t0, int64_t o_begin, int64_t o_end) {
  const int64_t nwords = a.blocks * kBytesPerBlock / 2;  // 16-bit masks, a multiple of 8
  const __m512i sign = _mm512_set1_epi32(int(0x80000000u));
  const float* x[R];
  for (int r = 0; r < R; ++r) x[r] = a.xg + (t0 + r) * a.xs;
  for (int64_t o = o_begin; o < o_end; ++o) {
    const auto* row = reinterpret_cast<const uint8_t*>(a.w + o * a.blocks);
    __m512 acc[R][U];
    for (int r = 0; r < R; ++r)
      for (int u = 0; u < U; ++u) acc[r][u] = _mm512_setzero_ps();
    for (int64_t j = 0; j < nwords; j += U) {
      for (int u = 0; u < U; ++u) {
        uint16_t bits;
        std::memcpy(&bits, row + 2 * (j + u), 2);
        const __mmask16 k = _cvtu32_mask16(bits);
        for (int r = 0; r < R; ++r) {
          const __m512i xi = _mm512_castps_si512(_mm512_loadu_ps(x[r] + 16 * (j + u)));
          acc[r][u] = _mm512_add_ps(acc[r][u], _mm512_castsi512_ps(_mm512_mask_xor_epi32(xi, k, xi, sign)));
        }
      }
    }
    for (int r = 0; r < R; ++r) {
      __m512 sum = acc[r][0];
      for (int u = 1; u < U; ++u) sum = _mm512_add_ps(sum, acc[r][u]);
      a.y[(t0 + r) * a.ys + o] = _mm512_reduce_add_ps(sum) * a.h[o] + (a.bias ? a.bias[o] : 0.0f);
    }
  }
}
}  // namespace

void gemm_rows_avx512(const GemmArgs& a, int64_t o_begin, int64_t o_end) {
  int64_t t = 0;
  for (; t + 8 <= a.n; t += 8) rows_block<8, 1>(a, t, o_begin, o_end);
  for (; t + 4 <= a.n; t += 4) rows_block<4, 2>(a, t, o_begin, o_end);
  for (; t + 2 <= a.n; t += 2) rows_block<2, 4>(a, t, o_begin, o_end);
  for (; t < a.n; ++t) rows_block<1, 8>(a, t, o_begin, o_end);
}

}  // namespace onebit::kernels
#endif
