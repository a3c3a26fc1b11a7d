// AVX-512 VNNI packed kernel over runtime tiles (kernels/packed_sign.h), compiled with AVX-512
// F/BW/VBMI/VNNI for x86-64 only and chosen at run time (cpu/dispatch.cpp). Lookup tables of
// 16-bit integers, looked up by bytes (T-MAC's idea, at 16 bits):
//  * Per group of 4 inputs, a table of its 16 signed sums t[m] = Σ_k (bit k of m ? −x_k : x_k),
//    rounded to int16 at a scale per block of 128 inputs (the block's largest |t| maps to 32767)
//    and stored as two byte planes (low byte unsigned, high byte signed).
//  * One 64-byte load of a tile is word q of sixteen rows: byte 4r + j of it holds the signs of
//    inputs 32q + 8j .. 32q + 8j + 7 of row r, two groups (low and high nibble). The tables of the
//    four low-nibble groups of word q fill one 64-byte vector (table j at bytes 16j..16j+15), so
//    one vpermb with index (nibble | 16j) looks up all 64 bytes, and one vpdpbusd adds each row's
//    four lookups into its 32-bit lane. Per 512 weights: 2 index ops, 4 vpermb, 4 vpdpbusd.
//  * The four table vectors of a word are loaded once for eight tiles (128 rows): table traffic
//    from L1/L2, not the shuffles, bounds a kernel that reloads them per sixteen rows.
//  * Each block's integer sums (exact) are scaled to fp32 and accumulated in fp32.
// Not exact: each lookup carries the rounding of one int16 table entry, at most 2^-16 of the
// block's largest group sum Σ|x_k| of its four inputs (docs/deployment.md, "CPU kernels").
#include "kernels/packed_sign.h"

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VBMI__) && defined(__AVX512VNNI__)
#include <immintrin.h>

#include <algorithm>
#include <limits>
#include <vector>

#include "kernels/cpu/avx512_group_sums.h"

namespace onebit::kernels {

namespace {
constexpr int kTilesPerPass = 8;                   // tiles sharing each table load
constexpr int64_t kTableBytesPerWord = 256;        // 8 groups × 16 entries × 2 planes
constexpr int64_t kWordsPerBlock = kSignsPerBlock / 32;
constexpr int64_t kBudget = 512 * 1024;            // bytes of tables per chunk of the input (L2)

// Tables and scales of `words` words (a multiple of kWordsPerBlock) of one token's inputs x.
// Word q's 256 bytes: plane p (low, high byte), nibble e, byte j: p·128 + e·64 + 16j + m.
void build_tables(const float* x, int64_t words, uint8_t* tab, float* scales) {
  const __m512i lim = _mm512_set1_epi32(32767);
  constexpr int kGroups = kSignsPerBlock / 4;
  for (int64_t b = 0; b < words / kWordsPerBlock; ++b) {
    __m512 t[kGroups];
    __m512 vmax = _mm512_setzero_ps();
    __mmask16 nan = 0;  // max_ps drops NaNs: a NaN input must still give NaN sums
    for (int g = 0; g < kGroups; ++g) {
      t[g] = group_sums(x + kSignsPerBlock * b + 4 * g);
      vmax = _mm512_max_ps(vmax, _mm512_abs_ps(t[g]));
      nan |= _mm512_cmp_ps_mask(t[g], t[g], _CMP_UNORD_Q);
    }
    const float m = _mm512_reduce_max_ps(vmax);
    // An infinite input: zero tables at an infinite scale, so NaN sums too.
    scales[b] = nan ? std::numeric_limits<float>::quiet_NaN() : m > 0 ? m / 32767.0f : 1.0f;
    const __m512 inv = _mm512_set1_ps(m > 0 ? 32767.0f / m : 0.0f);
    for (int g = 0; g < kGroups; ++g) {
      __m512i q = _mm512_cvtps_epi32(_mm512_mul_ps(t[g], inv));  // round to nearest
      q = _mm512_max_epi32(_mm512_min_epi32(q, lim), _mm512_sub_epi32(_mm512_setzero_si512(), lim));
      const int64_t word = kWordsPerBlock * b + g / 8, j = (g % 8) / 2, e = g % 2;
      uint8_t* dst = tab + word * kTableBytesPerWord + e * 64 + 16 * j;
      _mm_storeu_si128(reinterpret_cast<__m128i*>(dst), _mm512_cvtepi32_epi8(q));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + 128), _mm512_cvtepi32_epi8(_mm512_srai_epi32(q, 8)));
    }
  }
}

// NT tiles (tile i at w + i·tile_bytes, w at the chunk's first word) over `words` words with one
// token's tables: the sums of their 16·NT rows, added to acc.
template <int NT>
void tiles_pass(const uint8_t* w, int64_t tile_bytes, const uint8_t* tab, const float* scales, int64_t words,
                __m512 (&acc)[NT]) {
  const __m512i low4 = _mm512_set1_epi8(0x0F), pos = _mm512_set1_epi32(0x30201000), one = _mm512_set1_epi8(1);
  for (int64_t b = 0; b < words / kWordsPerBlock; ++b) {
    __m512i lo_sum[NT], hi_sum[NT];  // the two byte planes' sums, per row
    for (int i = 0; i < NT; ++i) lo_sum[i] = hi_sum[i] = _mm512_setzero_si512();
    for (int64_t q = kWordsPerBlock * b; q < kWordsPerBlock * (b + 1); ++q) {
      const uint8_t* t = tab + q * kTableBytesPerWord;
      const __m512i t_lo_e0 = _mm512_loadu_si512(t), t_lo_e1 = _mm512_loadu_si512(t + 64);
      const __m512i t_hi_e0 = _mm512_loadu_si512(t + 128), t_hi_e1 = _mm512_loadu_si512(t + 192);
      for (int i = 0; i < NT; ++i) {
        const __m512i v = _mm512_loadu_si512(w + i * tile_bytes + 64 * q);
        // (v & 0x0F) | 16j: the low nibble, table j of byte j; the same for the high nibble.
        const __m512i e0 = _mm512_ternarylogic_epi32(v, low4, pos, 0xEA);
        const __m512i e1 = _mm512_ternarylogic_epi32(_mm512_srli_epi16(v, 4), low4, pos, 0xEA);
        lo_sum[i] = _mm512_dpbusd_epi32(lo_sum[i], _mm512_permutexvar_epi8(e0, t_lo_e0), one);
        lo_sum[i] = _mm512_dpbusd_epi32(lo_sum[i], _mm512_permutexvar_epi8(e1, t_lo_e1), one);
        hi_sum[i] = _mm512_dpbusd_epi32(hi_sum[i], one, _mm512_permutexvar_epi8(e0, t_hi_e0));
        hi_sum[i] = _mm512_dpbusd_epi32(hi_sum[i], one, _mm512_permutexvar_epi8(e1, t_hi_e1));
      }
    }
    const __m512 s = _mm512_set1_ps(scales[b]);
    for (int i = 0; i < NT; ++i) {
      const __m512i sum = _mm512_add_epi32(_mm512_slli_epi32(hi_sum[i], 8), lo_sum[i]);
      acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum), s, acc[i]);
    }
  }
}

// Tiles [t0, t0 + NT) over words [c0, c0 + words) for every token; y rows < o_end only. The
// first chunk of the input stores, the later ones add.
template <int NT>
void tiles_all_tokens(const GemmArgs& a, int64_t t0, int64_t o_end, int64_t c0, int64_t words, const uint8_t* tab,
                      int64_t tab_stride, const float* scales, int64_t scale_stride) {
  const int64_t tile_bytes = 64 * 4 * a.blocks;
  const auto* w = reinterpret_cast<const uint8_t*>(a.w) + t0 * tile_bytes + 64 * c0;
  for (int64_t t = 0; t < a.n; ++t) {
    float* y = a.y + t * a.ys;
    __m512 acc[NT];
    __mmask16 lanes[NT];
    for (int i = 0; i < NT; ++i) {
      const int64_t o = (t0 + i) * kTileRows;
      lanes[i] = __mmask16((1u << std::clamp<int64_t>(o_end - o, 0, 16)) - 1u);
      acc[i] = c0 == 0 ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(lanes[i], y + o);
    }
    tiles_pass<NT>(w, tile_bytes, tab + t * tab_stride, scales + t * scale_stride, words, acc);
    for (int i = 0; i < NT; ++i) _mm512_mask_storeu_ps(y + (t0 + i) * kTileRows, lanes[i], acc[i]);
  }
}

using TilesFn = void (*)(const GemmArgs&, int64_t, int64_t, int64_t, int64_t, const uint8_t*, int64_t, const float*,
                         int64_t);
constexpr TilesFn kTiles[kTilesPerPass + 1] = {nullptr,
                                               tiles_all_tokens<1>,
                                               tiles_all_tokens<2>,
                                               tiles_all_tokens<3>,
                                               tiles_all_tokens<4>,
                                               tiles_all_tokens<5>,
                                               tiles_all_tokens<6>,
                                               tiles_all_tokens<7>,
                                               tiles_all_tokens<8>};
}  // namespace

void gemm_tiles_avx512vnni(const GemmArgs& a, int64_t o_begin, int64_t o_end) {
  if (o_begin >= o_end || a.n <= 0) return;
  const int64_t words = kWordsPerBlock * a.blocks;
  const int64_t chunk = lut_chunk_words(kBudget, a.n, kTableBytesPerWord, kWordsPerBlock, words);
  thread_local std::vector<uint8_t> tables;
  thread_local std::vector<float> scales;
  tables.resize(size_t(a.n * chunk * kTableBytesPerWord));
  scales.resize(size_t(a.n * chunk / kWordsPerBlock));
  const int64_t t_begin = o_begin / kTileRows, t_end = (o_end + kTileRows - 1) / kTileRows;
  for (int64_t c0 = 0; c0 < words; c0 += chunk) {
    const int64_t cw = std::min(words, c0 + chunk) - c0;
    const int64_t tab_stride = chunk * kTableBytesPerWord, scale_stride = chunk / kWordsPerBlock;
    for (int64_t t = 0; t < a.n; ++t)
      build_tables(a.xg + t * a.xs + 32 * c0, cw, tables.data() + t * tab_stride, scales.data() + t * scale_stride);
    for (int64_t tile = t_begin; tile < t_end; tile += kTilesPerPass) {
      const auto nt = std::min<int64_t>(kTilesPerPass, t_end - tile);
      kTiles[nt](a, tile, o_end, c0, cw, tables.data(), tab_stride, scales.data(), scale_stride);
    }
  }
  scale_rows(a, o_begin, o_end);
}

}  // namespace onebit::kernels
#endif
