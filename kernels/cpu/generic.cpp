// Portable packed kernels (kernels/packed_sign.h): plain C++ that the compiler vectorises,
// used where no instruction-set kernel applies, and the lookup-table GEMV.
#include <algorithm>
#include <cstring>

#include "kernels/packed_sign.h"

namespace onebit::kernels {

namespace {
constexpr int64_t kBytesPerBlock = kSignsPerBlock / 8;

// The 8 signs (±1.0f) of every byte value.
struct ByteSigns {
  float v[256][8];
  ByteSigns() {
    for (int b = 0; b < 256; ++b)
      for (int k = 0; k < 8; ++k) v[b][k] = (b >> k) & 1 ? -1.0f : 1.0f;
  }
};
const ByteSigns& byte_signs() {
  static const ByteSigns table;
  return table;
}

// R tokens against one output row; acc[r][k] collects lane k (input 8j + k) of token r.
template <int R>
void rows_block(const GemmArgs& a, int64_t t0, int64_t o_begin, int64_t o_end) {
  const ByteSigns& s = byte_signs();
  const int64_t nbytes = a.blocks * kBytesPerBlock;
  for (int64_t o = o_begin; o < o_end; ++o) {
    const auto* row = reinterpret_cast<const uint8_t*>(a.w + o * a.blocks);
    float acc[R][8] = {};
    for (int64_t j = 0; j < nbytes; ++j) {
      const float* sg = s.v[row[j]];
      for (int r = 0; r < R; ++r) {
        const float* x = a.xg + (t0 + r) * a.xs + 8 * j;
        for (int k = 0; k < 8; ++k) acc[r][k] += sg[k] * x[k];
      }
    }
    for (int r = 0; r < R; ++r) {
      const float sum = ((acc[r][0] + acc[r][1]) + (acc[r][2] + acc[r][3])) +
                        ((acc[r][4] + acc[r][5]) + (acc[r][6] + acc[r][7]));
      a.y[(t0 + r) * a.ys + o] = sum * a.h[o] + (a.bias ? a.bias[o] : 0.0f);
    }
  }
}
}  // namespace

void unpack_rows(const SignBlock* packed, int64_t in, int64_t o_begin, int64_t o_end, float* dst) {
  const ByteSigns& s = byte_signs();
  const int64_t full = in / 8;
  for (int64_t o = o_begin; o < o_end; ++o) {
    const auto* row = reinterpret_cast<const uint8_t*>(packed + o * blocks_per_row(in));
    float* d = dst + (o - o_begin) * in;
    for (int64_t j = 0; j < full; ++j) std::memcpy(d + 8 * j, s.v[row[j]], sizeof(s.v[0]));
    for (int64_t i = 8 * full; i < in; ++i) d[i] = s.v[row[full]][i % 8];
  }
}

void unpack_tile_rows(const uint8_t* tiles, int64_t in, int64_t o_begin, int64_t o_end, float* dst) {
  const ByteSigns& s = byte_signs();
  const int64_t words = 4 * blocks_per_row(in);
  for (int64_t o = o_begin; o < o_end; ++o) {
    float* d = dst + (o - o_begin) * in;
    for (int64_t i = 0; i < in; i += 8) {
      const uint8_t byte = tiles[tile_word_offset(o, i / 32, words) + (i / 8) % 4];
      std::memcpy(d + i, s.v[byte], sizeof(float) * size_t(std::min<int64_t>(8, in - i)));
    }
  }
}

int64_t lut_chunk_words(int64_t budget_bytes, int64_t n, int64_t table_bytes_per_word, int64_t align, int64_t words) {
  const int64_t fit = budget_bytes / (n * table_bytes_per_word);
  return std::min(std::max(align, fit / align * align), words);
}

void scale_rows(const GemmArgs& a, int64_t o_begin, int64_t o_end) {
  for (int64_t t = 0; t < a.n; ++t) {
    float* y = a.y + t * a.ys;
    for (int64_t o = o_begin; o < o_end; ++o) y[o] = y[o] * a.h[o] + (a.bias ? a.bias[o] : 0.0f);
  }
}

void gemm_rows_generic(const GemmArgs& a, int64_t o_begin, int64_t o_end) {
  int64_t t = 0;
  for (; t + 4 <= a.n; t += 4) rows_block<4>(a, t, o_begin, o_end);
  for (; t + 2 <= a.n; t += 2) rows_block<2>(a, t, o_begin, o_end);
  for (; t < a.n; ++t) rows_block<1>(a, t, o_begin, o_end);
}

void build_lut(const float* xg, int64_t blocks, float* lut) {
  const int64_t groups = blocks * kBytesPerBlock;
  for (int64_t j = 0; j < groups; ++j) {
    const float* v = xg + 8 * j;
    float* t = lut + 256 * j;
    t[0] = ((v[0] + v[1]) + (v[2] + v[3])) + ((v[4] + v[5]) + (v[6] + v[7]));
    // t[b] differs from t[b without its lowest set bit] by flipping that input to −1.
    for (int b = 1; b < 256; ++b) t[b] = t[b & (b - 1)] - 2.0f * v[__builtin_ctz(unsigned(b))];
  }
}

void gemv_lut_rows(const float* lut, const GemmArgs& a, int64_t o_begin, int64_t o_end) {
  const int64_t groups = a.blocks * kBytesPerBlock;  // a multiple of 16
  for (int64_t o = o_begin; o < o_end; ++o) {
    const auto* row = reinterpret_cast<const uint8_t*>(a.w + o * a.blocks);
    float acc[4] = {0, 0, 0, 0};  // independent chains: the loads, not the adds, set the pace
    for (int64_t j = 0; j < groups; j += 4) {
      acc[0] += lut[256 * j + row[j]];
      acc[1] += lut[256 * (j + 1) + row[j + 1]];
      acc[2] += lut[256 * (j + 2) + row[j + 2]];
      acc[3] += lut[256 * (j + 3) + row[j + 3]];
    }
    a.y[o] = ((acc[0] + acc[1]) + (acc[2] + acc[3])) * a.h[o] + (a.bias ? a.bias[o] : 0.0f);
  }
}

}  // namespace onebit::kernels
