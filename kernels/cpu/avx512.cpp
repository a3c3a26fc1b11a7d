// AVX-512 packed kernel (kernels/packed_sign.h), compiled with -mavx512f for x86-64 only and
// chosen at run time (cpu/dispatch.cpp). A lookup table in registers, sixteen output rows per
// vector (the AVX2 kernel's scheme at twice the width and 4-bit groups):
//  * The 32-bit sign words of sixteen rows are transposed (16×16) so that lane r of a vector
//    holds word q of row r.
//  * A word's 32 signs are 8 groups of 4 bits. For each group and token a 16-float table holds
//    the 16 signed sums of its inputs (t[j] = Σ_k (bit k of j ? −x_k : x_k)); one vpermps looks
//    up all sixteen rows at once (it reads the low 4 bits of each lane, so a group's index is
//    the word shifted right, nothing masked), and one add accumulates them: 3 vector ops serve
//    64 weights, against 2 per 16 for a masked add/subtract.
//  * The tables of a chunk of the input (all tokens of the call) stay in L1/L2 while every row
//    of the call streams past them; each weight is read from memory once per call.
// Sums are fp32 in another order than the reference (no precision lost to the tables).
#include "kernels/packed_sign.h"

#if defined(__AVX512F__)
#include <immintrin.h>

#include <algorithm>
#include <vector>

#include "kernels/cpu/avx512_group_sums.h"
#include "kernels/cpu/lut_driver.h"

namespace onebit::kernels {

namespace {
constexpr int kGroups = 8;                        // 4-bit groups per 32-bit word
constexpr int64_t kTableFloats = 16 * kGroups;    // per word and token
constexpr int64_t kTableBudget = 256 * 1024;     // bytes of tables per chunk of the input (L2)
constexpr int kMaxTokens = 8;                     // tokens per pass over sixteen rows in registers

// Tables of `words` words of one token's inputs x (32·words floats).
void build_tables(const float* x, int64_t words, float* tab) {
  for (int64_t j = 0; j < words * kGroups; ++j) _mm512_store_ps(tab + 16 * j, group_sums(x + 4 * j));
}

// In place: r[m] lane i = (before) r[i] lane m, for a 16×16 matrix of 32-bit words.
inline void transpose16(__m512i r[16]) {
  __m512i t[16];
  for (int i = 0; i < 16; i += 2) {  // pairs of rows interleaved by 32 bits
    t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
  }
  for (int i = 0; i < 16; i += 4) {  // then by 64 bits: each 128-bit lane holds a 4×4 tile
    r[i] = _mm512_unpacklo_epi64(t[i], t[i + 2]);
    r[i + 1] = _mm512_unpackhi_epi64(t[i], t[i + 2]);
    r[i + 2] = _mm512_unpacklo_epi64(t[i + 1], t[i + 3]);
    r[i + 3] = _mm512_unpackhi_epi64(t[i + 1], t[i + 3]);
  }
  // r[4b + c], 128-bit lane L: word 4L + c of rows 4b..4b+3. Word 4L + c of all rows is
  // lane L of r[c], r[4 + c], r[8 + c], r[12 + c], side by side.
  for (int c = 0; c < 4; ++c) {
    t[c] = _mm512_shuffle_i32x4(r[c], r[4 + c], 0x88);       // lanes 0, 2 of each
    t[4 + c] = _mm512_shuffle_i32x4(r[c], r[4 + c], 0xdd);   // lanes 1, 3
    t[8 + c] = _mm512_shuffle_i32x4(r[8 + c], r[12 + c], 0x88);
    t[12 + c] = _mm512_shuffle_i32x4(r[8 + c], r[12 + c], 0xdd);
  }
  for (int c = 0; c < 4; ++c) {
    r[c] = _mm512_shuffle_i32x4(t[c], t[8 + c], 0x88);        // lane 0 of the four: word c
    r[8 + c] = _mm512_shuffle_i32x4(t[c], t[8 + c], 0xdd);    // lane 2: word 8 + c
    r[4 + c] = _mm512_shuffle_i32x4(t[4 + c], t[12 + c], 0x88);
    r[12 + c] = _mm512_shuffle_i32x4(t[4 + c], t[12 + c], 0xdd);
  }
}

// acc[t][·] += the lookups of one transposed word v for T tokens (tables tab + t·ts).
template <int T, int A>
inline void word(__m512i v, const float* tab, int64_t ts, __m512 (&acc)[T][A]) {
#pragma GCC unroll 8
  for (int g = 0; g < kGroups; ++g) {
    const __m512i idx = g == 0 ? v : _mm512_srli_epi32(v, 4 * g);
    for (int t = 0; t < T; ++t)
      acc[t][g % A] = _mm512_add_ps(acc[t][g % A], _mm512_permutexvar_ps(idx, _mm512_load_ps(tab + t * ts + 16 * g)));
  }
}

// Tokens t0..t0+T against rows o..o+15 (rows[] clamped to valid ones) over words [c0, ce);
// partial sums in y (lanes past `valid` rows untouched). pf: the rows of the next sixteen,
// prefetched word block by word block (null: none).
template <int T>
void rows16(const GemmArgs& a, const uint32_t* const rows[16], const uint32_t* const pf[16], const float* tab,
            int64_t ts, int64_t c0, int64_t ce, int64_t t0, int64_t o, __mmask16 lanes, bool first) {
  constexpr int A = T == 1 ? 4 : T == 2 ? 2 : 1;  // independent add chains per token
  __m512 acc[T][A];
  for (int t = 0; t < T; ++t) {
    for (int u = 0; u < A; ++u) acc[t][u] = _mm512_setzero_ps();
    if (!first) acc[t][0] = _mm512_maskz_loadu_ps(lanes, a.y + (t0 + t) * a.ys + o);
  }
  for (int64_t q = c0; q < ce; q += 16) {
    const int64_t nw = std::min<int64_t>(16, ce - q);  // 16, or the last 4, 8 or 12 words of a row
    const auto words = __mmask16((1u << nw) - 1u);
    if (pf) {
      for (int i = 0; i < 16; ++i) _mm_prefetch(reinterpret_cast<const char*>(pf[i] + q), _MM_HINT_T0);
    }
    __m512i v[16];
    for (int i = 0; i < 16; ++i) v[i] = _mm512_maskz_loadu_epi32(words, rows[i] + q);
    transpose16(v);
    for (int m = 0; m < nw; ++m) word<T, A>(v[m], tab + kTableFloats * (q - c0 + m), ts, acc);
  }
  for (int t = 0; t < T; ++t) {
    __m512 s = acc[t][0];
    for (int u = 1; u < A; ++u) s = _mm512_add_ps(s, acc[t][u]);
    _mm512_mask_storeu_ps(a.y + (t0 + t) * a.ys + o, lanes, s);
  }
}

using Rows16Fn = void (*)(const GemmArgs&, const uint32_t* const[16], const uint32_t* const[16], const float*,
                          int64_t, int64_t, int64_t, int64_t, int64_t, __mmask16, bool);
constexpr Rows16Fn kRows16[kMaxTokens + 1] = {nullptr,   rows16<1>, rows16<2>, rows16<3>, rows16<4>,
                                              rows16<5>, rows16<6>, rows16<7>, rows16<8>};
}  // namespace

void gemm_rows_avx512(const GemmArgs& a, int64_t o_begin, int64_t o_end) {
  lut_gemm_rows<16>(a, o_begin, o_end, kTableBudget, kTableFloats, build_tables,
                    [&](const uint32_t* const* rows, int valid, int64_t o, const auto& row, const float* tab,
                        int64_t ts, int64_t c0, int64_t ce) {
                      const uint32_t* next[16];  // the next sixteen rows of this call, prefetched meanwhile
                      for (int i = 0; i < 16; ++i) next[i] = row(std::min(o + 16 + i, o_end - 1));
                      const auto lanes = __mmask16((1u << valid) - 1u);
                      for (int64_t t = 0; t < a.n; t += kMaxTokens) {
                        const int64_t nt = std::min<int64_t>(kMaxTokens, a.n - t);
                        kRows16[nt](a, rows, t == 0 && o + 16 < o_end ? next : nullptr, tab + t * ts, ts, c0, ce,
                                    t, o, lanes, c0 == 0);
                      }
                    });
}

}  // namespace onebit::kernels
#endif
