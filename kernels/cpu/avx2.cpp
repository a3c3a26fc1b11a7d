// AVX2 packed kernel (kernels/packed_sign.h), compiled with -mavx2 -mfma for x86-64 only and
// chosen at run time (cpu/dispatch.cpp). A lookup table in registers, eight output rows per
// vector:
//  * The 32-bit sign words of eight rows are transposed (8×8) so that lane r of a vector holds
//    word q of row r.
//  * A word's 32 signs are 11 groups: ten of 3 bits and one of 2. For each group and token an
//    8-float table holds the 8 signed sums of its inputs (t[j] = Σ_k (bit k of j ? −x_k : x_k));
//    one vpermps looks up all eight rows at once (it reads the low 3 bits of each lane, so a
//    group's index is the word shifted right, nothing masked), and one add accumulates them.
//    3 vector ops serve 24 weights, against 3 per 8 for a masked add/subtract.
//  * The tables of a chunk of the input (all tokens of the call) stay in L1/L2; the signs are
//    read once per call for every token, and the rows PD ahead are prefetched.
// Sums are fp32 in another order than the reference (no precision lost to the tables).
#include "kernels/packed_sign.h"

#if defined(__AVX2__)
#include <immintrin.h>

#include <algorithm>
#include <vector>

#include "kernels/cpu/lut_driver.h"

namespace onebit::kernels {

namespace {
constexpr int kGroups = 11;             // 3-bit groups per 32-bit word (the last has 2 bits)
constexpr int64_t kTableFloats = 8 * kGroups;  // per word and token
constexpr int64_t kTableBudget = 96 * 1024;  // bytes of tables per chunk of the input
constexpr int kPrefetchRows = 16;             // rows ahead that the weight prefetch runs
constexpr int kMaxTokens = 8;                 // tokens per pass over a chunk of rows in registers

// Tables of `words` words of one token's inputs x (32·words floats).
void build_tables(const float* x, int64_t words, float* tab) {
  const __m256 s0 = _mm256_setr_ps(1, -1, 1, -1, 1, -1, 1, -1);
  const __m256 s1 = _mm256_setr_ps(1, 1, -1, -1, 1, 1, -1, -1);
  const __m256 s2 = _mm256_setr_ps(1, 1, 1, 1, -1, -1, -1, -1);
  for (int64_t q = 0; q < words; ++q) {
    for (int g = 0; g < kGroups; ++g) {
      const float* u = x + 32 * q + 3 * g;
      __m256 t = _mm256_add_ps(_mm256_mul_ps(s0, _mm256_set1_ps(u[0])), _mm256_mul_ps(s1, _mm256_set1_ps(u[1])));
      if (g + 1 < kGroups) t = _mm256_add_ps(t, _mm256_mul_ps(s2, _mm256_set1_ps(u[2])));
      _mm256_store_ps(tab + kTableFloats * q + 8 * g, t);
    }
  }
}

// v[m] = word m of rows 0..7 (lane r = row r), from r[i] = words 0..7 of row i.
inline void transpose8(__m256i r[8]) {
  const __m256i t0 = _mm256_unpacklo_epi32(r[0], r[1]), t1 = _mm256_unpackhi_epi32(r[0], r[1]);
  const __m256i t2 = _mm256_unpacklo_epi32(r[2], r[3]), t3 = _mm256_unpackhi_epi32(r[2], r[3]);
  const __m256i t4 = _mm256_unpacklo_epi32(r[4], r[5]), t5 = _mm256_unpackhi_epi32(r[4], r[5]);
  const __m256i t6 = _mm256_unpacklo_epi32(r[6], r[7]), t7 = _mm256_unpackhi_epi32(r[6], r[7]);
  const __m256i u0 = _mm256_unpacklo_epi64(t0, t2), u1 = _mm256_unpackhi_epi64(t0, t2);
  const __m256i u2 = _mm256_unpacklo_epi64(t1, t3), u3 = _mm256_unpackhi_epi64(t1, t3);
  const __m256i u4 = _mm256_unpacklo_epi64(t4, t6), u5 = _mm256_unpackhi_epi64(t4, t6);
  const __m256i u6 = _mm256_unpacklo_epi64(t5, t7), u7 = _mm256_unpackhi_epi64(t5, t7);
  r[0] = _mm256_permute2x128_si256(u0, u4, 0x20);
  r[1] = _mm256_permute2x128_si256(u1, u5, 0x20);
  r[2] = _mm256_permute2x128_si256(u2, u6, 0x20);
  r[3] = _mm256_permute2x128_si256(u3, u7, 0x20);
  r[4] = _mm256_permute2x128_si256(u0, u4, 0x31);
  r[5] = _mm256_permute2x128_si256(u1, u5, 0x31);
  r[6] = _mm256_permute2x128_si256(u2, u6, 0x31);
  r[7] = _mm256_permute2x128_si256(u3, u7, 0x31);
}

// acc[t][a] += the lookups of one transposed word v for T tokens (tables tab + t·ts).
template <int T, int A, int G = 0>
inline void word(__m256i v, const float* tab, int64_t ts, __m256 (&acc)[T][A]) {
  if constexpr (G < kGroups) {
    const __m256i idx = G == 0 ? v : _mm256_srli_epi32(v, 3 * G);
    for (int t = 0; t < T; ++t)
      acc[t][G % A] = _mm256_add_ps(acc[t][G % A], _mm256_permutevar8x32_ps(_mm256_load_ps(tab + t * ts + 8 * G), idx));
    word<T, A, G + 1>(v, tab, ts, acc);
  }
}

// Tokens t0..t0+T against rows o..o+7 (rows[] clamped to valid ones) over words [c, ce) of the
// chunk starting at word c0; partial sums in y (lanes past `valid` rows untouched).
template <int T>
void rows8(const GemmArgs& a, const uint32_t* const rows[8], const float* tab, int64_t ts, int64_t c0, int64_t ce,
           int64_t t0, int64_t o, int valid, bool first, const char* const pf[8]) {
  constexpr int A = T == 1 ? 4 : T == 2 ? 2 : 1;  // independent add chains per token
  __m256i lanes = _mm256_cmpgt_epi32(_mm256_set1_epi32(valid), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  __m256 acc[T][A];
  for (int t = 0; t < T; ++t) {
    for (int u = 0; u < A; ++u) acc[t][u] = _mm256_setzero_ps();
    if (!first) acc[t][0] = _mm256_maskload_ps(a.y + (t0 + t) * a.ys + o, lanes);
  }
  for (int64_t q = c0; q < ce; q += 8) {
    const int64_t nw = std::min<int64_t>(8, ce - q);  // 8, or 4 at a row's odd last block
    if (pf && (q - c0) % 16 == 0) {
      for (int i = 0; i < 8; ++i) _mm_prefetch(pf[i] + 4 * q, _MM_HINT_T0);
    }
    __m256i v[8];
    if (nw == 8) {
      for (int i = 0; i < 8; ++i) v[i] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(rows[i] + q));
    } else {  // only the low 128 bits feed words 0..3 of the transpose
      for (int i = 0; i < 8; ++i)
        v[i] = _mm256_castsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(rows[i] + q)));
    }
    transpose8(v);
    for (int m = 0; m < nw; ++m) word<T, A>(v[m], tab + kTableFloats * (q - c0 + m), ts, acc);
  }
  for (int t = 0; t < T; ++t) {
    __m256 s = acc[t][0];
    for (int u = 1; u < A; ++u) s = _mm256_add_ps(s, acc[t][u]);
    _mm256_maskstore_ps(a.y + (t0 + t) * a.ys + o, lanes, s);
  }
}

using Rows8Fn = void (*)(const GemmArgs&, const uint32_t* const[8], const float*, int64_t, int64_t, int64_t, int64_t,
                         int64_t, int, bool, const char* const[8]);
constexpr Rows8Fn kRows8[kMaxTokens + 1] = {nullptr,  rows8<1>, rows8<2>, rows8<3>, rows8<4>,
                                            rows8<5>, rows8<6>, rows8<7>, rows8<8>};
}  // namespace

void gemm_rows_avx2(const GemmArgs& a, int64_t o_begin, int64_t o_end) {
  lut_gemm_rows<8>(a, o_begin, o_end, kTableBudget, kTableFloats, build_tables,
                   [&](const uint32_t* const* rows, int valid, int64_t o, const auto& row, const float* tab,
                       int64_t ts, int64_t c0, int64_t ce) {
                     // Prefetch the same words of the rows kPrefetchRows ahead (within this call's rows).
                     const char* pf[8];
                     const bool ahead = o + kPrefetchRows < o_end;
                     for (int i = 0; i < 8; ++i)
                       pf[i] = reinterpret_cast<const char*>(row(std::min(o + kPrefetchRows + i, o_end - 1)));
                     for (int64_t t = 0; t < a.n; t += kMaxTokens) {
                       const int64_t nt = std::min<int64_t>(kMaxTokens, a.n - t);
                       kRows8[nt](a, rows, tab + t * ts, ts, c0, ce, t, o, valid, c0 == 0,
                                  ahead && t == 0 ? pf : nullptr);
                     }
                   });
}

}  // namespace onebit::kernels
#endif
