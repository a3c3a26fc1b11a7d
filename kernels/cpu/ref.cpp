// Scalar reference of the packed format (kernels/packed_sign.h): what every kernel is tested
// against, written for clarity, one bit at a time.
#include <cmath>
#include <cstring>

#include "kernels/packed_sign.h"

namespace onebit::kernels {

namespace {
inline bool bit(const uint8_t* row, int64_t i) { return (row[i / 8] >> (i % 8)) & 1u; }
}  // namespace

void pack_ref(const float* w, int64_t out, int64_t in, SignBlock* packed) {
  const int64_t nb = blocks_per_row(in);
  std::memset(static_cast<void*>(packed), 0, size_t(out * nb) * sizeof(SignBlock));
  for (int64_t o = 0; o < out; ++o) {
    auto* row = reinterpret_cast<uint8_t*>(packed + o * nb);
    for (int64_t i = 0; i < in; ++i)
      if (w[o * in + i] < 0) row[i / 8] |= uint8_t(1u << (i % 8));
  }
}

void file_rows_to_blocks(const uint8_t* file, int64_t out, int64_t in, SignBlock* packed) {
  const int64_t fb = file_row_bytes(in), nb = blocks_per_row(in);
  for (int64_t o = 0; o < out; ++o) {
    auto* row = reinterpret_cast<uint8_t*>(packed + o * nb);
    std::memcpy(row, file + o * fb, size_t(fb));
    std::memset(row + fb, 0, size_t(nb * int64_t(sizeof(SignBlock)) - fb));
  }
}

void blocks_to_file_rows(const SignBlock* packed, int64_t out, int64_t in, uint8_t* file) {
  const int64_t fb = file_row_bytes(in), nb = blocks_per_row(in);
  for (int64_t o = 0; o < out; ++o) std::memcpy(file + o * fb, packed + o * nb, size_t(fb));
}

bool file_padding_is_zero(const uint8_t* file, int64_t out, int64_t in) {
  if (in % 8 == 0) return true;
  const int64_t fb = file_row_bytes(in);
  const auto pad_mask = uint8_t(0xFFu << (in % 8));
  for (int64_t o = 0; o < out; ++o)
    if (file[o * fb + fb - 1] & pad_mask) return false;
  return true;
}

void rows_to_tiles(const SignBlock* rows, int64_t out, int64_t blocks, uint8_t* tiles) {
  const int64_t words = 4 * blocks;
  std::memset(tiles, 0, size_t(tiled_rows(out) * blocks) * sizeof(SignBlock));
  for (int64_t o = 0; o < out; ++o)
    for (int64_t q = 0; q < words; ++q)
      std::memcpy(tiles + tile_word_offset(o, q, words), reinterpret_cast<const uint8_t*>(rows + o * blocks) + 4 * q, 4);
}

void tiles_to_rows(const uint8_t* tiles, int64_t out, int64_t blocks, SignBlock* rows) {
  const int64_t words = 4 * blocks;
  for (int64_t o = 0; o < out; ++o)
    for (int64_t q = 0; q < words; ++q)
      std::memcpy(reinterpret_cast<uint8_t*>(rows + o * blocks) + 4 * q, tiles + tile_word_offset(o, q, words), 4);
}

void gemm_rows_ref(const GemmArgs& a, int64_t o_begin, int64_t o_end) {
  const int64_t in = a.blocks * kSignsPerBlock;
  for (int64_t o = o_begin; o < o_end; ++o) {
    const auto* row = reinterpret_cast<const uint8_t*>(a.w + o * a.blocks);
    for (int64_t t = 0; t < a.n; ++t) {
      const float* x = a.xg + t * a.xs;
      double acc = 0;
      for (int64_t i = 0; i < in; ++i) acc += bit(row, i) ? -double(x[i]) : double(x[i]);
      a.y[t * a.ys + o] = float(acc * a.h[o] + (a.bias ? a.bias[o] : 0.0));
    }
  }
}

void layernorm_rows(float* y, int64_t n, int64_t out, int64_t ys, double eps) {
  for (int64_t t = 0; t < n; ++t) {
    float* r = y + t * ys;
    double mean = 0, var = 0;
    for (int64_t o = 0; o < out; ++o) mean += r[o];
    mean /= double(out);
    for (int64_t o = 0; o < out; ++o) var += (r[o] - mean) * (r[o] - mean);
    const double rstd = 1.0 / std::sqrt(var / double(out) + eps);
    for (int64_t o = 0; o < out; ++o) r[o] = float((r[o] - mean) * rstd);
  }
}

}  // namespace onebit::kernels
